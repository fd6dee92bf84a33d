//! The console's templates (embedded in the binary) and the filters they use. Templates are
//! `.html`, so MiniJinja escapes every value it prints for HTML.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use minijinja::{Environment, Value};
use serde::Serialize;

use super::Ui;

const TEMPLATES: &[(&str, &str)] = &[
    ("macros.html", include_str!("templates/macros.html")),
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("webhooks.html", include_str!("templates/webhooks.html")),
    ("webhook.html", include_str!("templates/webhook.html")),
    (
        "webhook_form.html",
        include_str!("templates/webhook_form.html"),
    ),
    ("deliveries.html", include_str!("templates/deliveries.html")),
    ("rows.html", include_str!("templates/rows.html")),
    ("rows_table.html", include_str!("templates/rows_table.html")),
    ("bulk.html", include_str!("templates/bulk.html")),
    ("delivery.html", include_str!("templates/delivery.html")),
];

pub struct Views {
    env: Environment<'static>,
}

impl Views {
    pub fn new() -> Views {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("console template {name} does not compile: {e:#}"));
        }
        env.add_filter("ago", ago);
        env.add_filter("abstime", abstime);
        env.add_filter("age", age);
        env.add_filter("symbol", symbol);
        env.add_filter("pretty", pretty);
        env.add_filter("urlencode", urlencode);
        // Safe as it is: the name is percent-encoded, so the path holds nothing HTML would read.
        env.add_filter("webhook_href", |name: String| {
            Value::from_safe_string(webhook_href(&name))
        });
        Views { env }
    }

    fn render(&self, name: &str, context: Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(context)
    }

    /// Only the queue table's rows (the live refresh).
    pub fn render_rows(&self, context: Value) -> Result<String, minijinja::Error> {
        self.render("rows.html", context)
    }
}

impl Ui {
    /// The context every page gets: the CSRF token of its forms, whether sign-in is on and done,
    /// whether webhooks may be changed, and the page's own values.
    pub fn context(&self, nav: &str, page: impl Serialize) -> Value {
        let token_required = self.state.admin_token.is_some();
        let mut values = match serde_json::to_value(page) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        for (key, value) in [
            ("csrf", self.session.csrf(&self.console().keys).into()),
            ("token_required", token_required.into()),
            (
                "signed_in",
                (!token_required || self.session.signed_in).into(),
            ),
            ("edit", self.console().edit.into()),
            ("nav", nav.into()),
        ] {
            values.insert(key.to_string(), value);
        }
        Value::from(minijinja::value::Serde(values))
    }

    /// Renders `template` with the page's values.
    pub fn page(
        &self,
        status: StatusCode,
        template: &str,
        nav: &str,
        page: impl Serialize,
    ) -> Response {
        match self
            .console()
            .views
            .render(template, self.context(nav, page))
        {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(template, error = %format!("{e:#}"), "console page failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the console could not render this page; the relay's log says why",
                )
                    .into_response()
            }
        }
    }

    /// An error page: the admin service's message, with a status from its kind.
    pub fn error(&self, e: outbox_admin::AdminError, back: &str) -> Response {
        use outbox_admin::ErrorKind;
        let (status, heading) = match e.kind() {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "Not possible"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "Not possible now"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Database unavailable"),
            ErrorKind::Failed => (StatusCode::INTERNAL_SERVER_ERROR, "Something failed"),
        };
        self.page(
            status,
            "error.html",
            "",
            serde_json::json!({ "heading": heading, "message": e.to_string(), "back": back }),
        )
    }
}

/// A plain refusal (no session to render a page with).
pub fn forbidden(message: &str) -> Response {
    (StatusCode::FORBIDDEN, message.to_string()).into_response()
}

fn parse(ts: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `3 min ago`, `in 20 s`.
fn ago(ts: String) -> String {
    let Some(t) = parse(&ts) else {
        return ts;
    };
    let seconds = (Utc::now() - t).num_seconds();
    if seconds >= 0 {
        format!("{} ago", age(seconds as f64))
    } else {
        format!("in {}", age(-seconds as f64))
    }
}

/// `2026-11-24 08:00:03 UTC`.
fn abstime(ts: String) -> String {
    parse(&ts)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or(ts)
}

/// Seconds as `12 s`, `3 min`, `5 h 2 min`, `2 d 4 h`.
fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// A symbol for a status, so it reads without colour.
fn symbol(status: String) -> &'static str {
    match status.as_str() {
        "succeeded" | "success" | "active" => "✓",
        "dead" | "invalid" => "✕",
        "pending" => "◷",
        "in_flight" => "↻",
        "cancelled" => "⊘",
        "paused" => "⏸",
        "disabled" => "⏻",
        _ => "!",
    }
}

/// Percent-encoded for a path segment or a query value.
/// A webhook name that is also a path of its own under `/ui/webhooks/`: `/ui/webhooks/new` is
/// the form that creates a webhook.
pub const RESERVED_NAME: &str = "new";

/// The path of a webhook's page: `/ui/webhooks/{name}`, except for a webhook named like the
/// create form, whose page is `/ui/webhooks/new?name=new` (the form's route shows it when asked
/// by name). Its other paths (`/ui/webhooks/new/edit`, `.../pause`, ...) need no exception.
pub fn webhook_href(name: &str) -> String {
    let encoded = urlencode(name.to_string());
    if name == RESERVED_NAME {
        format!("/ui/webhooks/{RESERVED_NAME}?name={encoded}")
    } else {
        format!("/ui/webhooks/{encoded}")
    }
}

fn urlencode(text: String) -> String {
    percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// JSON text pretty-printed; anything else as it is.
fn pretty(text: String) -> String {
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
            serde_json::to_string_pretty(&v).unwrap_or(text)
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_escapes() {
        let views = Views::new();
        let html = views
            .render(
                "error.html",
                minijinja::context! { heading => "x", message => "<img src=x onerror=alert(1)></script>" },
            )
            .unwrap();
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;&lt;&#x2f;script&gt;"),
            "{html}"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(5.0), "5 s");
        assert_eq!(age(125.0), "2 min");
        assert_eq!(age(3700.0), "1 h 1 min");
        assert_eq!(age(90000.0), "1 d 1 h");
        assert_eq!(pretty("{\"a\":1}".into()), "{\n  \"a\": 1\n}");
        assert_eq!(pretty("plain".into()), "plain");
    }
}
