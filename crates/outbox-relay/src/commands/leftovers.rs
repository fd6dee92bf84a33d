//! What a killed `demo` leaves behind, and how the next one removes it.
//!
//! Ctrl-C (or `--once`) cleans up, but a demo killed with SIGKILL cannot: its private Postgres
//! directory (some 40 MB) stays in the temporary directory, and its throwaway database stays on
//! the `DATABASE_URL` server. So everything a demo creates carries its owner: directories are
//! named `outbox-relay-demo-<pid>-*`, databases `outbox_demo_<pid>_<hex>` with a comment naming
//! the host. Every demo first removes the leftovers of earlier demos whose process is gone — its
//! own kind only (never `outbox-relay-pg-*` test clusters, never a database without that
//! comment), never while their owner (or their Postgres server) still runs, and for databases
//! only those of this host that nobody is connected to.

use std::path::{Path, PathBuf};

use crate::error::Failure;

/// Prefix of every temporary directory a demo creates.
pub const DIR_PREFIX: &str = "outbox-relay-demo-";
/// Prefix of the throwaway databases a demo creates on a `DATABASE_URL` server.
pub const DB_PREFIX: &str = "outbox_demo_";

/// The directory-name prefix for this process: `outbox-relay-demo-<pid>-`.
pub fn dir_prefix() -> String {
    format!("{DIR_PREFIX}{}-", std::process::id())
}

/// A new throwaway database name for this process: `outbox_demo_<pid>_<hex>`.
pub fn database_name() -> String {
    format!(
        "{DB_PREFIX}{}_{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The comment a demo puts on its database: it names the host, so that only a demo on the same
/// machine (where the pid in the name means something) removes it.
pub fn database_comment() -> String {
    format!("outbox-relay demo on host {}", hostname())
}

/// Whether process `pid` exists (a process of another user counts).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    let result = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if result != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The pid in `outbox-relay-demo-<pid>-...` / `outbox_demo_<pid>_...`.
fn owner(name: &str, prefix: &str, separator: char) -> Option<u32> {
    name.strip_prefix(prefix)?
        .split(separator)
        .next()?
        .parse()
        .ok()
}

/// Directories of `tmp` that dead demos left: named by [`dir_prefix`] for a pid that is gone,
/// and not holding a Postgres server that still runs.
pub fn stale_dirs(tmp: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            owner(&name, DIR_PREFIX, '-').is_some_and(|pid| !alive(pid))
                && entry.file_type().is_ok_and(|t| t.is_dir())
                && !postgres_running(&entry.path())
        })
        .map(|entry| entry.path())
        .collect();
    out.sort();
    out
}

/// Whether the Postgres server of a private cluster in `dir` is still running (it stops by
/// itself when the demo that started it dies, but that takes a moment).
fn postgres_running(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("data").join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
        .is_some_and(alive)
}

/// Removes what dead demos left in the temporary directory; says what it removed.
pub fn remove_stale_dirs() {
    for dir in stale_dirs(&std::env::temp_dir()) {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => println!(
                "cleanup    removed {} (left by a demo that was killed)",
                dir.display()
            ),
            Err(e) => eprintln!(
                "warning: cannot remove {} (left by a demo that was killed): {e}",
                dir.display()
            ),
        }
    }
}

/// Drops the throwaway databases dead demos of this host left on the server of `client`: named
/// `outbox_demo_<pid>_...` for a pid that is gone, commented with this host, no connection.
pub async fn drop_stale_databases(client: &tokio_postgres::Client) -> Result<(), Failure> {
    let rows = client
        .query(
            "SELECT d.datname, shobj_description(d.oid, 'pg_database'),
                    (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid)
             FROM pg_database d WHERE d.datname LIKE 'outbox\\_demo\\_%'",
            &[],
        )
        .await?;
    let ours = database_comment();
    for row in rows {
        let name: String = row.get(0);
        let comment: Option<String> = row.get(1);
        let connections: i64 = row.get(2);
        let stale = owner(&name, DB_PREFIX, '_').is_some_and(|pid| !alive(pid))
            && comment.as_deref() == Some(ours.as_str())
            && connections == 0;
        if !stale || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        match client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
        {
            Ok(()) => {
                println!("cleanup    dropped database {name} (left by a demo that was killed)")
            }
            Err(e) => eprintln!(
                "warning: cannot drop database {name} (left by a demo that was killed): {}",
                outbox_core::db::describe(&e)
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_owners_leftovers_are_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = dead_pid();
        let mine = std::process::id();
        for name in [
            format!("{DIR_PREFIX}{dead}-abc"),
            format!("{DIR_PREFIX}{mine}-abc"),
            format!("outbox-relay-pg-{dead}"),
            format!("{DIR_PREFIX}x{dead}-abc"),
        ] {
            std::fs::create_dir(tmp.path().join(name)).unwrap();
        }
        // A dead demo's cluster whose server still runs (here: this process) is left alone.
        let running = tmp.path().join(format!("{DIR_PREFIX}{dead}-running"));
        std::fs::create_dir_all(running.join("data")).unwrap();
        std::fs::write(running.join("data/postmaster.pid"), format!("{mine}\n")).unwrap();
        std::fs::write(tmp.path().join(format!("{DIR_PREFIX}{dead}-file")), "").unwrap();

        assert_eq!(
            stale_dirs(tmp.path()),
            vec![tmp.path().join(format!("{DIR_PREFIX}{dead}-abc"))]
        );
    }

    #[test]
    fn owners_are_read_from_names() {
        assert_eq!(owner("outbox_demo_123_ab12cd34", DB_PREFIX, '_'), Some(123));
        assert_eq!(owner("outbox_demo_ab12cd34", DB_PREFIX, '_'), None);
        assert_eq!(owner("outbox-relay-demo-77-XyZ", DIR_PREFIX, '-'), Some(77));
        assert!(database_name().starts_with(&format!("outbox_demo_{}_", std::process::id())));
        assert!(alive(std::process::id()));
        assert!(!alive(dead_pid()));
    }

    /// The pid of a process that has exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }
}
