//! Shared helpers of the end-to-end tests.

use std::path::PathBuf;
use std::time::Duration;

use outbox_relay::config::Settings;
use outbox_relay::relay::Relay;
use outbox_testkit::{TestDb, wait_until};

/// Generous deadline for anything the relay should do "soon".
pub const SOON: Duration = Duration::from_secs(20);

/// Relay settings for tests: ephemeral port, fast polling.
pub fn settings(db: &TestDb) -> Settings {
    Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        concurrency: 64,
        claim_batch: 500,
        poll_interval: Duration::from_millis(100),
        notify: true,
        lease: Duration::from_secs(60),
        retention: Duration::from_secs(7 * 86400),
        allow_networks: Vec::new(),
        deny_networks: Vec::new(),
        json_logs: false,
        admin_token: None,
        console_edit: true,
    }
}

pub async fn start(db: &TestDb) -> Relay {
    Relay::start(settings(db)).await.expect("relay starts")
}

/// Writes a webhooks file and applies it with `apply`.
pub async fn apply(db: &TestDb, toml: &str) {
    let path = temp_file("hooks.toml", toml);
    outbox_relay::commands::apply::run(&db.url, &path, false, false)
        .await
        .unwrap_or_else(|e| panic!("apply failed: {e}"));
}

pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outbox-e2e-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A delivery as the log shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub id: i64,
    pub webhook: String,
    pub event_type: String,
    pub entity_id: String,
    pub status: String,
    pub attempts: i32,
}

pub async fn delivery_log(client: &tokio_postgres::Client) -> Vec<Logged> {
    client
        .query(
            "SELECT id, webhook, event_type, entity_id, status, attempts FROM outbox.delivery_log ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Logged {
            id: r.get(0),
            webhook: r.get(1),
            event_type: r.get(2),
            entity_id: r.get(3),
            status: r.get(4),
            attempts: r.get(5),
        })
        .collect()
}

/// Waits until `n` deliveries have `status`; returns the log.
pub async fn wait_for_status(
    client: &tokio_postgres::Client,
    n: usize,
    status: &str,
) -> Vec<Logged> {
    wait_until(SOON, &format!("{n} deliveries {status}"), || async {
        let log = delivery_log(client).await;
        (log.iter().filter(|d| d.status == status).count() >= n).then_some(log)
    })
    .await
}

