//! The fault suite: the relay under kill -9, Postgres crashes, killed connections, shutdown with
//! the database down, and poison events, each test against a private Postgres cluster of its own
//! (`outbox_testkit::CrashableCluster`) that it may crash, with the relay run as a child process.
//!
//! | test | fault |
//! |---|---|
//! | `relay_kills::kill_9_of_the_relay_in_a_loop_while_producers_commit` | 5 × kill -9 of the only relay at random moments, restarted each time |
//! | `relay_kills::two_relays_one_of_them_killed_repeatedly` | 4 × kill -9 of one of two relays |
//! | `relay_kills::three_relays_one_of_them_killed_repeatedly` | 4 × kill -9 of one of three relays |
//! | `postgres_crash::postgres_immediate_stop_while_draining_a_backlog` | 5 × `pg_ctl stop -m immediate` + start while 3,000 events drain |
//! | `connections::terminated_listen_and_pool_connections_are_replaced_while_deliveries_flow` | 6 × `pg_terminate_backend` of the LISTEN connection, every other time of the pool's too |
//! | `shutdown::sigterm_with_postgres_stopped_exits_within_a_bound` | SIGTERM while Postgres is down |
//! | `isolation::poison_events_are_set_aside_while_every_other_event_flows` | events nested 130 deep (emit, capture), duplicated ids (two doors) |
//! | `health::readyz_answers_503_with_a_reason_while_the_database_is_down` | Postgres crashed, then started again |
//! | `health::readyz_answers_503_while_events_wait_and_routing_is_stuck` | a session holds the routing cursor's lock while events wait |
//!
//! Producers commit events (`outbox.emit`, one transaction each) during the faults; the receiver
//! answers 2xx after 0-19 ms, except a 500 for the first attempt of one record in eight. After the
//! last fault, every test but the poison and health ones asserts what [`verdict`] describes: no committed event
//! lost, no (`webhook-id`, `webhook-attempt`) pair received twice, no delivery that got a 2xx sent
//! again unless that 2xx was in flight at a fault, all within a bound. The tests run one at a time
//! (each keeps both cores of the development machine busy); the suite takes three to four minutes.

mod connections;
mod health;
mod isolation;
mod postgres_crash;
mod producers;
mod relay;
mod relay_kills;
mod rig;
mod settle;
mod shutdown;
mod verdict;
