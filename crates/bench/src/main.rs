//! `outbox-bench`: measures outbox-relay against a real Postgres and prints a table of figures
//! against the project's targets (BENCHMARKS.md). Never run by the tests (which stay timing-free); CI runs
//! `--smoke`, a tiny version that only proves the benchmark works.
//!
//! Build the release binaries first, then run the benchmark from the same directory:
//!
//! ```sh
//! cargo build --release --workspace
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres ./target/release/outbox-bench
//! ```
//!
//! The receiver and every relay run as separate processes; the benchmark itself plays the
//! producers. It creates (and drops) its own databases.

mod procs;
mod receiver;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "outbox-bench",
    about = "Benchmark outbox-relay against real Postgres"
)]
pub struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Admin URL of the Postgres server (the benchmark creates its own databases).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The relay binary (default: outbox-relay next to this executable).
    #[arg(long)]
    pub relay_bin: Option<PathBuf>,
    /// Scenarios to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,defaults,webhooks,relations,peer,latency,backlog,producer,scaleout,soak,retention,retention-hotpath"
    )]
    pub scenarios: Vec<String>,
    /// Run every scenario but `defaults` with the tuned configuration (the webhook's
    /// `max_in_flight` = `--concurrency`; the relay's `concurrency`, `claim_batch` and a 100 ms
    /// `poll_interval` set) instead of the defaults a user gets.
    #[arg(long)]
    pub tuned: bool,
    /// Rounds of the `defaults` and `relations` comparisons (each runs both variants, the order
    /// alternating).
    #[arg(long, default_value_t = 3)]
    pub compare_rounds: usize,
    /// Webhooks configured in the `webhooks` scenario's runs (1% of them, at least one, get
    /// events).
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    pub webhook_counts: Vec<usize>,
    /// Concurrency of the graphile-worker peer in the `peer` scenario.
    #[arg(long, default_value_t = 32)]
    pub peer_concurrency: usize,
    /// Tiny sizes, for CI: proves the benchmark runs, measures nothing meaningful.
    #[arg(long)]
    pub smoke: bool,
    /// Events of the throughput run.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Concurrent producer connections.
    #[arg(long, default_value_t = 8)]
    pub producers: u64,
    /// Events per producer transaction in the throughput run.
    #[arg(long, default_value_t = 10)]
    pub batch: u64,
    /// Offered rate (events/s) of the latency run.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Duration of the latency run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Backlog sizes to drain.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    pub backlogs: Vec<u64>,
    /// Duration of each pgbench run, in seconds.
    #[arg(long, default_value_t = 12)]
    pub pgbench_seconds: u64,
    /// Rounds of the producer comparison (each runs every variant once).
    #[arg(long, default_value_t = 5)]
    pub pgbench_rounds: usize,
    /// Offered rate (events/s) of the soak run.
    #[arg(long, default_value_t = 5000)]
    pub soak_rate: u64,
    /// Duration of the soak run, in seconds.
    #[arg(long, default_value_t = 300)]
    pub soak_seconds: u64,
    /// Sizes of the delivery logs (finished deliveries) retention is measured on.
    #[arg(long, value_delimiter = ',', default_value = "10000,10000000")]
    pub retention_logs: Vec<u64>,
    /// Rounds of the retention comparison: each round, a pass on every log deletes the next
    /// `--retention-slice` events' worth of expired history.
    #[arg(long, default_value_t = 9)]
    pub retention_rounds: usize,
    /// Expired events (with their deliveries and attempts) one pass deletes.
    #[arg(long, default_value_t = 5000)]
    pub retention_slice: u64,
    /// Rounds of the hot-path comparison with and without retention's indexes (each runs both).
    #[arg(long, default_value_t = 5)]
    pub hotpath_rounds: usize,
    /// Relay `concurrency` of the tuned configuration (the default configuration's is 256 too).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Relay `claim_batch` of the tuned configuration.
    #[arg(long, default_value_t = 1000)]
    pub claim_batch: usize,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// (internal) run the benchmark's HTTP receiver.
    #[command(hide = true)]
    Receiver,
}

fn main() {
    let mut args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(Mode::Receiver) = args.mode {
        if let Err(e) = runtime.block_on(receiver::serve()) {
            eprintln!("receiver: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if args.smoke {
        args.events = 2000;
        args.rate = 200;
        args.latency_seconds = 2;
        args.backlogs = vec![2000];
        args.pgbench_seconds = 2;
        args.pgbench_rounds = 1;
        args.soak_seconds = 4;
        args.soak_rate = 500;
        args.retention_logs = vec![1000, 4000];
        args.retention_rounds = 2;
        args.retention_slice = 400;
        args.hotpath_rounds = 1;
        args.compare_rounds = 1;
        args.webhook_counts = vec![1, 100];
    }
    match runtime.block_on(scenarios::run_all(&args)) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
