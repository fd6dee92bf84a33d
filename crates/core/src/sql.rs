//! The SQL of outbox-relay, one copy each, kept as `.sql` files in the repository's `sql/` directory.

/// Numbered migrations: (version, name, SQL). Applied in order by [`crate::migrate`].
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "schema",
        include_str!("../../../sql/migrations/001_schema.sql"),
    ),
    (
        2,
        "lean capture",
        include_str!("../../../sql/migrations/002_lean_capture.sql"),
    ),
    (
        3,
        "captured events",
        include_str!("../../../sql/migrations/003_captured_events.sql"),
    ),
    (
        4,
        "unroutable events",
        include_str!("../../../sql/migrations/004_unroutable.sql"),
    ),
    (
        5,
        "capture sink",
        include_str!("../../../sql/migrations/005_capture_sink.sql"),
    ),
    (
        6,
        "retention indexes",
        include_str!("../../../sql/migrations/006_retention.sql"),
    ),
    (
        7,
        "config version once per transaction",
        include_str!("../../../sql/migrations/007_config_version_once.sql"),
    ),
    (
        8,
        "attempt requests",
        include_str!("../../../sql/migrations/008_attempt_requests.sql"),
    ),
];

pub const ROUTE_LOCK: &str = include_str!("../../../sql/queries/route_lock.sql");
pub const ROUTE_PAGE: &str = include_str!("../../../sql/queries/route_page.sql");
pub const ROUTE_CURSOR: &str = include_str!("../../../sql/queries/route_cursor.sql");
pub const ROUTE_ADVANCE: &str = include_str!("../../../sql/queries/route_advance.sql");
pub const ROUTE_INSERT: &str = include_str!("../../../sql/queries/route_insert.sql");
pub const CLAIM: &str = include_str!("../../../sql/queries/claim.sql");
pub const COMPLETE: &str = include_str!("../../../sql/queries/complete.sql");
pub const RELEASE_NEXT: &str = include_str!("../../../sql/queries/release_next.sql");
pub const DEAD_ALERTS: &str = include_str!("../../../sql/queries/dead_alerts.sql");
pub const RESCUE: &str = include_str!("../../../sql/queries/rescue.sql");
pub const RELEASE_PARKED: &str = include_str!("../../../sql/queries/release_parked.sql");
pub const RETRY: &str = include_str!("../../../sql/queries/retry.sql");
pub const RETRY_CHECK: &str = include_str!("../../../sql/queries/retry_check.sql");
pub const LATEST_EVENT: &str = include_str!("../../../sql/queries/latest_event.sql");
pub const QUEUE_SAMPLE: &str = include_str!("../../../sql/queries/queue_sample.sql");
pub const RETENTION_DELIVERIES: &str =
    include_str!("../../../sql/queries/retention_deliveries.sql");
pub const RETENTION_EVENTS: &str = include_str!("../../../sql/queries/retention_events.sql");
pub const QUEUED_DUE: &str = include_str!("../../../sql/queries/queued_due.sql");
pub const ROUTE_NOTIFY: &str = include_str!("../../../sql/queries/route_notify.sql");
pub const SET_ASIDE: &str = include_str!("../../../sql/queries/set_aside.sql");
pub const UNROUTED: &str = include_str!("../../../sql/queries/unrouted.sql");
pub const REROUTE_TAKE: &str = include_str!("../../../sql/queries/reroute_take.sql");
pub const REROUTE_EVENTS: &str = include_str!("../../../sql/queries/reroute_events.sql");
pub const REROUTE_EXISTING: &str = include_str!("../../../sql/queries/reroute_existing.sql");
pub const REROUTE_DONE: &str = include_str!("../../../sql/queries/reroute_done.sql");
pub const REROUTE_FAILED: &str = include_str!("../../../sql/queries/reroute_failed.sql");
pub const WEBHOOK_GONE: &str = include_str!("../../../sql/queries/webhook_gone.sql");
pub const ROUTING_HEALTH: &str = include_str!("../../../sql/queries/routing_health.sql");
pub const QUEUED_WEBHOOKS: &str = include_str!("../../../sql/queries/queued_webhooks.sql");
