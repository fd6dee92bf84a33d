//! The scenarios of cost against configuration:
//!
//! - `defaults`: one webhook with no tuning keys and a relay with no settings, against the tuned
//!   configuration, in rounds with the order alternating; the median of each and their ratio.
//! - `webhooks`: 1, 100 and 10,000 webhooks configured (`--webhook-counts`), one tenant each
//!   (`tenantN.*`); 1% of them (at least one) get events, each event matching exactly one. Per
//!   count: how long `outbox-relay apply` of the file takes, how long the relay takes to start,
//!   the drain rate against the single webhook's, the relay's RSS, and how long a reload takes
//!   after one webhook changed; `--compare-rounds` rounds, the order reversed every other round,
//!   medians reported.
//! - `relations`: a webhook whose body uses a related record (`related.customer`) against the
//!   same body from the event alone, in rounds with the order alternating.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_postgres::Client;

use super::{Bench, Row, Tuning, connect, median, run, verdict};
use crate::procs::RelayProc;

const RELATION_SETUP: &str =
    "CREATE TABLE bench_customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL);
    INSERT INTO bench_customers SELECT i, 'Customer ' || i, 'customer' || i || '@example.com'
        FROM generate_series(1, 1000) i;
    INSERT INTO outbox.relations (entity, name, query) VALUES ('bench', 'customer',
        'SELECT to_jsonb(c) FROM bench_customers c WHERE c.id = ($1::jsonb->>''customer'')::int');";

/// Events whose data points at a customer.
const INSERT_WITH_CUSTOMER: &str = "INSERT INTO outbox.events (event_type, entity, entity_id, data)
    SELECT 'bench.created', 'bench', s::text,
           jsonb_build_object('seq', s, 'customer', s % 1000 + 1, 'note', 'benchmark event')
    FROM generate_series($1::bigint, $2::bigint) s";

