use std::collections::BTreeSet;
use std::io;

use minijinja::value::Value as JValue;
use minijinja::{Environment, UndefinedBehavior};
use outbox_core::{Event, WebhookSpec};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::context::RenderContext;
use crate::escape::{self, Context};
use crate::filters;
use crate::limits::{self, on_big_stack};

/// Largest rendered body (and URL, and header value) accepted.
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// Template instructions one render of one field may execute (a loop over a few thousand order
/// lines fits easily; an endless loop stops here).
pub const FUEL: u64 = 1_000_000;
/// Deepest nesting of macro calls and includes.
const RECURSION_LIMIT: usize = 32;

const URL_TEMPLATE: &str = "url";
const BODY_TEMPLATE: &str = "body";
const METHODS: [&str; 5] = ["POST", "PUT", "PATCH", "GET", "DELETE"];

/// A problem with one template of a webhook, found when compiling it.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("{field}: {message}")]
pub struct TemplateError {
    /// The config key: `url`, `method`, `body`, `headers.X-Shop`, ...
    pub field: String,
    pub message: String,
}

/// Why a request could not be rendered. Recorded as the attempt's error (outcome `render_error`).
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum RenderError {
    /// The template failed: `field` is the config key (`url`, `body`, `headers.X-Shop`), `line`
    /// the line in that template, `message` what went wrong and the failing expression.
    #[error("{field} template failed{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Template {
        field: String,
        line: Option<usize>,
        message: String,
    },
    #[error("{field} rendered to more than {MAX_OUTPUT} bytes (the limit of a rendered field)")]
    TooLarge { field: String },
    #[error("url rendered to {:?}, which is not an absolute http(s) URL: {reason}", outbox_core::redact::redact_url(.url))]
    BadUrl { url: String, reason: String },
    #[error("header {name} rendered to a value with a line break")]
    BadHeader { name: String },
}

impl RenderError {
    /// The config key whose template failed (`url`, `body`, `headers.X-Shop`).
    pub fn field(&self) -> String {
        match self {
            RenderError::Template { field, .. } | RenderError::TooLarge { field } => field.clone(),
            RenderError::BadUrl { .. } => URL_TEMPLATE.into(),
            RenderError::BadHeader { name } => header_template(name),
        }
    }
}

/// The request to send, before signing.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub method: &'static str,
    pub url: String,
    /// The webhook's own headers (templated), in configuration order.
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A webhook's compiled templates.
pub struct Templates {
    /// The compiled templates; `None` when every field is literal text (see `literals`): an
    /// environment costs ~15 KiB, which adds up over thousands of webhooks with a fixed URL and
    /// the default body.
    env: Option<Environment<'static>>,
    method: &'static str,
    /// (header name, template name)
    headers: Vec<(String, String)>,
    content_type: String,
    has_body: bool,
    /// Template sources by name, to quote the failing expression in errors.
    sources: Vec<(String, String)>,
    relations: Vec<String>,
    every_relation: bool,
    /// Output of templates without any template syntax, by name: rendered without building a
    /// context (a fixed URL, a constant header).
    literals: Vec<(String, String)>,
}

fn header_template(name: &str) -> String {
    format!("headers.{name}")
}

/// The environment every webhook's templates live in: no loader (so no file access), no
/// network-capable functions, bounded fuel and recursion, escaping by field.
fn environment(body: Context) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_debug(false);
    env.set_auto_escape_callback(move |name| match name {
        URL_TEMPLATE => Context::Url.auto_escape(),
        BODY_TEMPLATE => body.auto_escape(),
        _ => Context::Raw.auto_escape(),
    });
    env.set_formatter(escape::format);
    filters::register(&mut env);
    // The one mutable value: with it a template can build a value nested deeper than any stack
    // can print or free (see `limits`).
    env.remove_global(NAMESPACE);
    env
}

const NAMESPACE: &str = "namespace";

impl Templates {
    /// Compiles every template of `spec`, reporting every problem at once. Sources beyond the
    /// limits of [`crate::limits`] are refused before they are parsed.
    pub fn compile(spec: &WebhookSpec) -> Result<Templates, Vec<TemplateError>> {
        on_big_stack(|| Templates::compile_here(spec))
    }

