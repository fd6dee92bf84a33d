use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use outbox_core::{WebhookSpec, parse_duration};
use outbox_renderer::Templates;

use crate::field_error::FieldError;
use crate::signature::Signer;
use crate::tls::TlsSettings;

/// A webhook compiled for sending.
pub struct Endpoint {
    pub id: i64,
    pub name: Arc<str>,
    pub active: bool,
    pub priority: i32,
    pub ordered: bool,
    /// The most requests in flight at once (`max_in_flight`); `None`: adaptive, up to the
    /// relay's `concurrency`.
    pub max_in_flight: Option<usize>,
    pub timeout: Duration,
    pub max_attempts: i32,
    /// Delays before attempts 2, 3, ...; the last repeats.
    pub schedule: Vec<Duration>,
    pub templates: Templates,
    pub signer: Option<Signer>,
    /// Precomputed `authorization` header value.
    pub authorization: Option<String>,
    /// Client certificate and extra trusted CAs (`[tls]`); `None` uses the shared default client.
    pub tls: Option<Arc<TlsSettings>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Longest attempt timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

impl Endpoint {
    /// Compiles the sending side of a webhook: templates, signature, auth, timing. Reports every
    /// problem at once. Patterns and filter are the matcher's to check.
    pub fn compile(id: i64, spec: &WebhookSpec) -> Result<Endpoint, Vec<FieldError>> {
        let mut errors = Vec::new();
        let timeout = match parse_duration(&spec.timeout) {
            Ok(d) if d.is_zero() => {
                errors.push(FieldError::new(
                    "timeout",
                    "must be more than zero, e.g. \"30s\"",
                ));
                Duration::from_secs(30)
            }
            Ok(d) if d > MAX_TIMEOUT => {
                errors.push(FieldError::new("timeout", "must be at most 1h"));
                MAX_TIMEOUT
            }
            Ok(d) => d,
            Err(e) => {
                errors.push(FieldError::new("timeout", e));
                Duration::from_secs(30)
            }
        };
        if spec.max_attempts < 1 {
            errors.push(FieldError::new(
                "max_attempts",
                format!("must be at least 1; got {}", spec.max_attempts),
            ));
        }
        if let Some(n) = spec.max_in_flight
            && n < 1
        {
            errors.push(FieldError::new(
                "max_in_flight",
                format!("must be at least 1 (or left out, to adapt to the receiver); got {n}"),
            ));
        }
        let schedule = match &spec.retry_schedule {
            None => WebhookSpec::DEFAULT_SCHEDULE.to_vec(),
            Some(steps) if steps.is_empty() => {
                errors.push(FieldError::new(
                    "retry_schedule",
                    "must list at least one delay, e.g. [\"5s\", \"5m\"], or be left out for the default",
                ));
                Vec::new()
            }
            Some(steps) => steps
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match parse_duration(s) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        errors.push(FieldError::new(format!("retry_schedule[{i}]"), e));
                        None
                    }
                })
                .collect(),
        };
        let templates = match Templates::compile(spec) {
            Ok(t) => {
                if let Err(e) = t.check_with_sample(&spec.name) {
                    let field = match &e {
                        outbox_renderer::RenderError::Template { field, .. }
                        | outbox_renderer::RenderError::TooLarge { field } => field.clone(),
                        outbox_renderer::RenderError::BadHeader { name } => {
                            format!("headers.{name}")
                        }
                        _ => "url".into(),
                    };
                    // Only the URL must render on a sample; bodies may need fields a sample lacks.
                    if field == "url" {
                        errors.push(FieldError::new("url", e.to_string()));
                    }
                }
                Some(t)
            }
            Err(template_errors) => {
                errors.extend(
                    template_errors
                        .into_iter()
                        .map(|e| FieldError::new(e.field, e.message)),
                );
                None
            }
        };
        let signer = match &spec.signature {
            None => None,
            Some(sig) => match Signer::from_spec(sig) {
                Ok(s) => Some(s),
                Err(errs) => {
                    errors.extend(errs.into_iter().map(|(f, m)| FieldError::new(f, m)));
                    None
                }
            },
        };
        let authorization = match spec.auth.as_ref().and_then(|a| a.basic.as_ref()) {
            None => None,
            Some(basic) => {
                if basic.username.is_empty() {
                    errors.push(FieldError::new("auth.basic.username", "must not be empty"));
                }
                if basic.username.contains(':') {
                    errors.push(FieldError::new(
                        "auth.basic.username",
                        "must not contain ':' (HTTP basic auth separates user and password with it)",
                    ));
                }
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", basic.username, basic.password));
                Some(format!("Basic {token}"))
            }
        };
        let tls = match &spec.tls {
            None => None,
            Some(tls_spec) => match TlsSettings::from_spec(tls_spec) {
                Ok(settings) => settings.map(Arc::new),
                Err(errs) => {
                    errors.extend(errs);
                    None
                }
            },
        };
        if tls.is_some()
            && spec
                .url
                .trim_start()
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        {
            errors.push(FieldError::new(
                "tls",
                "client_cert and ca_cert only apply to https:// URLs; the url starts with http://",
            ));
        }
        match (errors.is_empty(), templates) {
            (true, Some(templates)) => Ok(Endpoint {
                id,
                name: spec.name.as_str().into(),
                active: spec.active,
                priority: spec.priority,
                ordered: spec.ordered,
                max_in_flight: spec.max_in_flight.map(|n| n.max(1) as usize),
                timeout,
                max_attempts: spec.max_attempts.max(1),
                schedule,
                templates,
                signer,
                authorization,
                tls,
            }),
            _ => Err(errors),
        }
    }
}

impl Endpoint {
    /// Whether a certificate file this endpoint was compiled from changed on disk since (the
    /// catalog then compiles the webhook again, which rebuilds its HTTP client).
    pub fn tls_files_changed(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.files_changed())
    }
}

/// The live configuration the sender works from, swapped whole when it changes.
#[derive(Default)]
pub struct Directory {
    pub endpoints: HashMap<i64, Arc<Endpoint>>,
    /// Active endpoints, highest priority first: the order claims visit them.
    pub sendable: Vec<Arc<Endpoint>>,
    /// Relation queries by (entity, name).
    pub relations: HashMap<(String, String), String>,
}

impl Directory {
    pub fn new(
        endpoints: Vec<Arc<Endpoint>>,
        relations: HashMap<(String, String), String>,
    ) -> Directory {
        let mut sendable: Vec<Arc<Endpoint>> =
            endpoints.iter().filter(|e| e.active).cloned().collect();
        sendable.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        Directory {
            endpoints: endpoints.into_iter().map(|e| (e.id, e)).collect(),
            sendable,
            relations,
        }
    }
}
