//! Export: the webhooks (all, or those named) and their relations as a TOML
//! file that `apply` accepts, so a configuration can be reviewed, versioned or moved to another
//! database.
//!
//! Secrets are not written: each becomes a `${VAR}` placeholder, and a comment at the top names
//! every variable and what it must hold (`apply` reads them from its environment). The secrets are
//! those `webhooks show` hides: the basic-auth password, signing secrets, an inline client key, the
//! values of credential-like headers, and a URL's user info and credential-like query values.
//! Every other `${` is written `$${`, which `apply` reads back as a literal `${`.

use std::collections::BTreeSet;

use outbox_core::redact::{UrlCredential, is_sensitive, replace_url_credentials};
use outbox_core::{RelationSpec, WebhookSpec};
use toml::Value;

use outbox_catalog::{WEBHOOK_COLUMNS, webhook_row};

use crate::error::AdminError;

/// One secret left out of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// The environment variable `apply` reads it from.
    pub var: String,
    pub webhook: String,
    /// The config key it belongs to, e.g. `auth.basic.password`, `headers.X-Api-Key`.
    pub field: String,
}

/// An exported configuration.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The TOML file.
    pub text: String,
    /// Webhooks left out because their row cannot be read as a webhook: (name, reason).
    pub skipped: Vec<(String, String)>,
}

/// The TOML text of the webhooks named (every webhook when `names` is empty) and their relations.
pub async fn export(
    client: &tokio_postgres::Client,
    names: &[String],
) -> Result<Exported, AdminError> {
    let rows = client
        .query(
            &format!(
                "SELECT {WEBHOOK_COLUMNS} FROM outbox.webhooks
                 WHERE cardinality($1::text[]) = 0 OR name = ANY($1) ORDER BY name"
            ),
            &[&names],
        )
        .await?;
    let mut webhooks = Vec::new();
    let mut skipped = Vec::new();
    for row in &rows {
        let row = webhook_row(row)?;
        match row.spec {
            Ok(spec) => webhooks.push((spec, row.valid, row.error)),
            Err(reason) => skipped.push((row.name, reason)),
        }
    }
    let found: Vec<&str> = webhooks
        .iter()
        .map(|(s, _, _)| s.name.as_str())
        .chain(skipped.iter().map(|(n, _)| n.as_str()))
        .collect();
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| !found.contains(&n.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(AdminError::NoWebhooks {
            names: unknown.into_iter().cloned().collect(),
        });
    }
    let relations = relations_for(client, names.is_empty(), &webhooks).await?;

    let mut vars = BTreeSet::new();
    let mut placeholders = Vec::new();
    let mut body = String::new();
    for relation in &relations {
        body.push_str(&entry("relation", escaped(relation)?)?);
        body.push('\n');
    }
    for (spec, valid, error) in &webhooks {
        let (value, mut secrets) = webhook_value(spec, &mut vars)?;
        placeholders.append(&mut secrets);
        if !valid {
            body.push_str(&format!(
                "# invalid in the database, so `apply` will refuse it until it is fixed: {}\n",
                one_line(
                    error
                        .as_deref()
                        .unwrap_or("see `outbox-relay webhooks list`")
                )
            ));
        }
        let mut text = entry("webhook", value)?;
        if spec.headers.is_empty() {
            // Written as an empty `[webhook.headers]` table: leave it out.
            text = text.replace("\n\n[webhook.headers]\n", "\n");
        }
        body.push_str(&text);
        body.push('\n');
    }
    for (name, reason) in &skipped {
        body.push_str(&format!(
            "# webhook {name:?} is not exported: its row cannot be read as a webhook ({})\n\n",
            one_line(reason)
        ));
    }
    Ok(Exported {
        text: header(webhooks.len(), relations.len(), &placeholders) + &body,
        skipped,
    })
}

