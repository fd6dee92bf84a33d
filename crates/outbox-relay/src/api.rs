//! The admin JSON API under `/api` (docs/operations.md, "Admin API"):
//!
//! | route | answers |
//! |---|---|
//! | `GET /api/webhooks` | every webhook with its validity and configuration, secrets as `***` |
//! | `GET /api/deliveries?status=&webhook=&entity=&entity_id=&limit=` | the webhook queue, newest first (limit 50 by default) |
//! | `GET /api/deliveries/{id}` | one delivery with all its attempts |
//! | `POST /api/deliveries/{id}/retry` | re-queues it with a fresh attempt budget |
//! | `POST /api/webhooks/{name}/test` | `{"entity", "id", "send"}`: renders (and optionally sends) the request for that record |
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

use crate::commands::{deliveries, test_cmd, webhooks};
use crate::error::Failure;
use crate::http::AppState;

pub fn routes(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route("/webhooks", get(list_webhooks))
        .route("/webhooks/{name}/test", post(test_webhook))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/{id}", get(show_delivery))
        .route("/deliveries/{id}/retry", post(retry_delivery))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such API route; see GET /api/webhooks, GET /api/deliveries, GET /api/deliveries/{id}, \
                 POST /api/deliveries/{id}/retry and POST /api/webhooks/{name}/test",
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

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        let status = if f.code == 2 {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, f.message)
    }
}

impl From<outbox_core::Error> for ApiError {
    fn from(e: outbox_core::Error) -> Self {
        Failure::from(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {}", outbox_core::Error::from(e)),
        )
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

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110), so `bearer` and `BEARER` work too.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether the presented token is the admin token, in time that depends on neither: both are
/// hashed to 32 bytes first (so their lengths do not matter) and every byte of the digests is
/// compared, without an early return.
fn token_matches(presented: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    let difference = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

async fn list_webhooks(State(state): State<AppState>) -> ApiResult<Vec<serde_json::Value>> {
    let client = state.pool.get().await?;
    let shown = webhooks::load(&client, None).await?;
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
    let found = deliveries::query(
        &client,
        q.status.as_deref().filter(|s| !s.is_empty()),
        q.webhook.as_deref().filter(|s| !s.is_empty()),
        q.entity.as_deref().filter(|s| !s.is_empty()),
        q.entity_id.as_deref().filter(|s| !s.is_empty()),
        q.limit.unwrap_or(50),
    )
    .await
    .map_err(|f| match f.code {
        // The shared validation speaks of the CLI flag.
        2 => ApiError::new(
            StatusCode::BAD_REQUEST,
            f.message.replace("--limit", "limit"),
        ),
        _ => f.into(),
    })?;
    Ok(Json(found))
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
    match deliveries::fetch(&client, id).await? {
        Some(detail) => Ok(Json(detail)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no delivery with id {id}"),
        )),
    }
}

async fn retry_delivery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    let id = delivery_id(&id)?;
    let client = state.pool.get().await?;
    if deliveries::requeue(&client, &[id]).await?.contains(&id) {
        tracing::info!(delivery = id, "delivery re-queued through the admin API");
        return Ok(Json(json!({ "id": id, "requeued": true })));
    }
    // Say why not.
    let Some(deliveries::DeliveryDetail { delivery, .. }) = deliveries::fetch(&client, id).await?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no delivery with id {id}"),
        ));
    };
    let reason = if delivery.status == "in_flight" {
        format!("delivery {id} is being attempted right now; retry it after the attempt finishes")
    } else {
        format!(
            "delivery {id} cannot be re-queued because its webhook {:?} was deleted",
            delivery.webhook
        )
    };
    Err(ApiError::new(StatusCode::CONFLICT, reason))
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
    if webhooks::load(&client, Some(&name)).await?.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no webhook named {name:?}; GET /api/webhooks lists them"),
        ));
    }
    let wanted = test_cmd::PreviewRequest {
        webhook: name,
        entity: request.entity,
        id: request.id,
        send: request.send,
    };
    // Renders exactly as the sender would (and with `send`, sends once); writes nothing.
    let preview = test_cmd::preview(&mut client, &wanted, Some(&state.transport))
        .await
        .map_err(|f| {
            if f.code == 2 && f.message.contains("no event") {
                ApiError::new(StatusCode::NOT_FOUND, f.message)
            } else {
                ApiError::from(f)
            }
        })?;
    serde_json::to_value(&preview).map(Json).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot format the preview: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, token_matches};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer t0k", "bearer t0k", "BEARER t0k", "  Bearer   t0k  "] {
            assert_eq!(bearer_token(header), Some("t0k"), "{header:?}");
        }
        for header in ["Basic t0k", "Bearer", "Bearer ", "t0k", "Bearert0k"] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn tokens_match_only_when_equal_whatever_their_lengths() {
        assert!(token_matches("s3cret", "s3cret"));
        for other in [
            "s3cre",
            "s3cret!",
            "S3cret",
            "",
            "a much longer token than the real one",
        ] {
            assert!(!token_matches(other, "s3cret"), "{other:?}");
        }
    }
}
