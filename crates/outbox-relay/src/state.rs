//! What the HTTP endpoint's handlers share: the database pool, the admin token, the transport
//! for test sends and the relay's health.

use std::sync::Arc;

use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub metrics: PrometheusHandle,
    pub admin_token: Option<Arc<str>>,
    /// Sends the one-off requests of `POST /api/webhooks/{name}/test` with `send`.
    pub transport: outbox_sender::HttpTransport,
    /// What the relay's tasks report for `/readyz`.
    pub health: Arc<crate::health::Health>,
    /// The console at `/ui/`.
    pub console: Arc<crate::console::Console>,
}
