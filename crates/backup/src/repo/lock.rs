//! Repository locks: objects `locks/<uuid>` that say who works on a repository and how.
//!
//! Locks are objects through the [`Backend`] rather than `flock`s so that they work the same
//! on a directory shared over NFS and on an object store, and so that an administrator can
//! see (and remove) them. A backup takes a shared lock for its whole job; prune and forget
//! take an exclusive one, because they delete what a backup in progress may be about to
//! reuse. Restore, verify and list take none: they only read published sets, and prune
//! never removes a chunk a published set uses.
//!
//! Taking a lock stores it first and lists the others second, so that of two processes
//! racing for conflicting locks at least one sees the other (both may give up; neither
//! proceeds wrongly). A process that dies leaves its lock behind: such a lock is *stale*
//! when it was taken on this host and its process is gone, or when it has not been
//! refreshed for [`STALE_AFTER`] (a held lock is rewritten every [`REFRESH_EVERY`]).
//! Stale locks are ignored with a warning, and `backup unlock` removes them.

use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::backend::Backend;
use super::error::{IoContext, RepoError, Result};

/// A lock not rewritten for this long belongs to a process that is gone or cut off.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A held lock is rewritten this often, well inside [`STALE_AFTER`].
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

const LOCKS: &str = "locks";

/// What a lock object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    /// The process's start time (clock ticks since boot, from `/proc/<pid>/stat`), so that a
    /// reused pid is not mistaken for the holder.
    #[serde(default)]
    pub start_ticks: Option<u64>,
    pub user: String,
    /// When the lock was taken or last refreshed.
    pub time_unix_ms: u64,
    pub exclusive: bool,
    /// What the holder is doing (`backup of SG1`, `prune`).
    pub what: String,
}

impl LockInfo {
    /// A lock for this process, now.
    fn mine(exclusive: bool, what: &str) -> Self {
        let pid = std::process::id();
        Self {
            host: hostname(),
            pid,
            start_ticks: start_ticks(pid),
            user: user(),
            time_unix_ms: events::now_ms(),
            exclusive,
            what: what.into(),
        }
    }

    /// Why this lock is stale, or `None` while its holder may still be working.
    pub fn stale_because(&self, now_ms: u64) -> Option<String> {
        if self.host == hostname() {
            if !pid_alive(self.pid) {
                return Some(format!("process {} on this host is gone", self.pid));
            }
            if let (Some(theirs), Some(now)) = (self.start_ticks, start_ticks(self.pid))
                && theirs != now
            {
                return Some(format!("process {} on this host is another process now", self.pid));
            }
        }
        let age = now_ms.saturating_sub(self.time_unix_ms);
        if age > STALE_AFTER.as_millis() as u64 {
            return Some(format!("not refreshed for {} minutes", age / 60_000));
        }
        None
    }

    /// The holder, for messages: `prune (exclusive) by root@host pid 42 since <time>`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}) by {}@{} pid {}, {} s ago",
            self.what,
            if self.exclusive { "exclusive" } else { "shared" },
            self.user,
            self.host,
            self.pid,
            events::now_ms().saturating_sub(self.time_unix_ms) / 1000,
        )
    }
}

/// A held lock. Dropping it stops its refresh and removes it.
pub struct RepoLock {
    backend: Arc<dyn Backend>,
    key: String,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoLock").field("key", &self.key).finish()
    }
}

impl RepoLock {
    /// The lock's object key (`locks/<uuid>`).
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        if let Err(e) = self.backend.delete(&self.key)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(lock = %self.backend.locate(&self.key).display(), error = %e,
                "removing the repository lock failed; `backup unlock` removes it once stale");
        }
        let _ = self.backend.sync_dir(LOCKS);
    }
}

