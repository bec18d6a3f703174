//! Synchronous copies, the active's side: [`SyncGate`], the commit gate a storage group's
//! instance passes on every durable commit ([`ese::CommitGate`]).
//!
//! Passive copies following the current generation (block mode, see [`crate::tail`]) ask for
//! the bytes after what they hold; each such request is their acknowledgement that everything
//! before its offset is durable on their node, and the server [`SyncGate::record`]s it. A
//! commit returns once `required` distinct copies acknowledged its end.
//!
//! Policies: `Strict` waits (bounded by the strict limit, then the commit fails: durable
//! here, not acknowledged); `Available` lets commits through unreplicated when fewer copies
//! than required are connected or an acknowledgement takes longer than the timeout: the gate
//! is then *degraded* (event 4118) and commits do not wait at all until enough copies hold
//! the log again (event 4119). Waiting is on a condition variable signalled by `record`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ese::Lsn;
use events::{EventSink, catalog as cat};
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde_json::json;

/// What a commit does when too few copies acknowledge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SyncMode {
    /// Waits for the copies (then fails after the strict limit).
    Strict,
    /// Goes on unreplicated, the gate marked degraded.
    Available,
}

/// How long a strict commit waits for its copies before it fails, unless set otherwise.
pub const DEFAULT_STRICT_LIMIT: Duration = Duration::from_secs(600);

/// The gate's state, as [`SyncGate::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    pub required: u32,
    pub mode: SyncMode,
    /// Commits go through without the required acknowledgements.
    pub degraded: bool,
    /// Each following copy's acknowledged durable position.
    pub peers: BTreeMap<String, Lsn>,
}

struct State {
    required: u32,
    mode: SyncMode,
    timeout: Duration,
    strict_limit: Duration,
    peers: BTreeMap<String, Lsn>,
    degraded: bool,
    /// The highest position a commit asked for: healthy again once enough copies pass it.
    asked: Lsn,
}

impl State {
    fn acknowledged(&self, lsn: Lsn) -> u32 {
        self.peers.values().filter(|d| **d >= lsn).count() as u32
    }
}

/// The commit gate of one storage group (see the module documentation).
pub struct SyncGate {
    sg: String,
    events: Arc<dyn EventSink>,
    state: Mutex<State>,
    cond: Condvar,
}

impl std::fmt::Debug for SyncGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncGate").field("sg", &self.sg).finish_non_exhaustive()
    }
}

/// A change of the degraded flag, reported once the lock is released.
enum Change {
    Degraded(String),
    Healthy,
}

impl SyncGate {
    /// A gate requiring no copy (every commit passes) until [`SyncGate::set`].
    pub fn new(sg: impl Into<String>, events: Arc<dyn EventSink>) -> SyncGate {
        SyncGate {
            sg: sg.into(),
            events,
            state: Mutex::new(State {
                required: 0,
                mode: SyncMode::Available,
                timeout: Duration::from_secs(5),
                strict_limit: DEFAULT_STRICT_LIMIT,
                peers: BTreeMap::new(),
                degraded: false,
                asked: Lsn(0),
            }),
            cond: Condvar::new(),
        }
    }

    /// Sets how many copies must acknowledge a commit, the policy, and (policy `Available`)
    /// how long a commit waits for them before it goes on degraded.
    pub fn set(&self, required: u32, mode: SyncMode, timeout: Duration) {
        let change = {
            let mut s = self.state.lock();
            s.required = required;
            s.mode = mode;
            s.timeout = timeout;
            self.check_healthy(&mut s)
        };
        self.cond.notify_all();
        self.report(change);
    }

    /// How long a strict commit waits before it fails.
    pub fn set_strict_limit(&self, limit: Duration) {
        self.state.lock().strict_limit = limit;
        self.cond.notify_all();
    }

    /// Records `peer`'s acknowledged durable position (positions only go forward) and wakes
    /// the commits it may satisfy.
    pub fn record(&self, peer: &str, durable: Lsn) {
        let change = {
            let mut s = self.state.lock();
            let p = s.peers.entry(peer.to_string()).or_insert(durable);
            if durable > *p {
                *p = durable;
            }
            self.check_healthy(&mut s)
        };
        self.cond.notify_all();
        self.report(change);
    }

    /// Forgets `peer` (it stopped following, or it is no longer a copy): it counts no more.
    pub fn forget(&self, peer: &str) {
        self.state.lock().peers.remove(peer);
        self.cond.notify_all();
    }

    /// The gate's state now.
    pub fn status(&self) -> SyncStatus {
        let s = self.state.lock();
        SyncStatus {
            required: s.required,
            mode: s.mode,
            degraded: s.degraded,
            peers: s.peers.clone(),
        }
    }

