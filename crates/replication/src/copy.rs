//! A passive copy on this node: seeding, then the log copier, the log inspector and the
//! replayer, on one thread of its own.
//!
//! The copy lives in a directory of a volume of this node (so that the replication writer can
//! snapshot it): `db/<database>.edb` (seeded from a snapshot of the active, then written only by
//! replay), `incoming/` (a generation being fetched), `inbox/` (generations that passed
//! inspection, waiting for replay), `<prefix>.pchk` (the replay checkpoint) and `seed.json`
//! (which seed the files come from). A copy killed at any point resumes from its checkpoint; a
//! copy killed while seeding seeds again (no `seed.json` for the current serial).
//!
//! Each round: ask the active which generation it closed last, fetch every generation after the
//! last one inspected into `incoming/`, inspect it ([`Inspector`]: header, signature,
//! sequence, continuity, every record checksum), and only then rename it into `inbox/`; then
//! replay what the inbox holds. A generation that fails inspection is fetched once more; failing
//! again (or belonging to another log stream) fails the copy: `FailedAndSuspended`, with an
//! event naming the file and the reason. A generation damaged in the inbox after inspection is
//! caught by the replayer's own inspection and fetched again the same way.
//!
//! The active is never written to: the copy only reads from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use events::{EventSink, catalog as cat};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use ese::logfmt;
use ese::{DatabaseSpec, PassiveConfig};
use volume::{FsRef, OpenMode};

use crate::client::{ClientError, PeerClient};
use crate::cluster::CopyStatus;
use crate::inspector::Inspector;
use crate::protocol::{self, SeedManifest, StreamInfo};
use crate::replayer::{ReplayError, Replayer, ReplayerConfig};
use crate::tail::{FollowerConfig, TailFollower, TailState};

/// Generations fetched before replay runs again, when a copy has a backlog.
const FETCH_BATCH: usize = 16;

/// Where a passive copy lives and who it reports to.
#[derive(Clone)]
pub struct CopyConfig {
    pub sg: String,
    /// This node.
    pub node: String,
    /// The volume holding the copy, and the copy's directory on it.
    pub fs: FsRef,
    pub dir: PathBuf,
    pub events: Arc<dyn EventSink>,
    /// How often an idle copy asks the active for new generations.
    pub poll: Duration,
    /// Runs async requests from the copy's thread.
    pub runtime: tokio::runtime::Handle,
}

/// What the administrator and the cluster database want of the copy now.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// The active copy's node.
    pub active: Option<Arc<PeerClient>>,
    /// Suspended, with the reason.
    pub suspended: Option<String>,
    /// The seed serial (a reseed bumps it).
    pub seed_serial: u64,
    /// The resume count (`copy resume` bumps it): a change clears a failure.
    pub resumes: u64,
    /// The epoch of the active copy as the cluster database knows it (0: unknown): an active
    /// answering with a lower, non-zero epoch is a deposed one, and the copy fetches nothing
    /// from it.
    pub epoch: u64,
}

/// What the copy reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    pub status: CopyStatus,
    /// The active's last closed generation, as last heard.
    pub produced: u32,
    pub last_inspected_generation: u32,
    pub last_replayed_generation: u32,
    /// The oldest generation replay still reads.
    pub checkpoint_generation: u32,
    pub last_error: Option<String>,
    /// The active's node, as last heard.
    pub active: Option<String>,
    /// The furthest log position durable on this copy: the end of what the block-mode
    /// follower holds of the active's current generation, or (generation after the last
    /// inspected one, offset 0) when it holds nothing further.
    pub durable: ese::Lsn,
    /// The copy follows the active's current generation (block mode).
    pub block_mode: bool,
}

impl CopyReport {
    /// Generations the active closed that this copy has not inspected.
    pub fn copy_queue(&self) -> u32 {
        self.produced.saturating_sub(self.last_inspected_generation)
    }

    /// Generations inspected but not replayed.
    pub fn replay_queue(&self) -> u32 {
        self.last_inspected_generation.saturating_sub(self.last_replayed_generation)
    }
}

