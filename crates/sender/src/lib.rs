//! Claims due deliveries, renders, signs and sends them, records every attempt and schedules the
//! retry or declares the delivery dead.
//!
//! The loop, per relay process (one module each under `runtime/`):
//!
//! 1. **Dispatch** ([`Sender`]): one statement claims due deliveries for every webhook with free
//!    slots (`max_in_flight` per webhook, `concurrency` overall), highest priority first, with
//!    `FOR UPDATE SKIP LOCKED`. The claim increments the attempt counter and takes a lease, and is
//!    committed to disk before anything is sent: a crash of the relay or of Postgres can repeat
//!    an attempt (same `webhook-id`, next attempt number), never skip one or send one twice.
//! 2. **Attempt**: each claimed delivery runs as its own task, a chain of typed steps — claimed,
//!    prepared (related records, rendered by [`outbox_renderer`], signed by [`Signer`]), sent
//!    through a [`Transport`] (reqwest in production; tests may pass their own), and an outcome
//!    (succeeded, retry at, dead, gone, abandoned) — all within a deadline derived from the lease.
//! 3. **Complete**: finished attempts go to one completer task that writes whatever has piled up
//!    in one statement (log the attempts, requeue retries, move succeeded/dead deliveries out of
//!    the hot queue), so commits do not grow with throughput; one row the database refuses is
//!    found by splitting the batch and never holds up the rest.
//! 4. **Rescue**: deliveries whose lease expired (their relay died) are requeued and their lost
//!    attempt logged and counted.
//!
//! Webhook configuration arrives compiled as [`Endpoint`]s in a [`Directory`], swapped in live by
//! the caller.
//!
//! **TLS**: [`HttpTransport`] shares one keep-alive client among all webhooks without a `[tls]`
//! section, and builds one client per distinct [`TlsSettings`] (client certificate, extra CAs),
//! keyed by a fingerprint of the material: a changed certificate gets a new client, and a client
//! nobody uses any more is dropped. Every client has the same network policy resolver, connect
//! timeout and no-redirect policy.

mod endpoint;
mod error;
mod field_error;
mod network;
pub mod policy;
pub mod record;
pub mod related;
mod request;
mod runtime;
mod signature;
mod tls;
mod tls_config;
mod transport;
mod x509;

pub use endpoint::{Directory, Endpoint};
pub use error::Error;
pub use field_error::FieldError;
pub use network::{METADATA, NetworkPolicy};
pub use policy::AttemptOutcome;
pub use related::RelatedError;
pub use request::{USER_AGENT, build_request, message_id};
pub use runtime::{Pools, Sender, SenderOptions};
pub use signature::Signer;
pub use tls::TlsSettings;
pub use transport::{
    HttpTransport, OutboundRequest, Response, Transport, TransportError, TransportErrorKind,
};
