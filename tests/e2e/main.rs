//! End-to-end tests of outbox-relay against a real Postgres and real HTTP.
//!
//! Every test gets its own database (see `outbox_testkit::TestDb`), migrated by the product's own
//! migrations, and a scriptable receiver. Tests assert what a user cares about: what arrived, with
//! which headers, how often, and what the delivery log says. They wait for conditions with
//! deadlines and never assert timings, except where a delay is the promise itself (Retry-After),
//! and then with a loose tolerance.

mod admin;
mod attempt_requests;
mod capture_privileges;
mod cli_contract;
mod config;
mod console;
mod hostile;
mod hostile_urls;
mod isolation;
mod lifecycle;
mod native;
mod native_fallback;
mod operator_actions;
mod ops;
mod outcomes;
mod queueing;
mod related_batch;
mod render;
mod retention;
mod secrets;
mod signing;
mod spine;
mod support;
mod tls;
mod tools;