/// What `seed.json` records: which seed the database files come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeedRecord {
    serial: u64,
    manifest: SeedManifest,
    finished_ms: u64,
}

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The copy must stop until an administrator resumes or reseeds it.
    #[error("{0}")]
    Fail(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// The active answering is of an older epoch than the cluster's: nothing is fetched.
    #[error("{0}")]
    Fenced(String),
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> RoundError {
    let what = what.to_string();
    move |source| RoundError::Io { what, source }
}

struct Shared {
    desired: Mutex<Desired>,
    report: Mutex<CopyReport>,
    /// What stopped the replay thread, for the copier to act on.
    replay_fault: Mutex<Option<ReplayFault>>,
    /// The active's oldest generation on disk, as last heard (0: unknown).
    active_oldest: std::sync::atomic::AtomicU32,
    /// The last generation whose arrival in the inbox is durable: replay goes no further.
    admitted: std::sync::atomic::AtomicU32,
    /// Held while replay writes the databases; a reader of the copy's content takes it.
    replay: Mutex<()>,
    /// A backup of the copy holds log copying and replay (between its freeze and thaw).
    held: std::sync::atomic::AtomicBool,
    /// Held while one generation is fetched and renamed into the inbox, so that a hold
    /// returns only once the inbox no longer changes.
    copying: Mutex<()>,
    wake: Mutex<Option<mpsc::Sender<Wake>>>,
    /// The block-mode follower's position, while one runs.
    tail: Mutex<Option<Arc<Mutex<TailState>>>>,
}

impl Shared {
    /// The report, with the block-mode follower's position.
    fn report(&self) -> CopyReport {
        let mut r = self.report.lock().clone();
        if r.last_inspected_generation > 0 {
            r.durable = r.durable.max(ese::Lsn::new(r.last_inspected_generation + 1, 0));
        }
        if let Some(t) = self.tail.lock().as_ref() {
            let t = t.lock();
            r.block_mode = t.following;
            r.durable = r.durable.max(t.position);
        }
        r
    }
}

enum Wake {
    Now,
    Stop,
}

/// A running passive copy.
pub struct PassiveCopy {
    cfg: CopyConfig,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for PassiveCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassiveCopy").field("sg", &self.cfg.sg).finish_non_exhaustive()
    }
}

