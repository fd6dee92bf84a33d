//! Relay configuration (docs/operations.md, "Configuration"): `--config relay.toml`, every key also settable as
//! `OUTBOX_<KEY>` (nested with `__`). Unknown keys, in the file or as `OUTBOX_*` variables, are
//! errors. Validation is pure; nothing here opens a connection.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Failure;

/// Environment variables with the `OUTBOX_` prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["OUTBOX_ADMIN_TOKEN"];

/// Every key of the relay configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Postgres URL (falls back to `DATABASE_URL`).
    #[serde(default)]
    pub database_url: Option<String>,
    /// Address of the HTTP endpoint (metrics, health, admin API).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Requests in flight at once, over all webhooks.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Most events routed, or deliveries claimed, by one statement.
    #[serde(default = "default_claim_batch")]
    pub claim_batch: usize,
    /// How often to look for work without a notification, e.g. "500ms".
    #[serde(default = "default_poll_interval")]
    pub poll_interval: String,
    /// Whether inserting events sends NOTIFY (off: polling alone; for very high commit rates).
    #[serde(default = "default_true", deserialize_with = "on_off")]
    pub notify: bool,
    /// How long an in-flight claim lives before another relay may take it over.
    #[serde(default = "default_lease")]
    pub lease: String,
    /// Succeeded deliveries and their attempts older than this are deleted.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Networks the relay may send to even though they are denied (e.g. a link-local receiver).
    #[serde(default)]
    pub allow_networks: Vec<IpNet>,
    /// Networks the relay must never send to, in addition to link-local ones.
    #[serde(default)]
    pub deny_networks: Vec<IpNet>,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Whether the console at `/ui/` may change webhooks (create, edit, delete, pause, resume);
    /// `false` for deployments whose webhooks are managed with `apply` from files.
    #[serde(default = "default_true", deserialize_with = "on_off")]
    pub console_edit: bool,
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_concurrency() -> usize {
    256
}
fn default_claim_batch() -> usize {
    1000
}
fn default_poll_interval() -> String {
    "500ms".into()
}
fn default_true() -> bool {
    true
}
fn default_lease() -> String {
    "60s".into()
}
fn default_retention() -> String {
    "7d".into()
}
fn default_log_format() -> String {
    "text".into()
}

fn on_off<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OnOff {
        Bool(bool),
        Text(String),
    }
    match OnOff::deserialize(d)? {
        OnOff::Bool(b) => Ok(b),
        OnOff::Text(t) => match t.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "must be on or off (true or false), got {other:?}"
            ))),
        },
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            database_url: None,
            listen: default_listen(),
            concurrency: default_concurrency(),
            claim_batch: default_claim_batch(),
            poll_interval: default_poll_interval(),
            notify: true,
            lease: default_lease(),
            retention: default_retention(),
            allow_networks: Vec::new(),
            deny_networks: Vec::new(),
            log_format: default_log_format(),
            console_edit: true,
        }
    }
}

/// The parsed durations and addresses of a valid configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub listen: SocketAddr,
    pub concurrency: usize,
    pub claim_batch: usize,
    pub poll_interval: Duration,
    pub notify: bool,
    pub lease: Duration,
    pub retention: Duration,
    pub allow_networks: Vec<IpNet>,
    pub deny_networks: Vec<IpNet>,
    pub json_logs: bool,
    /// Bearer token the admin API requires (`OUTBOX_ADMIN_TOKEN`); without one the HTTP endpoint
    /// only listens on loopback addresses.
    pub admin_token: Option<String>,
    /// Whether the console may change webhooks (`console_edit`).
    pub console_edit: bool,
}

