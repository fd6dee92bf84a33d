//! Webhook and relation configuration, exactly as users write it: the `[[webhook]]` and
//! `[[relation]]` tables of an `apply` file, or the columns of `outbox.webhooks` /
//! `outbox.relations`. These are plain data; checking them (CEL compiles, templates compile, URL is
//! absolute, ...) is the job of the crates that use each field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redact::{is_sensitive, redact_url};

/// One webhook. Field names are the public config keys (docs/webhooks.md) and the `outbox.webhooks` columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Unique name; deliveries and metrics are labelled with it.
    pub name: String,
    /// Technical contact (e-mail), for people reading the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Event type patterns: exact (`order.created`), prefix (`order.*`) or everything (`*`).
    #[serde(default)]
    pub events: Vec<String>,
    /// CEL expression over `event` and `webhook`; the webhook fires only when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// URL template; values are percent-encoded.
    pub url: String,
    /// HTTP method: POST (default), PUT, PATCH, GET or DELETE.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers; values are templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Content type of the body; chooses how template values are escaped.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Body template; without one the default JSON envelope is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Higher priority is sent first.
    #[serde(default)]
    pub priority: i32,
    /// Fold a new event into a pending, never-attempted delivery of the same record.
    #[serde(default)]
    pub coalesce: bool,
    /// At most one delivery per record in flight, in event order.
    #[serde(default)]
    pub ordered: bool,
    /// Inactive webhooks queue deliveries without sending them.
    #[serde(default = "default_true")]
    pub active: bool,
    /// Time limit of one attempt (connect 5s of it), e.g. "30s".
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Attempts before a delivery is dead.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    /// Delays before attempts 2, 3, ...; the last one repeats. Default: the Standard Webhooks schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_schedule: Option<Vec<String>>,
    /// Most concurrent requests to this webhook, per relay process. Unset: the relay adapts the
    /// number to the receiver (it grows while answers come promptly and halves on timeouts,
    /// connection errors, 429 and 5xx), up to the relay's `concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<i32>,
    /// Credentials sent with every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Request signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureSpec>,
    /// Client certificate and private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// `[webhook.auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    /// Secret: shown as `***`, never logged.
    pub password: String,
}

/// `[webhook.signature]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureSpec {
    /// `standard` (Standard Webhooks v1) or `hmac-sha256` (raw-body HMAC in a header).
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// Signing secrets; several sign with each (key rotation). Shown as `***`, never logged.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// `hmac-sha256` only: header name (default `ms-signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `hmac-sha256` only: prefix before the digest (default `sha256=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `hmac-sha256` only: `hex-upper` (default), `hex` or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// `[webhook.tls]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM file path, or inline PEM, holding the client certificate and its key (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// PEM file path, or inline PEM, of a CA to trust for this webhook's server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
}

/// `[[relation]]`: how templates load `related.<name>` for events of `entity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationSpec {
    /// Entity of the events this relation applies to.
    pub entity: String,
    /// Name under `related.` in templates.
    pub name: String,
    /// SQL taking the event's `data` as `$1` (jsonb) and returning one json/jsonb value.
    pub query: String,
}

