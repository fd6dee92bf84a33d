//! The retention scenarios.
//!
//! - `retention`: histories of finished deliveries (10,000 and 10,000,000 by default) built with
//!   bulk SQL, their oldest part expired. In each round, one relay's retention pass on every log
//!   deletes the next `--retention-slice` expired events with their deliveries and attempts: on a
//!   log large enough, the next slice of the same history (the relay remembers where it got to, as
//!   it does from one minute to the next); on a small one, a log built anew. Rounds interleave the
//!   logs so that both see the same machine; the median round is reported. Then, per log, a pass
//!   with nothing left to do and the first pass of a relay that starts anew.
//! - `retention-hotpath`: what retention's indexes cost the hot path: the insert that moves a
//!   finished delivery, with and without them, interleaved; then paired throughput runs, in rounds
//!   with the order rotating, the median round reported.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use outbox_relay::retention::{Pass, Retention};
use tokio_util::sync::CancellationToken;

use super::{Bench, Row, connect, median, verdict};
use crate::procs::machine_busy_seconds;

/// Events `$1..=$2`. The first `$3` are a month old, one millisecond apart; the others two days
/// old. Ids and times grow together, as in a real history.
const BUILD_EVENTS: &str =
    "INSERT INTO outbox.events (event_type, entity, entity_id, data, created_at)
    SELECT 'bench.created', 'bench', i::text, jsonb_build_object('seq', i),
           CASE WHEN i <= $3 THEN now() - interval '30 days' ELSE now() - interval '2 days' END
               + i * interval '1 ms'
    FROM generate_series($1::bigint, $2::bigint) i";

/// The finished deliveries of events `$1..=$2`: one per event but for every tenth (routed to no
/// webhook), finished a millisecond after the event; one in a hundred dead, the others succeeded.
const BUILD_DELIVERIES: &str = "INSERT INTO outbox.deliveries_done (id, webhook_id, webhook, event_id,
        event_type, entity, entity_id, status, attempts, priority, coalesced, created_at, updated_at,
        last_status)
    SELECT e.id, 1, 'bench', e.id, e.event_type, e.entity, e.entity_id,
           CASE WHEN e.id % 100 = 1 THEN 'dead' ELSE 'succeeded' END, 1, 0, 0,
           e.created_at, e.created_at + interval '1 ms', CASE WHEN e.id % 100 = 1 THEN 500 ELSE 204 END
    FROM outbox.events e WHERE e.id BETWEEN $1 AND $2 AND e.id % 10 <> 0";

/// One attempt per finished delivery of `$1..=$2`.
const BUILD_ATTEMPTS: &str = "INSERT INTO outbox.attempts (delivery_id, attempt, started_at,
        duration_ms, status, outcome)
    SELECT d.id, 1, d.updated_at - interval '3 ms', 3, d.last_status,
           CASE WHEN d.status = 'dead' THEN 'http_error' ELSE 'success' END
    FROM outbox.deliveries_done d WHERE d.id BETWEEN $1 AND $2";

/// The index set of `outbox.deliveries_done` before schema version 6.
const WITHOUT_RETENTION_INDEXES: &str = "DROP INDEX outbox.deliveries_done_expiry;
    DROP INDEX outbox.deliveries_done_event;
    CREATE INDEX deliveries_done_kept_event ON outbox.deliveries_done (event_id) WHERE status <> 'succeeded';";

/// One timed pass.
struct Timed {
    pass: Pass,
    seconds: f64,
}

impl Timed {
    fn describe(&self) -> String {
        let p = &self.pass;
        format!(
            "{:.1} ms, {} batches: {} deliveries, {} attempts, {} events deleted, {} events examined",
            self.seconds * 1e3,
            p.batches,
            p.purged.deliveries,
            p.purged.attempts,
            p.purged.events,
            p.events_examined
        )
    }

    fn us_per_delivery(&self) -> f64 {
        self.seconds / self.pass.purged.deliveries.max(1) as f64 * 1e6
    }

    fn ms_per_batch(&self) -> f64 {
        self.seconds / self.pass.batches.max(1) as f64 * 1e3
    }
}

/// One history retention is measured on.
struct Log {
    size: u64,
    /// Whether it holds every round's slice (else it is built anew for each round).
    sliced: bool,
    pool: deadpool_postgres::Pool,
    client: tokio_postgres::Client,
    relay: Retention,
    /// The last cutoff passed.
    cutoff: Option<DateTime<Utc>>,
    rounds: Vec<Timed>,
}