    /// Waits until `required` copies acknowledged `lsn` (see the module documentation).
    pub fn replicated(&self, lsn: Lsn) -> Result<(), String> {
        let started = Instant::now();
        let mut s = self.state.lock();
        if lsn > s.asked {
            s.asked = lsn;
        }
        let mut change = None;
        let result = loop {
            let required = s.required;
            if s.acknowledged(lsn) >= required {
                break Ok(());
            }
            let waited = started.elapsed();
            match s.mode {
                SyncMode::Available => {
                    if s.degraded {
                        break Ok(());
                    }
                    let connected = s.peers.len() as u32;
                    let why = if connected < required {
                        Some(format!("{connected} of {required} copies connected"))
                    } else if waited >= s.timeout {
                        Some(format!(
                            "no acknowledgement of {lsn} within {} ms",
                            s.timeout.as_millis()
                        ))
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        s.degraded = true;
                        change = Some(Change::Degraded(why));
                        break Ok(());
                    }
                    let deadline = started + s.timeout;
                    self.cond.wait_until(&mut s, deadline);
                }
                SyncMode::Strict => {
                    if waited >= s.strict_limit {
                        break Err(format!(
                            "{} of {required} copies acknowledged {lsn} within {} s",
                            s.acknowledged(lsn),
                            s.strict_limit.as_secs()
                        ));
                    }
                    let deadline = started + s.strict_limit;
                    self.cond.wait_until(&mut s, deadline);
                }
            }
        };
        drop(s);
        self.report(change);
        result
    }

    /// Clears the degraded flag when enough copies hold everything commits asked for.
    fn check_healthy(&self, s: &mut State) -> Option<Change> {
        if s.degraded && (s.mode == SyncMode::Strict || s.acknowledged(s.asked) >= s.required) {
            s.degraded = false;
            return Some(Change::Healthy);
        }
        None
    }

    fn report(&self, change: Option<Change>) {
        let required = self.state.lock().required;
        match change {
            None => {}
            Some(Change::Degraded(reason)) => {
                tracing::warn!(sg = %self.sg, %reason, "synchronous copies degraded");
                self.events.emit(
                    &cat::REPL_SYNC_DEGRADED,
                    None,
                    json!({"sg": self.sg, "required": required, "reason": reason}),
                );
            }
            Some(Change::Healthy) => {
                self.events.emit(
                    &cat::REPL_SYNC_HEALTHY,
                    None,
                    json!({"sg": self.sg, "required": required}),
                );
            }
        }
    }
}

impl ese::CommitGate for SyncGate {
    fn replicated(&self, durable_to: Lsn) -> Result<(), String> {
        SyncGate::replicated(self, durable_to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Ids(Mutex<Vec<u32>>);

    impl EventSink for Ids {
        fn emit(&self, def: &events::EventDef, _job: Option<uuid::Uuid>, _f: serde_json::Value) {
            self.0.lock().push(def.id);
        }
    }

    #[test]
    fn positions_only_go_forward_and_a_forgotten_peer_counts_no_more() {
        let gate = SyncGate::new("SG1", Arc::new(Ids::default()));
        gate.record("b", Lsn::new(3, 500));
        gate.record("b", Lsn::new(3, 100));
        assert_eq!(gate.status().peers.get("b"), Some(&Lsn::new(3, 500)));
        gate.set(1, SyncMode::Strict, Duration::from_secs(60));
        assert_eq!(gate.replicated(Lsn::new(3, 500)), Ok(()));
        gate.forget("b");
        gate.set_strict_limit(Duration::ZERO);
        let err = gate.replicated(Lsn::new(3, 400)).unwrap_err();
        assert!(err.contains("0 of 1 copies"), "{err}");
    }

    #[test]
    fn available_degrades_once_when_a_connected_copy_does_not_acknowledge_in_time() {
        let ids = Arc::new(Ids::default());
        let gate = SyncGate::new("SG1", ids.clone());
        gate.record("b", Lsn::new(3, 100));
        // A zero timeout: the first commit the copy has not acknowledged goes on degraded.
        gate.set(1, SyncMode::Available, Duration::ZERO);
        assert_eq!(gate.replicated(Lsn::new(3, 200)), Ok(()));
        assert_eq!(gate.replicated(Lsn::new(3, 300)), Ok(()));
        assert!(gate.status().degraded);
        assert_eq!(*ids.0.lock(), vec![4118]);
        // Healthy once the copy holds everything asked for.
        gate.record("b", Lsn::new(3, 250));
        assert!(gate.status().degraded);
        gate.record("b", Lsn::new(3, 300));
        assert!(!gate.status().degraded);
        assert_eq!(*ids.0.lock(), vec![4118, 4119]);
    }
}