fn default_method() -> String {
    "POST".into()
}
fn default_content_type() -> String {
    "application/json".into()
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> String {
    "30s".into()
}
fn default_max_attempts() -> i32 {
    10
}
fn default_scheme() -> String {
    "standard".into()
}

impl WebhookSpec {
    /// The default retry schedule (Standard Webhooks): delays before attempts 2..=10.
    pub const DEFAULT_SCHEDULE: [Duration; 9] = [
        Duration::from_secs(5),
        Duration::from_secs(5 * 60),
        Duration::from_secs(30 * 60),
        Duration::from_secs(2 * 3600),
        Duration::from_secs(5 * 3600),
        Duration::from_secs(10 * 3600),
        Duration::from_secs(14 * 3600),
        Duration::from_secs(20 * 3600),
        Duration::from_secs(24 * 3600),
    ];

    /// A copy with every secret replaced by `***`, for display.
    pub fn redacted(&self) -> WebhookSpec {
        let mut spec = self.clone();
        if let Some(basic) = spec.auth.as_mut().and_then(|a| a.basic.as_mut()) {
            basic.password = "***".into();
        }
        if let Some(sig) = spec.signature.as_mut() {
            for s in &mut sig.secrets {
                *s = "***".into();
            }
        }
        if let Some(tls) = spec.tls.as_mut()
            && let Some(cert) = tls.client_cert.as_mut()
            && cert.contains("PRIVATE KEY")
        {
            *cert = "***".into();
        }
        for (name, value) in spec.headers.iter_mut() {
            if is_sensitive(name) {
                *value = "***".into();
            }
        }
        spec.url = redact_url(&spec.url);
        spec
    }

    /// Every secret value of this webhook (to keep them out of anything printed).
    pub fn secrets(&self) -> Vec<&str> {
        let mut out = Vec::new();
        if let Some(basic) = self.auth.as_ref().and_then(|a| a.basic.as_ref()) {
            out.push(basic.password.as_str());
        }
        if let Some(sig) = &self.signature {
            out.extend(sig.secrets.iter().map(String::as_str));
        }
        if let Some(cert) = self.tls.as_ref().and_then(|t| t.client_cert.as_deref())
            && cert.contains("PRIVATE KEY")
        {
            out.push(cert);
        }
        for (name, value) in &self.headers {
            if is_sensitive(name) {
                out.push(value.as_str());
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }
}

/// Parses a duration such as `30s`, `5m`, `2h`, `1d` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write e.g. \"30s\", \"5m\" or \"2h\"".into());
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("invalid duration {text:?} ({e}); write e.g. \"30s\", \"5m\" or \"2h\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design() {
        let spec: WebhookSpec =
            toml::from_str("name = \"a\"\nurl = \"http://x/\"\nevents = [\"*\"]").unwrap();
        assert_eq!(spec.method, "POST");
        assert_eq!(spec.content_type, "application/json");
        assert_eq!(spec.timeout, "30s");
        assert_eq!(spec.max_attempts, 10);
        assert_eq!(spec.max_in_flight, None, "adaptive");
        assert!(spec.active && !spec.coalesce && !spec.ordered);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<WebhookSpec>("name = \"a\"\nurl = \"http://x/\"\nretries = 3")
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `retries`"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("soon").unwrap_err().contains("\"soon\""));
    }

    #[test]
    fn redaction_hides_every_secret() {
        let spec: WebhookSpec = toml::from_str(
            r#"name = "a"
url = "http://x/"
[auth]
basic = { username = "u", password = "pw" }
[signature]
secrets = ["whsec_abc"]
[tls]
client_cert = """
-----BEGIN CERTIFICATE-----
Y2VydA==
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
c2VjcmV0a2V5
-----END PRIVATE KEY-----
"""
ca_cert = "/etc/relay/ca.pem""#,
        )
        .unwrap();
        let shown = serde_json::to_string(&spec.redacted()).unwrap();
        assert!(
            !shown.contains("pw")
                && !shown.contains("whsec_abc")
                && !shown.contains("c2VjcmV0a2V5"),
            "{shown}"
        );
        assert!(shown.contains("/etc/relay/ca.pem"), "{shown}");
        let secrets = spec.secrets();
        assert_eq!(secrets[..2], ["pw", "whsec_abc"]);
        assert!(secrets[2].contains("c2VjcmV0a2V5"));
    }

    #[test]
    fn credentials_in_headers_and_urls_are_redacted() {
        let spec: WebhookSpec = toml::from_str(
            r#"name = "a"
url = "https://relay:hunter2@x.example/hook/{{ id }}?api_key=k123&id={{ id }}&sig=abc"
headers = { "X-Api-Key" = "k456", Authorization = "Bearer t789", "X-Shop" = "{{ event.metadata.shop }}" }"#,
        )
        .unwrap();
        let shown = spec.redacted();
        assert_eq!(
            shown.url,
            "https://relay:***@x.example/hook/{{ id }}?api_key=***&id={{ id }}&sig=***"
        );
        assert_eq!(shown.headers["X-Api-Key"], "***");
        assert_eq!(shown.headers["Authorization"], "***");
        assert_eq!(shown.headers["X-Shop"], "{{ event.metadata.shop }}");
        let text = serde_json::to_string(&shown).unwrap();
        for secret in ["hunter2", "k123", "k456", "t789"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn a_user_without_password_is_a_credential_too() {
        let spec: WebhookSpec =
            toml::from_str("name = \"a\"\nurl = \"http://Token_55@host.example/x\"").unwrap();
        let shown = serde_json::to_string(&spec.redacted()).unwrap();
        assert!(!shown.contains("Token_55"), "{shown}");
        assert_eq!(spec.redacted().url, "http://***@host.example/x");
    }
}
