//! Test doubles for the coordinator's own tests and for other crates' tests: a
//! [`ScriptedWriter`] that succeeds, fails or stalls at any event, and a [`TestProvider`] that
//! snapshots volumes by copying them into a scratch directory. Neither is used in production.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use events::now_ms;
use parking_lot::{Condvar, Mutex};
use uuid::Uuid;
use volume::{FileKind, FileSystem, FsRef, HostFs, OpenMode};

use crate::document::BackupComponentsDocument;
use crate::metadata::{
    BackupSchema, Component, ComponentKey, ComponentType, FileDescriptor, RestoreMethod,
    WRITER_METADATA_VERSION, WriterKey, WriterMetadata,
};
use crate::provider::{
    CommittedSnapshot, Provider, ProviderError, ReadOnlyFs, SnapshotContext, SnapshotInfo,
};
use crate::writer::{
    ComponentResult, Phase, Writer, WriterContext, WriterError, WriterFailure, WriterIdentity,
};

/// What a [`ScriptedWriter`] does at an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Succeed,
    Fail(WriterFailure),
    /// Blocks for the duration (or until abort reaches it for this job), then fails with
    /// `timeout` if it was aborted, else succeeds.
    Stall(Duration),
}

/// One event a [`ScriptedWriter`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub instance: String,
    pub phase: Phase,
    pub job: Uuid,
    pub components: Vec<ComponentKey>,
    pub backup_type: crate::BackupType,
    pub results: Option<Vec<ComponentResult>>,
}

/// A journal shared by several writers: every event any of them received, in global order.
pub type Journal = Arc<Mutex<Vec<Received>>>;

/// A writer driven by a script.
pub struct ScriptedWriter {
    identity: WriterIdentity,
    metadata: WriterMetadata,
    script: Mutex<HashMap<Phase, Behavior>>,
    received: Mutex<Vec<Received>>,
    journal: Option<Journal>,
    frozen: Mutex<HashSet<Uuid>>,
    aborted: Mutex<HashSet<Uuid>>,
    abort_signal: Condvar,
}

impl ScriptedWriter {
    /// A writer with `metadata`, succeeding at everything.
    pub fn new(metadata: WriterMetadata, journal: Option<Journal>) -> Arc<Self> {
        Arc::new(ScriptedWriter {
            identity: WriterIdentity {
                writer_id: metadata.writer_id,
                writer_name: metadata.writer_name.clone(),
                instance_name: metadata.instance_name.clone(),
            },
            metadata,
            script: Mutex::new(HashMap::new()),
            received: Mutex::new(Vec::new()),
            journal,
            frozen: Mutex::new(HashSet::new()),
            aborted: Mutex::new(HashSet::new()),
            abort_signal: Condvar::new(),
        })
    }

    /// Metadata of a mail-store-like writer: per storage group `sg`, a database component on
    /// volume `db_volume` (`<sg>/*.edb`) and a log component on `log_volume` (`<sg>/E00*`).
    pub fn store_metadata(
        writer_id: Uuid,
        instance: &str,
        groups: &[&str],
        db_volume: &str,
        log_volume: &str,
        schema: BackupSchema,
    ) -> WriterMetadata {
        let mut components = Vec::new();
        for sg in groups {
            let logical_path = format!("Shadowcopy\\{instance}\\{sg}");
            components.push(Component {
                logical_path: logical_path.clone(),
                name: format!("{sg}-db"),
                component_type: ComponentType::Database,
                caption: format!("database of {sg}"),
                files: vec![FileDescriptor {
                    volume: db_volume.into(),
                    path: sg.to_string(),
                    filespec: "*.edb".into(),
                    recursive: false,
                }],
                selectable: true,
            });
            components.push(Component {
                logical_path,
                name: format!("{sg}-logs"),
                component_type: ComponentType::Filegroup,
                caption: format!("logs and checkpoint of {sg}"),
                files: vec![FileDescriptor {
                    volume: log_volume.into(),
                    path: sg.to_string(),
                    filespec: "E00*".into(),
                    recursive: false,
                }],
                selectable: true,
            });
        }
        WriterMetadata {
            version: WRITER_METADATA_VERSION,
            writer_id,
            writer_name: "Shadowcopy Test Writer".into(),
            instance_name: instance.into(),
            components,
            schema,
            restore_method: RestoreMethod::RestoreIfNotThere,
        }
    }

