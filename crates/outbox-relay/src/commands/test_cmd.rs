//! `outbox-relay test WEBHOOK --entity MODEL --id ID [--send]`: the request a webhook would send
//! for the latest event of one record, rendered exactly as the sender renders it; with `--send`,
//! sent once. Nothing is written to the queue. The work is [`outbox_admin::preview`], which the
//! admin API and the console share.

use outbox_admin::preview::{self, Preview};
use outbox_sender::{HttpTransport, NetworkPolicy};

pub use outbox_admin::preview::PreviewRequest;

use crate::error::Failure;
use crate::output;

/// The command: prints the preview (and the response with `--send`).
pub async fn run(url: &str, request: &PreviewRequest, json: bool) -> Result<(), Failure> {
    let mut client = super::connect_migrated(url).await?;
    let transport = if request.send {
        let config = crate::config::RelayConfig::load(None)?;
        Some(
            HttpTransport::new(NetworkPolicy::new(
                config.allow_networks,
                config.deny_networks,
            ))
            .map_err(|e| Failure::runtime(e.to_string()))?,
        )
    } else {
        None
    };
    let preview = preview::preview(&mut client, request, transport.as_ref()).await?;
    if json {
        output::json(&preview)?;
    } else {
        print_text(&preview);
    }
    match &preview.send_error {
        Some(e) => Err(Failure::runtime(format!(
            "sending to webhook {:?} failed: {e}",
            preview.webhook
        ))),
        None => Ok(()),
    }
}

fn print_text(p: &Preview) {
    let e = &p.event;
    println!(
        "# webhook {}, event {} {} ({} {}) of {}",
        p.webhook,
        e.id,
        e.event_type,
        e.entity,
        e.entity_id,
        e.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    if !p.active {
        println!(
            "# note: the webhook is paused (active = false); the relay queues without sending"
        );
    }
    match (p.filter_matches, &p.filter_error) {
        (Some(false), Some(err)) => {
            println!("# note: the filter fails on this event ({err}); the relay would not send it")
        }
        (Some(false), None) => {
            println!("# note: the filter does not match this event; the relay would not send it")
        }
        _ => {}
    }
    if !p.related.is_empty() {
        println!("# related records loaded: {}", p.related.join(", "));
    }
    println!("{} {}", p.request.method, p.request.url);
    for h in &p.request.headers {
        println!("{}: {}", h.name, h.value);
    }
    println!();
    println!("{}", p.request.body);
    if let Some(r) = &p.response {
        println!();
        println!("# response after {} ms", r.duration_ms);
        println!("HTTP {} {}", r.status, reason(r.status));
        for h in &r.headers {
            println!("{}: {}", h.name, h.value);
        }
        println!();
        println!("{}", r.body);
    }
}

fn reason(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}
