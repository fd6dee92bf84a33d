//! Maintenance: the relay's background upkeep of its own tables and gauges, apart from the
//! pipeline. Each unit has one job and one interval, is started by [`crate::relay`] and stops with
//! the relay:
//!
//! - [`vacuum`]: vacuums the hot queue `outbox.deliveries` every few seconds;
//! - [`retention`]: deletes succeeded deliveries, their attempts and unneeded events past
//!   `retention`;
//! - [`sampler`]: samples the queue gauges, so a scrape never touches the database.

pub mod retention;
pub mod sampler;
pub mod vacuum;
