//! The operator's actions on webhooks and the webhook queue, as one typed service.
//!
//! Every action an operator can take — list, show, export, create, change, pause, resume or delete
//! a webhook; list, show, re-queue or cancel deliveries; test a webhook against a record; list the
//! merge fields; read the overview — is one function here, taking a database client and
//! returning a typed result or an [`AdminError`]. The command line prints the result, the JSON
//! API serialises it, the console renders it; none of them holds logic of its own, and each maps
//! errors by their [`ErrorKind`], never by their text.
//!
//! - [`webhooks`]: list/show (secrets as `***`), create/update through exactly the checks of
//!   `apply` ([`outbox_catalog::check_webhook`]), pause/resume/delete, per-webhook figures;
//! - [`export`]: the configuration as an `apply` file, secrets as `${VAR}` placeholders;
//! - [`deliveries`]: the queue filtered and paged by id (keyset), one delivery with its attempts
//!   (each with the request it sent and the response's headers, as stored), retry by id or by a
//!   selection counted first, cancel;
//! - [`preview`]: a webhook's request for one record, rendered as the sender renders it, and
//!   optionally sent once; [`sent`]: the request of a past attempt recorded without one, rendered
//!   again;
//! - [`fields`]: the merge fields of the latest event of a type or record;
//! - [`overview`]: queue depth, oldest pending age, the last hour per webhook.
//!
//! ```no_run
//! # async fn f(client: &tokio_postgres::Client) -> Result<(), outbox_admin::AdminError> {
//! let page = outbox_admin::deliveries::list(client, &Default::default(), None, 50).await?;
//! for d in page.deliveries {
//!     println!("{} {} {}", d.id, d.webhook, d.status);
//! }
//! # Ok(()) }
//! ```

pub mod deliveries;
mod error;
pub mod export;
pub mod fields;
pub mod overview;
pub mod preview;
pub mod sent;
mod sql;
pub mod webhooks;

pub use error::{AdminError, ErrorKind};
