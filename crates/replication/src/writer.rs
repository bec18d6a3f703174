//! The replication writer: the replication service's side of a backup of a *passive* copy
//! (the surrogate backup), on the node that holds the copy.
//!
//! It shares the store writer's class id and name and is told apart by its instance name. Its
//! metadata lists, per passive copy of this node, the copy's database files and its logs under a
//! `Replica` logical path; it takes backups only (a set taken through it restores through the
//! store writer, whose restore places databases and logs by their names). The active copy's
//! node takes part over the replication channel:
//!
//! - **prepare backup** (2021 at identify, then 2110 + 2023): asks the active to hold the
//!   storage group *backup in progress* for this job (910/210 there), which a second backup of
//!   the storage group anywhere is refused by; the claim is a lease this writer renews, so a dead
//!   passive never leaves it stale. 960 names the active;
//! - **freeze** (2025 + 2027): log copying and replay of the copy are held, so the snapshot sees
//!   the database as of the last replayed generation and an inbox that does not change; a
//!   watchdog resumes them if the thaw does not come within the freeze window;
//! - **thaw** (2029 + 2035): resumed; the active never stopped taking mail;
//! - **backup complete** (963 + 2046): reports to the active, which stamps its headers as a
//!   logged change and rolls the log (913/213) and truncates (224/225); once this copy has
//!   replayed that generation its own header shows the backup (2033 + 2037);
//! - **abort / backup shutdown**: the active's claim is released (nothing stamped or
//!   truncated) and the copy resumed, whatever happened before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use events::{EventSink, catalog as cat};
use parking_lot::Mutex;
use serde_json::json;
use uuid::Uuid;
use vss::{
    BackupComponentsDocument, BackupSchema, Component, ComponentKey, ComponentResult,
    ComponentType, FileDescriptor, RestoreMethod, SchemaFeature, Writer, WriterContext,
    WriterError, WriterFailure, WriterIdentity, WriterMetadata,
};

use crate::client::PeerClient;
use crate::copy::CopyReport;
use crate::protocol::{
    self, SurrogateBegin, SurrogateClaim, SurrogateComplete, SurrogateJob, SurrogateStamp,
};

/// The instance name of the replication service's writer.
pub use store::writer::REPLICATION_INSTANCE;
use store::writer::{LOG_COMPONENT, WRITER_ID, WRITER_NAME};

/// How long the copy stays held if the thaw never comes.
pub const FREEZE_WINDOW: Duration = Duration::from_secs(60);
/// How long the copy may take to replay the generation holding the active's header update
/// before the writer stops waiting for it (2033/2037 are then not emitted).
const STAMP_REPLAY_WAIT: Duration = Duration::from_secs(600);
/// How long one request to the active may take.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the active may take to stamp, roll and truncate at backup complete.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(600);

/// The logical path of a passive copy's components.
pub fn replica_logical_path(node: &str, sg: &str) -> String {
    format!("Shadowcopy Mail\\Replica\\{node}\\{sg}")
}

/// One passive copy of this node, as a backup sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub sg: String,
    /// Label of the volume holding the copy, and the copy's directory on it.
    pub volume: String,
    pub dir: PathBuf,
    /// The log prefix (`E00`).
    pub prefix: String,
    /// The databases' names.
    pub databases: Vec<String>,
}

impl Replica {
    /// Where the copy's database files are (relative to the volume).
    pub fn database_dir(&self) -> PathBuf {
        self.dir.join("db")
    }

