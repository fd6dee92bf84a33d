//! The relay's HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, the admin API under `/api` and
//! the console under `/ui/` (`/` redirects there).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::Failure;
use crate::health::Readiness;
use crate::state::AppState;

/// Binds the endpoint. Without `OUTBOX_ADMIN_TOKEN` only loopback addresses are allowed, since the
/// admin API would otherwise be open to the network.
pub async fn bind(addr: SocketAddr, admin_token: Option<&str>) -> Result<TcpListener, Failure> {
    check_listen(addr, admin_token)?;
    TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::runtime(format!("cannot listen on {addr}: {e}")))
}

/// The token rule of the endpoint: a non-loopback address needs `OUTBOX_ADMIN_TOKEN`.
pub fn check_listen(addr: SocketAddr, admin_token: Option<&str>) -> Result<(), Failure> {
    if admin_token.is_none() && !addr.ip().is_loopback() {
        return Err(Failure::invalid(format!(
            "refusing to listen on {addr}: it is not a loopback address and OUTBOX_ADMIN_TOKEN is not set, \
             so the admin API would be open to the network; set OUTBOX_ADMIN_TOKEN or listen on 127.0.0.1"
        )));
    }
    Ok(())
}

pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(crate::api::routes(state.clone()))
        .merge(crate::console::routes(state.clone()))
        .with_state(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP endpoint failed");
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match crate::health::check(&state.pool, &state.health).await {
        Readiness::Ready => (StatusCode::OK, "ready\n".to_string()),
        Readiness::NotReady(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}
