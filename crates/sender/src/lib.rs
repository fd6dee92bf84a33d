//! Claims due deliveries, renders, signs and sends them, records every attempt and schedules the
//! retry or declares the delivery dead.
//!
//! The loop, per relay process:
//!
//! 1. **Claim** ([`Sender`]): one statement claims due deliveries for every webhook with free
//!    slots (`max_in_flight` per webhook, `concurrency` overall), highest priority first, with
//!    `FOR UPDATE SKIP LOCKED`. The claim increments the attempt counter and takes a lease, and is
//!    committed before anything is sent: a crash can repeat an attempt (same `webhook-id`), never
//!    skip one.
//! 2. **Send**: each claimed delivery runs as its own task: load related records, render
//!    ([`outbox_renderer`]), sign ([`Signer`]), send through a [`Transport`] (reqwest in
//!    production; tests may pass their own), classify the outcome ([`policy`]).
//! 3. **Complete**: finished attempts go to one completer task that writes whatever has piled up
//!    in one statement (log the attempts, requeue retries, move succeeded/dead deliveries out of
//!    the hot queue), so commits do not grow with throughput; a second statement then releases the
//!    next parked delivery of records of ordered webhooks whose delivery finished.
//! 4. **Rescue**: deliveries whose lease expired (their relay died) are requeued and their lost
//!    attempt logged.
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
mod network;
pub mod policy;
pub mod related;
mod request;
mod runtime;
mod signature;
mod tls;
mod tls_config;
mod transport;
mod x509;

pub use endpoint::{Directory, Endpoint, FieldError};
pub use error::Error;
pub use network::{METADATA, NetworkPolicy};
pub use policy::Outcome;
pub use related::RelatedError;
pub use request::{USER_AGENT, build_request, message_id};
pub use runtime::{Sender, SenderOptions};
pub use signature::Signer;
pub use tls::TlsSettings;
pub use transport::{
    HttpTransport, OutboundRequest, Response, Transport, TransportError, TransportErrorKind,
};