impl Bench<'_> {
    pub(super) async fn defaults(&mut self) -> anyhow::Result<()> {
        let mut rates: [Vec<f64>; 2] = Default::default();
        for round in 0..self.args.compare_rounds.max(1) {
            let order = if round % 2 == 0 {
                [Tuning::Defaults, Tuning::Tuned]
            } else {
                [Tuning::Tuned, Tuning::Defaults]
            };
            for tuning in order {
                println!("defaults, round {}, {}:", round + 1, tuning.label());
                let drained = self
                    .throughput_run_as(1, "outbox_bench_defaults", tuning)
                    .await?;
                rates[(tuning == Tuning::Tuned) as usize].push(drained.rate);
            }
        }
        let [defaults, tuned] = rates.map(median);
        let rounds = self.args.compare_rounds.max(1);
        self.rows.push(Row {
            what: format!("throughput, no tuning keys (median of {rounds})"),
            target: "the headline".into(),
            measured: format!("{defaults:.0} deliveries/s"),
            verdict: "-",
        });
        self.rows.push(Row {
            what: format!(
                "throughput, tuned: max_in_flight {0}, concurrency {0}, claim_batch {1} (median of {rounds})",
                self.args.concurrency, self.args.claim_batch
            ),
            target: "(reported)".into(),
            measured: format!("{tuned:.0} deliveries/s"),
            verdict: "-",
        });
        let ratio = defaults / tuned;
        self.rows.push(Row {
            what: "defaults / tuned".into(),
            target: "≥ 0.80".into(),
            measured: format!("{ratio:.2}"),
            verdict: verdict(ratio >= 0.8),
        });
        Ok(())
    }

    pub(super) async fn webhooks(&mut self) -> anyhow::Result<()> {
        // Rounds with the order reversed every other round, medians per count: on a shared
        // machine one drain can be 20% off, and the ratio is what the target is about.
        let counts: Vec<usize> = self.args.webhook_counts.iter().map(|&c| c.max(1)).collect();
        let rounds = self.args.compare_rounds.max(1);
        let mut runs: Vec<Vec<WebhooksRun>> = counts.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..counts.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                println!("webhooks, round {}:", round + 1);
                runs[i].push(self.webhooks_run(counts[i]).await?);
            }
        }
        let mut single = None;
        for (&count, runs) in counts.iter().zip(&runs) {
            let active = (count / 100).max(1);
            let pick = |f: fn(&WebhooksRun) -> f64| median(runs.iter().map(f).collect());
            let rate = pick(|r| r.rate);
            let base = *single.get_or_insert(rate);
            let rates: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.rate)).collect();
            self.rows.push(Row {
                what: format!(
                    "throughput, {count} webhooks configured, {active} getting events (median of {rounds})"
                ),
                target: if count >= 10_000 {
                    "≥ 0.80 × 1 webhook".into()
                } else {
                    "(reported)".into()
                },
                measured: format!(
                    "{rate:.0} deliveries/s ({:.2} ×; runs {})",
                    rate / base,
                    rates.join(", ")
                ),
                verdict: if count >= 10_000 {
                    verdict(rate >= 0.8 * base)
                } else {
                    "-"
                },
            });
            if count >= 10_000 {
                let apply = pick(|r| r.apply);
                let rss = runs.iter().map(|r| r.rss).fold(0.0, f64::max);
                let start = pick(|r| r.start);
                self.rows.push(Row {
                    what: format!("apply of {count} webhooks"),
                    target: "≤ 10 s".into(),
                    measured: format!("{apply:.2} s"),
                    verdict: verdict(apply <= 10.0),
                });
                self.rows.push(Row {
                    what: format!("relay peak RSS with {count} webhooks"),
                    target: "≤ 128 MiB".into(),
                    measured: format!("{rss:.1} MiB (ready after {start:.1} s)"),
                    verdict: verdict(rss <= 128.0),
                });
                self.rows.push(Row {
                    what: format!("reload after changing 1 of {count} webhooks"),
                    target: "(reported; only the changed one is compiled)".into(),
                    measured: format!(
                        "{:.0} ms, {:.0} ms relay CPU",
                        pick(|r| r.reload) * 1000.0,
                        pick(|r| r.reload_cpu) * 1000.0
                    ),
                    verdict: "-",
                });
            }
        }
        Ok(())
    }

    /// One round of the `webhooks` scenario with `count` webhooks configured.
    async fn webhooks_run(&mut self, count: usize) -> anyhow::Result<WebhooksRun> {
        let active = (count / 100).max(1);
        println!("  {count} configured, {active} getting events:");
        let url = self
            .empty_db(&format!("outbox_bench_webhooks_{count}"))
            .await?;
        let file = tenants_file(count, &self.receiver.url("/hook"))?;
        let t = Instant::now();
        run(std::process::Command::new(&self.relay_bin)
            .arg("apply")
            .arg(&file)
            .env("DATABASE_URL", &url))
        .context("outbox-relay apply of the tenants' webhooks")?;
        let apply = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&file);
        let t = Instant::now();
        let procs = self.start_relays_as(&url, 1, Tuning::Defaults).await?;
        let start = t.elapsed().as_secs_f64();
        let idle_rss = procs[0].rss_mib();
        let insert = format!(
            "INSERT INTO outbox.events (event_type, entity, entity_id, data)
             SELECT 'tenant' || (s % {active}) || '.order.created', 'order', s::text,
                    jsonb_build_object('seq', s, 'note', 'benchmark event')
             FROM generate_series($1::bigint, $2::bigint) s"
        );
        let drained = self.drain(&url, &procs, self.args.events, &insert).await?;
        let client = connect(&url).await?;
        let (reload, reload_cpu) = reload_after_one_change(&client, &procs[0]).await?;
        let rss = procs[0].peak_rss_mib();
        for p in procs {
            p.stop();
        }
        println!(
            "  apply {apply:.2}s; relay ready after {start:.2}s at {idle_rss:.1} MiB; \
             reload after one change {:.0} ms ({:.0} ms relay CPU); peak RSS {rss:.1} MiB",
            reload * 1000.0,
            reload_cpu * 1000.0
        );
        Ok(WebhooksRun {
            rate: drained.rate,
            apply,
            start,
            rss,
            reload,
            reload_cpu,
        })
    }

    pub(super) async fn relations(&mut self) -> anyhow::Result<()> {
        let mut rates: [Vec<f64>; 2] = Default::default();
        let mut transactions: [Vec<f64>; 2] = Default::default();
        for round in 0..self.args.compare_rounds.max(1) {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for related in order {
                let label = if related {
                    "body with related.customer"
                } else {
                    "body from the event alone"
                };
                println!("relations, round {}, {label}:", round + 1);
                let (rate, per_delivery) = self.relations_run(related).await?;
                rates[related as usize].push(rate);
                transactions[related as usize].push(per_delivery);
            }
        }
        let [plain, related] = rates.map(median);
        let [plain_tx, related_tx] = transactions.map(median);
        self.rows.push(Row {
            what: "throughput, body from the event alone".into(),
            target: "(reported)".into(),
            measured: format!("{plain:.0} deliveries/s, {plain_tx:.2} transactions per delivery"),
            verdict: "-",
        });
        self.rows.push(Row {
            what: "throughput, body with a related record".into(),
            target: "(reported)".into(),
            measured: format!(
                "{related:.0} deliveries/s ({:.2} ×), {related_tx:.2} transactions per delivery",
                related / plain
            ),
            verdict: "-",
        });
        Ok(())
    }

    /// One drain of a webhook with no tuning keys whose body names the customer, from the related
    /// record or from the event; returns the rate and the database's transactions per delivery.
    async fn relations_run(&self, related: bool) -> anyhow::Result<(f64, f64)> {
        let url = self.empty_db("outbox_bench_relations").await?;
        let client = connect(&url).await?;
        client.batch_execute(RELATION_SETUP).await?;
        let customer = if related {
            "related.customer.name"
        } else {
            "event.data.customer"
        };
        client
            .execute(
                "INSERT INTO outbox.webhooks (name, events, url, body) VALUES ('bench', '{bench.*}', $1, $2)",
                &[
                    &self.receiver.url("/hook"),
                    &format!(
                        r#"{{"entity_id": {{{{ entity_id }}}}, "type": {{{{ event.type }}}}, "customer": {{{{ {customer} }}}}}}"#
                    ),
                ],
            )
            .await?;
        let procs = self.start_relays_as(&url, 1, Tuning::Defaults).await?;
        let before = transactions(&client).await?;
        let drained = self
            .drain(&url, &procs, self.args.events, INSERT_WITH_CUSTOMER)
            .await?;
        for p in procs {
            p.stop();
        }
        // Statistics reach the shared counters within a second of a backend going idle.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let per_delivery = (transactions(&client).await? - before) / self.args.events as f64;
        Ok((drained.rate, per_delivery))
    }
}