    /// Where the copy's inspected logs are.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("inbox")
    }

    /// The copy's components: one per database, and the logs with the replay checkpoint.
    pub fn components(&self, node: &str) -> Vec<Component> {
        let lp = replica_logical_path(node, &self.sg);
        let db_dir = self.database_dir().to_string_lossy().into_owned();
        let mut out: Vec<Component> = self
            .databases
            .iter()
            .map(|name| Component {
                logical_path: lp.clone(),
                name: name.clone(),
                component_type: ComponentType::Database,
                caption: format!("Copy of database {name} of storage group {}", self.sg),
                files: vec![FileDescriptor {
                    volume: self.volume.clone(),
                    path: db_dir.clone(),
                    filespec: crate::copy::database_path(std::path::Path::new(""), name)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    recursive: false,
                }],
                selectable: true,
            })
            .collect();
        out.push(Component {
            logical_path: lp,
            name: LOG_COMPONENT.into(),
            component_type: ComponentType::Filegroup,
            caption: format!("Replicated logs and replay checkpoint of storage group {}", self.sg),
            files: vec![
                FileDescriptor {
                    volume: self.volume.clone(),
                    path: self.log_dir().to_string_lossy().into_owned(),
                    filespec: format!("{}*.log", self.prefix),
                    recursive: false,
                },
                FileDescriptor {
                    volume: self.volume.clone(),
                    path: self.dir.to_string_lossy().into_owned(),
                    filespec: format!("{}.pchk", self.prefix),
                    recursive: false,
                },
            ],
            selectable: true,
        });
        out
    }
}

/// What the replication writer needs of the node that holds the copies.
pub trait ReplicaHost: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> String;
    /// This node's passive copies that can be backed up (seeded).
    fn replicas(&self) -> Vec<Replica>;
    /// The node holding the active copy of `sg`, to talk to.
    fn active(&self, sg: &str) -> Option<Arc<PeerClient>>;
    /// Holds log copying and replay of the copy of `sg` (see
    /// [`crate::copy::PassiveCopy::hold_for_backup`]); `None` if there is no such copy.
    fn hold(&self, sg: &str) -> Option<CopyReport>;
    /// Resumes them.
    fn release(&self, sg: &str);
    /// The copy's report now.
    fn report(&self, sg: &str) -> Option<CopyReport>;
    /// The log generations in the copy's inbox now (held: the ones a snapshot holds).
    fn inbox_generations(&self, sg: &str) -> Vec<u32>;
    /// Runs async requests from the writer's threads.
    fn runtime(&self) -> tokio::runtime::Handle;
    fn events(&self) -> Arc<dyn EventSink>;
}

/// One storage group of a job.
struct GroupJob {
    replica: Replica,
    active: Arc<PeerClient>,
    /// Selected component names.
    selected: BTreeSet<String>,
    /// Stops the lease renewer.
    renewer: Option<mpsc::Sender<()>>,
    /// Set by the renewer when the active no longer knows the claim (it lapsed): the job can
    /// no longer be recorded and fails.
    lapsed: Arc<std::sync::atomic::AtomicBool>,
    /// Held for the freeze (and the watchdog's stop switch).
    held: Option<mpsc::Sender<()>>,
    /// The generations the snapshot holds.
    generations: Option<(u32, u32)>,
    /// The active's claim is settled (completed or aborted).
    settled: bool,
}

/// Starts the watchdog of a held copy: unless told (by a send or a drop of the returned
/// sender) within `window`, it resumes the copy and says so (4117, then 2029 and 2035), so a
/// backup whose thaw never comes never leaves a copy behind.
fn hold_watchdog(
    host: Arc<dyn ReplicaHost>,
    sg: &str,
    job: Uuid,
    window: Duration,
) -> std::io::Result<mpsc::Sender<()>> {
    let (tx, rx) = mpsc::channel::<()>();
    let sg = sg.to_string();
    std::thread::Builder::new().name(format!("surrogate-hold-{sg}")).spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(window) {
            host.release(&sg);
            let events = host.events();
            events.emit(
                &cat::REPL_HOLD_WATCHDOG,
                Some(job),
                json!({"database": sg, "seconds": window.as_secs()}),
            );
            events.emit(&cat::REPL_LOG_COPY_RESUMED, Some(job), json!({"database": sg}));
            events.emit(&cat::REPL_REPLAY_RESUMED, Some(job), json!({"database": sg}));
        }
    })?;
    Ok(tx)
}

/// One storage group of a job at backup complete.
struct Completing {
    /// The active's claim lapsed during the job.
    lapsed: bool,
    sg: String,
    active: Arc<PeerClient>,
    selected: BTreeSet<String>,
    replica: Replica,
    generations: Option<(u32, u32)>,
}