/// The relations to export: all of them when exporting every webhook, else those the exported
/// webhooks' templates use (by name, for any entity).
async fn relations_for(
    client: &tokio_postgres::Client,
    all: bool,
    webhooks: &[(WebhookSpec, bool, Option<String>)],
) -> Result<Vec<RelationSpec>, AdminError> {
    let rows = client
        .query(
            "SELECT entity, name, query FROM outbox.relations ORDER BY entity, name",
            &[],
        )
        .await?;
    let mut used = BTreeSet::new();
    let mut every = all;
    for (spec, _, _) in webhooks {
        if let Ok(templates) = outbox_renderer::Templates::compile(spec) {
            used.extend(templates.relations().iter().cloned());
            every |= templates.uses_every_relation();
        }
    }
    Ok(rows
        .iter()
        .map(|r| RelationSpec {
            entity: r.get(0),
            name: r.get(1),
            query: r.get(2),
        })
        .filter(|r| every || used.contains(&r.name))
        .collect())
}

/// A webhook with its secrets replaced by placeholders (and every other `${` escaped), and the
/// placeholders.
fn webhook_value(
    spec: &WebhookSpec,
    vars: &mut BTreeSet<String>,
) -> Result<(WebhookSpec, Vec<Placeholder>), AdminError> {
    let mut out: WebhookSpec = escaped(spec)?;
    let prefix = var_name(&spec.name);
    let mut placeholders = Vec::new();
    let mut placeholder = |field: String, suffix: &str| {
        let var = unique(vars, format!("{prefix}_{}", var_name(suffix)));
        placeholders.push(Placeholder {
            var: var.clone(),
            webhook: spec.name.clone(),
            field,
        });
        format!("${{{var}}}")
    };
    out.url = replace_url_credentials(&out.url, |which, _| match which {
        UrlCredential::Password => placeholder("url (password)".into(), "url_password"),
        UrlCredential::User => placeholder("url (user)".into(), "url_user"),
        UrlCredential::Parameter(name) => placeholder(
            format!("url (query parameter {name})"),
            &format!("url_{name}"),
        ),
    });
    for (name, header) in out.headers.iter_mut() {
        if is_sensitive(name) {
            *header = placeholder(format!("headers.{name}"), &format!("header_{name}"));
        }
    }
    if let Some(basic) = out.auth.as_mut().and_then(|a| a.basic.as_mut()) {
        basic.password = placeholder("auth.basic.password".into(), "password");
    }
    if let Some(signature) = out.signature.as_mut() {
        let several = signature.secrets.len() > 1;
        for (i, secret) in signature.secrets.iter_mut().enumerate() {
            let suffix = if several {
                format!("signing_secret_{}", i + 1)
            } else {
                "signing_secret".into()
            };
            *secret = placeholder(format!("signature.secrets[{i}]"), &suffix);
        }
    }
    if let Some(cert) = out.tls.as_mut().and_then(|t| t.client_cert.as_mut())
        && cert.contains("PRIVATE KEY")
    {
        *cert = placeholder(
            "tls.client_cert (certificate and private key, PEM)".into(),
            "client_cert",
        );
    }
    Ok((out, placeholders))
}

/// A copy with every `${` in every string written `$${`, so `apply` does not take it for a
/// variable.
fn escaped<T: serde::Serialize + serde::de::DeserializeOwned>(item: &T) -> Result<T, AdminError> {
    let value = Value::try_from(item).map_err(toml_error)?;
    escape(value).try_into().map_err(toml_error)
}

/// `[[key]]` with the item's keys, in their documented order.
fn entry<T: serde::Serialize>(key: &str, item: T) -> Result<String, AdminError> {
    #[derive(serde::Serialize)]
    struct Doc<T> {
        #[serde(flatten)]
        entries: std::collections::BTreeMap<String, [T; 1]>,
    }
    let doc = Doc {
        entries: [(key.to_string(), [item])].into(),
    };
    let text = toml::to_string_pretty(&doc).map_err(toml_error)?;
    Ok(text.trim_end().to_string() + "\n")
}

fn toml_error(e: impl std::fmt::Display) -> AdminError {
    AdminError::Render {
        message: format!("cannot write TOML: {e}"),
    }
}