/// `(attempt, status, outcome)` of every attempt of a delivery.
pub async fn attempts(
    client: &tokio_postgres::Client,
    delivery: i64,
) -> Vec<(i32, Option<i32>, String)> {
    client
        .query(
            "SELECT attempt, status, outcome FROM outbox.attempts WHERE delivery_id = $1 ORDER BY attempt",
            &[&delivery],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Runs the `outbox-relay` binary against `db` with extra environment; returns (exit code,
/// stdout, stderr).
pub fn cli(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    command.args(args).env("DATABASE_URL", &db.url);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("the relay binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `outbox.emit(...)` in its own transaction; returns the event id.
pub async fn emit(
    client: &tokio_postgres::Client,
    event_type: &str,
    entity: &str,
    entity_id: &str,
    data: serde_json::Value,
) -> i64 {
    client
        .query_one(
            "SELECT outbox.emit($1, $2, $3, $4)",
            &[&event_type, &entity, &entity_id, &data],
        )
        .await
        .unwrap()
        .get(0)
}

/// `(attempt, status, outcome, error)` of every attempt of a delivery.
pub async fn attempt_errors(
    client: &tokio_postgres::Client,
    delivery: i64,
) -> Vec<(i32, Option<i32>, String, Option<String>)> {
    client
        .query(
            "SELECT attempt, status, outcome, error FROM outbox.attempts WHERE delivery_id = $1 ORDER BY attempt",
            &[&delivery],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// The deliveries of one webhook, oldest first.
pub async fn deliveries_of(client: &tokio_postgres::Client, webhook: &str) -> Vec<Logged> {
    delivery_log(client)
        .await
        .into_iter()
        .filter(|d| d.webhook == webhook)
        .collect()
}

/// Waits until `n` deliveries of `webhook` have `status`; returns that webhook's deliveries.
pub async fn wait_for_webhook_status(
    client: &tokio_postgres::Client,
    webhook: &str,
    n: usize,
    status: &str,
) -> Vec<Logged> {
    wait_until(
        SOON,
        &format!("{n} deliveries of {webhook} {status}"),
        || async {
            let log = deliveries_of(client, webhook).await;
            (log.iter().filter(|d| d.status == status).count() >= n).then_some(log)
        },
    )
    .await
}

/// Waits until `webhook` has `n` pending deliveries that have been due for a second at least:
/// long enough (ten poll intervals) that an active webhook would have sent them.
pub async fn wait_for_overdue(client: &tokio_postgres::Client, webhook: &str, n: i64) {
    wait_until(
        SOON,
        &format!("{n} overdue deliveries of {webhook}"),
        || async {
            let overdue: i64 = client
                .query_one(
                    "SELECT count(*) FROM outbox.deliveries
                 WHERE webhook = $1 AND status = 'pending'
                   AND coalesce(next_attempt_at, created_at) < now() - interval '1 second'",
                    &[&webhook],
                )
                .await
                .unwrap()
                .get(0);
            (overdue >= n).then_some(())
        },
    )
    .await
}
/// A child process of the relay binary whose output lines are collected as they come.
pub struct Spawned {
    pub child: std::process::Child,
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Spawned {
    /// Runs `outbox-relay ARGS` with `env` added to this process's environment.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Spawned {
        Spawned::start_without(args, env, &[])
    }

    /// Like [`Spawned::start`], with the variables named in `remove` taken out of the environment.
    pub fn start_without(args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> Spawned {
        use std::io::BufRead;
        use std::sync::{Arc, Mutex};
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        for k in remove {
            command.env_remove(k);
        }
        let mut child = command.spawn().expect("the relay binary starts");
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let lines: Arc<Mutex<Vec<String>>> = Arc::default();
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Spawned {
            child,
            stdout,
            stderr,
        }
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for a line of stderr (`err = true`) or stdout that `pick` accepts.
    pub async fn wait_line<T>(
        &mut self,
        err: bool,
        what: &str,
        pick: impl Fn(&str) -> Option<T>,
    ) -> T {
        let lines = if err { &self.stderr } else { &self.stdout };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = lines.lock().unwrap().iter().find_map(|l| pick(l)) {
                return found;
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() {
                // Let the reader threads take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if exited.is_some() || std::time::Instant::now() > deadline {
                let tail: Vec<String> = lines
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(20)
                    .cloned()
                    .collect();
                panic!(
                    "gave up waiting for {what} (exit status {exited:?}); last lines:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits (with a deadline) for the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.wait_exit(Duration::from_secs(60)).await
    }

    /// Waits for the process to exit; kills it and panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the relay binary did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout_text(),
                    self.stderr_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `outbox-relay run` with JSON logs on an ephemeral port; returns it and its address.
pub async fn spawn_relay(db: &TestDb, env: &[(&str, &str)]) -> (Spawned, String) {
    let mut all = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("OUTBOX_POLL_INTERVAL", "100ms"),
    ];
    all.extend_from_slice(env);
    let mut relay = Spawned::start(
        &["run", "--listen", "127.0.0.1:0", "--log-format", "json"],
        &all,
    );
    let addr = relay
        .wait_line(true, "the relay to start", |line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v["message"] == "relay started").then(|| v["listen"].as_str().unwrap().to_string())
        })
        .await;
    (relay, addr)
}

/// GET/POST against the relay's HTTP endpoint: (status, body).
pub async fn http(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if method == "POST" {
        request = request
            .header("content-type", "application/json")
            .body(r#"{"entity": "order", "id": "1"}"#);
    }
    let response = request.send().await.expect("the relay answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The samples of a Prometheus text exposition: "name{labels}" → value.
pub fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Makes `outbox.capture()` of `db` run `capture`. The native library may be missing where the
/// tests run outside CI: then this says so on stderr and returns false, and the test stops there.
/// In CI (`CI` set), a missing library fails the test.
pub fn use_capture(db: &TestDb, capture: outbox_core::Capture) -> bool {
    if capture == outbox_core::Capture::Plpgsql {
        return true;
    }
    let (code, out, err) = cli(db, &["migrate", "--capture", "native"], &[]);
    if code == 0 {
        assert!(out.contains("runs the native implementation"), "{out}");
        return true;
    }
    if err.contains("not installed") && std::env::var_os("CI").is_none() {
        eprintln!("native capture not tested here: {err}");
        return false;
    }
    panic!("switching to the native capture failed: {err}");
}
