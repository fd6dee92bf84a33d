//! `outbox-relay fields EVENT_TYPE [--entity-id ID]`: every merge field a template can use, with
//! an example value, from [`outbox_admin::fields`].

use chrono::{DateTime, Utc};
use outbox_admin::fields;
use serde_json::Value;

use crate::error::Failure;
use crate::output;

/// The command.
pub async fn run(
    url: &str,
    event_type: &str,
    entity_id: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let mut client = super::connect_migrated(url).await?;
    let found = fields::fields(&mut client, event_type, entity_id).await?;
    if json {
        return output::json(&found);
    }
    let e = &found.event;
    println!(
        "# merge fields from event {} {} ({} {}) of {}",
        e.id,
        e.event_type,
        e.entity,
        e.entity_id,
        at(&e.created_at)
    );
    let rows: Vec<Vec<String>> = found
        .fields
        .iter()
        .map(|f| vec![f.path.clone(), output::clip(&example(&f.example), 70)])
        .collect();
    output::table(&["path", "example"], &rows);
    for failed in &found.failed_relations {
        eprintln!(
            "warning: related.{} is not available: {}",
            failed.name, failed.error
        );
    }
    Ok(())
}

fn example(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn at(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