/// Every `${` in every string written `$${`, so `apply` does not take it for a variable.
fn escape(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("${", "$${")),
        Value::Array(items) => Value::Array(items.into_iter().map(escape).collect()),
        Value::Table(t) => Value::Table(t.into_iter().map(|(k, v)| (k, escape(v))).collect()),
        other => other,
    }
}

/// `carrier-shipments` → `CARRIER_SHIPMENTS`: upper case, anything but letters and digits as `_`.
fn var_name(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_string();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("WEBHOOK_{out}")
    } else {
        out
    }
}

/// `name`, or `name_2`, `name_3`, ... if taken.
fn unique(vars: &mut BTreeSet<String>, name: String) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while vars.contains(&candidate) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    vars.insert(candidate.clone());
    candidate
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn header(webhooks: usize, relations: usize, placeholders: &[Placeholder]) -> String {
    let mut out = format!(
        "# outbox-relay webhooks export: {webhooks} webhook{}, {relations} relation{}.\n\
         # Apply it with `outbox-relay apply FILE` (add --prune to remove webhooks not in it).\n",
        if webhooks == 1 { "" } else { "s" },
        if relations == 1 { "" } else { "s" },
    );
    if placeholders.is_empty() {
        out.push_str("# It holds no secrets.\n\n");
        return out;
    }
    out.push_str(
        "# Secrets are not in this file: each is a ${VAR} placeholder. Set these environment\n\
         # variables to the secret values before applying it:\n",
    );
    let width = placeholders.iter().map(|p| p.var.len()).max().unwrap_or(0);
    for p in placeholders {
        out.push_str(&format!(
            "#   {:<width$}  webhook {:?}, {}\n",
            p.var, p.webhook, p.field
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_are_shell_safe_and_unique() {
        assert_eq!(var_name("carrier-shipments"), "CARRIER_SHIPMENTS");
        assert_eq!(var_name("héllo wörld!!"), "H_LLO_W_RLD");
        assert_eq!(var_name("3pl"), "WEBHOOK_3PL");
        assert_eq!(var_name("--"), "WEBHOOK_");
        let mut vars = BTreeSet::new();
        assert_eq!(unique(&mut vars, "A_PASSWORD".into()), "A_PASSWORD");
        assert_eq!(unique(&mut vars, "A_PASSWORD".into()), "A_PASSWORD_2");
    }

    #[test]
    fn secrets_become_placeholders_and_dollar_braces_are_escaped() {
        let spec: WebhookSpec = toml::from_str(
            r#"name = "crm-orders"
events = ["order.*"]
url = "https://relay:pw@crm.example/o/{{ id }}?api_key=k1&id={{ id }}"
headers = { "X-Api-Key" = "k2", "X-Shop" = "${shop}" }
body = '{"note": "costs ${price}"}'
[auth]
basic = { username = "relay", password = "p" }
[signature]
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"]"#,
        )
        .unwrap();
        let mut vars = BTreeSet::new();
        let (value, placeholders) = webhook_value(&spec, &mut vars).unwrap();
        let text = entry("webhook", value).unwrap();
        for secret in ["pw", "k1", "k2", "\"p\"", "whsec_"] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
        }
        assert!(
            text.contains(
                "https://relay:${CRM_ORDERS_URL_PASSWORD}@crm.example/o/{{ id }}?api_key=${CRM_ORDERS_URL_API_KEY}&id={{ id }}"
            ),
            "{text}"
        );
        assert!(
            text.contains("$${shop}") && text.contains("costs $${price}"),
            "{text}"
        );
        let vars: Vec<&str> = placeholders.iter().map(|p| p.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "CRM_ORDERS_URL_PASSWORD",
                "CRM_ORDERS_URL_API_KEY",
                "CRM_ORDERS_HEADER_X_API_KEY",
                "CRM_ORDERS_PASSWORD",
                "CRM_ORDERS_SIGNING_SECRET_1",
                "CRM_ORDERS_SIGNING_SECRET_2",
            ]
        );
    }
}