    fn compile_here(spec: &WebhookSpec) -> Result<Templates, Vec<TemplateError>> {
        let mut errors = Vec::new();
        let method = match METHODS
            .iter()
            .find(|m| m.eq_ignore_ascii_case(spec.method.trim()))
        {
            Some(m) => *m,
            None => {
                errors.push(TemplateError {
                    field: "method".into(),
                    message: format!(
                        "unsupported method {:?}; use one of {}",
                        spec.method,
                        METHODS.join(", ")
                    ),
                });
                "POST"
            }
        };

        let mut env = environment(Context::for_body(&spec.content_type));
        let mut sources = Vec::new();
        let mut add = |env: &mut Environment<'static>, field: String, source: &str| {
            if let Err(refusal) = limits::check(source) {
                errors.push(TemplateError {
                    message: refusal.to_string(),
                    field,
                });
                return;
            }
            match env.add_template_owned(field.clone(), source.to_string()) {
                Ok(()) => sources.push((field, source.to_string())),
                Err(e) => errors.push(TemplateError {
                    message: describe(&e, source),
                    field,
                }),
            }
        };
        add(&mut env, URL_TEMPLATE.into(), &spec.url);
        let mut headers = Vec::new();
        let mut bad_headers = Vec::new();
        for (name, value) in &spec.headers {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                bad_headers.push(TemplateError {
                    field: header_template(name),
                    message: format!("{name:?} is not a valid HTTP header name"),
                });
                continue;
            }
            add(&mut env, header_template(name), value);
            headers.push((name.clone(), header_template(name)));
        }
        if let Some(body) = &spec.body {
            add(&mut env, BODY_TEMPLATE.into(), body);
        }
        errors.extend(bad_headers);
        if !errors.is_empty() {
            return Err(errors);
        }

        // Which relations the templates use: `related.order...` names one; any other use of
        // `related` (`related[name]`, `related | items`) may touch any of them.
        let mut relations = BTreeSet::new();
        let mut every_relation = false;
        for (name, _) in &sources {
            if let Ok(t) = env.get_template(name) {
                for var in t.undeclared_variables(true) {
                    if var == NAMESPACE || var.starts_with("namespace.") {
                        errors.push(TemplateError {
                            field: name.clone(),
                            message: "namespace() is not available: a template could build a value with it that no stack can print (use filters such as sum(attribute=...), selectattr or map instead)".into(),
                        });
                    } else if var == "related" {
                        every_relation = true;
                    } else if let Some(rel) = var.strip_prefix("related.") {
                        relations.insert(rel.split('.').next().unwrap_or(rel).to_string());
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let literals: Vec<(String, String)> = sources
            .iter()
            .filter(|(_, src)| limits::is_literal(src))
            .map(|(name, src)| (name.clone(), literal_output(src).to_string()))
            .collect();
        let env = (literals.len() < sources.len()).then_some(env);

        Ok(Templates {
            env,
            method,
            headers,
            content_type: spec.content_type.clone(),
            has_body: spec.body.is_some(),
            sources,
            relations: relations.into_iter().collect(),
            every_relation,
            literals,
        })
    }

    /// Names of the relations (`related.<name>`) the templates use; only these are loaded.
    pub fn relations(&self) -> &[String] {
        &self.relations
    }

    /// Whether a template uses `related` as a whole (`related[name]`, `related | items`), so every
    /// relation defined for the event's entity must be loaded.
    pub fn uses_every_relation(&self) -> bool {
        self.every_relation
    }

    /// Whether rendering needs any related record at all.
    pub fn needs_related(&self) -> bool {
        self.every_relation || !self.relations.is_empty()
    }

    pub fn method(&self) -> &'static str {
        self.method
    }

    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// Renders the request for one attempt.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        on_big_stack(|| self.render_here(ctx))
    }

    fn render_here(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        // The template context is built only if some field really is a template.
        let mut view = None;
        let url = self.render_field(URL_TEMPLATE, ctx, &mut view)?;
        let url = url.trim().to_string();
        check_url(&url)?;
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, template) in &self.headers {
            let value = self.render_field(template, ctx, &mut view)?;
            if value.contains(['\r', '\n']) {
                return Err(RenderError::BadHeader { name: name.clone() });
            }
            headers.push((name.clone(), value));
        }
        let body = if self.has_body {
            self.render_field(BODY_TEMPLATE, ctx, &mut view)?
                .into_bytes()
        } else if self.method == "GET" {
            // A GET carries its information in the URL (Kladana-style); no envelope.
            Vec::new()
        } else {
            default_body(ctx.event, ctx.message_id)
        };
        Ok(Rendered {
            method: self.method,
            url,
            headers,
            content_type: self.content_type.clone(),
            body,
        })
    }

    fn render_field(
        &self,
        field: &str,
        ctx: &RenderContext<'_>,
        view: &mut Option<JValue>,
    ) -> Result<String, RenderError> {
        if let Some((_, literal)) = self.literals.iter().find(|(n, _)| n == field) {
            return Ok(literal.clone());
        }
        // Without an environment every field is a literal, found above.
        let Some(env) = &self.env else {
            return Err(RenderError::Template {
                field: field.into(),
                line: None,
                message: "no such template".into(),
            });
        };
        let view = view.get_or_insert_with(|| JValue::from(minijinja::value::Serde(ctx.view())));
        render_field(env, field, view, self.source(field))
    }

    fn source(&self, name: &str) -> &str {
        self.sources
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_str())
            .unwrap_or("")
    }

    /// Renders the URL template against [`sample_event`], to check at configuration time that it
    /// produces an absolute http(s) URL. Fields the sample lacks (`event.data.*`, `related.*`)
    /// render empty here instead of failing: only the shape of the URL is checked. A template that
    /// starts with a tag takes its scheme and host from the event: only its rendering is checked
    /// here, and its URL on every attempt.
    pub fn check_with_sample(&self, webhook: &str) -> Result<String, RenderError> {
        on_big_stack(|| self.check_with_sample_here(webhook))
    }

    fn check_with_sample_here(&self, webhook: &str) -> Result<String, RenderError> {
        let event = sample_event();
        let related = Map::new();
        let ctx = RenderContext {
            event: &event,
            message_id: "msg_sample",
            delivery_id: 1,
            attempt: 1,
            webhook,
            related: &related,
        };
        let source = self.source(URL_TEMPLATE);
        let mut env = environment(Context::Raw);
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.add_template_owned(URL_TEMPLATE, source.to_string())
            .map_err(|e| RenderError::Template {
                field: URL_TEMPLATE.into(),
                line: e.line(),
                message: describe(&e, source),
            })?;
        let view = JValue::from(minijinja::value::Serde(ctx.view()));
        let url = render_field(&env, URL_TEMPLATE, &view, source)?
            .trim()
            .to_string();
        // `{{ event.metadata.callback | safe }}/orders`: the scheme and host come from the event,
        // which the sample does not have; every render checks the URL it produces.
        if !url_starts_literally(source) {
            return Ok(url);
        }
        check_url(&url)?;
        Ok(url)
    }
}

