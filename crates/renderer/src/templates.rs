use std::collections::BTreeSet;

use minijinja::value::Value as JValue;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, escape_formatter};
use outbox_core::{Event, WebhookSpec};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::context::RenderContext;

/// Largest rendered body (and URL, and header value) accepted.
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// Template instructions one render may execute.
const FUEL: u64 = 200_000;

const URL_TEMPLATE: &str = "url";
const BODY_TEMPLATE: &str = "body";
const METHODS: [&str; 5] = ["POST", "PUT", "PATCH", "GET", "DELETE"];

/// Characters left unencoded in URL values (RFC 3986 unreserved).
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
    #[error("{field} template failed: {message}")]
    Template { field: String, message: String },
    #[error("{field} rendered to more than {MAX_OUTPUT} bytes")]
    TooLarge { field: String },
    #[error("url rendered to {url:?}, which is not an absolute http(s) URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("header {name} rendered to a value with a line break")]
    BadHeader { name: String },
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
    env: Environment<'static>,
    method: &'static str,
    header_names: Vec<String>,
    content_type: String,
    has_body: bool,
    relations: Vec<String>,
}

enum BodyKind {
    Json,
    Markup,
    Raw,
}

fn body_kind(content_type: &str) -> BodyKind {
    let ct = content_type.to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        BodyKind::Json
    } else if essence.contains("xml") || essence.contains("html") {
        BodyKind::Markup
    } else {
        BodyKind::Raw
    }
}

fn header_template(name: &str) -> String {
    format!("headers.{name}")
}

impl Templates {
    /// Compiles every template of `spec`, reporting every problem at once.
    pub fn compile(spec: &WebhookSpec) -> Result<Templates, Vec<TemplateError>> {
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

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(32);
        let body_escape = match body_kind(&spec.content_type) {
            BodyKind::Json => AutoEscape::Json,
            BodyKind::Markup => AutoEscape::Html,
            BodyKind::Raw => AutoEscape::None,
        };
        env.set_auto_escape_callback(move |name| match name {
            URL_TEMPLATE => AutoEscape::Custom("url".into()),
            BODY_TEMPLATE => body_escape.clone(),
            _ => AutoEscape::None,
        });
        env.set_formatter(|out, state, value| {
            if matches!(state.auto_escape(), AutoEscape::Custom(n) if n == "url")
                && !value.is_safe()
            {
                let text = match value.as_str() {
                    Some(s) => s.to_string(),
                    None if value.is_undefined() || value.is_none() => String::new(),
                    None => value.to_string(),
                };
                for part in utf8_percent_encode(&text, URL_VALUE) {
                    out.write_str(part).map_err(|e| {
                        minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
                    })?;
                }
                Ok(())
            } else {
                escape_formatter(out, state, value)
            }
        });

        let add = |env: &mut Environment<'static>,
                   errors: &mut Vec<TemplateError>,
                   field: String,
                   source: &str| {
            if let Err(e) = env.add_template_owned(field.clone(), source.to_string()) {
                errors.push(TemplateError {
                    field,
                    message: describe(&e),
                });
            }
        };
        add(&mut env, &mut errors, URL_TEMPLATE.into(), &spec.url);
        let mut header_names = Vec::new();
        for (name, value) in &spec.headers {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                errors.push(TemplateError {
                    field: header_template(name),
                    message: format!("{name:?} is not a valid HTTP header name"),
                });
                continue;
            }
            add(&mut env, &mut errors, header_template(name), value);
            header_names.push(name.clone());
        }
        if let Some(body) = &spec.body {
            add(&mut env, &mut errors, BODY_TEMPLATE.into(), body);
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut relations = BTreeSet::new();
        for name in env
            .templates()
            .map(|(n, _)| n.to_string())
            .collect::<Vec<_>>()
        {
            if let Ok(t) = env.get_template(&name) {
                for var in t.undeclared_variables(true) {
                    if let Some(rel) = var.strip_prefix("related.") {
                        relations.insert(rel.split('.').next().unwrap_or(rel).to_string());
                    }
                }
            }
        }

        Ok(Templates {
            env,
            method,
            header_names,
            content_type: spec.content_type.clone(),
            has_body: spec.body.is_some(),
            relations: relations.into_iter().collect(),
        })
    }

    /// Names of the relations (`related.<name>`) the templates use; only these are loaded.
    pub fn relations(&self) -> &[String] {
        &self.relations
    }

    pub fn method(&self) -> &'static str {
        self.method
    }

    /// Renders the request for one attempt.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        let view = JValue::from(minijinja::value::Serde(ctx.view()));
        let url = self.render_one(URL_TEMPLATE, &view)?;
        let url = url.trim().to_string();
        check_url(&url)?;
        let mut headers = Vec::with_capacity(self.header_names.len());
        for name in &self.header_names {
            let value = self.render_one(&header_template(name), &view)?;
            if value.contains(['\r', '\n']) {
                return Err(RenderError::BadHeader { name: name.clone() });
            }
            headers.push((name.clone(), value));
        }
        let body = if self.has_body {
            self.render_one(BODY_TEMPLATE, &view)?.into_bytes()
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

    fn render_one(&self, field: &str, view: &JValue) -> Result<String, RenderError> {
        let template = self
            .env
            .get_template(field)
            .map_err(|e| RenderError::Template {
                field: field.into(),
                message: describe(&e),
            })?;
        let out = template
            .render(view.clone())
            .map_err(|e| RenderError::Template {
                field: field.into(),
                message: describe(&e),
            })?;
        if out.len() > MAX_OUTPUT {
            return Err(RenderError::TooLarge {
                field: field.into(),
            });
        }
        Ok(out)
    }

    /// Renders against [`sample_event`], to check at configuration time that the URL template
    /// produces an absolute http(s) URL.
    pub fn check_with_sample(&self, webhook: &str) -> Result<Rendered, RenderError> {
        let event = sample_event();
        let related = Map::new();
        self.render(&RenderContext {
            event: &event,
            message_id: "msg_sample",
            delivery_id: 1,
            attempt: 1,
            webhook,
            related: &related,
        })
    }
}

fn check_url(url: &str) -> Result<(), RenderError> {
    match url::Url::parse(url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(()),
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

fn describe(e: &minijinja::Error) -> String {
    let mut s = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    if let Some(line) = e.line() {
        s = format!("line {line}: {s}");
    }
    s
}

/// The default JSON body (DESIGN §5).
pub fn default_body(event: &Event, message_id: &str) -> Vec<u8> {
    let mut body = json!({
        "id": message_id,
        "type": event.event_type,
        "timestamp": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "entity": event.entity,
        "entity_id": event.entity_id,
        "data": event.data,
    });
    if let Some(old) = &event.old {
        body["old"] = old.clone();
    }
    serde_json::to_vec(&body).unwrap_or_default()
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
