//! Every metric the relay exports, named in one place (listed in docs/operations.md, "Metrics"), with one function per thing
//! that happens. Label values come only from bounded sets: webhook names (configured by the
//! operator), outcomes and statuses below. Never an error string, URL or id.

use metrics::{counter, gauge, histogram};

pub const EVENTS_ROUTED: &str = "outbox_events_routed_total";
pub const DELIVERIES_CREATED: &str = "outbox_deliveries_created_total";
pub const DELIVERY_ATTEMPTS: &str = "outbox_delivery_attempts_total";
pub const DELIVERIES_COMPLETED: &str = "outbox_deliveries_completed_total";
pub const ATTEMPT_DURATION: &str = "outbox_delivery_attempt_duration_seconds";
pub const DELIVERY_LATENCY: &str = "outbox_delivery_latency_seconds";
pub const QUEUE_DEPTH: &str = "outbox_queue_depth";
pub const OLDEST_PENDING_AGE: &str = "outbox_oldest_pending_age_seconds";
pub const FILTER_ERRORS: &str = "outbox_filter_errors_total";
pub const LISTENER_NOTIFICATIONS: &str = "outbox_listener_notifications_total";
pub const DB_RECONNECTS: &str = "outbox_db_reconnects_total";
pub const EVENTS_UNROUTABLE: &str = "outbox_events_unroutable_total";
pub const ATTEMPTS_ABANDONED: &str = "outbox_attempts_abandoned_total";
pub const LISTENER_CONNECTED: &str = "outbox_listener_connected";

/// Outcome label values of [`DELIVERY_ATTEMPTS`].
pub const OUTCOMES: [&str; 6] = [
    "success",
    "http_error",
    "timeout",
    "connect_error",
    "render_error",
    "refused",
];
/// Status label values of [`DELIVERIES_COMPLETED`].
pub const COMPLETED_STATUSES: [&str; 2] = ["succeeded", "dead"];
/// Status label values of [`QUEUE_DEPTH`].
pub const QUEUE_STATUSES: [&str; 2] = ["pending", "in_flight"];

/// Webhooks whose series are registered at zero up front. Beyond this many, a webhook's series
/// appear as they are first used: each webhook has ~50 series (two histograms), so 10,000 of
/// them would make half a million zeros, tens of megabytes per scrape and of relay memory.
pub const EAGER_WEBHOOKS: usize = 1000;

/// Webhooks registered up front so far.
static EAGER: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
    std::sync::Mutex::new(None);

/// Registers every series of one webhook at zero, so dashboards see it before its first event
/// (for the first [`EAGER_WEBHOOKS`] webhooks loaded; beyond, series appear when first used).
pub fn register_webhook(webhook: &str) {
    {
        let mut eager = EAGER.lock().unwrap_or_else(|p| p.into_inner());
        let eager = eager.get_or_insert_with(Default::default);
        if eager.contains(webhook) || eager.len() >= EAGER_WEBHOOKS {
            return;
        }
        eager.insert(webhook.to_string());
    }
    let name = webhook.to_string();
    counter!(DELIVERIES_CREATED, "webhook" => name.clone()).increment(0);
    for outcome in OUTCOMES {
        counter!(DELIVERY_ATTEMPTS, "webhook" => name.clone(), "outcome" => outcome).increment(0);
    }
    for status in COMPLETED_STATUSES {
        counter!(DELIVERIES_COMPLETED, "webhook" => name.clone(), "status" => status).increment(0);
    }
    counter!(FILTER_ERRORS, "webhook" => name.clone()).increment(0);
    counter!(ATTEMPTS_ABANDONED, "webhook" => name.clone()).increment(0);
    let _ = histogram!(ATTEMPT_DURATION, "webhook" => name.clone());
    let _ = histogram!(DELIVERY_LATENCY, "webhook" => name);
}

/// Registers the series without labels, at zero.
pub fn register_global() {
    counter!(EVENTS_ROUTED).increment(0);
    counter!(LISTENER_NOTIFICATIONS).increment(0);
    counter!(DB_RECONNECTS).increment(0);
    counter!(EVENTS_UNROUTABLE).increment(0);
    gauge!(LISTENER_CONNECTED).set(0.0);
    for status in QUEUE_STATUSES {
        gauge!(QUEUE_DEPTH, "status" => status).set(0.0);
    }
    gauge!(OLDEST_PENDING_AGE).set(0.0);
}

pub fn events_routed(n: u64) {
    counter!(EVENTS_ROUTED).increment(n);
}

pub fn deliveries_created(webhook: &str, n: u64) {
    counter!(DELIVERIES_CREATED, "webhook" => webhook.to_string()).increment(n);
}

pub fn attempt_finished(webhook: &str, outcome: &'static str, seconds: f64) {
    counter!(DELIVERY_ATTEMPTS, "webhook" => webhook.to_string(), "outcome" => outcome)
        .increment(1);
    histogram!(ATTEMPT_DURATION, "webhook" => webhook.to_string()).record(seconds);
}

pub fn delivery_completed(webhook: &str, status: &'static str) {
    counter!(DELIVERIES_COMPLETED, "webhook" => webhook.to_string(), "status" => status)
        .increment(1);
}

pub fn delivery_latency(webhook: &str, seconds: f64) {
    histogram!(DELIVERY_LATENCY, "webhook" => webhook.to_string()).record(seconds);
}

pub fn queue_depth(status: &'static str, depth: f64) {
    gauge!(QUEUE_DEPTH, "status" => status).set(depth);
}

pub fn oldest_pending_age(seconds: f64) {
    gauge!(OLDEST_PENDING_AGE).set(seconds);
}

pub fn filter_error(webhook: &str) {
    counter!(FILTER_ERRORS, "webhook" => webhook.to_string()).increment(1);
}

pub fn listener_notification() {
    counter!(LISTENER_NOTIFICATIONS).increment(1);
}

pub fn db_reconnect() {
    counter!(DB_RECONNECTS).increment(1);
}

/// Events set aside because they cannot be routed.
pub fn events_unroutable(n: u64) {
    counter!(EVENTS_UNROUTABLE).increment(n);
}

/// An attempt whose relay did not report back before its lease ran out, taken over by a rescue.
pub fn attempt_abandoned(webhook: &str) {
    counter!(ATTEMPTS_ABANDONED, "webhook" => webhook.to_string()).increment(1);
}

/// Whether the dedicated LISTEN connection is up (polling alone serves while it is not).
pub fn listener_connected(up: bool) {
    gauge!(LISTENER_CONNECTED).set(if up { 1.0 } else { 0.0 });
}