impl RelayConfig {
    /// Defaults, then the file (if any), then `OUTBOX_*` variables.
    pub fn load(file: Option<&Path>) -> Result<RelayConfig, Failure> {
        let mut figment = Figment::from(Serialized::defaults(RelayConfig::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Failure::invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        for (key, _) in std::env::vars() {
            if let Some(rest) = key.strip_prefix("OUTBOX_")
                && !NON_CONFIG_ENV.contains(&key.as_str())
            {
                let name = rest.split("__").next().unwrap_or(rest).to_ascii_lowercase();
                if !KEYS.contains(&name.as_str()) {
                    return Err(Failure::invalid(format!(
                        "environment variable {key} is not a relay setting; known: {}",
                        KEYS.iter()
                            .map(|k| format!("OUTBOX_{}", k.to_ascii_uppercase()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
        figment = figment.merge(
            Env::prefixed("OUTBOX_")
                .split("__")
                .filter(|k| !k.as_str().eq_ignore_ascii_case("admin_token")),
        );
        figment.extract().map_err(|e| {
            let source = file
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "environment".into());
            Failure::invalid(format!("invalid relay configuration ({source}): {e}"))
        })
    }

    /// Checks every value, reporting all problems at once.
    pub fn settings(&self, database_url: Option<String>) -> Result<Settings, Failure> {
        let mut problems = Vec::new();
        let url = database_url
            .or_else(|| self.database_url.clone())
            .or_else(|| std::env::var("DATABASE_URL").ok());
        if url.is_none() {
            problems.push("database_url: not set; pass --database-url, set DATABASE_URL or database_url in the config file".to_string());
        }
        let listen = self.listen.parse::<SocketAddr>().unwrap_or_else(|e| {
            problems.push(format!(
                "listen: {:?} is not an address such as 127.0.0.1:9464 ({e})",
                self.listen
            ));
            SocketAddr::from(([127, 0, 0, 1], 9464))
        });
        let mut duration = |key: &str, text: &str| match outbox_core::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                problems.push(format!("{key}: must be more than zero"));
                Duration::from_secs(1)
            }
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                Duration::from_secs(1)
            }
        };
        let poll_interval = duration("poll_interval", &self.poll_interval);
        let lease = duration("lease", &self.lease);
        let retention = duration("retention", &self.retention);
        if self.concurrency == 0 {
            problems.push("concurrency: must be at least 1".into());
        }
        if self.claim_batch == 0 {
            problems.push("claim_batch: must be at least 1".into());
        }
        let json_logs = match self.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                problems.push(format!("log_format: must be text or json, got {other:?}"));
                false
            }
        };
        if !problems.is_empty() {
            return Err(Failure::invalid(format!(
                "invalid relay configuration: {}",
                problems.join("; ")
            )));
        }
        Ok(Settings {
            database_url: url.unwrap_or_default(),
            listen,
            concurrency: self.concurrency,
            claim_batch: self.claim_batch,
            poll_interval,
            notify: self.notify,
            lease,
            retention,
            allow_networks: self.allow_networks.clone(),
            deny_networks: self.deny_networks.clone(),
            json_logs,
            admin_token: std::env::var("OUTBOX_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            console_edit: self.console_edit,
        })
    }
}

const KEYS: &[&str] = &[
    "database_url",
    "listen",
    "concurrency",
    "claim_batch",
    "poll_interval",
    "notify",
    "lease",
    "retention",
    "allow_networks",
    "deny_networks",
    "log_format",
    "console_edit",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("relay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(&path, "concurrency = 8\nconcurrancy = 9\n").unwrap();
        let err = RelayConfig::load(Some(&path)).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(err.message.contains("concurrancy"), "{}", err.message);
        std::fs::write(
            &path,
            "concurrency = 8\nnotify = \"off\"\npoll_interval = \"50ms\"\n",
        )
        .unwrap();
        let config = RelayConfig::load(Some(&path)).unwrap();
        assert_eq!(config.concurrency, 8);
        assert!(!config.notify);
        let s = config.settings(Some("postgres://x/y".into())).unwrap();
        assert_eq!(s.poll_interval, Duration::from_millis(50));
    }

    #[test]
    fn bad_values_are_all_reported() {
        let config = RelayConfig {
            lease: "forever".into(),
            log_format: "xml".into(),
            listen: "nowhere".into(),
            ..RelayConfig::default()
        };
        let err = config.settings(Some("postgres://x/y".into())).unwrap_err();
        for key in ["lease", "log_format", "listen"] {
            assert!(err.message.contains(key), "{}", err.message);
        }
    }
}