/// Takes a lock on the repository in `backend`: exclusive conflicts with every live lock,
/// shared with live exclusive ones.
pub fn acquire(backend: &Arc<dyn Backend>, exclusive: bool, what: &str) -> Result<RepoLock> {
    let key = format!("{LOCKS}/{}", Uuid::new_v4());
    let info = LockInfo::mine(exclusive, what);
    put_lock(backend.as_ref(), &key, &info)?;
    let others = match read_locks(backend.as_ref()) {
        Ok(o) => o,
        Err(e) => {
            let _ = backend.delete(&key);
            return Err(e);
        }
    };
    let now = events::now_ms();
    for (other_key, other) in others {
        if other_key == key {
            continue;
        }
        if let Some(why) = other.stale_because(now) {
            tracing::warn!(lock = %backend.locate(&other_key).display(), holder = %other.describe(),
                why = %why, "ignoring a stale repository lock (`backup unlock` removes it)");
            continue;
        }
        if exclusive || other.exclusive {
            let _ = backend.delete(&key);
            let _ = backend.sync_dir(LOCKS);
            return Err(RepoError::Locked { path: backend.locate(""), by: other.describe() });
        }
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let refresher = {
        let (b, k) = (backend.clone(), key.clone());
        let spawned = thread::Builder::new().name("repo-lock-refresh".into()).spawn(move || {
            let mut info = info;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH_EVERY) {
                info.time_unix_ms = events::now_ms();
                if let Err(e) = put_lock(b.as_ref(), &k, &info) {
                    tracing::warn!(error = %e, "refreshing the repository lock failed");
                }
            }
        });
        match spawned {
            Ok(t) => t,
            Err(e) => {
                let _ = backend.delete(&key);
                return Err(e).ctx("starting the lock refresh thread for", backend.locate(&key));
            }
        }
    };
    Ok(RepoLock { backend: backend.clone(), key, stop: Some(stop), refresher: Some(refresher) })
}

/// Every lock in the repository, with its key. A lock that vanished while listing is skipped;
/// one that does not parse is reported as a lock of an unknown holder (never silently
/// ignored: it may be a newer format's).
pub fn read_locks(backend: &dyn Backend) -> Result<Vec<(String, LockInfo)>> {
    let mut out = Vec::new();
    for o in backend.list(LOCKS).ctx("listing", backend.locate(LOCKS))? {
        let key = format!("{LOCKS}/{}", o.name);
        let bytes = match backend.get(&key) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(RepoError::Io { op: "reading", path: backend.locate(&key), source: e });
            }
        };
        let info = serde_json::from_slice(&bytes).unwrap_or_else(|_| LockInfo {
            host: "?".into(),
            pid: 0,
            start_ticks: None,
            user: "?".into(),
            time_unix_ms: 0,
            exclusive: true,
            what: format!("unreadable lock {}", o.name),
        });
        out.push((key, info));
    }
    Ok(out)
}

/// Removes stale locks (every lock with `all`); returns what it removed, with why.
pub fn remove_locks(backend: &dyn Backend, all: bool) -> Result<Vec<(String, LockInfo, String)>> {
    let now = events::now_ms();
    let mut removed = Vec::new();
    for (key, info) in read_locks(backend)? {
        let why = match info.stale_because(now) {
            Some(why) => why,
            None if all => "--remove-all".to_string(),
            None => continue,
        };
        match backend.delete(&key) {
            Ok(()) => removed.push((key, info, why)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RepoError::Io {
                    op: "removing",
                    path: backend.locate(&key),
                    source: e,
                });
            }
        }
    }
    if !removed.is_empty() {
        backend.sync_dir(LOCKS).ctx("syncing", backend.locate(LOCKS))?;
    }
    Ok(removed)
}

fn put_lock(backend: &dyn Backend, key: &str, info: &LockInfo) -> Result<()> {
    #[allow(clippy::expect_used)] // Plain fields: serialising cannot fail.
    let bytes = serde_json::to_vec_pretty(info).expect("lock serialises");
    backend.put(key, &bytes).ctx("storing lock", backend.locate(key))
}

/// This machine's name, as the kernel knows it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()))
}

/// Whether process `pid` of this host exists (kill(pid, 0) says ESRCH when it does not; a
/// process of another user answers EPERM, and is alive).
pub fn pid_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    !matches!(rustix::process::test_kill_process(p), Err(rustix::io::Errno::SRCH))
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
