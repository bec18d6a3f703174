//! Flush-and-hold: committing the snapshots of a set of volumes at one instant.
//!
//! The write barrier of every volume of the set is taken exclusively, in GUID order (so two
//! commits sharing volumes cannot deadlock), before a shared deadline: new writes wait, writes
//! in flight drain. With every volume held, each table is scanned and each diff area created;
//! then all snapshots go live together and the barriers are released. If a barrier cannot be
//! taken or the scans overrun the deadline, every prepared snapshot is discarded before any
//! went live, so no volume of the set keeps a snapshot, and writes resume. The deadline is
//! enforced by the lock's own timed wait, not by a thread that might itself be blocked.
//!
//! The file tables are scanned *before* the barrier is requested; under the barrier a table is
//! reused when no mutation completed on its volume since its scan began (the normal case: the
//! applications' writers are frozen during the commit), so the hold costs no scan. A volume
//! that changed meanwhile is scanned again under the barrier.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::{Result, VolumeError};
use crate::events::VolumeEvent;
use crate::snapshot::ShadowCopyInfo;
use crate::volume::Volume;

/// The reference system's bound on how long writes may be held.
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of a commit.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// Persistent snapshots survive a restart; non-persistent ones do not.
    pub persistent: bool,
    /// Longest time writes may be held.
    pub timeout: Duration,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions { persistent: false, timeout: DEFAULT_HOLD_TIMEOUT }
    }
}

/// What a successful commit made.
#[derive(Debug, Clone)]
pub struct CommitReport {
    pub set_id: Uuid,
    /// One per volume, in the order the volumes were given.
    pub snapshots: Vec<ShadowCopyInfo>,
    /// How long writes were held (from the first barrier request to the release).
    pub hold: Duration,
    /// Time spent scanning file tables ahead of the hold (writes not held).
    pub scan_ahead: Duration,
    /// Where the hold went.
    pub parts: HoldParts,
}

/// The hold split into its steps, so that a long one can be explained: waiting for the writes
/// in flight, preparing the snapshots (a rescan under the barrier when a volume changed since
/// its scan ahead, and creating each diff area), and the nested work of another provider.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HoldParts {
    /// From the first barrier request until every barrier was held (writes in flight drained).
    pub drain: Duration,
    /// Preparing the snapshots under the barriers.
    pub prepare: Duration,
    /// Of `prepare`: rescanning the file tables of volumes that changed since their scan ahead.
    pub rescan: Duration,
    /// How many volumes were rescanned under the barrier.
    pub rescanned: usize,
    /// The work nested inside the hold (another provider's commit), and the snapshots going live.
    pub within: Duration,
}

/// Why [`commit_set_within`] failed: the volumes' own commit, or the work done inside the hold.
#[derive(Debug)]
pub enum WithinError<E> {
    Volume(VolumeError),
    Within(E),
}

impl<E> From<VolumeError> for WithinError<E> {
    fn from(e: VolumeError) -> Self {
        WithinError::Volume(e)
    }
}

/// Commits one snapshot of each of `volumes` (duplicates are ignored) as set `set_id`.
pub fn commit_set(volumes: &[Volume], set_id: Uuid, opts: &CommitOptions) -> Result<CommitReport> {
    match commit_set_within(volumes, set_id, opts, || Ok::<(), std::convert::Infallible>(())) {
        Ok((report, ())) => Ok(report),
        Err(WithinError::Volume(e)) => Err(e),
        Err(WithinError::Within(never)) => match never {},
    }
}

/// The volumes sorted by GUID without duplicates: the one order in which every commit takes
/// barriers, so that two commits sharing volumes cannot deadlock.
pub(crate) fn barrier_order(volumes: &[Volume]) -> Vec<&Volume> {
    let mut order: Vec<&Volume> = volumes.iter().collect();
    order.sort_by_key(|v| v.guid());
    order.dedup_by_key(|v| v.guid());
    order
}

/// Takes the write barrier of every volume of `order` exclusively before `deadline` (new writes
/// through the volumes wait, writes in flight drain), or none of them.
pub(crate) fn hold_writes<'a>(
    order: &[&'a Volume],
    start: Instant,
    deadline: Instant,
    limit: Duration,
) -> Result<Vec<parking_lot::RwLockWriteGuard<'a, ()>>> {
    let mut guards = Vec::with_capacity(order.len());
    for v in order {
        match v.inner.barrier.try_write_until(deadline) {
            Some(g) => guards.push(g),
            None => {
                drop(guards);
                tracing::warn!(volume = v.label(), "flush-and-hold timed out waiting for writes");
                return Err(VolumeError::HoldTimeout {
                    volume: v.label().to_string(),
                    waited: start.elapsed(),
                    limit,
                });
            }
        }
    }
    Ok(guards)
}

