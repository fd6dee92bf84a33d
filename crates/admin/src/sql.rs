//! The admin service's SQL, kept with the relay's other queries in the repository's `sql/queries/`.

pub const WEBHOOK_UPSERT: &str = include_str!("../../../sql/queries/webhook_upsert.sql");
pub const DELIVERIES_CANCEL: &str = include_str!("../../../sql/queries/deliveries_cancel.sql");
pub const WEBHOOK_STATS: &str = include_str!("../../../sql/queries/admin_webhook_stats.sql");
pub const OVERVIEW: &str = include_str!("../../../sql/queries/admin_overview.sql");
pub const QUEUE_DEPTH: &str = include_str!("../../../sql/queries/admin_queue_depth.sql");
