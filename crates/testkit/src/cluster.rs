//! A private Postgres cluster that a test may crash and start again: [`CrashableCluster`].
//!
//! `initdb` into a temporary directory, then `postgres` on that data directory and a free port.
//! [`CrashableCluster::crash`] is `pg_ctl stop -m immediate` (which sends the postmaster
//! SIGQUIT: every server process exits at once, without a checkpoint, and the next start runs crash
//! recovery from the WAL); [`CrashableCluster::stop`] is a fast shutdown (SIGINT);
//! [`CrashableCluster::start_again`] starts the server on the same data directory and port.
//!
//! The server is always the child of one supervisor thread that lives as long as the handle, with
//! a parent-death signal (SIGQUIT), so no server outlives the test process, whatever ends it.
//! (`pg_ctl start` would detach the server from the test.) As root, `initdb` and `postgres` run as
//! the `postgres` user.
//!
//! Durability is the server's default except `fsync = off`: an immediate stop kills processes, not
//! the machine, so WAL written to the kernel survives it, and a commit acknowledged to a client with
//! `synchronous_commit = on` (the default, kept) is never lost. What a crash does lose is WAL still
//! in the server's own buffers: the commits of sessions that chose `synchronous_commit = off`.

use std::ffi::CString;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A private Postgres a test may crash. Stopped and deleted when dropped.
pub struct CrashableCluster {
    dir: tempfile::TempDir,
    port: u16,
    control: Option<mpsc::Sender<Control>>,
    supervisor: Option<JoinHandle<()>>,
}

enum Control {
    Start(mpsc::Sender<Result<(), String>>),
    Signal(i32, mpsc::Sender<Result<(), String>>),
}

impl CrashableCluster {
    /// Initialises a cluster and starts it; blocks until it accepts connections.
    pub fn start() -> Result<CrashableCluster, String> {
        let bin = outbox_core::cluster::find_binaries().map_err(|e| e.to_string())?;
        let dir = tempfile::Builder::new()
            .prefix("outbox-faults-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let owner = run_as_user()?;
        if let Some((uid, gid)) = owner {
            chown(dir.path(), uid, gid)?;
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_owner(&mut initdb, owner);
        let out = initdb
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.join("initdb").display()))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        if let Some((uid, gid)) = owner {
            chown(&log, uid, gid)?;
        }
        let server = Server {
            bin,
            data,
            socket_dir: dir.path().to_path_buf(),
            log,
            port,
            owner,
        };
        let (control, commands) = mpsc::channel();
        let supervisor = std::thread::Builder::new()
            .name(format!("crashable-postgres-{port}"))
            .spawn(move || supervise(server, commands))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let cluster = CrashableCluster {
            dir,
            port,
            control: Some(control),
            supervisor: Some(supervisor),
        };
        cluster.start_again()?;
        Ok(cluster)
    }

    /// `pg_ctl stop -m immediate`: SIGQUIT to the postmaster; returns once it exited.
    pub fn crash(&self) -> Result<(), String> {
        self.ask(|reply| Control::Signal(libc::SIGQUIT, reply))
    }

    /// `pg_ctl stop -m fast`: SIGINT to the postmaster; returns once it exited.
    pub fn stop(&self) -> Result<(), String> {
        self.ask(|reply| Control::Signal(libc::SIGINT, reply))
    }

    /// Starts the server again on the same data directory and port (crash recovery first, after
    /// [`CrashableCluster::crash`]); returns once it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        self.ask(Control::Start)
    }

    fn ask(
        &self,
        command: impl FnOnce(mpsc::Sender<Result<(), String>>) -> Control,
    ) -> Result<(), String> {
        let (reply, answer) = mpsc::channel();
        self.control
            .as_ref()
            .expect("the supervisor runs while the handle lives")
            .send(command(reply))
            .map_err(|_| "the postgres supervisor thread died".to_string())?;
        answer
            .recv()
            .map_err(|_| "the postgres supervisor thread died".to_string())?
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last `n` lines of the server log (all runs), for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for CrashableCluster {
    fn drop(&mut self) {
        // Closing the channel makes the supervisor stop the server (immediately) and end.
        drop(self.control.take());
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
    }
}

/// How to run the server.
struct Server {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
}

impl Server {
    fn spawn(&self) -> Result<Child, String> {
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open {}: {e}", self.log.display()))?;
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=200"])
            .args(["-c", "shared_buffers=64MB"])
            .args(["-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        as_owner(&mut postgres, self.owner);
        unsafe {
            postgres.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        postgres
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.join("postgres").display()))
    }

    /// Waits until the postmaster `child` says "ready" in its pid file.
    fn wait_ready(&self, child: &mut Child) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid_file = self.data.join("postmaster.pid");
        loop {
            if let Ok(text) = fs::read_to_string(&pid_file) {
                let mut lines = text.lines().map(str::trim);
                let pid = lines.next();
                if pid == Some(child.id().to_string().as_str()) && lines.nth(6) == Some("ready") {
                    return Ok(());
                }
            }
            let exited = child.try_wait().map_err(|e| e.to_string())?;
            if exited.is_some() || Instant::now() > deadline {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!(
                    "postgres did not start ({}): {}",
                    exited.map_or("timed out".to_string(), |s| s.to_string()),
                    log.lines().last().unwrap_or("(no log output)")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Owns the server process: starts it and signals it on command; stops it when the handle goes.
fn supervise(server: Server, commands: mpsc::Receiver<Control>) {
    let mut running: Option<Child> = None;
    while let Ok(command) = commands.recv() {
        match command {
            Control::Start(reply) => {
                let result = match running.take() {
                    Some(child) => {
                        running = Some(child);
                        Err("postgres is already running".to_string())
                    }
                    None => server.spawn().and_then(|mut child| {
                        let ready = server.wait_ready(&mut child);
                        if ready.is_ok() {
                            running = Some(child);
                        } else {
                            let _ = child.kill();
                            let _ = child.wait();
                        }
                        ready
                    }),
                };
                let _ = reply.send(result);
            }
            Control::Signal(signal, reply) => {
                let result = match running.take() {
                    Some(mut child) => {
                        unsafe {
                            libc::kill(child.id() as i32, signal);
                        }
                        child.wait().map(|_| ()).map_err(|e| e.to_string())
                    }
                    None => Err("postgres is not running".to_string()),
                };
                let _ = reply.send(result);
            }
        }
    }
    if let Some(mut child) = running {
        unsafe {
            libc::kill(child.id() as i32, libc::SIGQUIT);
        }
        let _ = child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// When running as root, the uid/gid of the `postgres` user (initdb refuses to run as root).
fn run_as_user() -> Result<Option<(u32, u32)>, String> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("static string");
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(
            "running as root, and there is no `postgres` user to run a private cluster as".into(),
        );
    }
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("cannot chown {}: {e}", path.display()))
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid).env("HOME", "/tmp");
    }
}