    pub fn key(&self) -> WriterKey {
        self.identity.key()
    }

    /// Every component key of this writer.
    pub fn component_keys(&self) -> Vec<ComponentKey> {
        let key = self.key();
        self.metadata.components.iter().map(|c| c.key(&key)).collect()
    }

    /// Sets what happens at `phase`.
    pub fn set(&self, phase: Phase, behavior: Behavior) {
        self.script.lock().insert(phase, behavior);
    }

    /// Every event received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }

    /// The phases received for `job`, in order.
    pub fn phases(&self, job: Uuid) -> Vec<Phase> {
        self.received.lock().iter().filter(|r| r.job == job).map(|r| r.phase).collect()
    }

    /// Whether the writer is frozen for any job (froze and was neither thawed nor aborted).
    pub fn is_frozen(&self) -> bool {
        !self.frozen.lock().is_empty()
    }

    fn enter(
        &self,
        phase: Phase,
        ctx: &WriterContext,
        results: Option<&[ComponentResult]>,
    ) -> Result<(), WriterError> {
        let r = Received {
            instance: self.identity.instance_name.clone(),
            phase,
            job: ctx.job,
            components: ctx.components.clone(),
            backup_type: ctx.backup_type,
            results: results.map(<[_]>::to_vec),
        };
        if let Some(j) = &self.journal {
            j.lock().push(r.clone());
        }
        self.received.lock().push(r);
        let behavior = self.script.lock().get(&phase).copied().unwrap_or(Behavior::Succeed);
        match behavior {
            Behavior::Succeed => Ok(()),
            Behavior::Fail(f) => Err(WriterError::new(f, format!("scripted failure at {phase}"))),
            Behavior::Stall(d) => {
                let until = Instant::now() + d;
                let mut aborted = self.aborted.lock();
                while !aborted.contains(&ctx.job) {
                    if self.abort_signal.wait_until(&mut aborted, until).timed_out() {
                        break;
                    }
                }
                if aborted.contains(&ctx.job) {
                    Err(WriterError::new(
                        WriterFailure::Timeout,
                        format!("{phase} interrupted by abort"),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

impl Writer for ScriptedWriter {
    fn identity(&self) -> WriterIdentity {
        self.identity.clone()
    }
    fn identify(&self, ctx: &WriterContext) -> Result<WriterMetadata, WriterError> {
        self.enter(Phase::Identify, ctx, None)?;
        Ok(self.metadata.clone())
    }
    fn prepare_backup(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        self.enter(Phase::PrepareBackup, ctx, None)
    }
    fn prepare_snapshot(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        self.enter(Phase::PrepareSnapshot, ctx, None)
    }
    fn freeze(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        self.enter(Phase::Freeze, ctx, None)?;
        self.frozen.lock().insert(ctx.job);
        Ok(())
    }
    fn thaw(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        self.frozen.lock().remove(&ctx.job);
        self.enter(Phase::Thaw, ctx, None)
    }
    fn post_snapshot(&self, ctx: &WriterContext) -> Result<Option<String>, WriterError> {
        self.enter(Phase::PostSnapshot, ctx, None)?;
        Ok(Some(format!("stamp-{}", ctx.job)))
    }
    fn backup_complete(
        &self,
        ctx: &WriterContext,
        results: &[ComponentResult],
    ) -> Result<(), WriterError> {
        self.enter(Phase::BackupComplete, ctx, Some(results))
    }
    fn backup_shutdown(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        self.enter(Phase::BackupShutdown, ctx, None)
    }
    fn abort(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        // Back to normal running first, whatever else is going on; a repeat is a no-op.
        self.frozen.lock().remove(&ctx.job);
        self.aborted.lock().insert(ctx.job);
        self.abort_signal.notify_all();
        self.enter(Phase::Abort, ctx, None)
    }
    fn pre_restore(
        &self,
        ctx: &WriterContext,
        _document: &BackupComponentsDocument,
    ) -> Result<(), WriterError> {
        self.enter(Phase::PreRestore, ctx, None)
    }
    fn post_restore(
        &self,
        ctx: &WriterContext,
        _document: &BackupComponentsDocument,
        results: &[ComponentResult],
    ) -> Result<(), WriterError> {
        self.enter(Phase::PostRestore, ctx, Some(results))
    }
}

/// How a [`TestProvider`] commit misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitBehavior {
    Normal,
    Fail,
    /// With `honour_timeout` it reports at once that its flush-and-hold timed out, as a real
    /// provider does at the hold timeout (the tests need the error, not the wait). Without it
    /// it hangs (a stuck provider) for `hold`, or until [`TestProvider::release_stalled_commits`].
    Stall {
        hold: Duration,
        honour_timeout: bool,
    },
    /// Commits every volume but the last one of the set (a broken provider).
    DropLastVolume,
}

struct Snap {
    info: SnapshotInfo,
    dir: PathBuf,
}

/// A provider that snapshots a volume by copying its whole tree into `scratch/<snapshot id>`
/// (O(data), unlike the real copy-on-write provider — fine for tests).
pub struct TestProvider {
    id: Uuid,
    name: String,
    scratch: PathBuf,
    volumes: Mutex<BTreeMap<String, FsRef>>,
    sets: Mutex<HashMap<Uuid, (Vec<String>, SnapshotContext)>>,
    snapshots: Mutex<BTreeMap<Uuid, Snap>>,
    behavior: Mutex<CommitBehavior>,
    /// Stuck commits were released ([`TestProvider::release_stalled_commits`]).
    released: Mutex<bool>,
    released_cond: Condvar,
    /// The hold each commit reports ([`TestProvider::report_hold`]); none by default.
    held: Mutex<Option<Duration>>,
    /// Commits returned so far, whatever their outcome.
    finished: Mutex<usize>,
    finished_cond: Condvar,
}

/// Counts a commit as finished when it returns, on every path.
struct CountFinished<'a>(&'a TestProvider);

impl Drop for CountFinished<'_> {
    fn drop(&mut self) {
        *self.0.finished.lock() += 1;
        self.0.finished_cond.notify_all();
    }
}

impl TestProvider {
    /// Makes every later commit report that it held writes for `held`, as a provider that
    /// measures its hold does.
    pub fn report_hold(&self, held: Duration) {
        *self.held.lock() = Some(held);
    }

    pub fn new(name: &str, scratch: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(TestProvider {
            id: Uuid::new_v4(),
            name: name.into(),
            scratch: scratch.into(),
            volumes: Mutex::new(BTreeMap::new()),
            sets: Mutex::new(HashMap::new()),
            snapshots: Mutex::new(BTreeMap::new()),
            behavior: Mutex::new(CommitBehavior::Normal),
            released: Mutex::new(false),
            released_cond: Condvar::new(),
            held: Mutex::new(None),
            finished: Mutex::new(0),
            finished_cond: Condvar::new(),
        })
    }

    /// Makes `fs` snapshottable as volume `label`.
    pub fn add_volume(&self, label: &str, fs: FsRef) {
        self.volumes.lock().insert(label.into(), fs);
    }

    pub fn set_commit_behavior(&self, b: CommitBehavior) {
        *self.behavior.lock() = b;
    }

    /// Sets begun and neither committed nor aborted.
    pub fn open_sets(&self) -> usize {
        self.sets.lock().len()
    }

    /// Lets every stuck commit (and every later one) return now.
    pub fn release_stalled_commits(&self) {
        *self.released.lock() = true;
        self.released_cond.notify_all();
    }

    /// Waits until `n` commits have returned (whatever their outcome), at most `wait`;
    /// returns whether they did.
    pub fn wait_for_finished_commits(&self, n: usize, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut finished = self.finished.lock();
        while *finished < n {
            if self.finished_cond.wait_until(&mut finished, deadline).timed_out() {
                break;
            }
        }
        *finished >= n
    }
}

fn copy_tree(from: &dyn FileSystem, to: &dyn FileSystem, dir: &Path) -> io::Result<()> {
    to.create_dir_all(dir)?;
    for e in from.read_dir(dir)? {
        let p = dir.join(&e.name);
        match e.kind {
            FileKind::Dir => copy_tree(from, to, &p)?,
            FileKind::File => {
                let data = volume::fs::read_all(from, &p)?;
                let f = to.open(&p, OpenMode::Create)?;
                f.write_at(&data, 0)?;
            }
        }
    }
    Ok(())
}

impl Provider for TestProvider {
    fn id(&self) -> Uuid {
        self.id
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn supports(&self, volume: &str) -> bool {
        self.volumes.lock().contains_key(volume)
    }
    fn begin_set(
        &self,
        set: Uuid,
        volumes: &[String],
        context: SnapshotContext,
    ) -> Result<(), ProviderError> {
        if let Some(v) = volumes.iter().find(|v| !self.supports(v)) {
            return Err(ProviderError::UnsupportedVolume { volume: v.clone() });
        }
        self.sets.lock().insert(set, (volumes.to_vec(), context));
        Ok(())
    }
    fn commit_set(
        &self,
        set: Uuid,
        hold_timeout: Duration,
    ) -> Result<Vec<CommittedSnapshot>, ProviderError> {
        let _count = CountFinished(self);
        let behavior = *self.behavior.lock();
        match behavior {
            CommitBehavior::Normal | CommitBehavior::DropLastVolume => {}
            CommitBehavior::Fail => {
                return Err(ProviderError::Failed("scripted commit failure".into()));
            }
            CommitBehavior::Stall { hold, honour_timeout } => {
                if honour_timeout && hold > hold_timeout {
                    return Err(ProviderError::FlushHoldTimeout { set, timeout: hold_timeout });
                }
                let until = Instant::now() + hold;
                let mut released = self.released.lock();
                while !*released {
                    if self.released_cond.wait_until(&mut released, until).timed_out() {
                        break;
                    }
                }
            }
        }
        let Some((mut volumes, context)) = self.sets.lock().remove(&set) else {
            return Err(ProviderError::UnknownSet { set });
        };
        if behavior == CommitBehavior::DropLastVolume {
            volumes.pop();
        }
        let mut out = Vec::new();
        for v in volumes {
            let src = self
                .volumes
                .lock()
                .get(&v)
                .cloned()
                .ok_or(ProviderError::UnsupportedVolume { volume: v.clone() })?;
            let id = Uuid::new_v4();
            let dir = self.scratch.join(id.to_string());
            let io = |op| {
                let volume = v.clone();
                move |source| ProviderError::Io { volume, op, source }
            };
            let dest = HostFs::new(&dir).map_err(io("create snapshot directory"))?;
            copy_tree(src.as_ref(), &dest, Path::new("")).map_err(io("copy volume"))?;
            let view = ReadOnlyFs::wrap(Arc::new(dest));
            self.snapshots.lock().insert(
                id,
                Snap {
                    info: SnapshotInfo {
                        snapshot_id: id,
                        set_id: set,
                        volume: v.clone(),
                        created_ms: now_ms(),
                        persistent: context.persistent(),
                    },
                    dir,
                },
            );
            out.push(CommittedSnapshot {
                snapshot_id: id,
                volume: v,
                view,
                held: *self.held.lock(),
            });
        }
        Ok(out)
    }
    fn abort_set(&self, set: Uuid) -> Result<(), ProviderError> {
        self.sets.lock().remove(&set);
        Ok(())
    }
    fn delete(&self, snapshot: Uuid) -> Result<(), ProviderError> {
        let snap = self
            .snapshots
            .lock()
            .remove(&snapshot)
            .ok_or(ProviderError::UnknownSnapshot { snapshot })?;
        std::fs::remove_dir_all(&snap.dir).map_err(|source| ProviderError::Io {
            volume: snap.info.volume.clone(),
            op: "delete snapshot",
            source,
        })
    }
    fn query(&self) -> Vec<SnapshotInfo> {
        self.snapshots.lock().values().map(|s| s.info.clone()).collect()
    }
    fn view(&self, snapshot: Uuid) -> Result<FsRef, ProviderError> {
        let snaps = self.snapshots.lock();
        let s = snaps.get(&snapshot).ok_or(ProviderError::UnknownSnapshot { snapshot })?;
        let fs = HostFs::new(&s.dir).map_err(|source| ProviderError::Io {
            volume: s.info.volume.clone(),
            op: "open view",
            source,
        })?;
        Ok(ReadOnlyFs::wrap(Arc::new(fs)))
    }
}