impl PassiveCopy {
    /// Starts the copy's thread.
    pub fn start(cfg: CopyConfig, desired: Desired) -> std::io::Result<PassiveCopy> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            desired: Mutex::new(desired),
            report: Mutex::new(CopyReport {
                status: CopyStatus::Initializing,
                produced: 0,
                last_inspected_generation: 0,
                last_replayed_generation: 0,
                checkpoint_generation: 0,
                last_error: None,
                active: None,
                durable: ese::Lsn(0),
                block_mode: false,
            }),
            replay: Mutex::new(()),
            held: std::sync::atomic::AtomicBool::new(false),
            copying: Mutex::new(()),
            wake: Mutex::new(Some(tx)),
            replay_fault: Mutex::new(None),
            active_oldest: std::sync::atomic::AtomicU32::new(0),
            admitted: std::sync::atomic::AtomicU32::new(0),
            tail: Mutex::new(None),
        });
        let runner = Runner {
            cfg: cfg.clone(),
            shared: shared.clone(),
            replayer: None,
            inspector: None,
            failures: Default::default(),
            failed: false,
            seeded_serial: None,
            prefix: String::new(),
            tail: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("copy-{}", cfg.sg))
            .spawn(move || runner.run(rx))?;
        Ok(PassiveCopy { cfg, shared, thread: Some(thread) })
    }

    /// The copy's report now.
    pub fn report(&self) -> CopyReport {
        self.shared.report()
    }

    /// Changes what is wanted of the copy (active, suspension, seed serial) and wakes it.
    pub fn set_desired(&self, d: Desired) {
        *self.shared.desired.lock() = d;
        self.wake();
    }

    /// What is wanted of the copy now.
    pub fn desired(&self) -> Desired {
        self.shared.desired.lock().clone()
    }

    /// Makes the copy look for new generations now.
    pub fn wake(&self) {
        if let Some(tx) = self.shared.wake.lock().as_ref() {
            let _ = tx.send(Wake::Now);
        }
    }

    /// Runs `f` on the copy's database files while replay is held off, so that they are
    /// consistent as of the last replayed generation; `f` also gets the seed's manifest (the
    /// storage group's prefix, sizes and databases), `None` before the copy was seeded.
    pub fn with_databases<T>(
        &self,
        f: impl FnOnce(&FsRef, &Path, Option<&SeedManifest>) -> T,
    ) -> T {
        let _g = self.shared.replay.lock();
        let p = self.cfg.dir.join("seed.json");
        let manifest = volume::fs::read_all(self.cfg.fs.as_ref(), &p)
            .ok()
            .and_then(|b| serde_json::from_slice::<SeedRecord>(&b).ok())
            .map(|r| r.manifest);
        f(&self.cfg.fs, &self.cfg.dir.join("db"), manifest.as_ref())
    }

    /// A handle that holds and releases the copy for a backup, usable without the caller's
    /// lock on the copy (holding waits for a batch of replay to end).
    pub fn backup_hold(&self) -> BackupHold {
        BackupHold { shared: self.shared.clone(), wake: self.shared.wake.lock().clone() }
    }

    /// Suspends log copying and replay for a backup of the copy (its freeze): no generation is
    /// fetched and no batch replayed until [`PassiveCopy::release_backup_hold`]. Returns once a
    /// batch being replayed has finished, so that the database files are as of the last
    /// replayed generation; returns the report at that point.
    pub fn hold_for_backup(&self) -> CopyReport {
        self.backup_hold().hold()
    }

    /// Resumes log copying and replay after a backup (its thaw, or its end). Harmless when not
    /// held.
    pub fn release_backup_hold(&self) {
        self.backup_hold().release();
    }

    /// Whether a backup holds log copying and replay now.
    pub fn held_for_backup(&self) -> bool {
        self.shared.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The copy's directory on its volume, and the volume.
    pub fn location(&self) -> (&FsRef, &Path) {
        (&self.cfg.fs, &self.cfg.dir)
    }

    /// The seed the copy's files come from (its prefix and databases), once seeded.
    pub fn seed_manifest(&self) -> Option<SeedManifest> {
        let p = self.cfg.dir.join("seed.json");
        volume::fs::read_all(self.cfg.fs.as_ref(), &p)
            .ok()
            .and_then(|b| serde_json::from_slice::<SeedRecord>(&b).ok())
            .map(|r| r.manifest)
    }

    /// Stops the thread after its current step.
    pub fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        if let Some(tx) = self.shared.wake.lock().take() {
            let _ = tx.send(Wake::Stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PassiveCopy {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Holds a copy for a backup ([`PassiveCopy::backup_hold`]).
pub struct BackupHold {
    shared: Arc<Shared>,
    wake: Option<mpsc::Sender<Wake>>,
}

impl BackupHold {
    /// See [`PassiveCopy::hold_for_backup`].
    pub fn hold(&self) -> CopyReport {
        self.shared.held.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(self.shared.copying.lock());
        drop(self.shared.replay.lock());
        self.shared.report.lock().clone()
    }

    /// See [`PassiveCopy::release_backup_hold`].
    pub fn release(&self) {
        if self.shared.held.swap(false, std::sync::atomic::Ordering::SeqCst)
            && let Some(tx) = &self.wake
        {
            let _ = tx.send(Wake::Now);
        }
    }
}

/// Writes a fetched generation at `path` (in the copy's `incoming/`) and syncs it. Its name
/// needs no directory sync there: it is renamed into the inbox after inspection, and the
/// inbox's directory sync makes the rename durable.
pub fn write_incoming(
    fs: &dyn volume::FileSystem,
    path: &Path,
    data: &[u8],
) -> std::io::Result<()> {
    let f = fs.open(path, OpenMode::Create)?;
    f.set_len(0)?;
    f.write_at(data, 0)?;
    f.sync()
}

/// The database file of `name` in a copy directory.
pub fn database_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("db").join(format!("{name}.edb"))
}

/// Why the replay thread stopped replaying.
enum ReplayFault {
    /// A generation in the inbox failed the replayer's inspection (damaged after the
    /// copier's): it and every later one were deleted; fetch again from `inspector`.
    Refetch { inspector: Inspector, generation: u32, file: String, reason: String },
    /// Anything else: the copy fails.
    Fatal(String),
}

/// The replayer on a thread of its own, so that replaying a batch overlaps fetching the next.
struct ReplayWorker {
    wake: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReplayWorker {
    fn start(
        mut replayer: Replayer,
        shared: Arc<Shared>,
        cfg: &CopyConfig,
        inbox: PathBuf,
        prefix: String,
    ) -> std::io::Result<ReplayWorker> {
        let (fs, poll) = (cfg.fs.clone(), cfg.poll);
        let (events, sg, node) = (cfg.events.clone(), cfg.sg.clone(), cfg.node.clone());
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("replay".into()).spawn(move || {
            loop {
                match rx.recv_timeout(poll) {
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
                if shared.desired.lock().suspended.is_some()
                    || shared.replay_fault.lock().is_some()
                    || shared.held.load(std::sync::atomic::Ordering::SeqCst)
                {
                    continue;
                }
                let oldest = shared.active_oldest.load(std::sync::atomic::Ordering::Relaxed);
                if oldest > 0 {
                    replayer.set_active_oldest(oldest);
                }
                // In batches (one sync per batch); whatever was applied before an error
                // counts.
                let admitted = shared.admitted.load(std::sync::atomic::Ordering::Acquire);
                // Replay, and the inbox clean-up after it (pruning, or deleting generations to
                // fetch again), happen under the lock a backup's hold waits for: once held,
                // neither the databases nor the inbox change.
                let _replaying = shared.replay.lock();
                // A backup's hold taken while this thread waited for the lock.
                if shared.held.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let done = replayer.catch_up_until(admitted);
                {
                    let mut r = shared.report.lock();
                    r.last_replayed_generation = replayer.replayed_generation();
                    r.checkpoint_generation = replayer.passive().oldest_needed_generation();
                }
                let fault = match done {
                    Ok(_) => match replayer.prune() {
                        // Step 10 of a backup's trail on every node: the copy's shipped logs
                        // go once the active truncated them and replay passed them.
                        Ok(Some((low, high))) => {
                            events.emit(
                                &cat::ENGINE_LOGS_TRUNCATED,
                                None,
                                json!({"instance": prefix,
                                       "first": logfmt::generation_name(&prefix, low),
                                       "last": logfmt::generation_name(&prefix, high),
                                       "kept": format!(" of this node's copy of {sg}: the active truncated them and replay passed them"),
                                       "sg": sg, "node": node}),
                            );
                            None
                        }
                        Ok(None) => None,
                        Err(e) => Some(ReplayFault::Fatal(format!("pruning the inbox: {e}"))),
                    },
                    Err(ReplayError::Inspect(e)) => {
                        let g = replayer.replayed_generation() + 1;
                        let st = replayer.passive().state();
                        // Every inbox generation from `g` on is fetched again.
                        let deleted = fs.read_dir(&inbox).and_then(|entries| {
                            for e in entries {
                                if let Some(n) = logfmt::parse_generation_name(&prefix, &e.name)
                                    && n >= g
                                {
                                    fs.remove_file(&inbox.join(&e.name))?;
                                }
                            }
                            Ok(())
                        });
                        match deleted {
                            Err(e) => Some(ReplayFault::Fatal(format!("inbox: {e}"))),
                            Ok(()) => Some(ReplayFault::Refetch {
                                inspector: Inspector::new(
                                    prefix.clone(),
                                    st.signature,
                                    g,
                                    (st.last_created != 0).then_some(st.last_created),
                                ),
                                generation: g,
                                file: logfmt::generation_name(&prefix, g),
                                reason: e.to_string(),
                            }),
                        }
                    }
                    Err(e) => Some(ReplayFault::Fatal(format!("replay failed: {e}"))),
                };
                if let Some(f) = fault {
                    *shared.replay_fault.lock() = Some(f);
                }
            }
        })?;
        Ok(ReplayWorker { wake: Some(tx), thread: Some(thread) })
    }

    fn wake(&self) {
        if let Some(tx) = &self.wake {
            let _ = tx.send(());
        }
    }
}

impl Drop for ReplayWorker {
    fn drop(&mut self) {
        self.wake = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Runner {
    cfg: CopyConfig,
    shared: Arc<Shared>,
    replayer: Option<ReplayWorker>,
    /// The copier's inspector: the next generation to fetch and inspect.
    inspector: Option<Inspector>,
    /// Inspection failures per generation (a second failure fails the copy).
    failures: std::collections::HashMap<u32, u32>,
    /// Failed and suspended until resumed or reseeded.
    failed: bool,
    seeded_serial: Option<u64>,
    /// The log prefix of the stream (from the seed).
    prefix: String,
    /// The block-mode follower, and the node it follows.
    tail: Option<(TailFollower, String)>,
}

impl Runner {
    fn run(mut self, wake: mpsc::Receiver<Wake>) {
        let mut suspended_for: Option<String> = None;
        let mut resumed_serial = self.shared.desired.lock().seed_serial;
        let mut resumes = self.shared.desired.lock().resumes;
        loop {
            let desired = self.shared.desired.lock().clone();
            if desired.seed_serial != resumed_serial {
                // A reseed clears a failure.
                resumed_serial = desired.seed_serial;
                self.failed = false;
            }
            if desired.resumes != resumes {
                // So does a resume, also of a copy that no administrator suspended.
                resumes = desired.resumes;
                if self.failed && desired.suspended.is_none() && suspended_for.is_none() {
                    self.emit(&cat::REPL_COPY_RESUMED, json!({}));
                }
                self.failed = false;
                self.failures.clear();
            }
            match (&desired.suspended, &suspended_for) {
                (Some(r), None) => {
                    self.emit(&cat::REPL_COPY_SUSPENDED, json!({"reason": r}));
                    suspended_for = Some(r.clone());
                    // A resume clears a failure as well.
                    self.set_status(CopyStatus::Suspended, None);
                }
                (None, Some(_)) => {
                    self.emit(&cat::REPL_COPY_RESUMED, json!({}));
                    suspended_for = None;
                    self.failed = false;
                    self.failures.clear();
                }
                _ => {}
            }
            let held = self.shared.held.load(std::sync::atomic::Ordering::SeqCst);
            let following = self.tail.as_ref().map(|(_, n)| n.clone());
            if desired.suspended.is_some()
                || self.failed
                || following.is_some_and(|n| desired.active.as_ref().is_none_or(|a| a.node() != n))
            {
                self.stop_tail();
            }
            if desired.suspended.is_none() && !self.failed && !held {
                self.round(&desired);
            }
            let wait = if self.failed || desired.suspended.is_some() {
                Duration::from_secs(3600)
            } else {
                self.cfg.poll
            };
            match wake.recv_timeout(wait) {
                Ok(Wake::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(Wake::Now) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Stops the block-mode follower (the copy goes on with closed generations).
    fn stop_tail(&mut self) {
        *self.shared.tail.lock() = None;
        self.tail = None;
    }

    /// Starts following the active's current generation once nothing closed is left to
    /// fetch. The follower's failures never fail the copy.
    fn follow_tail(&mut self, active: &PeerClient, info: &StreamInfo) {
        if self.tail.is_some() || self.prefix.is_empty() {
            return;
        }
        let Some(inspector) = &self.inspector else { return };
        if inspector.next_generation() <= info.produced {
            return;
        }
        let wake = self.shared.wake.lock().clone();
        let cfg = FollowerConfig {
            sg: self.cfg.sg.clone(),
            fs: self.cfg.fs.clone(),
            dir: self.cfg.dir.clone(),
            prefix: self.prefix.clone(),
            generation: info.produced + 1,
            epoch: info.epoch,
            client: active.sibling(),
            runtime: self.cfg.runtime.clone(),
            on_closed: Box::new(move || {
                if let Some(tx) = &wake {
                    let _ = tx.send(Wake::Now);
                }
            }),
            admitted: {
                let shared = self.shared.clone();
                Box::new(move || shared.admitted.load(std::sync::atomic::Ordering::Acquire))
            },
        };
        match TailFollower::start(cfg) {
            Ok(f) => {
                *self.shared.tail.lock() = Some(f.state.clone());
                self.tail = Some((f, active.node().to_string()));
            }
            Err(e) => tracing::warn!(sg = %self.cfg.sg, "cannot start the tail follower: {e}"),
        }
    }

    fn emit(&self, def: &events::EventDef, mut fields: serde_json::Value) {
        if let Some(m) = fields.as_object_mut() {
            m.insert("sg".into(), json!(self.cfg.sg));
            m.insert("node".into(), json!(self.cfg.node));
        }
        self.cfg.events.emit(def, None, fields);
    }

    fn set_status(&self, status: CopyStatus, error: Option<String>) {
        let previous = {
            let mut r = self.shared.report.lock();
            let previous = r.status;
            r.status = status;
            if error.is_some() || status == CopyStatus::Healthy {
                r.last_error = error;
            }
            previous
        };
        if previous != status {
            self.emit(
                &cat::REPL_COPY_STATUS,
                json!({"status": format!("{status:?}"), "previous": format!("{previous:?}")}),
            );
        }
    }

    /// One round: seed if needed, fetch and inspect, replay.
    fn round(&mut self, desired: &Desired) {
        let Some(active) = desired.active.clone() else {
            self.set_status(CopyStatus::Disconnected, Some("no active copy is known".into()));
            return;
        };
        self.shared.report.lock().active = Some(active.node().to_string());
        match self.round_inner(&active, desired) {
            Ok(info) => {
                self.follow_tail(&active, &info);
                let r = self.shared.report.lock().clone();
                if r.status != CopyStatus::Healthy {
                    self.set_status(CopyStatus::Healthy, None);
                }
            }
            Err(RoundError::Client(e)) => {
                let reason = e.to_string();
                if !matches!(self.shared.report.lock().status, CopyStatus::Disconnected) {
                    self.emit(
                        &cat::REPL_COPY_DISCONNECTED,
                        json!({"active": active.node(), "reason": reason}),
                    );
                }
                self.set_status(CopyStatus::Disconnected, Some(reason));
            }
            Err(RoundError::Fenced(reason)) => {
                self.stop_tail();
                self.set_status(CopyStatus::Disconnected, Some(reason));
            }
            Err(RoundError::Fail(reason)) => self.fail(reason),
            Err(e @ RoundError::Io { .. }) => self.fail(e.to_string()),
        }
    }

    fn fail(&mut self, reason: String) {
        self.emit(&cat::REPL_COPY_FAILED, json!({"reason": reason}));
        self.failed = true;
        self.stop_tail();
        self.replayer = None;
        self.inspector = None;
        *self.shared.replay_fault.lock() = None;
        self.set_status(CopyStatus::FailedAndSuspended, Some(reason));
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.cfg.runtime.block_on(f)
    }

    fn round_inner(
        &mut self,
        active: &PeerClient,
        desired: &Desired,
    ) -> Result<StreamInfo, RoundError> {
        let serial = desired.seed_serial;
        // Fenced before anything is fetched (a seed included).
        let first = self.stream_info(active)?;
        if first.epoch != 0 && first.epoch < desired.epoch {
            return Err(RoundError::Fenced(format!(
                "node {} answers as active at epoch {}, older than the cluster's epoch {}: \
                 nothing is fetched from it",
                first.node, first.epoch, desired.epoch
            )));
        }
        if self.seeded_serial != Some(serial) {
            match self.read_seed_record()? {
                Some(rec) if rec.serial == serial => self.seeded_serial = Some(serial),
                _ => {
                    self.stop_tail();
                    self.replayer = None;
                    self.inspector = None;
                    self.seed(active, serial)?;
                    self.seeded_serial = Some(serial);
                }
            }
        }
        // A seed rolled the active's log: asked again.
        let mut info = if self.replayer.is_none() { self.stream_info(active)? } else { first };
        self.open_replayer(&info)?;
        // Fetched in batches; the replay thread replays each batch while the next arrives.
        // The active's last closed generation is asked again after each full batch, so that
        // the copy queue it reports stays current through a long backlog.
        loop {
            self.take_replay_fault()?;
            let taken = self.fetch(active, &info, FETCH_BATCH)?;
            if let Some(w) = &self.replayer {
                w.wake();
            }
            if taken < FETCH_BATCH {
                break;
            }
            info = self.stream_info(active)?;
        }
        self.take_replay_fault()?;
        Ok(info)
    }

    /// Asks the active for its log stream and records its last closed and oldest generations.
    fn stream_info(&self, active: &PeerClient) -> Result<StreamInfo, RoundError> {
        let info: StreamInfo =
            self.block_on(active.get_json(&protocol::stream_path(&self.cfg.sg)))?;
        self.shared.report.lock().produced = info.produced;
        self.shared.active_oldest.store(info.oldest, std::sync::atomic::Ordering::Relaxed);
        Ok(info)
    }

    /// Acts on what stopped the replay thread: a damaged inbox generation is fetched again
    /// (counted like any inspection failure), anything else fails the copy.
    fn take_replay_fault(&mut self) -> Result<(), RoundError> {
        let fault = self.shared.replay_fault.lock().take();
        match fault {
            None => Ok(()),
            Some(ReplayFault::Fatal(reason)) => Err(RoundError::Fail(reason)),
            Some(ReplayFault::Refetch { inspector, generation, file, reason }) => {
                self.inspector = Some(inspector);
                self.shared.report.lock().last_inspected_generation = generation - 1;
                self.inspection_failed(generation, &file, reason)
            }
        }
    }

    fn seed_record_path(&self) -> PathBuf {
        self.cfg.dir.join("seed.json")
    }

    fn read_seed_record(&self) -> Result<Option<SeedRecord>, RoundError> {
        let p = self.seed_record_path();
        let fs = &self.cfg.fs;
        if !fs.exists(&p).map_err(io(p.display()))? {
            return Ok(None);
        }
        let bytes = volume::fs::read_all(fs.as_ref(), &p).map_err(io(p.display()))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RoundError::Fail(format!("{} is malformed: {e}", p.display())))
    }

    /// Seeds the copy from a snapshot of the active: every database file, streamed into
    /// place, then `seed.json`. The old copy's files go first.
    fn seed(&mut self, active: &PeerClient, serial: u64) -> Result<(), RoundError> {
        self.set_status(CopyStatus::Seeding, None);
        let started = Instant::now();
        let manifest: SeedManifest =
            self.block_on(active.post_json(&protocol::seed_path(&self.cfg.sg)))?;
        let total: u64 = manifest.databases.iter().map(|d| d.size).sum();
        self.emit(
            &cat::REPL_SEED_STARTED,
            json!({"active": active.node(), "databases": manifest.databases.len(),
                   "bytes": total, "generation": manifest.generation}),
        );
        let result = self.seed_files(active, &manifest);
        // The seed's snapshot is released whatever happened.
        let _ = self.block_on(active.delete(&protocol::seed_end_path(manifest.id)));
        if let Err(e) = result {
            self.emit(&cat::REPL_SEED_FAILED, json!({"reason": e.to_string()}));
            return Err(e);
        }
        let rec = SeedRecord { serial, manifest: manifest.clone(), finished_ms: events::now_ms() };
        let p = self.seed_record_path();
        let bytes = serde_json::to_vec_pretty(&rec)
            .map_err(|e| RoundError::Fail(format!("encoding {}: {e}", p.display())))?;
        volume::fs::write_atomic(self.cfg.fs.as_ref(), &p, &bytes).map_err(io(p.display()))?;
        self.emit(
            &cat::REPL_SEED_DONE,
            json!({"bytes": total, "seconds": format!("{:.1}", started.elapsed().as_secs_f64()),
                   "generation": manifest.generation}),
        );
        Ok(())
    }

    fn seed_files(&mut self, active: &PeerClient, m: &SeedManifest) -> Result<(), RoundError> {
        let fs = self.cfg.fs.clone();
        let dir = self.cfg.dir.clone();
        // A previous copy's state goes: seed record first (so a crash from here on seeds
        // again), then the checkpoint (a passive opened without one discards the old replay
        // journal itself), the inbox and the databases.
        for p in [self.seed_record_path(), self.checkpoint_path(&m.prefix)] {
            if fs.exists(&p).map_err(io(p.display()))? {
                fs.remove_file(&p).map_err(io(p.display()))?;
            }
        }
        for sub in ["inbox", "incoming", "db", "tail"] {
            let d = dir.join(sub);
            if fs.exists(&d).map_err(io(d.display()))? {
                for e in fs.read_dir(&d).map_err(io(d.display()))? {
                    let p = d.join(&e.name);
                    fs.remove_file(&p).map_err(io(p.display()))?;
                }
            }
            fs.create_dir_all(&d).map_err(io(d.display()))?;
        }
        for (i, db) in m.databases.iter().enumerate() {
            let path = database_path(&dir, &db.name);
            let part = PathBuf::from(format!("{}.part", path.display()));
            let f = fs.open(&part, OpenMode::Create).map_err(io(part.display()))?;
            f.set_len(0).map_err(io(part.display()))?;
            let mut off = 0u64;
            let mut sink = |data: &[u8]| -> std::io::Result<()> {
                f.write_at(data, off)?;
                off += data.len() as u64;
                Ok(())
            };
            let got =
                self.block_on(active.get_streamed(&protocol::seed_file_path(m.id, i), &mut sink))?;
            if got != db.size {
                return Err(RoundError::Fail(format!(
                    "seed file of database {} ended after {got} of {} bytes",
                    db.name, db.size
                )));
            }
            f.sync().map_err(io(part.display()))?;
            drop(f);
            fs.rename(&part, &path).map_err(io(path.display()))?;
        }
        let d = dir.join("db");
        fs.sync_dir(&d).map_err(io(d.display()))?;
        Ok(())
    }

    fn checkpoint_path(&self, prefix: &str) -> PathBuf {
        self.cfg.dir.join(format!("{prefix}.pchk"))
    }

    fn open_replayer(&mut self, info: &StreamInfo) -> Result<(), RoundError> {
        if self.replayer.is_some() {
            return Ok(());
        }
        let Some(rec) = self.read_seed_record()? else {
            return Err(RoundError::Fail("the copy has no seed".into()));
        };
        if rec.manifest.signature != info.signature {
            return Err(RoundError::Fail(format!(
                "the active's log stream ({}) is not the one this copy was seeded from ({}); \
                 reseed the copy",
                info.signature, rec.manifest.signature
            )));
        }
        let fs = self.cfg.fs.clone();
        let databases = rec
            .manifest
            .databases
            .iter()
            .map(|d| DatabaseSpec::new(&d.name, fs.clone(), database_path(&self.cfg.dir, &d.name)))
            .collect();
        let cfg = ReplayerConfig {
            passive: PassiveConfig {
                databases,
                checkpoint_fs: fs.clone(),
                checkpoint_path: self.checkpoint_path(&rec.manifest.prefix),
                prefix: rec.manifest.prefix.clone(),
            },
            inbox_fs: fs.clone(),
            inbox: self.cfg.dir.join("inbox"),
        };
        let replayer = Replayer::open(cfg).map_err(|e| RoundError::Fail(e.to_string()))?;
        let st = replayer.passive().state();
        // Generations already in the inbox passed inspection before they were renamed in.
        let mut inspector = Inspector::new(
            rec.manifest.prefix.clone(),
            st.signature,
            st.replayed_generation + 1,
            (st.last_created != 0).then_some(st.last_created),
        );
        let inbox = self.cfg.dir.join("inbox");
        loop {
            let g = inspector.next_generation();
            let p = inbox.join(logfmt::generation_name(&rec.manifest.prefix, g));
            if !fs.exists(&p).map_err(io(p.display()))? {
                break;
            }
            match inspector.check(fs.as_ref(), &p) {
                Ok(ins) => inspector.accept(&ins),
                Err(_) => {
                    // Damaged since: fetched again.
                    fs.remove_file(&p).map_err(io(p.display()))?;
                    break;
                }
            }
        }
        {
            let mut r = self.shared.report.lock();
            r.last_replayed_generation = replayer.replayed_generation();
            r.last_inspected_generation = inspector.next_generation() - 1;
            r.checkpoint_generation = replayer.passive().oldest_needed_generation();
        }
        self.inspector = Some(inspector);
        // What the inbox holds at start was inspected just now: admitted once synced.
        self.admit()?;
        let worker = ReplayWorker::start(
            replayer,
            self.shared.clone(),
            &self.cfg,
            inbox,
            rec.manifest.prefix.clone(),
        )
        .map_err(io("starting the replay thread"))?;
        self.replayer = Some(worker);
        self.prefix = rec.manifest.prefix;
        Ok(())
    }

    /// Fetches and inspects up to `batch` generations the active closed that the copy lacks,
    /// then makes their arrival in the inbox durable (one directory sync per batch); returns
    /// how many it took.
    fn fetch(
        &mut self,
        active: &PeerClient,
        info: &StreamInfo,
        batch: usize,
    ) -> Result<usize, RoundError> {
        let taken = self.fetch_unsynced(active, info, batch);
        self.admit()?;
        taken
    }

    /// Syncs the inbox, then lets replay take every generation inspected so far.
    fn admit(&self) -> Result<(), RoundError> {
        let inbox = self.cfg.dir.join("inbox");
        self.cfg.fs.sync_dir(&inbox).map_err(io(inbox.display()))?;
        if let Some(i) = &self.inspector {
            let admitted = i.next_generation() - 1;
            self.shared.admitted.store(admitted, std::sync::atomic::Ordering::Release);
            // The follower's copies of generations now in the inbox are redundant.
            if !self.prefix.is_empty() {
                crate::tail::prune_closed(&self.cfg.fs, &self.cfg.dir, &self.prefix, admitted);
            }
        }
        Ok(())
    }

    fn fetch_unsynced(
        &mut self,
        active: &PeerClient,
        info: &StreamInfo,
        batch: usize,
    ) -> Result<usize, RoundError> {
        let mut taken = 0;
        let fs = self.cfg.fs.clone();
        let incoming = self.cfg.dir.join("incoming");
        let inbox = self.cfg.dir.join("inbox");
        fs.create_dir_all(&incoming).map_err(io(incoming.display()))?;
        loop {
            let Some(inspector) = self.inspector.as_mut() else { return Ok(taken) };
            let g = inspector.next_generation();
            if g > info.produced || taken == batch {
                return Ok(taken);
            }
            if self.shared.desired.lock().suspended.is_some()
                || self.shared.held.load(std::sync::atomic::Ordering::SeqCst)
            {
                return Ok(taken);
            }
            if g < info.oldest {
                return Err(RoundError::Fail(format!(
                    "the active has truncated generation {g:#X} before this copy fetched it \
                     (its oldest is {:#X}); reseed the copy",
                    info.oldest
                )));
            }
            let name = logfmt::generation_name(&info.prefix, g);
            let bytes = self.block_on(active.get_bytes(&protocol::log_path(&self.cfg.sg, g)))?;
            let tmp = incoming.join(&name);
            write_incoming(fs.as_ref(), &tmp, &bytes).map_err(io(tmp.display()))?;
            // The inbox changes only under this lock, and not while a backup holds the copy
            // (the generation fetched stays in `incoming/`, fetched again after the hold).
            let shared = self.shared.clone();
            let _copying = shared.copying.lock();
            if shared.held.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(taken);
            }
            taken += 1;
            let Some(inspector) = self.inspector.as_mut() else { return Ok(taken) };
            match inspector.check(fs.as_ref(), &tmp) {
                Ok(ins) => {
                    let to = inbox.join(&name);
                    fs.rename(&tmp, &to).map_err(io(to.display()))?;
                    // The renames of a batch become durable with one sync of the inbox,
                    // before replay reads them (`admit_batch`).
                    inspector.accept(&ins);
                    self.shared.report.lock().last_inspected_generation = g;
                }
                Err(e) => {
                    fs.remove_file(&tmp).map_err(io(tmp.display()))?;
                    self.inspection_failed(g, &name, e.to_string())?;
                }
            }
        }
    }

    /// Counts an inspection failure of generation `g`: the first is fetched again, the
    /// second fails the copy.
    fn inspection_failed(&mut self, g: u32, file: &str, reason: String) -> Result<(), RoundError> {
        let n = self.failures.entry(g).or_insert(0);
        *n += 1;
        let attempt = *n;
        self.emit(
            &cat::REPL_INSPECTION_FAILED,
            json!({"file": file, "attempt": attempt, "reason": reason}),
        );
        if attempt >= 2 {
            return Err(RoundError::Fail(format!(
                "log file {file} failed inspection twice: {reason}"
            )));
        }
        Ok(())
    }
}