/// The replication writer.
pub struct ReplicationWriter {
    host: Arc<dyn ReplicaHost>,
    /// How long a copy stays held without a thaw ([`FREEZE_WINDOW`]).
    freeze_window: Duration,
    jobs: Mutex<HashMap<Uuid, BTreeMap<String, GroupJob>>>,
}

impl std::fmt::Debug for ReplicationWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationWriter").finish_non_exhaustive()
    }
}

impl ReplicationWriter {
    pub fn new(host: Arc<dyn ReplicaHost>) -> Arc<Self> {
        Arc::new(Self { host, freeze_window: FREEZE_WINDOW, jobs: Mutex::default() })
    }

    fn emit(&self, def: &events::EventDef, job: Uuid, fields: serde_json::Value) {
        self.host.events().emit(def, Some(job), fields);
    }

    fn call<T>(
        &self,
        active: &PeerClient,
        f: impl std::future::Future<Output = Result<T, crate::client::ClientError>>,
    ) -> Result<T, String> {
        self.call_within(active, ACTIVE_TIMEOUT, f)
    }

    fn call_within<T>(
        &self,
        active: &PeerClient,
        timeout: Duration,
        f: impl std::future::Future<Output = Result<T, crate::client::ClientError>>,
    ) -> Result<T, String> {
        let rt = self.host.runtime();
        match rt.block_on(async { tokio::time::timeout(timeout, f).await }) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "node {} (the active copy) did not answer within {} s",
                active.node(),
                timeout.as_secs()
            )),
        }
    }

    /// Storage group → selected component names, from the job's component keys.
    fn selection(&self, ctx: &WriterContext) -> BTreeMap<String, BTreeSet<String>> {
        let node = self.host.node();
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in self.host.replicas() {
            let lp = replica_logical_path(&node, &r.sg);
            for ComponentKey { logical_path, name, .. } in &ctx.components {
                if logical_path == &lp {
                    out.entry(r.sg.clone()).or_default().insert(name.clone());
                }
            }
        }
        out
    }

    /// Starts the thread that renews the active's claim until told to stop, each renewal on a
    /// connection of its own within a third of the lease; a claim the active no longer knows
    /// sets `lapsed` and ends the renewals.
    fn renew(
        &self,
        job: Uuid,
        sg: &str,
        active: Arc<PeerClient>,
        lease: Duration,
        lapsed: Arc<std::sync::atomic::AtomicBool>,
    ) -> mpsc::Sender<()> {
        let (tx, rx) = mpsc::channel::<()>();
        let rt = self.host.runtime();
        let path = protocol::surrogate_path(sg, "renew");
        let every = (lease / 3).max(Duration::from_millis(200));
        let spawned = std::thread::Builder::new().name(format!("surrogate-renew-{sg}")).spawn(
            move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    let r: Result<SurrogateClaim, _> =
                        rt.block_on(active.post_alone(&path, &SurrogateJob { job }, every));
                    match r {
                        Ok(_) => {}
                        Err(e) if e.is_not_found() => {
                            tracing::warn!(%job, error = %e, "the active no longer holds the surrogate claim");
                            lapsed.store(true, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                        Err(e) => tracing::warn!(%job, error = %e, "renewing the surrogate claim failed"),
                    }
                }
            },
        );
        if let Err(e) = spawned {
            tracing::error!(%job, "starting the surrogate lease renewer: {e}");
        }
        tx
    }

    /// Resumes a held copy (thaw, abort, or the watchdog).
    fn release_hold(&self, job: Uuid, g: &mut GroupJob) {
        if let Some(stop) = g.held.take() {
            // The watchdog already resumed the copy (and said so) if it is gone.
            if stop.send(()).is_err() {
                return;
            }
            self.host.release(&g.replica.sg);
            let database = &g.replica.sg;
            self.emit(&cat::REPL_LOG_COPY_RESUMED, job, json!({"database": database}));
            self.emit(&cat::REPL_REPLAY_RESUMED, job, json!({"database": database}));
        }
    }

    /// Releases everything `job` holds: the active's claim (unless settled), the copy's hold,
    /// the renewer.
    fn release_job(&self, job: Uuid, reason: &str) {
        let Some(mut groups) = self.jobs.lock().remove(&job) else { return };
        for g in groups.values_mut() {
            self.release_hold(job, g);
            if let Some(stop) = g.renewer.take() {
                let _ = stop.send(());
            }
            if !g.settled {
                let path = protocol::surrogate_path(&g.replica.sg, "abort");
                let active = g.active.clone();
                if let Err(e) = self.call(
                    &active,
                    active.post_body::<_, SurrogateJob>(&path, &SurrogateJob { job }),
                ) {
                    // The claim lapses by itself once no longer renewed.
                    tracing::warn!(%job, sg = %g.replica.sg, %reason, error = %e,
                        "releasing the active's claim failed; it lapses with its lease");
                }
            }
        }
    }

    /// Waits (on a thread of its own) until the copy of `sg` replayed `generation`, then says
    /// that the backup reached this copy's header (2033 + 2037).
    fn await_stamp(&self, job: Uuid, sg: String, generation: u32) {
        let host = self.host.clone();
        let spawned =
            std::thread::Builder::new().name(format!("surrogate-stamp-{sg}")).spawn(move || {
                let deadline = Instant::now() + STAMP_REPLAY_WAIT;
                loop {
                    let replayed =
                        host.report(&sg).map(|r| r.last_replayed_generation).unwrap_or(0);
                    if replayed >= generation {
                        host.events().emit(
                            &cat::REPL_BACKUP_END,
                            Some(job),
                            json!({"database": sg, "generation": generation}),
                        );
                        host.events().emit(
                            &cat::REPL_BACKUP_SHUTDOWN,
                            Some(job),
                            json!({"job": job.to_string()}),
                        );
                        return;
                    }
                    if Instant::now() >= deadline {
                        tracing::warn!(%job, %sg, generation,
                            "the copy did not replay the active's header update in time");
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        if let Err(e) = spawned {
            tracing::error!(%job, "starting the stamp waiter: {e}");
        }
    }

    fn failed(&self, job: Uuid, sg: &str, phase: &str, error: &str) -> WriterError {
        self.emit(
            &cat::REPL_SURROGATE_FAILED,
            job,
            json!({"database": sg, "phase": phase, "error": error}),
        );
        WriterError::non_retryable(format!("storage group {sg}: {error}"))
    }
}

impl Writer for ReplicationWriter {
    fn identity(&self) -> WriterIdentity {
        WriterIdentity {
            writer_id: WRITER_ID,
            writer_name: WRITER_NAME.into(),
            instance_name: REPLICATION_INSTANCE.into(),
        }
    }

    fn identify(&self, ctx: &WriterContext) -> Result<WriterMetadata, WriterError> {
        let node = self.host.node();
        let replicas = self.host.replicas();
        let components = replicas.iter().flat_map(|r| r.components(&node)).collect();
        // Only a node with copies to back up takes part (a plain backup of an active storage
        // group elsewhere on the node does not put this writer in its trail).
        if !replicas.is_empty() {
            self.emit(&cat::REPL_WRITER_ENGAGED, ctx.job, json!({"job": ctx.job.to_string()}));
        }
        Ok(WriterMetadata {
            version: 1,
            writer_id: WRITER_ID,
            writer_name: WRITER_NAME.into(),
            instance_name: REPLICATION_INSTANCE.into(),
            components,
            schema: BackupSchema::with([
                SchemaFeature::Incremental,
                SchemaFeature::Differential,
                SchemaFeature::Copy,
            ]),
            restore_method: RestoreMethod::Custom,
        })
    }

    fn prepare_backup(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        let selected = self.selection(ctx);
        if selected.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = selected
            .iter()
            .flat_map(|(sg, c)| c.iter().map(move |n| format!("{sg}\\{n}")))
            .collect();
        self.emit(&cat::REPL_COMPONENTS_SELECTED, ctx.job, json!({"components": names.join(", ")}));
        self.emit(
            &cat::REPL_BACKUP_TYPE_SET,
            ctx.job,
            json!({"job": ctx.job.to_string(), "backup_type": ctx.backup_type.to_string()}),
        );
        let replicas = self.host.replicas();
        // The job is known before any claim is asked for: an abort that arrives while a
        // claim is being asked for (a call that overran its deadline) removes it, and the
        // claim is then given back at once instead of being renewed for nobody.
        self.jobs.lock().insert(ctx.job, BTreeMap::new());
        for (sg, components) in selected {
            let Some(replica) = replicas.iter().find(|r| r.sg == sg).cloned() else { continue };
            let healthy = self.host.report(&sg).map(|r| r.status);
            if healthy != Some(crate::cluster::CopyStatus::Healthy) {
                self.release_job(ctx.job, "prepare failed");
                let status = healthy.map_or("gone".to_string(), |s| format!("{s:?}"));
                let msg = format!(
                    "the copy on this node is {status}, not Healthy; back it up once `shadowcopy copy status` shows it Healthy"
                );
                return Err(self.failed(ctx.job, &sg, "prepare", &msg));
            }
            let Some(active) = self.host.active(&sg) else {
                self.release_job(ctx.job, "prepare failed");
                return Err(self.failed(ctx.job, &sg, "prepare", "no active copy is known"));
            };
            let databases: Vec<String> =
                components.iter().filter(|c| *c != LOG_COMPONENT).cloned().collect();
            let req = SurrogateBegin { job: ctx.job, backup_type: ctx.backup_type, databases };
            let path = protocol::surrogate_path(&sg, "begin");
            let claim: SurrogateClaim = match self.call(&active, active.post_body(&path, &req)) {
                Ok(c) => c,
                Err(e) => {
                    self.release_job(ctx.job, "prepare failed");
                    let msg = format!(
                        "the active copy on node {} refused or did not answer: {e}",
                        active.node()
                    );
                    return Err(self.failed(ctx.job, &sg, "prepare", &msg));
                }
            };
            let lapsed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let group = GroupJob {
                replica,
                active: active.clone(),
                selected: components,
                renewer: None,
                held: None,
                generations: None,
                settled: false,
                lapsed: lapsed.clone(),
            };
            {
                let mut jobs = self.jobs.lock();
                let Some(groups) = jobs.get_mut(&ctx.job) else {
                    drop(jobs);
                    // Aborted meanwhile: the claim just taken goes back.
                    let abort = protocol::surrogate_path(&sg, "abort");
                    let _ = self.call(
                        &active,
                        active.post_body::<_, SurrogateJob>(&abort, &SurrogateJob { job: ctx.job }),
                    );
                    return Err(WriterError::non_retryable(format!(
                        "storage group {sg}: the job was aborted while the active's claim was asked for"
                    )));
                };
                let renewer = self.renew(
                    ctx.job,
                    &sg,
                    active.clone(),
                    Duration::from_millis(claim.lease_ms),
                    lapsed,
                );
                groups.insert(sg.clone(), GroupJob { renewer: Some(renewer), ..group });
            }
            self.emit(
                &cat::REPL_SURROGATE_BACKUP,
                ctx.job,
                json!({"database": sg, "active_node": active.node()}),
            );
        }
        Ok(())
    }

    fn prepare_snapshot(&self, _ctx: &WriterContext) -> Result<(), WriterError> {
        Ok(())
    }

    fn freeze(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        // Holding a copy waits for its replay batch to end: not under the jobs' lock, which
        // thaw and abort need.
        let sgs: Vec<(String, Arc<std::sync::atomic::AtomicBool>)> =
            match self.jobs.lock().get(&ctx.job) {
                Some(groups) => {
                    groups.iter().map(|(sg, g)| (sg.clone(), g.lapsed.clone())).collect()
                }
                None => return Ok(()),
            };
        for (sg, lapsed) in sgs {
            if lapsed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(self.failed(
                    ctx.job,
                    &sg,
                    "freeze",
                    "the active's claim for this job lapsed",
                ));
            }
            if self.host.hold(&sg).is_none() {
                return Err(WriterError::retryable(format!(
                    "storage group {sg}: the copy on this node is gone"
                )));
            }
            // The watchdog: a thaw that never comes does not leave the copy behind.
            let tx = match hold_watchdog(self.host.clone(), &sg, ctx.job, self.freeze_window) {
                Ok(tx) => tx,
                Err(e) => {
                    self.host.release(&sg);
                    return Err(WriterError::new(
                        WriterFailure::OutOfResources,
                        format!("starting the hold watchdog: {e}"),
                    ));
                }
            };
            // The inbox no longer changes: its generations are the ones the snapshot holds.
            let gens = self.host.inbox_generations(&sg);
            let generations = match (gens.first(), gens.last()) {
                (Some(lo), Some(hi)) => Some((*lo, *hi)),
                _ => None,
            };
            let unrecorded = match self.jobs.lock().get_mut(&ctx.job).and_then(|m| m.get_mut(&sg)) {
                Some(g) => {
                    g.held = Some(tx);
                    g.generations = generations;
                    None
                }
                None => Some(tx),
            };
            if let Some(tx) = unrecorded {
                // Aborted while the copy was being held.
                let _ = tx.send(());
                self.host.release(&sg);
                return Err(WriterError::non_retryable(format!(
                    "storage group {sg}: the job was aborted during the freeze"
                )));
            }
            self.emit(&cat::REPL_LOG_COPY_SUSPENDED, ctx.job, json!({"database": sg}));
            self.emit(&cat::REPL_REPLAY_SUSPENDED, ctx.job, json!({"database": sg}));
            if generations.is_none() {
                return Err(self.failed(
                    ctx.job,
                    &sg,
                    "freeze",
                    "the copy holds no log generation yet; back it up once the active has shipped one",
                ));
            }
        }
        Ok(())
    }

    fn thaw(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        let mut jobs = self.jobs.lock();
        if let Some(groups) = jobs.get_mut(&ctx.job) {
            for g in groups.values_mut() {
                self.release_hold(ctx.job, g);
            }
        }
        Ok(())
    }

    fn post_snapshot(&self, ctx: &WriterContext) -> Result<Option<String>, WriterError> {
        let jobs = self.jobs.lock();
        let mut stamp = serde_json::Map::new();
        if let Some(groups) = jobs.get(&ctx.job) {
            for (sg, g) in groups {
                stamp.insert(
                    sg.clone(),
                    json!({"generations": g.generations, "active": g.active.node()}),
                );
            }
        }
        Ok(Some(serde_json::Value::Object(stamp).to_string()))
    }

    fn backup_complete(
        &self,
        ctx: &WriterContext,
        results: &[ComponentResult],
    ) -> Result<(), WriterError> {
        let node = self.host.node();
        // What each storage group of the job needs for its end, taken out of the lock (the
        // calls to the active below take time).
        let groups: Vec<Completing> = self
            .jobs
            .lock()
            .get(&ctx.job)
            .map(|m| {
                m.iter()
                    .map(|(sg, g)| Completing {
                        lapsed: g.lapsed.load(std::sync::atomic::Ordering::SeqCst),
                        sg: sg.clone(),
                        active: g.active.clone(),
                        selected: g.selected.clone(),
                        replica: g.replica.clone(),
                        generations: g.generations,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut first_error = None;
        for Completing { lapsed, sg, active, selected, replica, generations: gens } in groups {
            let lp = replica_logical_path(&node, &sg);
            let (ok, summary) = store::writer::reported(results, &lp, &selected);
            self.emit(
                &cat::REPL_BACKUP_COMPLETE,
                ctx.job,
                json!({"database": sg, "components": summary, "success": ok}),
            );
            self.emit(
                &cat::REPL_BACKUP_COMPLETE_WRITER,
                ctx.job,
                json!({"job": ctx.job.to_string()}),
            );
            let every_database = replica.databases.iter().all(|d| selected.contains(d))
                && selected.contains(LOG_COMPONENT);
            let (gen_low, gen_high) = gens.unwrap_or((0, 0));
            let req = SurrogateComplete {
                job: ctx.job,
                succeeded: ok,
                gen_low,
                gen_high,
                every_database,
            };
            let path = protocol::surrogate_path(&sg, "complete");
            let answer: Result<SurrogateStamp, String> = if lapsed {
                Err("its claim for this job lapsed during the backup".into())
            } else {
                self.call_within(&active, COMPLETE_TIMEOUT, active.post_body(&path, &req))
            };
            if let Some(g) = self.jobs.lock().get_mut(&ctx.job).and_then(|m| m.get_mut(&sg)) {
                g.settled = answer.is_ok();
                if let Some(stop) = g.renewer.take() {
                    let _ = stop.send(());
                }
            }
            match answer {
                Ok(stamp) if stamp.generation > 0 => {
                    self.await_stamp(ctx.job, sg.clone(), stamp.generation);
                }
                Ok(_) => {}
                Err(e) => {
                    let msg = format!(
                        "the active copy on node {} did not record the backup: {e}",
                        active.node()
                    );
                    first_error.get_or_insert(self.failed(ctx.job, &sg, "backup complete", &msg));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn backup_shutdown(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        self.release_job(ctx.job, "backup shutdown");
        Ok(())
    }

    fn abort(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        self.release_job(ctx.job, "abort");
        Ok(())
    }

    fn pre_restore(
        &self,
        _ctx: &WriterContext,
        _document: &BackupComponentsDocument,
    ) -> Result<(), WriterError> {
        Ok(())
    }

    fn post_restore(
        &self,
        _ctx: &WriterContext,
        _document: &BackupComponentsDocument,
        _results: &[ComponentResult],
    ) -> Result<(), WriterError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host whose copy "sg" reports each release on a channel.
    struct Host {
        released: Mutex<mpsc::Sender<String>>,
        events: Arc<events::MemorySink>,
        rt: tokio::runtime::Runtime,
    }

    impl ReplicaHost for Host {
        fn node(&self) -> String {
            "b".into()
        }
        fn replicas(&self) -> Vec<Replica> {
            Vec::new()
        }
        fn active(&self, _: &str) -> Option<Arc<PeerClient>> {
            None
        }
        fn hold(&self, _: &str) -> Option<CopyReport> {
            None
        }
        fn release(&self, sg: &str) {
            let _ = self.released.lock().send(sg.to_string());
        }
        fn report(&self, _: &str) -> Option<CopyReport> {
            None
        }
        fn inbox_generations(&self, _: &str) -> Vec<u32> {
            Vec::new()
        }
        fn runtime(&self) -> tokio::runtime::Handle {
            self.rt.handle().clone()
        }
        fn events(&self) -> Arc<dyn EventSink> {
            self.events.clone()
        }
    }

    fn host() -> (Arc<Host>, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let events = Arc::new(events::MemorySink::new("b"));
        (Arc::new(Host { released: Mutex::new(tx), events, rt }), rx)
    }

    #[test]
    fn a_held_copy_whose_thaw_never_comes_is_resumed_by_the_watchdog_and_says_so() {
        let (host, released) = host();
        let job = Uuid::new_v4();
        let _thaw = hold_watchdog(host.clone(), "SG1", job, Duration::from_millis(50)).unwrap();
        let sg = released
            .recv_timeout(Duration::from_secs(30))
            .expect("the watchdog did not resume the held copy within 30 s");
        assert_eq!(sg, "SG1");
        // The events follow the release.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let ids = loop {
            let ids: Vec<u32> = host.events.events().iter().map(|e| e.id).collect();
            if ids.len() >= 3 || std::time::Instant::now() > deadline {
                break ids;
            }
            std::thread::yield_now();
        };
        assert_eq!(ids, [4117, 2029, 2035], "the watchdog's events, in order");
    }

    #[test]
    fn a_thaw_in_time_stops_the_watchdog() {
        let (host, released) = host();
        let thaw =
            hold_watchdog(host.clone(), "SG1", Uuid::new_v4(), Duration::from_secs(3600)).unwrap();
        thaw.send(()).unwrap();
        drop(thaw);
        // The watchdog's thread ends without resuming: its end drops the host it held, the
        // only other owner of the release channel's sender besides this test's `host`.
        drop(host);
        assert!(
            released.recv_timeout(Duration::from_secs(30)).is_err(),
            "the watchdog resumed a copy that was thawed in time"
        );
    }
}
