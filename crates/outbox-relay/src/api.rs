//! The admin JSON API under `/api` (docs/operations.md, "Admin API"):
//!
//! | route | answers |
//! |---|---|
//! | `GET /api/webhooks` | every webhook with its validity and configuration, secrets as `***` |
//! | `GET /api/deliveries?status=&webhook=&entity=&entity_id=&limit=` | the webhook queue, newest first (limit 50 by default) |
//! | `GET /api/deliveries/{id}` | one delivery with all its attempts |
//! | `POST /api/deliveries/{id}/retry` | re-queues it with a fresh attempt budget |
//! | `POST /api/deliveries/{id}/cancel` | cancels it while it is pending |
//! | `POST /api/webhooks/{name}/test` | `{"entity", "id", "send"}`: renders (and optionally sends) the request for that record |
//! | `POST /api/webhooks/{name}/pause`, `.../resume` | pauses or resumes the webhook |
//!
//! Each route calls the admin service function the console and the CLI call for the same action.
//!
//! When `OUTBOX_ADMIN_TOKEN` is set every request needs `Authorization: Bearer <token>`. Errors
//! are `{"error": "<one sentence>"}` with a 4xx/5xx status. Secrets are never returned.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use outbox_admin::{AdminError, ErrorKind, deliveries, preview, webhooks};

use crate::auth::{bearer_token, token_matches};
use crate::state::AppState;

pub fn routes(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route("/webhooks", get(list_webhooks))
        .route("/webhooks/{name}/test", post(test_webhook))
        .route("/webhooks/{name}/pause", post(pause_webhook))
        .route("/webhooks/{name}/resume", post(resume_webhook))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/{id}", get(show_delivery))
        .route("/deliveries/{id}/retry", post(retry_delivery))
        .route("/deliveries/{id}/cancel", post(cancel_delivery))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such API route; see GET /api/webhooks, GET /api/deliveries, GET /api/deliveries/{id}, \
                 POST /api/deliveries/{id}/retry, POST /api/deliveries/{id}/cancel, \
                 POST /api/webhooks/{name}/test, POST /api/webhooks/{name}/pause and POST /api/webhooks/{name}/resume",
            )
        });
    Router::new()
        .nest("/api", api)
        .layer(middleware::from_fn_with_state(state, require_token))
}

/// An error answer: `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// An admin action's error as the API answers it: the status from its kind, the message with the
/// hint an API user needs.
impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let status = match e.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            AdminError::NoWebhook { name } => {
                format!("no webhook named {name:?}; GET /api/webhooks lists them")
            }
            AdminError::InFlight { ids } if ids.len() == 1 => format!(
                "delivery {} is being attempted right now; retry it after the attempt finishes",
                ids[0]
            ),
            AdminError::WebhookDeleted { deliveries } if deliveries.len() == 1 => format!(
                "delivery {} cannot be re-queued because its webhook {:?} was deleted",
                deliveries[0].0, deliveries[0].1
            ),
            _ => e.to_string(),
        };
        ApiError::new(status, message)
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AdminError::from(e).into()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.admin_token
        && request.uri().path().starts_with("/api")
    {
        let presented = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        if !presented.is_some_and(|p| token_matches(p, token)) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send Authorization: Bearer <the relay's OUTBOX_ADMIN_TOKEN>",
            )
            .into_response();
            response
                .headers_mut()
                .insert("www-authenticate", "Bearer".parse().expect("static header"));
            return response;
        }
    }
    next.run(request).await
}

async fn list_webhooks(State(state): State<AppState>) -> ApiResult<Vec<serde_json::Value>> {
    let client = state.pool.get().await?;
    let shown = webhooks::list(pg(&client)).await?;
    Ok(Json(shown.iter().map(webhooks::Shown::to_json).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    webhook: Option<String>,
    entity: Option<String>,
    entity_id: Option<String>,
    limit: Option<i64>,
}

async fn list_deliveries(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Vec<deliveries::DeliveryView>> {
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "bad query string ({}); use status, webhook, entity, entity_id and limit",
                e.body_text()
            ),
        )
    })?;
    let client = state.pool.get().await?;
    let given = |v: Option<String>| v.filter(|s| !s.is_empty());
    let filter = deliveries::Filter {
        status: given(q.status),
        webhook: given(q.webhook),
        entity: given(q.entity),
        entity_id: given(q.entity_id),
        ..Default::default()
    };
    let page = deliveries::list(pg(&client), &filter, None, q.limit.unwrap_or(50)).await?;
    Ok(Json(page.deliveries))
}

fn delivery_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{text:?} is not a delivery id; ids are whole numbers, e.g. /api/deliveries/42"
            ),
        )
    })
}

async fn show_delivery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<deliveries::DeliveryDetail> {
    let id = delivery_id(&id)?;
    let client = state.pool.get().await?;
    Ok(Json(deliveries::show(pg(&client), id).await?))
}

async fn retry_delivery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    let id = delivery_id(&id)?;
    let client = state.pool.get().await?;
    let retried = deliveries::retry(pg(&client), &[id]).await?;
    if !retried.requeued.contains(&id) {
        return Err(AdminError::InFlight { ids: vec![id] }.into());
    }
    tracing::info!(delivery = id, "delivery re-queued through the admin API");
    Ok(Json(json!({ "id": id, "requeued": true })))
}

async fn cancel_delivery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    let id = delivery_id(&id)?;
    let client = state.pool.get().await?;
    deliveries::cancel(pg(&client), id).await?;
    tracing::info!(delivery = id, "delivery cancelled through the admin API");
    Ok(Json(json!({ "id": id, "cancelled": true })))
}

async fn pause_webhook(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    let client = state.pool.get().await?;
    webhooks::pause(pg(&client), &name).await?;
    Ok(Json(json!({ "webhook": name, "active": false })))
}

async fn resume_webhook(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    let client = state.pool.get().await?;
    webhooks::resume(pg(&client), &name).await?;
    Ok(Json(json!({ "webhook": name, "active": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    entity: String,
    id: String,
    #[serde(default)]
    send: bool,
}

async fn test_webhook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<TestRequest>, JsonRejection>,
) -> ApiResult<serde_json::Value> {
    let Json(request) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "bad request body ({}); send JSON such as {{\"entity\": \"order\", \"id\": \"42\", \"send\": false}}",
                e.body_text()
            ),
        )
    })?;
    let mut client = state.pool.get().await?;
    let wanted = preview::PreviewRequest {
        webhook: name,
        entity: request.entity,
        id: request.id,
        send: request.send,
    };
    // Renders exactly as the sender would (and with `send`, sends once); writes nothing.
    let preview = preview::preview(&mut client, &wanted, Some(&state.transport)).await?;
    serde_json::to_value(&preview).map(Json).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot format the preview: {e}"),
        )
    })
}

/// The connection of a pooled client.
fn pg(client: &deadpool_postgres::Object) -> &tokio_postgres::Client {
    client
}
