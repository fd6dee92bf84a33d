//! The benchmark scenarios and the report.

mod peer;
mod retention;
mod scale;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_postgres::{Client, NoTls};

use outbox_core::Capture;

use crate::Args;
use crate::procs::{
    Receiver, RelayProc, http_get, machine_busy_seconds, own_cpu_seconds, relay_binary,
};
use crate::receiver::now_us;

/// Events `$1..=$2` in one statement; `entity_id` is the sequence number the receiver reports.
const INSERT_RANGE: &str = "INSERT INTO outbox.events (event_type, entity, entity_id, data)
    SELECT 'bench.created', 'bench', s::text, jsonb_build_object('seq', s, 'note', 'benchmark event')
    FROM generate_series($1::bigint, $2::bigint) s";

/// How the benchmark's webhook and relay are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tuning {
    /// A webhook with no tuning keys and a relay with no settings but its database: what a user
    /// gets. The headline.
    Defaults,
    /// The webhook's `max_in_flight` set to the relay's `--concurrency`, and the relay's
    /// `concurrency`, `claim_batch` and a 100 ms `poll_interval` set explicitly.
    Tuned,
}

impl Tuning {
    fn label(self) -> &'static str {
        match self {
            Tuning::Defaults => "defaults",
            Tuning::Tuned => "tuned",
        }
    }
}

/// What one drain of `n` events measured.
struct Drained {
    rate: f64,
    /// Relay CPU seconds per 10,000 deliveries.
    cpu_per_10k: f64,
    /// Peak RSS of the largest relay, MiB.
    rss: f64,
}

struct Row {
    what: String,
    target: String,
    measured: String,
    verdict: &'static str,
}

struct Bench<'a> {
    args: &'a Args,
    admin: String,
    relay_bin: PathBuf,
    receiver: Receiver,
    rows: Vec<Row>,
    /// Databases this run created, dropped when it ends.
    databases: std::sync::Mutex<Vec<String>>,
}

pub async fn run_all(args: &Args) -> anyhow::Result<()> {
    let mut cluster = None;
    let admin = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            eprintln!("no DATABASE_URL: starting a private Postgres from the local binaries");
            let c = outbox_core::cluster::PrivateCluster::start(&Default::default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let url = c.url("postgres");
            cluster = Some(c);
            url
        }
    };
    let mut bench = Bench {
        args,
        relay_bin: relay_binary(args.relay_bin.as_deref())?,
        receiver: Receiver::start()?,
        admin,
        rows: Vec::new(),
        databases: Default::default(),
    };
    print_machine(&bench.admin).await;
    let result = bench.run_scenarios().await;
    // Failed or not, leave the server as it was found (a backlog run leaves gigabytes).
    bench.drop_databases().await;
    result?;
    bench.report();
    drop(cluster);
    Ok(())
}

