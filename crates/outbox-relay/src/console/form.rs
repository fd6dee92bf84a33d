//! The webhook form: the configuration keys as form fields, turned into the table of an `apply`
//! file's `[[webhook]]` so the admin service checks it exactly as `apply` does, and problems
//! placed next to the field they name.
//!
//! Secrets are never sent to the browser: an edited webhook's URL, headers and `auth`, `signature`
//! and `tls` sections are shown as `webhooks show` shows them (secrets as `***`). A value sent
//! back unchanged keeps the stored secret; a changed one must spell the secret out (or name a
//! `${VAR}`), and a `***` left in a changed value is refused.

use std::collections::BTreeMap;

use outbox_core::WebhookSpec;
use outbox_core::redact::redact_url;
use serde::Serialize;

use super::Form;

/// One field of the form.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    pub key: &'static str,
    pub label: &'static str,
    pub kind: &'static str,
    pub hint: &'static str,
    pub rows: u8,
    pub options: &'static [&'static str],
    pub readonly: bool,
    pub value: String,
    /// The problems found with it.
    pub error: Vec<String>,
}

const METHODS: &[&str] = &["POST", "PUT", "PATCH", "GET", "DELETE"];

/// (key, label, kind, hint, rows)
const FIELDS: &[(&str, &str, &str, &str, u8)] = &[
    (
        "name",
        "Name",
        "text",
        "Unique; deliveries and metrics are labelled with it.",
        0,
    ),
    (
        "contact",
        "Contact",
        "text",
        "Technical contact (e-mail), optional.",
        0,
    ),
    (
        "events",
        "Events",
        "textarea",
        "Event type patterns, one a line: order.created, order.* or *.",
        3,
    ),
    (
        "filter",
        "Filter (CEL)",
        "textarea",
        "Optional, e.g. event.data.carrier == \"dhl\".",
        3,
    ),
    (
        "url",
        "URL",
        "text",
        "A template; values are URL-encoded, e.g. https://crm.example/orders/{{ entity_id }}.",
        0,
    ),
    ("method", "Method", "select", "", 0),
    (
        "headers",
        "Headers",
        "textarea",
        "One a line, Name: value (values are templates).",
        3,
    ),
    (
        "content_type",
        "Content type",
        "text",
        "Chooses how template values are escaped.",
        0,
    ),
    (
        "body",
        "Body template",
        "textarea",
        "Empty: the default JSON envelope.",
        6,
    ),
    (
        "priority",
        "Priority",
        "text",
        "Higher is sent first (default 0).",
        0,
    ),
    ("timeout", "Timeout", "text", "Per attempt, e.g. 30s.", 0),
    (
        "max_attempts",
        "Max attempts",
        "text",
        "Before a delivery is dead (default 10).",
        0,
    ),
    (
        "retry_schedule",
        "Retry schedule",
        "text",
        "Optional delays before attempts 2, 3, …, e.g. 5s, 5m, 30m.",
        0,
    ),
    (
        "max_in_flight",
        "Max in flight",
        "text",
        "Optional; empty adapts to the receiver.",
        0,
    ),
    (
        "coalesce",
        "Coalesce pending deliveries of a record",
        "checkbox",
        "",
        0,
    ),
    ("ordered", "Ordered per record", "checkbox", "", 0),
    (
        "active",
        "Active",
        "checkbox",
        "Inactive webhooks queue without sending.",
        0,
    ),
    (
        "auth",
        "[auth] (TOML)",
        "textarea",
        "e.g. basic = { username = \"relay\", password = \"${CRM_PASSWORD}\" }",
        3,
    ),
    (
        "signature",
        "[signature] (TOML)",
        "textarea",
        "e.g. scheme = \"standard\"\nsecrets = [\"whsec_…\"]",
        3,
    ),
    (
        "tls",
        "[tls] (TOML)",
        "textarea",
        "client_cert / ca_cert: PEM file paths or inline PEM.",
        3,
    ),
];

/// The form's values, by key.
pub type Values = BTreeMap<&'static str, String>;

/// The values of a new webhook.
pub fn blank() -> Values {
    let mut v: Values = FIELDS.iter().map(|f| (f.0, String::new())).collect();
    v.insert("method", "POST".into());
    v.insert("content_type", "application/json".into());
    v.insert("timeout", "30s".into());
    v.insert("max_attempts", "10".into());
    v.insert("priority", "0".into());
    v.insert("active", "true".into());
    v
}

