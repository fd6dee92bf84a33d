//! The `peer` scenario: what a user would build instead, measured right before the relay on the
//! same machine. A hand-rolled outbox on graphile-worker (npm `graphile-worker@0.16` and `pg`):
//! producers insert the same events into a table whose row trigger adds a job in the same
//! transaction; a Node worker runs the jobs, each POSTing the event as JSON to the same receiver.
//! The clock stops when the receiver has every request and no job is left (graphile-worker deletes
//! a job when it succeeds). The packages are installed into a temporary directory with npm;
//! without Node or npm the scenario is skipped and says why.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Bench, Row, Tuning, connect, run, verdict};

/// The worker: one task, `post`, that sends its payload to `RECEIVER_URL`.
const WORKER_JS: &str = r#"const { run } = require("graphile-worker");

async function main() {
  const target = process.env.RECEIVER_URL;
  const concurrency = Number(process.env.CONCURRENCY);
  const runner = await run({
    connectionString: process.env.DATABASE_URL,
    concurrency,
    maxPoolSize: concurrency + 2,
    pollInterval: 1000,
    noHandleSignals: false,
    taskList: {
      post: async (payload) => {
        const res = await fetch(target, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(payload),
        });
        await res.arrayBuffer();
        if (!res.ok) throw new Error(`receiver answered ${res.status}`);
      },
    },
  });
  await runner.promise;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
"#;

/// The business side of the hand-rolled outbox: the event table and the trigger that queues a
/// job per row, in the producer's transaction.
const PEER_SCHEMA: &str = "CREATE TABLE peer_events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_type text NOT NULL, entity text NOT NULL, entity_id text NOT NULL,
        data jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
    CREATE FUNCTION peer_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM graphile_worker.add_job('post', json_build_object(
            'id', NEW.id, 'type', NEW.event_type, 'entity', NEW.entity,
            'entity_id', NEW.entity_id, 'data', NEW.data, 'created_at', NEW.created_at));
        RETURN NULL;
    END $$;
    CREATE TRIGGER peer_enqueue AFTER INSERT ON peer_events
        FOR EACH ROW EXECUTE FUNCTION peer_enqueue();";

/// The same events the relay's runs commit, into the peer's table.
const INSERT_PEER: &str = "INSERT INTO peer_events (event_type, entity, entity_id, data)
    SELECT 'bench.created', 'bench', s::text, jsonb_build_object('seq', s, 'note', 'benchmark event')
    FROM generate_series($1::bigint, $2::bigint) s";

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Bench<'_> {
    pub(super) async fn peer(&mut self) -> anyhow::Result<()> {
        let dir = match install() {
            Ok(dir) => dir,
            Err(reason) => {
                println!("peer: skipped: {reason:#}");
                self.rows.push(Row {
                    what: "relay (defaults) / graphile-worker relay".into(),
                    target: "≥ 6 ×".into(),
                    measured: "skipped (see above)".into(),
                    verdict: "-",
                });
                return Ok(());
            }
        };
        let n = self.args.events;
        println!(
            "peer: graphile-worker (concurrency {}), {n} events:",
            self.args.peer_concurrency
        );
        let peer = self.peer_run(&dir, n).await?;
        println!("peer: the relay with defaults right after, {n} events:");
        let relay = self
            .throughput_run_as(1, "outbox_bench_peer_relay", Tuning::Defaults)
            .await?
            .rate;
        let ratio = relay / peer;
        self.rows.push(Row {
            what: format!(
                "graphile-worker relay (jobs that POST, concurrency {})",
                self.args.peer_concurrency
            ),
            target: "(reported)".into(),
            measured: format!("{peer:.0} deliveries/s"),
            verdict: "-",
        });
        self.rows.push(Row {
            what: "relay (defaults) / graphile-worker relay, same run".into(),
            target: "≥ 6 ×".into(),
            measured: format!("{ratio:.1} × ({relay:.0} deliveries/s)"),
            verdict: verdict(ratio >= 6.0),
        });
        Ok(())
    }

    /// Drains `n` events through the graphile-worker relay; returns deliveries per second.
    async fn peer_run(&self, dir: &Path, n: u64) -> anyhow::Result<f64> {
        let url = self.empty_db("outbox_bench_peer").await?;
        let client = connect(&url).await?;
        let mut worker = Worker(
            Command::new("node")
                .arg(dir.join("worker.js"))
                .current_dir(dir)
                .env("DATABASE_URL", &url)
                .env("RECEIVER_URL", self.receiver.url("/hook"))
                .env("CONCURRENCY", self.args.peer_concurrency.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting the graphile-worker relay")?,
        );
        // The worker installs its schema when it starts, then runs jobs: wait until it has run
        // one.
        let deadline = Instant::now() + Duration::from_secs(60);
        self.reset_receiver().await?;
        let mut queued = false;
        while self.received().await == 0 {
            if !queued {
                queued = client
                    .execute(
                        "SELECT graphile_worker.add_job('post', json_build_object('entity_id', 'probe'))",
                        &[],
                    )
                    .await
                    .is_ok();
            }
            if let Some(status) = worker.0.try_wait()? {
                bail!("the graphile-worker relay exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("the graphile-worker relay ran no job within 60 s of starting");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client.batch_execute(PEER_SCHEMA).await?;
        self.reset_receiver().await?;
        let t0 = Instant::now();
        self.produce_with(&url, n, self.args.batch, INSERT_PEER)
            .await?;
        let committed = t0.elapsed();
        let t1 = self
            .wait_drained_by(
                &client,
                n,
                Duration::from_secs(1800),
                "SELECT EXISTS (SELECT 1 FROM graphile_worker.jobs)",
            )
            .await?;
        drop(worker);
        let elapsed = (t1 - t0).as_secs_f64();
        let rate = n as f64 / elapsed;
        let arrivals = self.arrivals().await?;
        let distinct: std::collections::HashSet<u64> = arrivals.iter().map(|a| a.0).collect();
        println!(
            "  {n} events committed in {:.2}s, all delivered in {elapsed:.2}s = {rate:.0} deliveries/s \
             ({} requests, {} distinct)",
            committed.as_secs_f64(),
            arrivals.len(),
            distinct.len()
        );
        Ok(rate)
    }
}

/// Installs graphile-worker and pg into a temporary directory (once; later runs reuse it) and
/// writes the worker script there.
fn install() -> anyhow::Result<PathBuf> {
    for tool in ["node", "npm"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("{tool} is not installed");
        }
    }
    let dir = std::env::temp_dir().join("outbox-bench-peer");
    std::fs::create_dir_all(&dir)?;
    if !dir.join("node_modules/graphile-worker").is_dir() {
        std::fs::write(
            dir.join("package.json"),
            r#"{"name": "outbox-bench-peer", "private": true}"#,
        )?;
        run(Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "graphile-worker@0.16",
                "pg@8",
            ])
            .current_dir(&dir))
        .context("npm install graphile-worker@0.16 pg@8")?;
    }
    std::fs::write(dir.join("worker.js"), WORKER_JS)?;
    Ok(dir)
}