/// The figures of one round of the `webhooks` scenario.
struct WebhooksRun {
    rate: f64,
    /// Seconds.
    apply: f64,
    /// Seconds until the relay was ready.
    start: f64,
    /// Peak RSS, MiB.
    rss: f64,
    /// Seconds from the change to the relay's reaction, and relay CPU seconds spent on it.
    reload: f64,
    reload_cpu: f64,
}

/// Committed and rolled back transactions of the current database so far.
async fn transactions(client: &Client) -> anyhow::Result<f64> {
    let row = client
        .query_one(
            "SELECT (xact_commit + xact_rollback)::float8 FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// An `apply` file with `count` webhooks, `tenant0` … `tenantN`, each listening to its own
/// tenant's events; written to a temporary file whose path is returned.
fn tenants_file(count: usize, url: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::fmt::Write;
    let mut text = String::with_capacity(count * 96);
    for i in 0..count {
        let _ = writeln!(
            text,
            "[[webhook]]\nname = \"tenant{i}\"\nevents = [\"tenant{i}.*\"]\nurl = \"{url}\"\n"
        );
    }
    let path = std::env::temp_dir().join(format!(
        "outbox-bench-webhooks-{}-{count}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Changes one webhook so that it turns invalid (a filter that does not parse) and waits until the
/// relay has reloaded and said so; then puts it back. Returns the seconds the reload took and the
/// relay CPU seconds spent meanwhile.
async fn reload_after_one_change(client: &Client, relay: &RelayProc) -> anyhow::Result<(f64, f64)> {
    let cpu0 = relay.cpu_seconds();
    let t = Instant::now();
    client
        .execute(
            "UPDATE outbox.webhooks SET filter = 'event.data.seq >' WHERE name = 'tenant0'",
            &[],
        )
        .await?;
    wait_valid(client, false).await?;
    let took = t.elapsed().as_secs_f64();
    let cpu = relay.cpu_seconds() - cpu0;
    client
        .execute(
            "UPDATE outbox.webhooks SET filter = NULL WHERE name = 'tenant0'",
            &[],
        )
        .await?;
    wait_valid(client, true).await?;
    Ok((took, cpu))
}

async fn wait_valid(client: &Client, valid: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: bool = client
            .query_one(
                "SELECT valid FROM outbox.webhooks WHERE name = 'tenant0'",
                &[],
            )
            .await?
            .get(0);
        if now == valid {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the relay did not reload within 60 s of a webhook changing");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
