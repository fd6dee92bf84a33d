//! Turns (event, webhook, related records) into the HTTP request to send.
//!
//! A webhook's `url`, `headers` values and `body` are MiniJinja templates, compiled once per webhook
//! version into [`Templates`]. Escaping is the renderer's job, chosen by where a value lands: URL
//! templates percent-encode every value, JSON bodies emit values as JSON, XML/HTML bodies escape
//! markup, plain text is raw. Without a `body` the default JSON envelope of DESIGN §5 is sent.
//!
//! Rendering is sandboxed: templates have no loader (no file access), no network, bounded fuel
//! (CPU), bounded recursion and a 1 MiB output cap. A failure is a [`RenderError`] naming the
//! template and line; the sender records it as the attempt's error and never crashes.
//!
//! ```
//! use outbox_renderer::Templates;
//! let spec: outbox_core::WebhookSpec = toml::from_str(r#"
//!     name = "crm"
//!     events = ["order.*"]
//!     url = "http://mysite.com/webhook?id={{ id }}&type={{ type }}"
//! "#).unwrap();
//! let templates = Templates::compile(&spec).unwrap();
//! assert!(templates.relations().is_empty());
//! ```

mod context;
mod escape;
mod fields;
mod filters;
mod templates;

pub use context::RenderContext;
pub use escape::{escape_html, escape_xml, percent_encode};
pub use fields::{MergeField, merge_fields};
pub use templates::{
    FUEL, MAX_OUTPUT, RenderError, Rendered, TemplateError, Templates, default_body, sample_event,
};
