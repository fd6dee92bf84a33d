//! `deliveries list|show|retry`: the webhook queue.

use chrono::{DateTime, Utc};
use outbox_core::redact::redact_urls_in;
use serde::Serialize;

use crate::cli::{ListArgs, RetryArgs};
use crate::error::Failure;
use crate::output;

const STATUSES: [&str; 5] = ["pending", "in_flight", "succeeded", "dead", "cancelled"];

#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub webhook: String,
    pub event_id: i64,
    pub event_type: String,
    pub entity: String,
    pub entity_id: String,
    pub status: String,
    pub attempts: i32,
    pub priority: i32,
    pub coalesced: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub last_response: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: Option<i32>,
    pub status: Option<i32>,
    pub outcome: String,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// One delivery with every attempt (`deliveries show`, `GET /api/deliveries/{id}`): the fields of
/// [`DeliveryView`] in order, its attempt counter under `attempt_count`, then `attempts`, the list
/// of attempts. (Two keys named `attempts` would leave JSON readers with only the last.)
#[derive(Debug)]
pub struct DeliveryDetail {
    pub delivery: DeliveryView,
    pub attempts: Vec<AttemptView>,
}

impl Serialize for DeliveryDetail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let fields = serde_json::to_value(&self.delivery).map_err(S::Error::custom)?;
        let mut map = serializer.serialize_map(None)?;
        for key in COLUMNS.split(',').map(str::trim) {
            let name = if key == "attempts" {
                "attempt_count"
            } else {
                key
            };
            map.serialize_entry(name, &fields[key])?;
        }
        map.serialize_entry("attempts", &self.attempts)?;
        map.end()
    }
}

const COLUMNS: &str = "id, webhook, event_id, event_type, entity, entity_id, status, attempts, priority, \
    coalesced, created_at, updated_at, next_attempt_at, last_status, last_error, last_response";

fn view(row: &tokio_postgres::Row) -> Result<DeliveryView, tokio_postgres::Error> {
    Ok(DeliveryView {
        id: row.try_get(0)?,
        webhook: row.try_get(1)?,
        event_id: row.try_get(2)?,
        event_type: row.try_get(3)?,
        entity: row.try_get(4)?,
        entity_id: row.try_get(5)?,
        status: row.try_get(6)?,
        attempts: row.try_get(7)?,
        priority: row.try_get(8)?,
        coalesced: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
        next_attempt_at: row.try_get(12)?,
        last_status: row.try_get(13)?,
        // Errors are redacted when recorded; rows recorded by older relays are redacted here.
        last_error: row
            .try_get::<_, Option<String>>(14)?
            .map(|e| redact_urls_in(&e)),
        last_response: row.try_get(15)?,
    })
}

/// Query behind `deliveries list` and `GET /api/deliveries`.
pub async fn query(
    client: &tokio_postgres::Client,
    status: Option<&str>,
    webhook: Option<&str>,
    entity: Option<&str>,
    entity_id: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryView>, Failure> {
    if let Some(s) = status
        && !STATUSES.contains(&s)
    {
        return Err(Failure::invalid(format!(
            "unknown status {s:?}; use one of {}",
            STATUSES.join(", ")
        )));
    }
    if !(1..=10_000).contains(&limit) {
        return Err(Failure::invalid("--limit must be between 1 and 10000"));
    }
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM outbox.delivery_log
                 WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR webhook = $2)
                   AND ($3::text IS NULL OR entity = $3) AND ($4::text IS NULL OR entity_id = $4)
                 ORDER BY id DESC LIMIT $5"
            ),
            &[&status, &webhook, &entity, &entity_id, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| view(r).map_err(Failure::from))
        .collect()
}

/// One delivery and its attempts, for `deliveries show` and `GET /api/deliveries/{id}`.
pub async fn fetch(
    client: &tokio_postgres::Client,
    id: i64,
) -> Result<Option<DeliveryDetail>, Failure> {
    let Some(row) = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM outbox.delivery_log WHERE id = $1"),
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let delivery = view(&row)?;
    let attempts = client
        .query(
            "SELECT attempt, started_at, duration_ms, status, outcome, error, response
             FROM outbox.attempts WHERE delivery_id = $1 ORDER BY attempt",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| AttemptView {
            attempt: r.get(0),
            started_at: r.get(1),
            duration_ms: r.get(2),
            status: r.get(3),
            outcome: r.get(4),
            error: r.get::<_, Option<String>>(5).map(|e| redact_urls_in(&e)),
            response: r.get(6),
        })
        .collect();
    Ok(Some(DeliveryDetail { delivery, attempts }))
}

pub async fn list(url: &str, args: &ListArgs) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let deliveries = query(
        &client,
        args.status.as_deref(),
        args.webhook.as_deref(),
        args.entity.as_deref(),
        args.entity_id.as_deref(),
        args.limit,
    )
    .await?;
    if args.json {
        return output::json(&deliveries);
    }
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.webhook.clone(),
                d.event_type.clone(),
                format!("{}/{}", d.entity, d.entity_id),
                d.status.clone(),
                d.attempts.to_string(),
                d.last_status.map(|s| s.to_string()).unwrap_or_default(),
                d.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                output::clip(d.last_error.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    output::table(
        &[
            "id",
            "webhook",
            "event",
            "record",
            "status",
            "attempts",
            "http",
            "updated",
            "last error",
        ],
        &rows,
    );
    Ok(())
}