impl Bench<'_> {
    pub(super) async fn retention(&mut self) -> anyhow::Result<()> {
        let args = self.args;
        let (rounds, slice) = (args.retention_rounds.max(1), args.retention_slice.max(1));
        let mut logs = Vec::new();
        for &size in &args.retention_logs {
            let sliced = size / 2 >= rounds as u64 * slice;
            anyhow::ensure!(
                size / 2 >= slice,
                "a retention log of {size} is too small for slices of {slice} expired events"
            );
            logs.push(
                self.retention_log(size, sliced, rounds as u64, slice)
                    .await?,
            );
        }
        for round in 0..rounds {
            for log in &mut logs {
                if !log.sliced && round > 0 {
                    *log = self.retention_log(log.size, false, 1, slice).await?;
                }
                let k = if log.sliced { round as u64 + 1 } else { 1 };
                // Everything up to the k-th slice's last event has expired (its delivery finished
                // a millisecond after it).
                let cutoff: DateTime<Utc> = log
                    .client
                    .query_one(
                        "SELECT created_at + interval '1.5 ms' FROM outbox.events WHERE id = $1",
                        &[&((k * slice) as i64)],
                    )
                    .await?
                    .get(0);
                let timed = timed_pass(&mut log.relay, &log.pool, cutoff).await?;
                println!(
                    "round {}: log of {}: {} = {:.1} µs per deleted delivery, {:.1} ms per batch",
                    round + 1,
                    log.size,
                    timed.describe(),
                    timed.us_per_delivery(),
                    timed.ms_per_batch()
                );
                log.cutoff = Some(cutoff);
                log.rounds.push(timed);
            }
        }
        for log in &mut logs {
            let cutoff = log.cutoff.unwrap_or_else(Utc::now);
            let idle = timed_pass(&mut log.relay, &log.pool, cutoff).await?;
            let restarted = timed_pass(&mut Retention::new(), &log.pool, cutoff).await?;
            let us = median(log.rounds.iter().map(Timed::us_per_delivery).collect());
            let ms = median(log.rounds.iter().map(Timed::ms_per_batch).collect());
            println!(
                "log of {}: median of {rounds} rounds {us:.1} µs per deleted delivery, {ms:.1} ms per batch; \
                 next pass of the same relay: {}; first pass of a relay started anew: {}; {}",
                log.size,
                idle.describe(),
                restarted.describe(),
                counts(&log.client).await?
            );
            self.rows.push(Row {
                what: format!(
                    "retention, log of {}: per deleted delivery / per batch",
                    log.size
                ),
                target: "same for 10k and 10M".into(),
                measured: format!("{us:.1} µs / {ms:.1} ms"),
                verdict: "-",
            });
            self.rows.push(Row {
                what: format!(
                    "retention, log of {}: pass with nothing to do / a new relay's first",
                    log.size
                ),
                target: "(reported)".into(),
                measured: format!(
                    "{:.1} ms / {:.1} ms",
                    idle.seconds * 1e3,
                    restarted.seconds * 1e3
                ),
                verdict: "-",
            });
        }
        if let (Some(small), Some(large)) = (logs.first(), logs.last())
            && logs.len() >= 2
        {
            let ratio = median(
                small
                    .rounds
                    .iter()
                    .zip(&large.rounds)
                    .map(|(s, l)| l.us_per_delivery() / s.us_per_delivery())
                    .collect(),
            );
            println!(
                "retention: cost per deleted delivery, log of {} / log of {}: {ratio:.2} (median round)",
                large.size, small.size
            );
            self.rows.push(Row {
                what: "retention: cost per deleted delivery, largest log / smallest".into(),
                target: "≈ 1 (no growth with the history)".into(),
                measured: format!("{ratio:.2}"),
                verdict: verdict(ratio <= 1.25),
            });
        }
        Ok(())
    }

    /// A fresh database holding a log of `size` events, the first `rounds * slice` expired.
    async fn retention_log(
        &self,
        size: u64,
        sliced: bool,
        rounds: u64,
        slice: u64,
    ) -> anyhow::Result<Log> {
        let expired = rounds * slice;
        let url = self
            .fresh_db(&format!("outbox_bench_retention_{size}"))
            .await?;
        let built = Instant::now();
        self.build_history(&url, size, expired).await?;
        let client = connect(&url).await?;
        if sliced || size >= 1_000_000 {
            println!(
                "retention, log of {size}: built in {:.0}s ({expired} events expired); {}",
                built.elapsed().as_secs_f64(),
                counts(&client).await?
            );
        }
        Ok(Log {
            size,
            sliced,
            pool: outbox_core::db::pool(&url, 2).map_err(|e| anyhow::anyhow!("{e}"))?,
            client,
            relay: Retention::new(),
            cutoff: None,
            rounds: Vec::new(),
        })
    }

    /// `size` events with their finished deliveries and attempts, the first `expired` a month old,
    /// in bulk statements of a million rows; then vacuumed and analysed, as autovacuum would have.
    async fn build_history(&self, url: &str, size: u64, expired: u64) -> anyhow::Result<()> {
        let client = connect(url).await?;
        client.batch_execute("SET synchronous_commit = off").await?;
        let chunk = 1_000_000u64;
        let expired = expired as i64;
        for statement in [BUILD_EVENTS, BUILD_DELIVERIES, BUILD_ATTEMPTS] {
            let statement = client.prepare(statement).await?;
            let mut start = 1;
            while start <= size {
                let end = (start + chunk - 1).min(size);
                let range = [&(start as i64), &(end as i64), &expired];
                // (only the events take the third parameter)
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = range
                    [..statement.params().len()]
                    .iter()
                    .map(|v| *v as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                client.execute(&statement, &params).await?;
                start = end + 1;
            }
        }
        // Routed, as the router's next window would say.
        client
            .batch_execute(
                "UPDATE outbox.router SET prev_snapshot = pg_current_snapshot(), cur_snapshot = pg_current_snapshot()",
            )
            .await?;
        for table in ["events", "captured_events", "deliveries_done", "attempts"] {
            client
                .batch_execute(&format!("VACUUM ANALYZE outbox.{table}"))
                .await?;
        }
        client.batch_execute("CHECKPOINT").await?;
        Ok(())
    }

    pub(super) async fn retention_hotpath(&mut self) -> anyhow::Result<()> {
        self.finish_cost().await?;
        let variants = [
            "with retention indexes (schema 6)",
            "without (the index set before)",
        ];
        let rounds = self.args.hotpath_rounds.max(1);
        // (deliveries/s, machine CPU µs per delivery) per round and variant
        let mut runs = vec![[(0f64, 0f64); 2]; rounds];
        for (round, measured) in runs.iter_mut().enumerate() {
            for k in 0..2 {
                let variant = (k + round) % 2;
                measured[variant] = self.hotpath_run(variant == 1).await?;
                println!(
                    "round {}: {}: {:.0} deliveries/s, machine CPU {:.0} µs per delivery",
                    round + 1,
                    variants[variant],
                    measured[variant].0,
                    measured[variant].1
                );
            }
        }
        // Per round: throughput with / without, and CPU with / without.
        let mut rate_ratios: Vec<f64> = runs.iter().map(|r| r[0].0 / r[1].0).collect();
        let mut cpu_ratios: Vec<f64> = runs.iter().map(|r| r[0].1 / r[1].1).collect();
        rate_ratios.sort_by(f64::total_cmp);
        cpu_ratios.sort_by(f64::total_cmp);
        // As a change in percent, with the lowest and highest round.
        let change = |v: &[f64]| {
            let pct = |r: f64| (r - 1.0) * 100.0;
            (
                pct(v[v.len() / 2]),
                format!("{:+.1} to {:+.1}%", pct(v[0]), pct(v[v.len() - 1])),
            )
        };
        let (rate, rate_spread) = change(&rate_ratios);
        let (cpu, cpu_spread) = change(&cpu_ratios);
        println!(
            "retention indexes on the hot path, with vs without: throughput {rate:+.1}% \
             (median of {rounds} paired rounds; {rate_spread}), machine CPU per delivery {cpu:+.1}% ({cpu_spread})"
        );
        self.rows.push(Row {
            what: "retention indexes: throughput with vs without".into(),
            target: "(reported)".into(),
            measured: format!("{rate:+.1}% (rounds {rate_spread})"),
            verdict: "-",
        });
        Ok(())
    }

    /// What the indexes add to the statement that moves finished deliveries into
    /// `outbox.deliveries_done`, measured alone: the same inserts, in batches of the completer's
    /// size, into the table with this schema's indexes and into a copy with the index set before,
    /// interleaved ten statements at a time so that both see the same machine.
    async fn finish_cost(&mut self) -> anyhow::Result<()> {
        let url = self.fresh_db("outbox_bench_finish").await?;
        let client = connect(&url).await?;
        client
            .batch_execute(
                "SET synchronous_commit = off;
                 CREATE TABLE outbox.deliveries_done_before
                     (LIKE outbox.deliveries_done INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
                 ALTER TABLE outbox.deliveries_done_before ADD PRIMARY KEY (id);
                 CREATE INDEX ON outbox.deliveries_done_before (status, updated_at) WHERE status <> 'succeeded';
                 CREATE INDEX ON outbox.deliveries_done_before (event_id) WHERE status <> 'succeeded';",
            )
            .await?;
        let tables = ["outbox.deliveries_done", "outbox.deliveries_done_before"];
        let mut inserts = Vec::new();
        for table in tables {
            inserts.push(
                client
                    .prepare(&format!(
                        "INSERT INTO {table} (id, webhook_id, webhook, event_id, event_type, entity,
                             entity_id, status, attempts, priority, coalesced, created_at, updated_at,
                             last_status)
                         SELECT i, 1, 'bench', i, 'bench.created', 'bench', i::text,
                                CASE WHEN i % 100 = 1 THEN 'dead' ELSE 'succeeded' END, 1, 0, 0,
                                now(), now(), 204
                         FROM generate_series($1::bigint, $2::bigint) i"
                    ))
                    .await?,
            );
        }
        const ROWS: i64 = 145; // rows per completion batch at full speed (BENCHMARKS.md)
        let per_variant = self.args.events as i64;
        let mut seconds = [0f64; 2];
        let mut next = [1i64; 2];
        let mut block = 0;
        while next[0] <= per_variant {
            for k in 0..2 {
                let v = (k + block) % 2;
                let t0 = Instant::now();
                for _ in 0..10 {
                    let end = next[v] + ROWS - 1;
                    client.execute(&inserts[v], &[&next[v], &end]).await?;
                    next[v] = end + 1;
                }
                seconds[v] += t0.elapsed().as_secs_f64();
            }
            block += 1;
        }
        let rows = (next[0] - 1) as f64;
        let us = |s: f64| s / rows * 1e6;
        let added = us(seconds[0]) - us(seconds[1]);
        println!(
            "moving a finished delivery into deliveries_done ({rows} rows each, {ROWS} per statement): \
             {:.1} µs with retention indexes, {:.1} µs without: {added:+.1} µs per delivery",
            us(seconds[0]),
            us(seconds[1])
        );
        self.rows.push(Row {
            what: "retention indexes: added to each finished delivery's insert".into(),
            target: "(reported)".into(),
            measured: format!("{added:+.1} µs"),
            verdict: "-",
        });
        Ok(())
    }

    /// One throughput run of `--events` on a fresh database; returns (deliveries/s, machine CPU
    /// µs per delivery).
    async fn hotpath_run(&self, without_indexes: bool) -> anyhow::Result<(f64, f64)> {
        let n = self.args.events;
        let url = self.fresh_db("outbox_bench_hotpath").await?;
        let client = connect(&url).await?;
        if without_indexes {
            client.batch_execute(WITHOUT_RETENTION_INDEXES).await?;
        }
        let procs = self.start_relays(&url, 1).await?;
        self.reset_receiver().await?;
        let machine0 = machine_busy_seconds();
        let t0 = Instant::now();
        self.produce(&url, n, self.args.batch).await?;
        let t1 = self
            .wait_drained(&client, n, Duration::from_secs(600))
            .await?;
        let machine = machine_busy_seconds() - machine0;
        for p in procs {
            p.stop();
        }
        let done: i64 = client
            .query_one("SELECT count(*) FROM outbox.deliveries_done", &[])
            .await?
            .get(0);
        anyhow::ensure!(
            done as u64 == n,
            "{done} finished deliveries for {n} events"
        );
        Ok((n as f64 / (t1 - t0).as_secs_f64(), machine / n as f64 * 1e6))
    }
}

async fn timed_pass(
    state: &mut Retention,
    pool: &deadpool_postgres::Pool,
    cutoff: DateTime<Utc>,
) -> anyhow::Result<Timed> {
    let t0 = Instant::now();
    let pass = state
        .pass_before(pool, cutoff, &CancellationToken::new())
        .await
        .map_err(|e| anyhow::anyhow!("retention pass: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("retention pass: another relay holds the lock"))?;
    Ok(Timed {
        pass,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Rows and size of each history table.
async fn counts(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    let mut out = Vec::new();
    for table in ["events", "deliveries_done", "attempts"] {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), pg_size_pretty(pg_total_relation_size('outbox.{table}')) FROM outbox.{table}"
                ),
                &[],
            )
            .await?;
        out.push(format!(
            "{table} {} rows ({})",
            row.get::<_, i64>(0),
            row.get::<_, String>(1)
        ));
    }
    Ok(out.join(", "))
}