/// Whether a URL template starts with literal text (its scheme), not with a template tag.
fn url_starts_literally(source: &str) -> bool {
    let s = source.trim_start();
    !(s.starts_with("{{") || s.starts_with("{%"))
}

/// Renders one template of `env`, capped at [`MAX_OUTPUT`].
fn render_field(
    env: &Environment<'static>,
    field: &str,
    view: &JValue,
    source: &str,
) -> Result<String, RenderError> {
    let failed = |e: &minijinja::Error| RenderError::Template {
        field: field.into(),
        line: e.line(),
        // An error inside an included template points into that template's source.
        message: describe(
            e,
            if e.name().is_none_or(|n| n == field) {
                source
            } else {
                ""
            },
        ),
    };
    let template = env.get_template(field).map_err(|e| failed(&e))?;
    let mut out = Capped::default();
    if let Err(e) = template.render_captured_to(view.clone(), &mut out) {
        if out.overflowed {
            return Err(RenderError::TooLarge {
                field: field.into(),
            });
        }
        return Err(failed(&e));
    }
    String::from_utf8(out.buf).map_err(|_| RenderError::Template {
        field: field.into(),
        line: None,
        message: "rendered text is not valid UTF-8".into(),
    })
}

/// Collects output up to [`MAX_OUTPUT`] and refuses the rest, so a runaway loop stops at the cap
/// instead of filling memory.
#[derive(Default)]
struct Capped {
    buf: Vec<u8>,
    overflowed: bool,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT {
            self.overflowed = true;
            return Err(io::Error::other("rendered output exceeds the limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn check_url(url: &str) -> Result<(), RenderError> {
    // What is sent must read as what it is: `https:!//host` parses (the parser skips what stands
    // between the scheme and the host), but is not a URL anyone means.
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(RenderError::BadUrl {
            url: url.into(),
            reason: "must start with http:// or https://, e.g. https://example.com/hook".into(),
        });
    }
    match url::Url::parse(url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
            crate::url_path::check_no_dot_segments(url).map_err(|reason| RenderError::BadUrl {
                url: url.into(),
                reason,
            })
        }
        Ok(u) => Err(RenderError::BadUrl {
            url: url.into(),
            reason: format!(
                "scheme must be http or https with a host, e.g. https://example.com/hook; got scheme {:?}",
                u.scheme()
            ),
        }),
        Err(e) => Err(RenderError::BadUrl {
            url: url.into(),
            reason: format!("{e}; write e.g. https://example.com/hook"),
        }),
    }
}

/// What went wrong, quoting the failing expression when MiniJinja knows where it is.
fn describe(e: &minijinja::Error, source: &str) -> String {
    let mut message = match (e.kind(), e.detail()) {
        (minijinja::ErrorKind::UndefinedError, detail) => format!(
            "undefined value{} (a merge field this event does not have; guard it with `| default(...)` or `{{% if ... is defined %}}`)",
            detail.map(|d| format!(": {d}")).unwrap_or_default()
        ),
        (minijinja::ErrorKind::OutOfFuel, _) => {
            format!("stopped after {FUEL} template instructions (an endless or very long loop?)")
        }
        (kind, Some(detail)) => format!("{kind}: {detail}"),
        (kind, None) => kind.to_string(),
    };
    if let Some(range) = e.range()
        && let Some(snippet) = source.get(expression_start(source, range.start)..range.end)
        && !snippet.trim().is_empty()
    {
        let snippet: String = snippet.chars().take(80).collect();
        message.push_str(&format!(" in `{}`", snippet.trim()));
    }
    message
}

/// MiniJinja points at the failing attribute (`.code`); widen that to the whole dotted path
/// (`event.data.code`) so the message names the merge field.
fn expression_start(source: &str, start: usize) -> usize {
    match (source.get(..start), source.get(start..)) {
        (Some(before), Some(rest)) if rest.starts_with('.') => before
            .trim_end_matches(|c: char| c.is_alphanumeric() || c == '_' || c == '.')
            .len(),
        _ => start,
    }
}

/// What MiniJinja outputs for a template without template syntax: the source, less one trailing
/// newline (its default `keep_trailing_newline = false`).
pub(crate) fn literal_output(source: &str) -> &str {
    let s = source.strip_suffix('\n').unwrap_or(source);
    s.strip_suffix('\r').unwrap_or(s)
}

/// The default JSON body (docs/templates.md, "Default body"), in the documented key order, serialised straight from the
/// event (no copy of its data).
pub fn default_body(event: &Event, message_id: &str) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        event_type: &'a str,
        timestamp: String,
        entity: &'a str,
        entity_id: &'a str,
        data: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        old: Option<&'a Value>,
    }
    let envelope = Envelope {
        id: message_id,
        event_type: &event.event_type,
        timestamp: event
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        entity: &event.entity,
        entity_id: &event.entity_id,
        data: &event.data,
        old: event.old.as_ref(),
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// A representative event for configuration-time checks of templates.
pub fn sample_event() -> Event {
    Event {
        id: 1,
        event_type: "sample.created".into(),
        entity: "sample".into(),
        entity_id: "1".into(),
        data: Value::Object(Map::new()),
        old: None,
        metadata: Value::Object(Map::new()),
        created_at: chrono::Utc::now(),
    }
}

#[cfg(test)]
mod literal_tests {
    use super::literal_output;

    #[test]
    fn literals_drop_one_trailing_newline_like_minijinja() {
        let mut env = minijinja::Environment::new();
        for source in ["http://x/a", "http://x/a\n", "a\r\n", "a\n\n", "", "\n"] {
            env.add_template_owned("t", source.to_string()).unwrap();
            let rendered = env.get_template("t").unwrap().render(()).unwrap();
            assert_eq!(literal_output(source), rendered, "{source:?}");
        }
    }
}

#[cfg(test)]
mod url_tests {
    use super::{RenderError, check_url};

    #[test]
    fn urls_must_start_with_their_scheme_and_two_slashes() {
        // Found by the template_render fuzz target: the URL parser accepts this as https.
        for bad in [
            "https:!//carri%er.example/x",
            "https:/example.com/x",
            "http:example.com",
        ] {
            assert!(
                matches!(check_url(bad), Err(RenderError::BadUrl { .. })),
                "{bad:?}"
            );
        }
        for good in ["https://example.com/x", "HTTP://example.com/x"] {
            assert!(check_url(good).is_ok(), "{good:?}");
        }
    }
}
