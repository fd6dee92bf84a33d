use bytes::Bytes;
use outbox_core::Event;
use outbox_renderer::{RenderContext, RenderError};
use serde_json::{Map, Value};

use crate::endpoint::Endpoint;
use crate::transport::OutboundRequest;

pub const USER_AGENT: &str = concat!("outbox-relay/", env!("CARGO_PKG_VERSION"));

/// The `webhook-id` of a delivery: the same on every attempt, unique across installations.
pub fn message_id(install_id: &str, delivery_id: i64) -> String {
    format!("msg_{install_id}_{delivery_id}")
}

/// Renders and signs one attempt's request, exactly as the sender sends it (`outbox-relay test`
/// uses this too).
pub fn build_request(
    endpoint: &Endpoint,
    event: &Event,
    delivery_id: i64,
    attempt: i32,
    message_id: &str,
    timestamp: i64,
    related: &Map<String, Value>,
) -> Result<OutboundRequest, RenderError> {
    let rendered = endpoint.templates.render(&RenderContext {
        event,
        message_id,
        delivery_id,
        attempt,
        webhook: &endpoint.name,
        related,
    })?;
    let mut headers: Vec<(String, String)> = Vec::with_capacity(8 + rendered.headers.len());
    if !(rendered.body.is_empty() && rendered.method == "GET") {
        headers.push(("content-type".into(), rendered.content_type));
    }
    headers.push(("user-agent".into(), USER_AGENT.into()));
    headers.push(("webhook-id".into(), message_id.into()));
    headers.push(("webhook-timestamp".into(), timestamp.to_string()));
    headers.push(("webhook-attempt".into(), attempt.to_string()));
    let mut protected = vec!["webhook-id", "webhook-timestamp", "webhook-attempt"];
    if let Some(signer) = &endpoint.signer {
        let (name, value) = signer.sign(message_id, timestamp, &rendered.body);
        headers.push((name, value));
        protected.push(signer.header());
    }
    if let Some(auth) = &endpoint.authorization {
        headers.push(("authorization".into(), auth.clone()));
    }
    for (name, value) in rendered.headers {
        if protected.iter().any(|p| p.eq_ignore_ascii_case(&name)) {
            continue;
        }
        match headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some(existing) => existing.1 = value,
            None => headers.push((name, value)),
        }
    }
    Ok(OutboundRequest {
        method: rendered.method,
        url: rendered.url,
        headers,
        body: Bytes::from(rendered.body),
        timeout: endpoint.timeout,
        tls: endpoint.tls.clone(),
    })
}
