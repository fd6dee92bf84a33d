//! Test a webhook: the request it would send for the latest event of one record, rendered
//! exactly as the sender renders it; optionally sent once. Nothing is queued or recorded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use outbox_catalog::{WEBHOOK_COLUMNS, compile, webhook_row};
use outbox_core::redact::{is_secret_header, redact_url};
use outbox_core::{Event, sql};
use outbox_matcher::Pattern;
use outbox_sender::{HttpTransport, OutboundRequest, Signer, related};
use serde::Serialize;

use crate::error::AdminError;

/// How long relation queries of a test may run (the relay's default).
pub const RELATION_TIMEOUT: Duration = Duration::from_secs(5);

/// What to preview.
#[derive(Debug, Clone)]
pub struct PreviewRequest {
    pub webhook: String,
    pub entity: String,
    pub id: String,
    /// Also send the request once (signature and auth included).
    pub send: bool,
}

/// A rendered (and possibly sent) test request. Secrets are redacted in `request`.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub webhook: String,
    /// Whether the webhook is active (an inactive one queues without sending).
    pub active: bool,
    pub event: EventRef,
    /// Whether the webhook's filter accepts this event (`null` when it has no filter). The relay
    /// would not send an event the filter rejects; `test` renders it anyway.
    pub filter_matches: Option<bool>,
    /// The filter's evaluation error, if any (counted as no match by the relay).
    pub filter_error: Option<String>,
    /// Relations loaded for the templates.
    pub related: Vec<String>,
    pub request: ShownRequest,
    /// The receiver's answer, with `send`.
    pub response: Option<ShownResponse>,
    /// Why sending failed (timeout, connection, refused by the network policy), with `send`.
    pub send_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRef {
    pub id: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub entity: String,
    pub entity_id: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShownRequest {
    pub method: String,
    /// The URL, with any password and secret-looking query values as `***`.
    pub url: String,
    /// Every header in sending order; authorization, signatures and secret-looking headers `***`.
    pub headers: Vec<Header>,
    pub body: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShownResponse {
    pub status: u16,
    pub headers: Vec<Header>,
    /// The first 4 KiB of the body.
    pub body: String,
    pub duration_ms: u64,
}

/// Renders the request `request.webhook` would send for the latest event of the record (any
/// event type the webhook listens to), and with `request.send` sends it once through
/// `transport` (whose network policy applies; required with `send`).
/// Reads only; nothing is queued or recorded.
pub async fn preview(
    client: &mut tokio_postgres::Client,
    request: &PreviewRequest,
    transport: Option<&HttpTransport>,
) -> Result<Preview, AdminError> {
    if request.send && transport.is_none() {
        return Err(AdminError::bad(
            "send",
            "sending a test needs a transport (the relay's network policy); none was given",
        ));
    }
    let rows = client
        .query(
            &format!("SELECT {WEBHOOK_COLUMNS} FROM outbox.webhooks WHERE name = $1"),
            &[&request.webhook],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Err(AdminError::NoWebhook {
            name: request.webhook.clone(),
        });
    };
    let row = webhook_row(row)?;
    let spec = row.spec.map_err(|reason| AdminError::UnusableWebhook {
        name: row.name.clone(),
        reason,
    })?;
    let compiled = compile(row.id, &spec).map_err(|errors| AdminError::InvalidWebhook {
        name: row.name.clone(),
        problems: errors.into_iter().map(|e| (e.field, e.message)).collect(),
    })?;

    let found = latest_event(
        client,
        Some(&request.entity),
        Some(&request.id),
        &compiled.patterns,
    )
    .await?;
    let Some(event) = found else {
        let record = format!("record {} {:?}", request.entity, request.id);
        let any = latest_event(
            client,
            Some(&request.entity),
            Some(&request.id),
            &[Pattern::Any],
        )
        .await?;
        return Err(AdminError::NoEvent {
            message: match any {
                None => format!(
                    "{record} has no events; check --entity (as written into outbox.events, e.g. \"order\" or \"Warehouse\\Shipment\") and --id, or change the record so it emits one"
                ),
                Some(e) => format!(
                    "{record} has no event of a type webhook {:?} listens to ({}); its latest event is {}",
                    row.name,
                    spec.events.join(", "),
                    e.event_type
                ),
            },
        });
    };

    let (filter_matches, filter_error) = match &compiled.filter {
        None => (None, None),
        Some(filter) => match filter.matches(&event, &row.name) {
            Ok(m) => (Some(m), None),
            Err(e) => (Some(false), Some(e.to_string())),
        },
    };

    let relations = relations_of(client, &event.entity).await?;
    let endpoint = &compiled.endpoint;
    let names = related::wanted(&endpoint.templates, &relations, &event.entity);
    let related_records = related::load(client, &relations, &names, &event, RELATION_TIMEOUT)
        .await
        .map_err(|e| AdminError::Render {
            message: format!("webhook {:?}, event {}: {e}", row.name, event.id),
        })?;

    let message_id = format!("msg_test_{}", uuid::Uuid::new_v4().simple());
    let outbound = outbox_sender::build_request(
        endpoint,
        &event,
        0,
        1,
        &message_id,
        Utc::now().timestamp(),
        &related_records,
    )
    .map_err(|e| AdminError::Render {
        message: format!(
            "webhook {:?} cannot render event {} ({}): {e}",
            row.name, event.id, event.event_type
        ),
    })?;
    let shown = ShownRequest::of(&outbound, endpoint.signer.as_ref());

    let mut preview = Preview {
        webhook: row.name.clone(),
        active: spec.active,
        event: EventRef {
            id: event.id,
            event_type: event.event_type.clone(),
            entity: event.entity.clone(),
            entity_id: event.entity_id.clone(),
            created_at: event.created_at,
        },
        filter_matches,
        filter_error,
        related: names,
        request: shown,
        response: None,
        send_error: None,
    };
    if let Some(transport) = transport.filter(|_| request.send) {
        send(&mut preview, outbound, transport).await;
    }
    Ok(preview)
}

/// The latest event of the record / type matching `patterns`.
pub async fn latest_event(
    client: &tokio_postgres::Client,
    entity: Option<&str>,
    entity_id: Option<&str>,
    patterns: &[Pattern],
) -> Result<Option<Event>, AdminError> {
    let mut exact: Vec<&str> = Vec::new();
    let mut prefixes: Vec<&str> = Vec::new();
    let mut any = false;
    for p in patterns {
        match p {
            Pattern::Any => any = true,
            Pattern::Prefix(prefix) => prefixes.push(prefix),
            Pattern::Exact(t) => exact.push(t),
        }
    }
    let row = client
        .query_opt(
            sql::LATEST_EVENT,
            &[&entity, &entity_id, &exact, &prefixes, &any],
        )
        .await?;
    row.map(|r| Event::from_row(&r, 0))
        .transpose()
        .map_err(|e| AdminError::Render {
            message: format!("the latest matching event cannot be used: {e}"),
        })
}

/// The relation queries defined for `entity`.
pub async fn relations_of(
    client: &tokio_postgres::Client,
    entity: &str,
) -> Result<related::Relations, AdminError> {
    Ok(client
        .query(
            "SELECT entity, name, query FROM outbox.relations WHERE entity = $1",
            &[&entity],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect::<HashMap<_, _>>())
}

/// Sends the rendered request once, noting the answer or why there was none.
async fn send(preview: &mut Preview, outbound: OutboundRequest, transport: &HttpTransport) {
    let started = Instant::now();
    match transport.send_showing_headers(outbound).await {
        Ok((response, headers)) => {
            preview.response = Some(ShownResponse {
                status: response.status,
                headers: headers
                    .into_iter()
                    .map(|(name, value)| Header { name, value })
                    .collect(),
                body: response.body,
                duration_ms: started.elapsed().as_millis() as u64,
            })
        }
        Err(e) => {
            // The transport's errors quote the URL with its credentials already hidden.
            preview.send_error = Some(e.message);
        }
    }
}

impl ShownRequest {
    /// `outbound` as shown to an operator: URL credentials, authorization, signatures and
    /// secret-looking headers as `***` (the rules the sender stores an attempt's request by).
    pub fn of(outbound: &OutboundRequest, signer: Option<&Signer>) -> ShownRequest {
        let signature_header = signer.map(Signer::header);
        ShownRequest {
            method: outbound.method.to_string(),
            url: redact_url(&outbound.url),
            headers: outbound
                .headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: if is_secret_header(name, signature_header) {
                        "***".into()
                    } else {
                        value.clone()
                    },
                })
                .collect(),
            body: String::from_utf8_lossy(&outbound.body).into_owned(),
        }
    }
}
