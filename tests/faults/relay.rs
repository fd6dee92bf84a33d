//! `outbox-relay run` as a child process, so a test can kill -9 it or send it SIGTERM.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::rig::{LEASE, connect};

/// A relay process with JSON logs; its stderr lines are kept for failure messages.
pub struct RelayProcess {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// `host:port` of its HTTP endpoint.
    pub addr: String,
}

impl RelayProcess {
    /// Starts a relay on `url` (lease [`LEASE`], 64 requests in flight, 100 ms polling) and waits
    /// until it logs that it started.
    pub async fn start(name: &str, url: &str) -> RelayProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
        command
            .args(["run", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("DATABASE_URL", url)
            .env("OUTBOX_LEASE", format!("{}s", LEASE.as_secs()))
            .env("OUTBOX_POLL_INTERVAL", "100ms")
            .env("OUTBOX_CONCURRENCY", "64")
            .env_remove("OUTBOX_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the relay binary starts");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        let mut relay = RelayProcess {
            name: name.to_string(),
            child,
            lines,
            addr: String::new(),
        };
        relay.addr = relay.wait_started().await;
        relay
    }

    async fn wait_started(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self.lines.lock().unwrap().iter().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                (v["message"] == "relay started").then(|| v["listen"].as_str().map(String::from))?
            });
            if let Some(addr) = found {
                return addr;
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "relay {} did not start (exit status {exited:?}):\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// SIGKILL; returns the instants just before the signal and once the process is gone.
    pub fn kill9(&mut self) -> (Instant, Instant) {
        let at = Instant::now();
        self.child.kill().expect("kill -9 the relay");
        let _ = self.child.wait();
        (at, Instant::now())
    }

    /// SIGTERM: the relay should stop claiming, finish or give up what is in flight, and exit.
    pub fn terminate(&self) {
        let pid = i32::try_from(self.child.id()).expect("a pid fits in i32");
        // SAFETY: sending a signal to our own child process.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to relay {}", self.name);
    }

    /// Waits up to `bound` for the process to exit; `None` if it is still running then.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` on the relay's HTTP endpoint: (status, body).
    pub async fn get(&self, path: &str) -> Result<(u16, String), reqwest::Error> {
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    /// The samples of `/metrics`: "name{labels}" → value.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, text) = self
            .get("/metrics")
            .await
            .expect("the relay answers /metrics");
        assert_eq!(status, 200, "/metrics: {text}");
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// The last `n` lines it logged.
    pub fn log_tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Connections of the relays on `url` with this `application_name` (`outbox-relay` for the
/// pools, `outbox-relay listener` for the LISTEN connections).
pub async fn sessions(url: &str, application_name: &str) -> i64 {
    connect(url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .expect("reading pg_stat_activity")
        .get(0)
}
