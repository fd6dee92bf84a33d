//! `deliveries list|show|retry|cancel`: the webhook queue, from [`outbox_admin::deliveries`].

use chrono::{DateTime, Utc};
use outbox_admin::deliveries::{self, AttemptView, DeliveryDetail, NoRequest, Retried};

use crate::cli::{ListArgs, RetryArgs};
use crate::error::Failure;
use crate::output;

pub async fn list(url: &str, args: &ListArgs) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let filter = deliveries::Filter {
        status: args.status.clone(),
        webhook: args.webhook.clone(),
        entity: args.entity.clone(),
        entity_id: args.entity_id.clone(),
        ..Default::default()
    };
    let deliveries = deliveries::list(&client, &filter, None, args.limit)
        .await?
        .deliveries;
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
    let detail = deliveries::show(&client, id).await?;
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
    for a in &attempts {
        print_exchange(a);
    }
    Ok(())
}

/// An attempt's request as sent and its response's headers, as stored (secrets as `***`).
fn print_exchange(a: &AttemptView) {
    println!();
    match a.request_kept() {
        Ok(r) => {
            println!("attempt {}: request as sent", a.attempt);
            println!("  {} {}", r.method, r.url);
            for h in &r.headers {
                println!("  {}: {}", h.name, h.value);
            }
            if !r.body.is_empty() {
                println!();
                for line in r.body.lines() {
                    println!("  {line}");
                }
            }
            if r.body_truncated {
                println!(
                    "  (the body's first {} of {} bytes)",
                    r.body.len(),
                    r.body_bytes
                );
            }
        }
        Err(NoRequest::NotMade) => {
            println!("attempt {}: no request was made", a.attempt)
        }
        Err(NoRequest::NotRecorded) => println!(
            "attempt {}: request not recorded (recorded before requests were stored, or abandoned)",
            a.attempt
        ),
    }
    if let Some(headers) = &a.response_headers {
        println!("attempt {}: response headers", a.attempt);
        for h in headers {
            println!("  {}: {}", h.name, h.value);
        }
    }
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
    let retried = match &args.status {
        None if args.ids.is_empty() => {
            return Err(Failure::invalid(
                "name the deliveries to retry (deliveries retry 12 13) or select them with --status dead",
            ));
        }
        None => deliveries::retry(&client, &args.ids).await?,
        Some(status) => {
            let selection = deliveries::Selection {
                status: status.clone(),
                webhook: args.webhook.clone(),
                since: args.since.as_deref().map(since).transpose()?,
                ..Default::default()
            };
            deliveries::retry_selection(&client, &selection).await?
        }
    };
    let Retried { requeued, skipped } = retried;
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

/// `deliveries cancel ID...`: the admin service's cancel (the console's **Cancel** and the API
/// call it too) for each id. Every id is tried; those that cannot be cancelled (unknown, not
/// pending) are named and the command fails (exit 2; 1 when the database failed), after the
/// others were cancelled.
pub async fn cancel(url: &str, ids: &[i64], json: bool) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let mut cancelled = Vec::new();
    let mut failed: Vec<(i64, Failure)> = Vec::new();
    for &id in ids {
        if cancelled.contains(&id) || failed.iter().any(|(f, _)| *f == id) {
            continue;
        }
        match deliveries::cancel(&client, id).await {
            Ok(()) => cancelled.push(id),
            Err(e) => failed.push((id, e.into())),
        }
    }
    if json {
        let failures: Vec<serde_json::Value> = failed
            .iter()
            .map(|(id, f)| serde_json::json!({ "id": id, "error": f.message }))
            .collect();
        output::json(&serde_json::json!({ "cancelled": cancelled, "failed": failures }))?;
    } else {
        println!(
            "cancelled {} deliver{}{}",
            cancelled.len(),
            if cancelled.len() == 1 { "y" } else { "ies" },
            if cancelled.is_empty() {
                String::new()
            } else {
                format!(": {}", join(&cancelled))
            }
        );
    }
    if failed.is_empty() {
        return Ok(());
    }
    let code = failed.iter().map(|(_, f)| f.code).min().unwrap_or(2);
    let message = failed
        .into_iter()
        .map(|(_, f)| f.message)
        .collect::<Vec<_>>()
        .join("; ");
    Err(Failure { code, message })
}
