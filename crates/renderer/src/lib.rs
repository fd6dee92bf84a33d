//! Turns (event, webhook, related records) into the HTTP request to send.
//!
//! A webhook's `url`, `headers` values and `body` are MiniJinja templates, compiled once per webhook
//! version into [`Templates`]. The context (the "merge fields") is the event (`event.*`), the
//! Kladana shorthands `id` and `type`, `delivery.*`, `webhook.name` and `related.<name>`;
//! [`merge_fields`] lists every path of a context with an example value.
//!
//! Escaping is the renderer's job, chosen by where a value lands, never the template author's:
//! URL templates percent-encode every value, JSON bodies emit values as JSON, XML and HTML bodies
//! escape markup including quotes (so attributes are safe), other bodies and headers are raw.
//! Filters add what payloads need: `tojson`, `csv` (RFC 4180), `xml_escape`, `urlencode`, `date`,
//! `default`. Without a `body` the default JSON envelope (docs/templates.md) is sent.
//!
//! Which relations (`related.<name>`) the templates use is found at compile time, so the sender
//! loads only those. Loading them is the sender's job; the renderer only reads them.
//!
//! Rendering is sandboxed: templates have no loader (no file access), no network, bounded fuel
//! (CPU), bounded recursion and a 1 MiB output cap enforced while writing (a literal field longer
//! than that is refused when compiled). Sources are bounded before MiniJinja parses them, and
//! compiling and rendering run with a known amount of stack, so that no template can overflow a
//! thread's stack (see [`limits`]). A failure is a
//! [`RenderError`] naming the template field, the line and the failing expression; the sender
//! records it as the attempt's error (outcome `render_error`) and carries on.
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
pub mod limits;
mod templates;
mod url_path;

pub use context::RenderContext;
pub use escape::{escape_html, escape_xml, percent_encode};
pub use fields::{MergeField, merge_fields};
pub use templates::{
    FUEL, MAX_OUTPUT, RenderError, Rendered, TemplateError, Templates, default_body, sample_event,
};