/// The values of a stored webhook, secrets as `***`.
pub fn of(spec: &WebhookSpec) -> Values {
    let shown = spec.redacted();
    let mut v = blank();
    v.insert("name", shown.name.clone());
    v.insert("contact", shown.contact.clone().unwrap_or_default());
    v.insert("events", shown.events.join("\n"));
    v.insert("filter", shown.filter.clone().unwrap_or_default());
    v.insert("url", shown.url.clone());
    v.insert("method", shown.method.to_ascii_uppercase());
    v.insert(
        "headers",
        shown
            .headers
            .iter()
            .map(|(k, val)| format!("{k}: {val}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    v.insert("content_type", shown.content_type.clone());
    v.insert("body", shown.body.clone().unwrap_or_default());
    v.insert("priority", shown.priority.to_string());
    v.insert("timeout", shown.timeout.clone());
    v.insert("max_attempts", shown.max_attempts.to_string());
    v.insert(
        "retry_schedule",
        shown.retry_schedule.clone().unwrap_or_default().join(", "),
    );
    v.insert(
        "max_in_flight",
        shown
            .max_in_flight
            .map(|n| n.to_string())
            .unwrap_or_default(),
    );
    for (key, on) in [
        ("coalesce", shown.coalesce),
        ("ordered", shown.ordered),
        ("active", shown.active),
    ] {
        v.insert(key, if on { "true".into() } else { String::new() });
    }
    v.insert("auth", section(&shown.auth));
    v.insert("signature", section(&shown.signature));
    v.insert("tls", section(&shown.tls));
    v
}

fn section<T: Serialize>(value: &Option<T>) -> String {
    value
        .as_ref()
        .and_then(|v| toml::to_string(v).ok())
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// The values a browser sent.
pub fn submitted(form: &Form) -> Values {
    FIELDS
        .iter()
        .map(|f| (f.0, form.get(f.0).replace("\r\n", "\n")))
        .collect()
}

/// The fields to show, with their values and problems. `name_fixed`: the name cannot change.
pub fn fields(values: &Values, problems: &[(String, String)], name_fixed: bool) -> Vec<Field> {
    FIELDS
        .iter()
        .map(|(key, label, kind, hint, rows)| Field {
            key,
            label,
            kind,
            hint,
            rows: *rows,
            options: if *key == "method" { METHODS } else { &[] },
            readonly: name_fixed && *key == "name",
            value: values.get(key).cloned().unwrap_or_default(),
            error: problems
                .iter()
                .filter(|(f, _)| top(f) == *key)
                .map(|(_, m)| m.clone())
                .collect(),
        })
        .collect()
}

/// Problems that name no field of the form.
pub fn general(problems: &[(String, String)]) -> Vec<String> {
    problems
        .iter()
        .filter(|(f, _)| !FIELDS.iter().any(|d| d.0 == top(f)))
        .map(|(f, m)| {
            if f.is_empty() {
                m.clone()
            } else {
                format!("{f}: {m}")
            }
        })
        .collect()
}

/// The form key a problem's field belongs to: `events[0]` → `events`, `auth.basic.password` → `auth`.
fn top(field: &str) -> &str {
    field.split(['.', '[']).next().unwrap_or(field)
}

/// The `[[webhook]]` table of the submitted values, and the problems found while reading the
/// form itself (a header line without a colon, a section that is not TOML). `stored`: the
/// webhook being edited, whose secrets unchanged values keep.
pub fn to_item(
    values: &Values,
    stored: Option<&WebhookSpec>,
) -> (toml::Value, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let mut t = toml::Table::new();
    let text = |key: &str| {
        values
            .get(key)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let put = |t: &mut toml::Table, key: &str, value: toml::Value| {
        t.insert(key.to_string(), value);
    };
    put(&mut t, "name", text("name").into());
    for key in ["contact", "filter", "body"] {
        let raw = values.get(key).cloned().unwrap_or_default();
        if !raw.trim().is_empty() {
            put(
                &mut t,
                key,
                if key == "body" {
                    raw
                } else {
                    raw.trim().to_string()
                }
                .into(),
            );
        }
    }
    let list = |s: String| -> toml::Value {
        toml::Value::Array(
            s.split(['\n', ','])
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| toml::Value::String(x.to_string()))
                .collect(),
        )
    };
    put(&mut t, "events", list(text("events")));
    // The URL: unchanged from what was shown keeps the stored one (with its credentials).
    let url = text("url");
    let url = match stored {
        Some(s) if url == redact_url(&s.url) => keep(&s.url),
        _ => url,
    };
    put(&mut t, "url", url.into());
    put(&mut t, "method", text("method").into());
    let mut headers = toml::Table::new();
    for (i, line) in text("headers").lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) => {
                let (name, value) = (name.trim().to_string(), value.trim().to_string());
                let value = match stored.and_then(|s| s.headers.get(&name)) {
                    Some(old) if value == "***" => keep(old),
                    _ => value,
                };
                headers.insert(name, value.into());
            }
            None => problems.push((
                "headers".into(),
                format!(
                    "line {}: write Name: value, e.g. X-Shop: {{{{ event.metadata.shop }}}}",
                    i + 1
                ),
            )),
        }
    }
    put(&mut t, "headers", toml::Value::Table(headers));
    put(&mut t, "content_type", text("content_type").into());
    for key in ["priority", "max_attempts", "max_in_flight"] {
        let v = text(key);
        if v.is_empty() && key == "max_in_flight" {
            continue;
        }
        // A number when it is one; otherwise the text, which the checks report as mistyped.
        let value = v
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or(toml::Value::String(v));
        put(&mut t, key, value);
    }
    put(&mut t, "timeout", text("timeout").into());
    let schedule = text("retry_schedule");
    if !schedule.is_empty() {
        put(&mut t, "retry_schedule", list(schedule.replace(' ', ",")));
    }
    for key in ["coalesce", "ordered", "active"] {
        put(&mut t, key, (text(key) == "true").into());
    }
    for key in ["auth", "signature", "tls"] {
        let given = text(key);
        let stored_value = stored.and_then(|s| match key {
            "auth" => s.auth.as_ref().and_then(|v| toml::Value::try_from(v).ok()),
            "signature" => s
                .signature
                .as_ref()
                .and_then(|v| toml::Value::try_from(v).ok()),
            _ => s.tls.as_ref().and_then(|v| toml::Value::try_from(v).ok()),
        });
        let shown = stored.map(|s| of(s).get(key).cloned().unwrap_or_default());
        if given.is_empty() {
            continue;
        }
        if shown.as_deref() == Some(given.as_str()) {
            if let Some(v) = stored_value {
                put(&mut t, key, escape(v));
            }
            continue;
        }
        if given.contains("***") {
            problems.push((
                key.into(),
                "contains *** where a secret was hidden; write the secret again (or ${VAR}), or leave the section as it was shown".into(),
            ));
            continue;
        }
        match given.parse::<toml::Table>() {
            Ok(table) => put(&mut t, key, toml::Value::Table(table)),
            Err(e) => problems.push((key.into(), format!("is not TOML: {}", e.message()))),
        }
    }
    (toml::Value::Table(t), problems)
}

/// A stored value as form text: `${` written `$${`, so it is not read as a variable again.
fn keep(stored: &str) -> String {
    stored.replace("${", "$${")
}

fn escape(value: toml::Value) -> toml::Value {
    match value {
        toml::Value::String(s) => toml::Value::String(keep(&s)),
        toml::Value::Array(items) => toml::Value::Array(items.into_iter().map(escape).collect()),
        toml::Value::Table(t) => {
            toml::Value::Table(t.into_iter().map(|(k, v)| (k, escape(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> WebhookSpec {
        toml::from_str(
            r#"name = "crm"
events = ["order.*"]
url = "https://u:pw@crm.example/o"
headers = { "X-Api-Key" = "k1", "X-Shop" = "nl" }
[auth]
basic = { username = "relay", password = "s3cret" }"#,
        )
        .unwrap()
    }

    #[test]
    fn unchanged_secrets_are_kept_and_never_shown() {
        let spec = stored();
        let values = of(&spec);
        let shown = format!("{values:?}");
        for secret in ["s3cret", "k1", ":pw@"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        let (item, problems) = to_item(&values, Some(&spec));
        assert!(problems.is_empty(), "{problems:?}");
        let back: WebhookSpec = item.try_into().unwrap();
        assert_eq!(back.url, spec.url);
        assert_eq!(back.headers, spec.headers);
        assert_eq!(back.auth, spec.auth);
    }

    #[test]
    fn a_changed_section_with_a_hidden_secret_is_refused_next_to_its_field() {
        let spec = stored();
        let mut values = of(&spec);
        values.insert(
            "auth",
            "basic = { username = \"other\", password = \"***\" }".into(),
        );
        values.insert("headers", "no colon here".into());
        let (_, problems) = to_item(&values, Some(&spec));
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["headers", "auth"]);
        let shown = fields_of(&values, &problems);
        assert_eq!(shown["auth"].len(), 1);
    }

    fn fields_of(
        values: &Values,
        problems: &[(String, String)],
    ) -> BTreeMap<&'static str, Vec<String>> {
        fields(values, problems, true)
            .into_iter()
            .map(|f| (f.key, f.error))
            .collect()
    }
}