pub async fn show(url: &str, id: i64, json: bool) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let Some(detail) = fetch(&client, id).await? else {
        return Err(Failure::invalid(format!("no delivery with id {id}")));
    };
    if json {
        return output::json(&detail);
    }
    let DeliveryDetail {
        delivery: d,
        attempts,
    } = detail;
    println!("delivery   {}", d.id);
    println!("webhook    {}", d.webhook);
    println!(
        "event      {} ({}) {}/{}",
        d.event_id, d.event_type, d.entity, d.entity_id
    );
    println!("status     {} after {} attempt(s)", d.status, d.attempts);
    println!("priority   {}   coalesced {}", d.priority, d.coalesced);
    println!("created    {}", d.created_at.to_rfc3339());
    println!("updated    {}", d.updated_at.to_rfc3339());
    if let Some(n) = d.next_attempt_at {
        println!("next       {}", n.to_rfc3339());
    }
    println!();
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                a.started_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                a.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
                a.outcome.clone(),
                a.status.map(|s| s.to_string()).unwrap_or_default(),
                output::clip(
                    a.error.as_deref().or(a.response.as_deref()).unwrap_or(""),
                    80,
                ),
            ]
        })
        .collect();
    output::table(
        &[
            "attempt",
            "started",
            "took",
            "outcome",
            "http",
            "error / response",
        ],
        &rows,
    );
    Ok(())
}

/// Parses `--since`: an RFC 3339 time, or a duration meaning that long ago.
fn since(text: &str) -> Result<DateTime<Utc>, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    match outbox_core::parse_duration(text) {
        Ok(d) => Ok(Utc::now() - chrono::Duration::from_std(d).unwrap_or_default()),
        Err(_) => Err(Failure::invalid(format!(
            "--since {text:?} is neither an RFC 3339 time (2026-11-24T08:00:00Z) nor a duration (2h)"
        ))),
    }
}

/// Re-queues deliveries; returns the ids that were re-queued.
pub async fn requeue(client: &tokio_postgres::Client, ids: &[i64]) -> Result<Vec<i64>, Failure> {
    let rows = client.query(outbox_core::sql::RETRY, &[&ids]).await?;
    // Wake the relays' senders.
    client
        .execute("SELECT pg_notify('outbox_deliveries', '')", &[])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Checks named deliveries before any is re-queued: each must exist and its webhook too.
async fn check_named(client: &tokio_postgres::Client, ids: &[i64]) -> Result<(), Failure> {
    let rows = client.query(outbox_core::sql::RETRY_CHECK, &[&ids]).await?;
    let found: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let mut unknown: Vec<i64> = Vec::new();
    for id in ids {
        if !found.contains(id) && !unknown.contains(id) {
            unknown.push(*id);
        }
    }
    if !unknown.is_empty() {
        return Err(Failure::invalid(format!(
            "no deliver{} with id {}; nothing was re-queued (`outbox-relay deliveries list` shows the ids)",
            if unknown.len() == 1 { "y" } else { "ies" },
            join(&unknown)
        )));
    }
    let orphans: Vec<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(3))
        .map(|r| {
            format!(
                "{} (webhook {:?})",
                r.get::<_, i64>(0),
                r.get::<_, String>(2)
            )
        })
        .collect();
    if !orphans.is_empty() {
        return Err(Failure::invalid(format!(
            "cannot re-queue deliver{} {}: the webhook was deleted; nothing was re-queued",
            if orphans.len() == 1 { "y" } else { "ies" },
            orphans.join(", ")
        )));
    }
    Ok(())
}

fn join(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `deliveries retry`. Named ids are checked first: an unknown id, or one whose webhook was
/// deleted, is an error (exit 2) and nothing is re-queued. A named delivery that is in flight
/// cannot be re-queued now: the others are, and the command fails (exit 1) naming it. With
/// `--status`, whatever the selection finds is re-queued; what cannot be is listed as skipped.
pub async fn retry(url: &str, args: &RetryArgs) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let ids: Vec<i64> = match &args.status {
        None if args.ids.is_empty() => {
            return Err(Failure::invalid(
                "name the deliveries to retry (deliveries retry 12 13) or select them with --status dead",
            ));
        }
        None => {
            check_named(&client, &args.ids).await?;
            args.ids.clone()
        }
        Some(status) => {
            if !["succeeded", "dead", "cancelled"].contains(&status.as_str()) {
                return Err(Failure::invalid(format!(
                    "--status {status:?}: only finished deliveries (succeeded, dead, cancelled) can be re-queued by status"
                )));
            }
            let since = args.since.as_deref().map(since).transpose()?;
            client
                .query(
                    "SELECT id FROM outbox.deliveries_done
                     WHERE status = $1 AND ($2::text IS NULL OR webhook = $2)
                       AND ($3::timestamptz IS NULL OR updated_at >= $3)
                     ORDER BY id",
                    &[status, &args.webhook, &since],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect()
        }
    };
    let mut requeued = Vec::new();
    for chunk in ids.chunks(1000) {
        requeued.extend(requeue(&client, chunk).await?);
    }
    let skipped: Vec<i64> = ids
        .iter()
        .filter(|i| !requeued.contains(i))
        .copied()
        .collect();
    if args.json {
        output::json(&serde_json::json!({ "requeued": requeued, "skipped": skipped }))?;
    } else {
        println!(
            "re-queued {} deliver{}",
            requeued.len(),
            if requeued.len() == 1 { "y" } else { "ies" }
        );
        if !skipped.is_empty() {
            println!(
                "skipped {} (in flight, or their webhook was deleted): {}",
                skipped.len(),
                join(&skipped)
            );
        }
    }
    if args.status.is_none() && !skipped.is_empty() {
        return Err(Failure::runtime(format!(
            "deliver{} {} could not be re-queued: being attempted right now; retry after the attempt finishes",
            if skipped.len() == 1 { "y" } else { "ies" },
            join(&skipped)
        )));
    }
    Ok(())
}
