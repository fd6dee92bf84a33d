//! The webhook catalog: what `outbox.webhooks` and `outbox.relations` say, checked and compiled.
//!
//! Webhooks reach the database three ways — an `apply` file, the console's form, or plain SQL —
//! and all three are checked by the same code, so a webhook is valid or not whatever wrote it:
//!
//! - [`validate`]: one webhook or relation, every problem at once, each naming its field
//!   ([`compile`] also yields the compiled patterns, filter and endpoint);
//! - [`file`]: an `apply` file (`${VAR}` substitution, unknown/mistyped/missing keys, duplicate
//!   names), and [`check_webhook`] for one `[[webhook]]` table, which the console's form uses too;
//! - [`row`]: a row of `outbox.webhooks` as read, also when it does not have a webhook's shape;
//! - [`live`]: the running relay's [`Catalog`], reloaded and swapped in atomically, which the
//!   router ([`LiveRouting`]) and the sender (its `Directory`) read.
//!
//! ```
//! let spec: outbox_core::WebhookSpec =
//!     toml::from_str("name = \"w\"\nevents = [\"order.*\"]\nurl = \"https://example.com/\"").unwrap();
//! assert!(outbox_catalog::compile(1, &spec).is_ok());
//! ```

mod error;
pub mod file;
pub mod live;
pub mod row;
pub mod validate;

pub use error::CatalogError;
pub use file::{Parsed, check_relation_sql, check_webhook, parse, parse_all};
pub use live::{Catalog, LiveRouting, Reloaded};
pub use row::{WEBHOOK_COLUMNS, WebhookRow, webhook_row};
pub use validate::{Compiled, check_relation, compile, describe_errors, hide_quoted};
