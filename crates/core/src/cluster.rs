//! A private Postgres cluster in a temporary directory, started from the local Postgres binaries
//! (`initdb` and `postgres` on `PATH`, or the newest `/usr/lib/postgresql/*/bin`). Used by `demo`
//! when no `DATABASE_URL` is given, and by the tests on machines without a running server.
//!
//! The server runs as a child of a dedicated thread with a parent-death signal, so it stops when
//! the process that started it exits, however it exits. As root it runs as the `postgres` user,
//! since `initdb` refuses to run as root.

use std::ffi::CString;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Error;

/// A running private Postgres. Stopped (fast shutdown) and deleted when dropped.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Server settings for a private cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Trade durability for speed (tests): fsync, full_page_writes and synchronous_commit off.
    pub unsafe_fast: bool,
}

impl PrivateCluster {
    /// Initialises and starts a cluster in a new directory `outbox-relay-pg-*` of the temporary
    /// directory; blocks until it accepts connections.
    pub fn start(options: &Options) -> Result<PrivateCluster, Error> {
        PrivateCluster::start_in(options, "outbox-relay-pg-")
    }

    /// Like [`PrivateCluster::start`], in a directory whose name starts with `prefix` (so that
    /// its owner can recognise what it left behind if it was killed).
    pub fn start_in(options: &Options, prefix: &str) -> Result<PrivateCluster, Error> {
        let bin = find_binaries()?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| Error::Cluster(format!("cannot create a temporary directory: {e}")))?;
        let data = dir.path().join("data");
        let owner = run_as_user()?;
        if let Some((uid, gid)) = owner {
            chown(dir.path(), uid, gid)?;
        }

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        drop_privileges(&mut initdb, owner, false);
        let out = initdb.output().map_err(|e| {
            Error::Cluster(format!("cannot run {}: {e}", bin.join("initdb").display()))
        })?;
        if !out.status.success() {
            return Err(Error::Cluster(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }

        let port = free_port()?;
        let log_path = dir.path().join("postgres.log");
        let log = fs::File::create(&log_path)
            .map_err(|e| Error::Cluster(format!("cannot create {}: {e}", log_path.display())))?;
        if let Some((uid, gid)) = owner {
            chown(&log_path, uid, gid)?;
        }
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
            ])
            .args(["-c", "shared_buffers=128MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Error::Cluster(e.to_string()))?)
            .stderr(log);
        if options.unsafe_fast {
            postgres.args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ]);
        }
        drop_privileges(&mut postgres, owner, true);

        // The server is the child of a thread that lives as long as this handle, so the
        // parent-death signal fires when the handle is dropped or the process exits, not when
        // some short-lived thread that happened to start it ends.
        let (started_tx, started_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("private-postgres".into())
            .spawn(move || {
                let mut child = match postgres.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(child.id()));
                let _ = stop_rx.recv();
                // SIGINT: fast shutdown (disconnect clients, checkpoint, exit).
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGINT);
                }
                let _ = child.wait();
            })
            .map_err(|e| Error::Cluster(format!("cannot start a thread: {e}")))?;
        let pid = started_rx
            .recv()
            .map_err(|_| Error::Cluster("the postgres starter thread died".into()))?
            .map_err(|e| {
                Error::Cluster(format!(
                    "cannot run {}: {e}",
                    bin.join("postgres").display()
                ))
            })?;

        let cluster = PrivateCluster {
            dir,
            port,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        cluster.wait_ready(pid, &log_path)?;
        Ok(cluster)
    }

    fn wait_ready(&self, pid: u32, log_path: &Path) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid_file = self.dir.path().join("data").join("postmaster.pid");
        loop {
            if let Ok(text) = fs::read_to_string(&pid_file)
                && text.lines().nth(7).map(str::trim) == Some("ready")
            {
                return Ok(());
            }
            let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
            if !alive || Instant::now() > deadline {
                let log = fs::read_to_string(log_path).unwrap_or_default();
                return Err(Error::Cluster(format!(
                    "postgres did not start: {}",
                    log.lines().last().unwrap_or("(no log output)")
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The directory holding `initdb` and `postgres`.
pub fn find_binaries() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                let real = fs::canonicalize(&initdb).unwrap_or(initdb);
                if let Some(bin) = real.parent()
                    && bin.join("postgres").is_file()
                {
                    return Ok(bin.to_path_buf());
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        Error::Cluster(
            "no Postgres binaries found (initdb and postgres on PATH or in /usr/lib/postgresql/*/bin); \
             install Postgres (e.g. apt-get install postgresql) or set DATABASE_URL"
                .into(),
        )
    })
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Cluster(format!("cannot find a free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Cluster(e.to_string()))
}

/// When running as root, the uid/gid of the `postgres` user to run the server as.
fn run_as_user() -> Result<Option<(u32, u32)>, Error> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("static string");
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(Error::Cluster(
            "running as root, and there is no `postgres` user to run the private cluster as \
             (initdb refuses to run as root); create one or set DATABASE_URL"
                .into(),
        ));
    }
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| Error::Cluster(format!("cannot chown {}: {e}", path.display())))
}

fn drop_privileges(command: &mut Command, owner: Option<(u32, u32)>, die_with_parent: bool) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
        command.env("HOME", "/tmp");
    }
    if die_with_parent {
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}