async fn print_machine(admin: &str) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let version = match connect(admin).await {
        Ok(c) => c
            .query_one("SHOW server_version", &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    println!("machine: {cores} cores; Postgres {version}");
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", outbox_core::db::redact_url(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl Bench<'_> {
    /// A fresh migrated database with one webhook to the receiver.
    async fn run_scenarios(&mut self) -> anyhow::Result<()> {
        for scenario in &self.args.scenarios {
            match scenario.as_str() {
                "throughput" => self.throughput().await?,
                "latency" => self.latency().await?,
                "backlog" => self.backlog().await?,
                "producer" => self.producer().await?,
                "scaleout" => self.scaleout().await?,
                "soak" => self.soak().await?,
                "retention" => self.retention().await?,
                "retention-hotpath" => self.retention_hotpath().await?,
                "defaults" => self.defaults().await?,
                "webhooks" => self.webhooks().await?,
                "relations" => self.relations().await?,
                "peer" => self.peer().await?,
                other => bail!(
                    "unknown scenario {other:?}; use throughput, defaults, webhooks, relations, peer, latency, backlog, producer, scaleout, soak, retention, retention-hotpath"
                ),
            }
        }
        Ok(())
    }

    async fn drop_databases(&self) {
        let names = std::mem::take(&mut *self.databases.lock().unwrap_or_else(|e| e.into_inner()));
        let Ok(admin) = connect(&self.admin).await else {
            eprintln!("could not connect to drop the benchmark's databases: {names:?}");
            return;
        };
        for name in names {
            if let Err(e) = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
            {
                eprintln!("could not drop database {name}: {e}");
            }
        }
    }

    /// The tuning of every scenario but `defaults` (which runs both): `--tuned` or not.
    fn tuning(&self) -> Tuning {
        if self.args.tuned {
            Tuning::Tuned
        } else {
            Tuning::Defaults
        }
    }

    /// A fresh database with no webhook, migrated by the relay under test.
    async fn empty_db(&self, name: &str) -> anyhow::Result<String> {
        let admin = connect(&self.admin).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        {
            let mut databases = self.databases.lock().unwrap_or_else(|e| e.into_inner());
            if !databases.iter().any(|d| d == name) {
                databases.push(name.to_string());
            }
        }
        let url = outbox_core::db::with_database(&self.admin, name);
        // Migrated by the relay under test, so `--relay-bin` can compare builds of different
        // schema versions.
        run(std::process::Command::new(&self.relay_bin)
            .arg("migrate")
            .env("DATABASE_URL", &url))
        .context("outbox-relay migrate")?;
        Ok(url)
    }

    /// A fresh migrated database with one webhook (`bench.*`) to the receiver, tuned as the run
    /// says.
    async fn fresh_db(&self, name: &str) -> anyhow::Result<String> {
        self.fresh_db_as(name, self.tuning()).await
    }

    async fn fresh_db_as(&self, name: &str, tuning: Tuning) -> anyhow::Result<String> {
        let url = self.empty_db(name).await?;
        let client = connect(&url).await?;
        match tuning {
            Tuning::Defaults => {
                client
                    .execute(
                        "INSERT INTO outbox.webhooks (name, events, url) VALUES ('bench', '{bench.*}', $1)",
                        &[&self.receiver.url("/hook")],
                    )
                    .await?
            }
            // A fast receiver: let one webhook use the relay's whole concurrency.
            Tuning::Tuned => {
                client
                    .execute(
                        "INSERT INTO outbox.webhooks (name, events, url, max_in_flight) VALUES ('bench', '{bench.*}', $1, $2)",
                        &[&self.receiver.url("/hook"), &(self.args.concurrency as i32)],
                    )
                    .await?
            }
        };
        Ok(url)
    }

    fn relay_env(&self, tuning: Tuning) -> Vec<(&'static str, String)> {
        match tuning {
            Tuning::Defaults => Vec::new(),
            Tuning::Tuned => vec![
                ("OUTBOX_CONCURRENCY", self.args.concurrency.to_string()),
                ("OUTBOX_CLAIM_BATCH", self.args.claim_batch.to_string()),
                ("OUTBOX_POLL_INTERVAL", "100ms".into()),
            ],
        }
    }

    async fn start_relays(&self, url: &str, n: usize) -> anyhow::Result<Vec<RelayProc>> {
        self.start_relays_as(url, n, self.tuning()).await
    }

    async fn start_relays_as(
        &self,
        url: &str,
        n: usize,
        tuning: Tuning,
    ) -> anyhow::Result<Vec<RelayProc>> {
        let mut relays = Vec::new();
        for _ in 0..n {
            relays.push(RelayProc::start(
                &self.relay_bin,
                url,
                &self.relay_env(tuning),
            )?);
        }
        for r in &relays {
            r.wait_ready().await?;
        }
        Ok(relays)
    }

    async fn reset_receiver(&self) -> anyhow::Result<()> {
        http_get(self.receiver.port, "/reset").await?;
        Ok(())
    }

    async fn received(&self) -> u64 {
        http_get(self.receiver.port, "/count")
            .await
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    async fn arrivals(&self) -> anyhow::Result<Vec<(u64, u64)>> {
        let text = http_get(self.receiver.port, "/arrivals").await?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Waits until `n` requests arrived and every delivery is recorded as finished (the hot queue
    /// is empty: finished deliveries leave it).
    async fn wait_drained(
        &self,
        client: &Client,
        n: u64,
        limit: Duration,
    ) -> anyhow::Result<Instant> {
        self.wait_drained_by(
            client,
            n,
            limit,
            "SELECT EXISTS (SELECT 1 FROM outbox.deliveries)",
        )
        .await
    }

    /// Waits until `n` requests arrived and `queued` (a query answering one boolean: is work
    /// left?) answers false.
    async fn wait_drained_by(
        &self,
        client: &Client,
        n: u64,
        limit: Duration,
        queued: &str,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if self.received().await >= n {
                let queued: bool = client.query_one(queued, &[]).await?.get(0);
                if !queued {
                    return Ok(Instant::now());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "not drained after {limit:?}: {} of {n} received",
                    self.received().await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Commits `n` events from the configured producers; returns when all are committed.
    async fn produce(&self, url: &str, n: u64, batch: u64) -> anyhow::Result<()> {
        self.produce_with(url, n, batch, INSERT_RANGE).await
    }

    /// Commits `n` rows with `insert` (a statement taking the first and last sequence number of a
    /// batch) from the configured producers, `batch` per transaction.
    async fn produce_with(
        &self,
        url: &str,
        n: u64,
        batch: u64,
        insert: &str,
    ) -> anyhow::Result<()> {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..self.args.producers {
            let client = connect(url).await?;
            let next = next.clone();
            let insert = insert.to_string();
            tasks.push(tokio::spawn(async move {
                let insert = client.prepare(&insert).await?;
                loop {
                    let start = next.fetch_add(batch, Ordering::Relaxed);
                    if start >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let end = (start + batch).min(n) - 1;
                    client
                        .execute(&insert, &[&(start as i64), &(end as i64)])
                        .await?;
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    }

    async fn throughput_run(&self, relays: usize, db: &str) -> anyhow::Result<Drained> {
        self.throughput_run_as(relays, db, self.tuning()).await
    }

    /// `--events` events committed by the producers on a fresh database and drained by `relays`
    /// relays configured as `tuning` says.
    async fn throughput_run_as(
        &self,
        relays: usize,
        db: &str,
        tuning: Tuning,
    ) -> anyhow::Result<Drained> {
        let url = self.fresh_db_as(db, tuning).await?;
        let procs = self.start_relays_as(&url, relays, tuning).await?;
        let drained = self
            .drain(&url, &procs, self.args.events, INSERT_RANGE)
            .await?;
        for p in procs {
            p.stop();
        }
        Ok(drained)
    }

    /// Commits `n` events with `insert` (see [`Bench::produce_with`]) while `procs` deliver them;
    /// the clock stops when the receiver has every request and every attempt is recorded. Checks
    /// exactly once (each event matches one webhook) and prints where the CPU went.
    async fn drain(
        &self,
        url: &str,
        procs: &[RelayProc],
        n: u64,
        insert: &str,
    ) -> anyhow::Result<Drained> {
        let client = connect(url).await?;
        self.reset_receiver().await?;
        let cpu0: f64 = procs.iter().map(|p| p.cpu_seconds()).sum();
        let (machine0, own0, receiver0) = (
            machine_busy_seconds(),
            own_cpu_seconds(),
            self.receiver.cpu_seconds(),
        );
        let t0 = Instant::now();
        self.produce_with(url, n, self.args.batch, insert).await?;
        let committed = t0.elapsed();
        let t1 = self
            .wait_drained(&client, n, Duration::from_secs(600))
            .await?;
        let cpu = procs.iter().map(|p| p.cpu_seconds()).sum::<f64>() - cpu0;
        let machine = machine_busy_seconds() - machine0;
        let producers = own_cpu_seconds() - own0;
        let receiver = self.receiver.cpu_seconds() - receiver0;
        let rss = procs.iter().map(|p| p.peak_rss_mib()).fold(0.0, f64::max);
        let elapsed = t1 - t0;
        let rate = n as f64 / elapsed.as_secs_f64();
        // Exactly once: every delivery attempted once, every event received once.
        let attempts: i64 = client
            .query_one("SELECT count(*) FROM outbox.attempts", &[])
            .await?
            .get(0);
        let arrivals = self.arrivals().await?;
        let distinct: std::collections::HashSet<u64> = arrivals.iter().map(|a| a.0).collect();
        if attempts as u64 != n || arrivals.len() as u64 != n || distinct.len() as u64 != n {
            bail!(
                "duplicates or losses: {n} events, {attempts} attempts, {} requests, {} distinct",
                arrivals.len(),
                distinct.len()
            );
        }
        print_cpu_split(n, elapsed, cpu, machine, producers, receiver);
        println!(
            "  {n} events committed in {:.2}s, all delivered and recorded in {:.2}s \
             = {rate:.0} deliveries/s; relay CPU {cpu:.2}s; peak RSS {rss:.1} MiB",
            committed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
        Ok(Drained {
            rate,
            cpu_per_10k: cpu / n as f64 * 10_000.0,
            rss,
        })
    }

    async fn throughput(&mut self) -> anyhow::Result<()> {
        println!("throughput, 1 relay, {}:", self.tuning().label());
        let Drained {
            rate,
            cpu_per_10k,
            rss,
        } = self.throughput_run(1, "outbox_bench_tp").await?;
        self.rows.push(Row {
            what: format!(
                "sustained throughput ({} events, 1 relay, {})",
                self.args.events,
                self.tuning().label()
            ),
            target: "≥ 10,000/s (stretch 20,000)".into(),
            measured: format!("{rate:.0} deliveries/s"),
            verdict: verdict(rate >= 10_000.0),
        });
        self.rows.push(Row {
            what: "relay peak RSS".into(),
            target: "≤ 64 MiB".into(),
            measured: format!("{rss:.1} MiB"),
            verdict: verdict(rss <= 64.0),
        });
        self.rows.push(Row {
            what: "relay CPU per 10k deliveries".into(),
            target: "(reported)".into(),
            measured: format!("{cpu_per_10k:.2} s"),
            verdict: "-",
        });
        Ok(())
    }

    async fn scaleout(&mut self) -> anyhow::Result<()> {
        for relays in [2usize, 3] {
            println!("throughput, {relays} relays, {}:", self.tuning().label());
            let rate = self
                .throughput_run(relays, &format!("outbox_bench_scale{relays}"))
                .await?
                .rate;
            self.rows.push(Row {
                what: format!("throughput with {relays} relays, no duplicate attempts"),
                target: "(reported; shares the work)".into(),
                measured: format!("{rate:.0} deliveries/s"),
                verdict: "-",
            });
        }
        Ok(())
    }

    async fn latency(&mut self) -> anyhow::Result<()> {
        let url = self.fresh_db("outbox_bench_latency").await?;
        let client = connect(&url).await?;
        let procs = self.start_relays(&url, 1).await?;
        self.reset_receiver().await?;
        let rate = self.args.rate;
        let total = rate * self.args.latency_seconds;
        let commits: Arc<std::sync::Mutex<HashMap<u64, u64>>> = Arc::default();
        let next = Arc::new(AtomicU64::new(0));
        let start = tokio::time::Instant::now() + Duration::from_millis(100);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let client = connect(&url).await?;
            let next = next.clone();
            let commits = commits.clone();
            tasks.push(tokio::spawn(async move {
                let insert = client
                    .prepare(
                        "INSERT INTO outbox.events (event_type, entity, entity_id, data)
                         VALUES ('bench.created', 'bench', $1, jsonb_build_object('seq', $1::text))",
                    )
                    .await?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                    client.execute(&insert, &[&i.to_string()]).await?;
                    commits.lock().expect("commits").insert(i, now_us());
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        self.wait_drained(&client, total, Duration::from_secs(120))
            .await?;
        for p in procs {
            p.stop();
        }
        let commits = commits.lock().expect("commits").clone();
        let mut latencies: Vec<f64> = self
            .arrivals()
            .await?
            .iter()
            .filter_map(|(seq, at)| commits.get(seq).map(|c| (*at as f64 - *c as f64) / 1000.0))
            .collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
        let p =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        let (p50, p95, p99) = (p(0.50), p(0.95), p(0.99));
        println!(
            "latency at {rate} events/s for {}s: p50 {p50:.2} ms, p95 {p95:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
            self.args.latency_seconds,
            latencies.last().copied().unwrap_or(0.0)
        );
        self.rows.push(Row {
            what: format!("commit → receipt p50 at {rate}/s"),
            target: "≤ 5 ms".into(),
            measured: format!("{p50:.2} ms"),
            verdict: verdict(p50 <= 5.0),
        });
        self.rows.push(Row {
            what: format!("commit → receipt p95 at {rate}/s"),
            target: "(reported)".into(),
            measured: format!("{p95:.2} ms"),
            verdict: "-",
        });
        self.rows.push(Row {
            what: format!("commit → receipt p99 at {rate}/s"),
            target: "≤ 25 ms".into(),
            measured: format!("{p99:.2} ms"),
            verdict: verdict(p99 <= 25.0),
        });
        Ok(())
    }

    async fn backlog(&mut self) -> anyhow::Result<()> {
        let mut rates = Vec::new();
        for &size in &self.args.backlogs {
            let url = self.fresh_db("outbox_bench_backlog").await?;
            let client = connect(&url).await?;
            let chunk = 50_000u64;
            let mut start = 0;
            while start < size {
                let end = (start + chunk).min(size) - 1;
                client
                    .execute(INSERT_RANGE, &[&(start as i64), &(end as i64)])
                    .await?;
                start = end + 1;
            }
            client.batch_execute("ANALYZE outbox.events").await?;
            self.reset_receiver().await?;
            let t0 = Instant::now();
            let procs = self.start_relays(&url, 1).await?;
            let t1 = self
                .wait_drained(&client, size, Duration::from_secs(3600))
                .await?;
            let rss = procs.iter().map(|p| p.peak_rss_mib()).fold(0.0, f64::max);
            for p in procs {
                p.stop();
            }
            let rate = size as f64 / (t1 - t0).as_secs_f64();
            let stats = table_stats(&client).await?;
            println!(
                "backlog of {size}: drained in {:.1}s = {rate:.0} deliveries/s; peak RSS {rss:.1} MiB; {stats}",
                (t1 - t0).as_secs_f64()
            );
            self.rows.push(Row {
                what: format!("backlog drain, {size} events"),
                target: "same rate for 10k and 1M".into(),
                measured: format!("{rate:.0} deliveries/s"),
                verdict: "-",
            });
            rates.push(rate);
        }
        if rates.len() >= 2 {
            let ratio = rates[rates.len() - 1] / rates[0];
            self.rows.push(Row {
                what: "largest backlog rate / smallest backlog rate".into(),
                target: "≈ 1 (no slow-down with size)".into(),
                measured: format!("{ratio:.2}"),
                verdict: verdict(ratio >= 0.8),
            });
        }
        Ok(())
    }

    async fn producer(&mut self) -> anyhow::Result<()> {
        let Some(pgbench) = find_pgbench() else {
            println!("producer overhead: skipped (no pgbench binary found)");
            return Ok(());
        };
        let url = self.fresh_db("outbox_bench_producer").await?;
        let scale = if self.args.smoke { "1" } else { "10" };
        run(Command::new(&pgbench).args(["-i", "-q", "-s", scale, &url]))?;
        let mut client = connect(&url).await?;
        // Someone listens, as a running relay would (NOTIFY then really queues notifications).
        let listener = connect(&url).await?;
        listener.batch_execute("LISTEN outbox_events").await?;
        let secs = self.args.pgbench_seconds.to_string();
        let rounds = self.args.pgbench_rounds.max(1);
        let variants = [
            "no trigger",
            "capture trigger, notify on (relay busy: no NOTIFY)",
            "capture trigger, notify on (relay idle: NOTIFY every commit)",
            "capture trigger, notify off",
            "reference: the least PL/pgSQL row trigger that stores one event",
            "native capture trigger, notify on (relay busy: no NOTIFY)",
        ];
        // The native capture is measured where its library is installed in this server.
        let native = outbox_core::set_capture(&mut client, Capture::Native)
            .await
            .map_err(|e| e.to_string());
        if let Err(why) = &native {
            println!("native capture: not measured: {why}");
        }
        let measured_variants: Vec<usize> = (0..variants.len())
            .filter(|&i| i != NATIVE_VARIANT || native.is_ok())
            .collect();
        client.batch_execute(FLOOR_TRIGGER).await?;
        // tps[round][variant]
        let mut tps = vec![[0f64; 6]; rounds];
        // Every round runs each variant once from the same starting state, so neither table growth
        // nor a checkpoint favours one; the order rotates from round to round so no variant always
        // runs right after another. A variant's cost is taken against the plain run of its own
        // round, which cancels slow drifts of the machine's speed; the median round is reported.
        for (round, measured) in tps.iter_mut().enumerate() {
            let n = measured_variants.len();
            for i in (0..n).map(|k| measured_variants[(k + round) % n]) {
                self.producer_variant(&mut client, i).await?;
                let out = run(Command::new(&pgbench)
                    .args(PGBENCH_LOAD)
                    .args([&secs, &url]))?;
                measured[i] = out
                    .lines()
                    .find(|l| l.starts_with("tps ="))
                    .and_then(|l| l.split_whitespace().nth(2))
                    .and_then(|v| v.parse::<f64>().ok())
                    .context("pgbench printed no tps")?;
                println!(
                    "round {}: pgbench tpcb-like, 8 clients, {}: {:.0} tps",
                    round + 1,
                    variants[i],
                    measured[i]
                );
            }
        }
        // A second instrument, immune to the machine's speed changing between runs: the share of
        // all CPU samples (Postgres, pgbench, kernel) taken inside the capture trigger, during one
        // more run each of the busy-relay and the notify-off variants. That share is what removing
        // the trigger would give back to a CPU-bound machine. Keyed by variant.
        let mut shares = HashMap::new();
        for i in [1, 3, NATIVE_VARIANT] {
            let share = if self.args.smoke {
                Err("skipped in a smoke run".to_string())
            } else if let (NATIVE_VARIANT, Err(why)) = (i, &native) {
                Err(why.clone())
            } else {
                self.producer_variant(&mut client, i).await?;
                trigger_cpu_share(
                    &pgbench,
                    &url,
                    self.args.pgbench_seconds,
                    i == NATIVE_VARIANT,
                )
            };
            shares.insert(i, share);
        }
        drop(listener);
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let plain = median(tps.iter().map(|r| r[0]).collect());
        // (median cost %, lowest, highest, median tps)
        let cost = |i: usize| {
            let mut costs: Vec<f64> = tps.iter().map(|r| (1.0 - r[i] / r[0]) * 100.0).collect();
            costs.sort_by(|a, b| a.total_cmp(b));
            (
                costs[costs.len() / 2],
                costs[0],
                costs[costs.len() - 1],
                median(tps.iter().map(|r| r[i]).collect()),
            )
        };
        let describe = |(median, low, high, with): (f64, f64, f64, f64)| {
            if rounds > 1 {
                format!("{median:.1}% (rounds {low:.1} to {high:.1}%; {plain:.0} → {with:.0} tps)")
            } else {
                format!("{median:.1}% ({plain:.0} → {with:.0} tps)")
            }
        };
        self.rows.push(Row {
            what: "capture trigger cost (pgbench, 8 clients, notify on)".into(),
            target: "≤ 10% of throughput".into(),
            measured: describe(cost(1)),
            verdict: verdict(cost(1).0 <= 10.0),
        });
        let share_row = |i: usize| {
            let share = &shares[&i];
            Row {
                what: "  same, by CPU samples inside the trigger (perf)".into(),
                // Not the target's measure: the throughput cost also holds what the trigger
                // costs outside its own code (more WAL to write and flush, caches).
                target: "(reported)".into(),
                measured: match share {
                    Ok(share) => format!("{share:.1}% of all CPU samples"),
                    Err(why) => format!("not measured: {why}"),
                },
                verdict: "-",
            }
        };
        self.rows.push(share_row(1));
        self.rows.push(Row {
            what: "  same, if every commit had to NOTIFY (idle relay)".into(),
            target: "(reported)".into(),
            measured: describe(cost(2)),
            verdict: "-",
        });
        self.rows.push(Row {
            what: "capture trigger cost (pgbench, 8 clients, notify off)".into(),
            target: "≤ 10% of throughput".into(),
            measured: describe(cost(3)),
            verdict: verdict(cost(3).0 <= 10.0),
        });
        self.rows.push(share_row(3));
        self.rows.push(Row {
            what: "  floor: a PL/pgSQL row trigger that only inserts one event".into(),
            target: "(reported)".into(),
            measured: describe(cost(4)),
            verdict: "-",
        });
        if native.is_ok() {
            self.rows.push(Row {
                what: "native capture trigger cost (pgbench, 8 clients, notify on)".into(),
                target: "≤ 10% of throughput".into(),
                measured: describe(cost(NATIVE_VARIANT)),
                verdict: verdict(cost(NATIVE_VARIANT).0 <= 10.0),
            });
            self.rows.push(share_row(NATIVE_VARIANT));
        }
        Ok(())
    }

    /// Puts the producer database into variant `i` (see [`producer_setup`]), each time from the
    /// same starting state: no events, no history, freshly vacuumed, just checkpointed.
    async fn producer_variant(&self, client: &mut Client, i: usize) -> anyhow::Result<()> {
        let capture = if i == NATIVE_VARIANT {
            Capture::Native
        } else {
            Capture::Plpgsql
        };
        if outbox_core::capture_in_use(client).await? != capture {
            outbox_core::set_capture(client, capture).await?;
        }
        client.batch_execute(&producer_setup(i)).await?;
        client
            .batch_execute("TRUNCATE outbox.events, pgbench_history")
            .await?;
        client
            .batch_execute("VACUUM ANALYZE pgbench_accounts, pgbench_tellers, pgbench_branches")
            .await?;
        client.batch_execute("CHECKPOINT").await?;
        Ok(())
    }

    /// A sustained offered load for a while, watching the hot queue table: it must not grow.
    async fn soak(&mut self) -> anyhow::Result<()> {
        let url = self.fresh_db("outbox_bench_soak").await?;
        let client = connect(&url).await?;
        let procs = self.start_relays(&url, 1).await?;
        self.reset_receiver().await?;
        let rate = self.args.soak_rate;
        let seconds = self.args.soak_seconds;
        let batch = 10u64;
        let total = rate * seconds;
        let next = Arc::new(AtomicU64::new(0));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let client = connect(&url).await?;
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                let insert = client.prepare(INSERT_RANGE).await?;
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= total {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let due = start + Duration::from_secs_f64(first as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                    client
                        .execute(
                            &insert,
                            &[&(first as i64), &((first + batch).min(total) as i64 - 1)],
                        )
                        .await?;
                }
            }));
        }
        let mut sizes = Vec::new();
        let sample_every = Duration::from_secs((seconds / 10).max(1));
        while tasks.iter().any(|t| !t.is_finished()) {
            tokio::time::sleep(sample_every).await;
            let row = client
                .query_one(
                    "SELECT pg_total_relation_size('outbox.deliveries'), n_dead_tup, n_live_tup
                     FROM pg_stat_user_tables WHERE relid = 'outbox.deliveries'::regclass",
                    &[],
                )
                .await?;
            let size: i64 = row.get(0);
            let dead: i64 = row.get(1);
            let live: i64 = row.get(2);
            println!(
                "soak at {:>4}s: hot queue {:.1} MiB ({live} live, {dead} dead rows), {} received",
                start.elapsed().as_secs(),
                size as f64 / 1048576.0,
                self.received().await
            );
            sizes.push(size);
        }
        for t in tasks {
            t.await??;
        }
        self.wait_drained(&client, total, Duration::from_secs(300))
            .await?;
        let rss = procs.iter().map(|p| p.peak_rss_mib()).fold(0.0, f64::max);
        for p in procs {
            p.stop();
        }
        let half = sizes.len() / 2;
        let first_half = sizes[..half.max(1)].iter().copied().max().unwrap_or(0);
        let second_half = sizes[half..].iter().copied().max().unwrap_or(0);
        self.rows.push(Row {
            what: format!("hot queue size over {seconds}s at {rate}/s (max, 1st → 2nd half)"),
            target: "bounded (no growth)".into(),
            measured: format!(
                "{:.1} → {:.1} MiB",
                first_half as f64 / 1048576.0,
                second_half as f64 / 1048576.0
            ),
            verdict: verdict(second_half <= first_half + first_half / 2 + 1_048_576),
        });
        self.rows.push(Row {
            what: format!("relay peak RSS over {seconds}s at {rate}/s"),
            target: "≤ 64 MiB".into(),
            measured: format!("{rss:.1} MiB"),
            verdict: verdict(rss <= 64.0),
        });
        Ok(())
    }

    fn report(&self) {
        let w0 = self
            .rows
            .iter()
            .map(|r| r.what.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let w1 = self
            .rows
            .iter()
            .map(|r| r.target.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let w2 = self
            .rows
            .iter()
            .map(|r| r.measured.chars().count())
            .max()
            .unwrap_or(0)
            .max(8);
        println!();
        if self.args.smoke {
            println!("(smoke run: tiny sizes; the figures below mean nothing)");
        }
        println!(
            "| {:<w0$} | {:<w1$} | {:<w2$} | met |",
            "figure", "target", "measured"
        );
        println!(
            "|{}|{}|{}|-----|",
            "-".repeat(w0 + 2),
            "-".repeat(w1 + 2),
            "-".repeat(w2 + 2)
        );
        for r in &self.rows {
            println!(
                "| {:<w0$} | {:<w1$} | {:<w2$} | {:<3} |",
                r.what, r.target, r.measured, r.verdict
            );
        }
    }
}

/// pgbench's load in the producer comparison, up to the duration: the built-in tpcb-like business
/// transaction from 8 clients on 2 threads, for -T seconds.
const PGBENCH_LOAD: [&str; 6] = ["-n", "-c", "8", "-j", "2", "-T"];

/// A yardstick for the capture trigger: the least any PL/pgSQL row trigger that stores the change
/// as an event can do. One INSERT of constants and the two rows into `outbox.captured_events` (the
/// table `capture` writes), none of `capture`'s checks, no NOTIFY decision.
const FLOOR_TRIGGER: &str = "CREATE OR REPLACE FUNCTION bench_floor_capture() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO outbox.captured_events (event_type, entity, entity_id, data, old)
        VALUES ('account.updated', 'account', '1', to_jsonb(NEW), to_jsonb(OLD));
        RETURN NULL;
    END
    $$";

/// The producer variant that runs the native capture, as variant 1 with the PL/pgSQL one.
const NATIVE_VARIANT: usize = 5;

/// The SQL that puts the producer database into variant `i` of the comparison: 0 no trigger,
/// 1 capture with a busy relay (no NOTIFY), 2 capture with an idle relay (NOTIFY every commit),
/// 3 capture with notify off, 4 the floor trigger (see [`FLOOR_TRIGGER`]), 5 as 1 (the caller
/// switches `capture` to the native implementation).
fn producer_setup(i: usize) -> String {
    const CAPTURE: &str = "DROP TRIGGER IF EXISTS accounts_outbox ON pgbench_accounts;
        CREATE TRIGGER accounts_outbox AFTER INSERT OR UPDATE OR DELETE ON pgbench_accounts
            FOR EACH ROW EXECUTE FUNCTION outbox.capture('account', 'aid');";
    match i {
        0 => "DROP TRIGGER IF EXISTS accounts_outbox ON pgbench_accounts".to_string(),
        // What a relay that keeps up with a busy database leaves behind: it polls by itself and
        // has asked producers not to NOTIFY.
        1 | NATIVE_VARIANT => format!(
            "{CAPTURE} ALTER TABLE outbox.events ENABLE TRIGGER events_notify;
             SELECT setval('outbox.notify_wanted', 0)"
        ),
        // The worst case: every commit NOTIFYs a listener.
        2 => format!(
            "{CAPTURE} ALTER TABLE outbox.events ENABLE TRIGGER events_notify;
             SELECT setval('outbox.notify_wanted', 1)"
        ),
        4 => "DROP TRIGGER IF EXISTS accounts_outbox ON pgbench_accounts;
            CREATE TRIGGER accounts_outbox AFTER UPDATE ON pgbench_accounts
                FOR EACH ROW EXECUTE FUNCTION bench_floor_capture();
            SELECT setval('outbox.notify_wanted', 0)"
            .to_string(),
        // What a relay with notify = off sets: the trigger off and the flag capture() reads at 0.
        _ => format!(
            "{CAPTURE} ALTER TABLE outbox.events DISABLE TRIGGER events_notify;
             SELECT setval('outbox.notify_wanted', 0)"
        ),
    }
}

/// Runs pgbench for `seconds` while `perf` samples every CPU, and returns the percentage of
/// non-idle samples whose stack is inside a trigger fired at the end of a statement: a PL/pgSQL
/// one, or with `native` the C `outbox_capture` (the capture trigger: nothing else in the pgbench
/// database has one). Needs `perf`, permission to sample the whole machine, and Postgres on this
/// machine with symbols.
fn trigger_cpu_share(pgbench: &Path, url: &str, seconds: u64, native: bool) -> Result<f64, String> {
    use std::process::Stdio;
    // Without perf there is no point in running the load.
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("no perf here ({e})"))?;
    let data = std::env::temp_dir().join(format!("outbox-bench-{}.perf", std::process::id()));
    let mut load = Command::new(pgbench)
        .args(PGBENCH_LOAD)
        .args([&(seconds + 3).to_string(), url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start pgbench: {e}"))?;
    std::thread::sleep(Duration::from_secs(2));
    let recorded = Command::new("perf")
        .args(["record", "-a", "-g", "-F", "499", "-o"])
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let _ = load.wait();
    let recorded = recorded.map_err(|e| format!("no perf here ({e})"))?;
    if !recorded.status.success() {
        let _ = std::fs::remove_file(&data);
        let why = String::from_utf8_lossy(&recorded.stderr);
        return Err(format!(
            "perf record failed: {}",
            why.lines().next().unwrap_or("")
        ));
    }
    let script = Command::new("perf")
        .args(["script", "-F", "comm,ip,sym", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output();
    let _ = std::fs::remove_file(&data);
    let script = script.map_err(|e| format!("perf script failed: {e}"))?;
    let text = String::from_utf8_lossy(&script.stdout);
    let (mut busy, mut in_trigger, mut in_postgres) = (0u64, 0u64, 0u64);
    // Samples are separated by blank lines: a header line with the command name, then one line
    // per stack frame ("ip symbol").
    for sample in text.split("\n\n") {
        let mut lines = sample.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else { continue };
        if header.trim_start().starts_with("swapper") {
            continue; // the idle task
        }
        busy += 1;
        let frames: Vec<&str> = lines.filter_map(|l| l.split_whitespace().nth(1)).collect();
        if frames.contains(&"PostgresMain") {
            in_postgres += 1;
        }
        // (the library's entry points: outbox_capture, and outbox_capture_schema5 since schema 5)
        let in_capture = |f: &&str| {
            if native {
                f.starts_with("outbox_capture")
            } else {
                *f == "plpgsql_exec_trigger"
            }
        };
        if frames.contains(&"AfterTriggerEndQuery") && frames.iter().any(in_capture) {
            in_trigger += 1;
        }
    }
    if busy < 1000 || in_postgres * 4 < busy {
        return Err(format!(
            "{in_postgres} of {busy} samples in a Postgres backend (is Postgres on this machine, \
             with symbols?)"
        ));
    }
    Ok(in_trigger as f64 * 100.0 / busy as f64)
}

/// Where the CPU of a drain went, per delivery.
fn print_cpu_split(
    n: u64,
    elapsed: Duration,
    relay: f64,
    machine: f64,
    producers: f64,
    receiver: f64,
) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let us = |s: f64| s / n as f64 * 1e6;
    println!(
        "  CPU per delivery: relay {:.0} µs, Postgres and the rest {:.0} µs, receiver {:.0} µs, \
         benchmark producers {:.0} µs; machine busy {:.0}% of {cores} cores",
        us(relay),
        us(machine - relay - producers - receiver),
        us(receiver),
        us(producers),
        machine / elapsed.as_secs_f64() / cores as f64 * 100.0,
    );
}

/// The median of `v` (the upper one of an even count); 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

async fn table_stats(client: &Client) -> anyhow::Result<String> {
    let rows = client
        .query(
            "SELECT relname, n_live_tup, n_dead_tup, pg_size_pretty(pg_total_relation_size(relid))
             FROM pg_stat_user_tables WHERE schemaname = 'outbox'
               AND relname IN ('events', 'captured_events', 'deliveries', 'deliveries_done', 'attempts')
             ORDER BY relname",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "{} live {} dead {} ({})",
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, String>(3)
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}

fn find_pgbench() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pgbench");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            Path::new(cmd.get_program()).display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
