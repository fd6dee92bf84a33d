//! The request of a past attempt that was recorded without it (by a relay older than schema
//! version 8, or taken over as abandoned), as an operator reads it. Attempts store the request
//! they sent ([`crate::deliveries::AttemptView::request`]); for those that did not, the request is
//! rendered again here from the delivery's event and its webhook's *current* configuration, with
//! the attempt's number, message id and start time — what the sender would send for that attempt
//! now. It matches what was sent unless the webhook, its relations or the related records changed
//! since; the signature (which covers the timestamp) is hidden anyway.

use chrono::{DateTime, Utc};
use outbox_catalog::compile;
use outbox_core::Event;
use outbox_sender::related;

use crate::error::AdminError;
use crate::preview::{RELATION_TIMEOUT, ShownRequest, relations_of};
use crate::webhooks;

/// A request rendered again for one attempt.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub attempt: i32,
    pub request: Result<ShownRequest, String>,
}

/// The requests of attempts `attempts` (number, start time) of delivery `delivery_id` of
/// `webhook` carrying `event`. A webhook that was deleted or no longer compiles yields one
/// error for all.
pub async fn render_attempts(
    client: &mut tokio_postgres::Client,
    webhook: &str,
    delivery_id: i64,
    event: &Event,
    attempts: &[(i32, DateTime<Utc>)],
) -> Result<Vec<Rendered>, AdminError> {
    let failed = |reason: String| {
        attempts
            .iter()
            .map(|(attempt, _)| Rendered {
                attempt: *attempt,
                request: Err(reason.clone()),
            })
            .collect()
    };
    let (id, spec) = match webhooks::stored(&*client, webhook).await {
        Ok(found) => found,
        Err(AdminError::NoWebhook { .. }) => {
            return Ok(failed(format!(
                "webhook {webhook:?} was deleted, so its request cannot be shown"
            )));
        }
        Err(e) => return Err(e),
    };
    let compiled = match spec
        .map_err(Some)
        .and_then(|s| compile(id, &s).map_err(|_| None))
    {
        Ok(c) => c,
        Err(_) => {
            return Ok(failed(format!(
                "webhook {webhook:?} is invalid now, so its request cannot be rendered"
            )));
        }
    };
    let install_id: String = client
        .query_one("SELECT install_id FROM outbox.router WHERE id = 1", &[])
        .await?
        .try_get(0)?;
    let endpoint = &compiled.endpoint;
    let relations = relations_of(client, &event.entity).await?;
    let names = related::wanted(&endpoint.templates, &relations, &event.entity);
    let loaded = related::load(client, &relations, &names, event, RELATION_TIMEOUT).await;
    let message_id = outbox_sender::message_id(&install_id, delivery_id);
    Ok(attempts
        .iter()
        .map(|(attempt, started)| Rendered {
            attempt: *attempt,
            request: match &loaded {
                Err(e) => Err(format!("related records cannot be loaded: {e}")),
                Ok(related) => outbox_sender::build_request(
                    endpoint,
                    event,
                    delivery_id,
                    *attempt,
                    &message_id,
                    started.timestamp(),
                    related,
                )
                .map(|outbound| ShownRequest::of(&outbound, endpoint.signer.as_ref()))
                .map_err(|e| format!("cannot be rendered: {e}")),
            },
        })
        .collect())
}