/// [`commit_set`], running `within` while the writes of every volume are held and the
/// snapshots are prepared but not yet live: the coordinator nests another provider's commit
/// there, so that a set mixing providers is one point in time. If `within` fails, no snapshot
/// of these volumes goes live. `within` is the last step that can undo the commit; it should
/// be quick (the writes wait for it).
pub fn commit_set_within<T, E>(
    volumes: &[Volume],
    set_id: Uuid,
    opts: &CommitOptions,
    within: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<(CommitReport, T), WithinError<E>> {
    let order = barrier_order(volumes);
    // Scan ahead of the hold; reused under the barrier if the volume stayed quiet.
    let scan_start = Instant::now();
    let mut pre = Vec::with_capacity(order.len());
    for v in &order {
        pre.push(Some(v.inner.prescan()?));
    }
    let scan_ahead = scan_start.elapsed();
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let timeout = |v: &Volume| VolumeError::HoldTimeout {
        volume: v.label().to_string(),
        waited: start.elapsed(),
        limit: opts.timeout,
    };
    let guards = hold_writes(&order, start, deadline, opts.timeout)?;
    let mut parts = HoldParts { drain: start.elapsed(), ..HoldParts::default() };
    let mut prepared = Vec::with_capacity(order.len());
    let mut failure = None;
    for (v, pre) in order.iter().zip(pre.iter_mut()) {
        match v.inner.prepare_snapshot(set_id, opts.persistent, pre.take()) {
            Ok((s, rescan)) => {
                if let Some(took) = rescan {
                    parts.rescanned += 1;
                    parts.rescan += took;
                }
                prepared.push(s);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if Instant::now() > deadline {
            failure = Some(timeout(v));
            break;
        }
    }
    let discard = |prepared: &[Arc<crate::snapshot::Snapshot>]| {
        for (v, s) in order.iter().zip(prepared) {
            v.inner.discard_prepared(s);
        }
    };
    if let Some(e) = failure {
        discard(&prepared);
        drop(guards);
        return Err(WithinError::Volume(e));
    }
    parts.prepare = start.elapsed() - parts.drain;
    let inner = match within() {
        Ok(t) => t,
        Err(e) => {
            discard(&prepared);
            drop(guards);
            return Err(WithinError::Within(e));
        }
    };
    for (v, s) in order.iter().zip(&prepared) {
        v.inner.install(s.clone());
    }
    drop(guards);
    let hold = start.elapsed();
    parts.within = hold - parts.drain - parts.prepare;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    tracing::info!(set = %set_id, volumes = order.len(), hold_ms = ms(hold),
        drain_ms = ms(parts.drain), prepare_ms = ms(parts.prepare), rescan_ms = ms(parts.rescan),
        rescanned = parts.rescanned, within_ms = ms(parts.within), "snapshot set committed");
    // Make persistent tables durable; on failure no snapshot of the set survives.
    for (v, s) in order.iter().zip(&prepared) {
        if let Err(e) = v.inner.persist(s) {
            for (v2, s2) in order.iter().zip(&prepared) {
                if let Err(e2) =
                    v2.inner.delete(s2.id, crate::events::DeleteReason::PreservationFailed)
                {
                    tracing::warn!(volume = v2.label(), snapshot = %s2.id, error = %e2,
                        "could not delete a snapshot of a set whose persisting failed");
                }
            }
            return Err(WithinError::Volume(e));
        }
    }
    for (v, s) in order.iter().zip(&prepared) {
        v.inner.events.emit(VolumeEvent::SnapshotCreated {
            volume: v.guid(),
            snapshot: s.id,
            set: set_id,
            persistent: s.persistent,
        });
    }
    let snapshots = volumes
        .iter()
        .map(|v| {
            #[allow(clippy::expect_used)] // every volume of the set was prepared above
            let s = prepared.iter().find(|s| s.volume == v.guid()).expect("prepared per volume");
            v.inner.info(s)
        })
        .collect();
    Ok((CommitReport { set_id, snapshots, hold, scan_ahead, parts }, inner))
}
