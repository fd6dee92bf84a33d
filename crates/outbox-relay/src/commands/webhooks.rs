//! `webhooks list`, `webhooks show NAME`, `webhooks pause|resume NAME`: [`outbox_admin::webhooks`],
//! printed.

use outbox_admin::webhooks::{self, Shown};
use serde_json::Value;

use crate::error::Failure;
use crate::output;

pub async fn list(url: &str, json: bool) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let shown = webhooks::list(&client).await?;
    if json {
        return output::json(&shown.iter().map(Shown::to_json).collect::<Vec<_>>());
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|w| {
            let c = &w.config;
            let events = c["events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                w.name.clone(),
                if w.active { "yes" } else { "no" }.into(),
                if w.valid { "yes".into() } else { "NO".into() },
                events,
                output::clip(c["url"].as_str().unwrap_or(""), 60),
                output::clip(
                    w.error
                        .as_deref()
                        .or(w.disabled_reason.as_deref())
                        .unwrap_or(""),
                    80,
                ),
            ]
        })
        .collect();
    output::table(
        &["name", "active", "valid", "events", "url", "error"],
        &rows,
    );
    Ok(())
}

pub async fn show(url: &str, name: &str, json: bool) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let w = webhooks::show(&client, name).await?;
    if json {
        return output::json(&w.to_json());
    }
    println!("name:   {}", w.name);
    println!("valid:  {}", if w.valid { "yes" } else { "NO" });
    if let Some(e) = &w.error {
        println!("error:  {e}");
    }
    if let Some(r) = &w.disabled_reason {
        println!("disabled: {r}");
    }
    if let Ok(text) = toml::to_string_pretty(&w.config) {
        println!("\n{text}");
    }
    Ok(())
}

/// `webhooks pause NAME` / `webhooks resume NAME`: the admin service's pause and resume, which the
/// console's buttons and the API call too.
pub async fn set_active(url: &str, name: &str, active: bool, json: bool) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    if active {
        webhooks::resume(&client, name).await?;
    } else {
        webhooks::pause(&client, name).await?;
    }
    if json {
        return output::json(&serde_json::json!({ "webhook": name, "active": active }));
    }
    if active {
        println!("resumed webhook {name:?}: what it has queued is sent");
    } else {
        println!(
            "paused webhook {name:?}: its deliveries queue without being sent until `outbox-relay webhooks resume {name}`"
        );
    }
    Ok(())
}
