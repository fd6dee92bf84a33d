//! One delivery: its event and every attempt with the request it sent (as stored with the
//! attempt; rendered again, and labelled so, only for attempts recorded without one), the
//! response or the error; **Retry** and **Cancel**.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use outbox_admin::deliveries::{self, AttemptView, NoRequest};
use outbox_admin::{AdminError, sent};
use serde_json::{Value, json};

use super::Ui;

pub async fn detail(ui: Ui, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return ui.error(
            AdminError::BadInput {
                field: "id",
                message: format!("{id:?} is not a delivery id; ids are whole numbers"),
            },
            "/ui/deliveries",
        );
    };
    let mut client = match ui.state.pool.get().await {
        Ok(c) => c,
        Err(e) => return ui.error(e.into(), "/ui/deliveries"),
    };
    let detail = match deliveries::show(&**client, id).await {
        Ok(d) => d,
        Err(e) => return ui.error(e, "/ui/deliveries"),
    };
    let event = match deliveries::event(&**client, detail.delivery.event_id).await {
        Ok(e) => e,
        Err(e) => return ui.error(e, "/ui/deliveries"),
    };
    // Only attempts recorded without their request have it rendered again.
    let unrecorded: Vec<(i32, DateTime<Utc>)> = detail
        .attempts
        .iter()
        .filter(|a| a.request_kept().err() == Some(NoRequest::NotRecorded))
        .map(|a| (a.attempt, a.started_at))
        .collect();
    let mut rendered = Vec::new();
    if let Some(event) = event.as_ref().filter(|_| !unrecorded.is_empty()) {
        match sent::render_attempts(
            &mut client,
            &detail.delivery.webhook,
            id,
            event,
            &unrecorded,
        )
        .await
        {
            Ok(r) => rendered = r,
            Err(e) => return ui.error(e, "/ui/deliveries"),
        }
    }
    let attempts: Vec<Value> = detail
        .attempts
        .iter()
        .map(|a| attempt(a, &rendered))
        .collect();
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    ui.page(
        StatusCode::OK,
        "delivery.html",
        "deliveries",
        json!({
            "d": detail.delivery,
            "attempts": attempts,
            "any_rendered": !unrecorded.is_empty(),
            "event": event.as_ref().map(|e| json!({ "created_at": e.created_at })),
            "event_data": event.as_ref().map(|e| pretty(&e.data)),
            "event_old": event.as_ref().and_then(|e| e.old.as_ref()).map(pretty),
            "event_metadata": event.as_ref().map(|e| pretty(&e.metadata)),
        }),
    )
}

/// One attempt for the page: its fields, and `request_kind` — `sent` (the stored request),
/// `none` (no request was made) or `rendered` (`rendered`: the request rendered again, or
/// `request_error`: why it cannot be).
fn attempt(a: &AttemptView, rendered: &[sent::Rendered]) -> Value {
    let mut value = serde_json::to_value(a).unwrap_or_default();
    match a.request_kept() {
        Ok(_) => value["request_kind"] = "sent".into(),
        Err(NoRequest::NotMade) => value["request_kind"] = "none".into(),
        Err(NoRequest::NotRecorded) => {
            value["request_kind"] = "rendered".into();
            match rendered.iter().find(|r| r.attempt == a.attempt) {
                Some(r) => match &r.request {
                    Ok(req) => value["rendered"] = serde_json::to_value(req).unwrap_or_default(),
                    Err(reason) => value["request_error"] = reason.clone().into(),
                },
                None => {
                    value["request_error"] =
                        "the event is no longer stored, so the request cannot be rendered".into()
                }
            }
        }
    }
    value
}

pub async fn retry(ui: Ui, Path(id): Path<i64>) -> Response {
    act(ui, id, true).await
}

pub async fn cancel(ui: Ui, Path(id): Path<i64>) -> Response {
    act(ui, id, false).await
}

async fn act(ui: Ui, id: i64, retry: bool) -> Response {
    let back = format!("/ui/deliveries/{id}");
    let client = match ui.state.pool.get().await {
        Ok(c) => c,
        Err(e) => return ui.error(e.into(), &back),
    };
    let done = if retry {
        match deliveries::retry(&**client, &[id]).await {
            Ok(r) if r.requeued.contains(&id) => Ok(()),
            Ok(_) => Err(AdminError::InFlight { ids: vec![id] }),
            Err(e) => Err(e),
        }
    } else {
        deliveries::cancel(&**client, id).await
    };
    match done {
        Ok(()) => Redirect::to(&back).into_response(),
        Err(e) => ui.error(e, &back),
    }
}
