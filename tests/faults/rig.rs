//! The set-up every fault test shares: a crashable private cluster with one migrated database, a
//! receiver, one webhook, relays run as child processes, and the record of the faults injected.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outbox_testkit::{CrashableCluster, Reply, TestReceiver};
use tokio_postgres::NoTls;

use crate::relay::RelayProcess;
use crate::verdict::Fault;

/// The relay's `lease`: short, so a killed relay's deliveries are taken over soon.
pub const LEASE: Duration = Duration::from_secs(5);
/// The webhook's `timeout` (the relay's lease covers it plus margins).
pub const WEBHOOK_TIMEOUT: &str = "2s";
/// How long after the last fault everything must be delivered and recorded: a killed relay's
/// claims wait out their lease, then a few seconds of sending and recording, and a wide margin for
/// a loaded 2-core machine. A deadline, not a timing assertion.
pub const RECOVERY: Duration = Duration::from_secs(LEASE.as_secs() + 30);
/// Name of the database the tests use on their cluster.
const DATABASE: &str = "faults";

/// One test's world.
pub struct Rig {
    pub cluster: CrashableCluster,
    /// URL of the test database.
    pub url: String,
    pub receiver: TestReceiver,
    faults: Arc<Mutex<Vec<Fault>>>,
}

impl Rig {
    /// A fresh cluster and database, migrated; a receiver answering as [`answer`] decides; the
    /// webhook `faults` for `order.*` events, to `<receiver>/<entity_id>`.
    pub async fn new() -> Rig {
        let cluster = tokio::task::spawn_blocking(CrashableCluster::start)
            .await
            .expect("the cluster starter")
            .unwrap_or_else(|e| panic!("cannot start a private Postgres cluster: {e}"));
        let admin = connect(&cluster.url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await
            .expect("creating the test database");
        let url = cluster.url(DATABASE);
        let mut client = connect(&url).await;
        outbox_core::migrate(&mut client)
            .await
            .expect("migrating the test database");

        let receiver = TestReceiver::start().await;
        receiver.handle(answer);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let hooks = dir.path().join("hooks.toml");
        std::fs::write(
            &hooks,
            format!(
                r#"[[webhook]]
name           = "faults"
events         = ["order.*"]
url            = "{}/{{{{ entity_id }}}}"
timeout        = "{WEBHOOK_TIMEOUT}"
retry_schedule = ["1s"]
max_attempts   = 20
max_in_flight  = 64
"#,
                receiver.url("")
            ),
        )
        .expect("writing the webhooks file");
        apply(&url, &hooks).await;
        Rig {
            cluster,
            url,
            receiver,
            faults: Arc::default(),
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Starts `outbox-relay run` against the test database.
    pub async fn relay(&self, name: &str) -> RelayProcess {
        RelayProcess::start(name, &self.url).await
    }

    /// kill -9 of `relay`, recorded as a fault; then starts it again.
    pub async fn kill_and_restart(&self, relay: &mut RelayProcess) {
        let (signalled, gone) = relay.kill9();
        self.record(Fault::between("relay kill -9", signalled, gone));
        *relay = self.relay(relay.name()).await;
    }

    /// `pg_ctl stop -m immediate`, recorded as a fault that lasts until [`Rig::start_postgres`].
    pub fn crash_postgres(&self) {
        let at = Instant::now();
        tokio::task::block_in_place(|| self.cluster.crash())
            .unwrap_or_else(|e| panic!("crashing postgres: {e}"));
        self.faults
            .lock()
            .unwrap()
            .push(Fault::open("postgres immediate stop", at));
    }

    /// Starts the cluster again (crash recovery) and closes the open fault.
    pub fn start_postgres(&self) {
        tokio::task::block_in_place(|| self.cluster.start_again())
            .unwrap_or_else(|e| panic!("restarting postgres: {e}\n{}", self.cluster.log_tail(20)));
        let now = Instant::now();
        if let Some(open) = self
            .faults
            .lock()
            .unwrap()
            .iter_mut()
            .rev()
            .find(|f| f.is_open())
        {
            open.close(now);
        }
    }

    pub fn record(&self, fault: Fault) {
        self.faults.lock().unwrap().push(fault);
    }

    pub fn faults(&self) -> Vec<Fault> {
        self.faults.lock().unwrap().clone()
    }
}

/// How the receiver answers: the first attempt of one record in eight fails with 500 (so retries
/// run through the faults too); everything else succeeds after 0-19 ms, so requests are in flight
/// when a fault strikes.
fn answer(request: &outbox_testkit::Received) -> Reply {
    let key = request.path.trim_start_matches('/');
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    if request.header("webhook-attempt") == Some("1") && hash % 8 == 0 {
        Reply::status(500)
    } else {
        Reply::ok().delay(Duration::from_millis(hash % 20))
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

async fn apply(url: &str, file: &Path) {
    outbox_relay::commands::apply::run(url, file, false, false)
        .await
        .unwrap_or_else(|e| panic!("apply failed: {e}"));
}

/// Tests run one at a time: each runs a Postgres cluster, up to three relays, producers and a
/// receiver, which keep two cores busy. Side by side, five of them took 70 s instead of 100 s, but
/// the relay's results then lagged up to 0.97 s behind the receiver's answers (0.41 s one at a
/// time), close to what [`crate::verdict::IN_FLIGHT_MARGIN`] allows.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Random fault timing, reproducible: the seed is printed, and `FAULTS_SEED=<seed>` replays it.
pub struct Dice(u64);

impl Dice {
    pub fn new(test: &str) -> Dice {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            .max(1);
        eprintln!("{test}: FAULTS_SEED={seed}");
        Dice(seed)
    }

    /// A duration drawn uniformly from `range` (milliseconds).
    pub fn millis(&mut self, range: std::ops::Range<u64>) -> Duration {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let n = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        Duration::from_millis(range.start + n % (range.end - range.start).max(1))
    }
}
