//! Recovery at open: persistent snapshots are kept (their diff-area indexes rebuilt, torn log
//! tails cut), non-persistent and half-committed ones are removed after handing their
//! preserved blocks to the next older snapshot, and parked files no snapshot needs are unlinked.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use super::shadow_storage::{diff_dir_of, merge_into};
use super::{HIDDEN, Volume, VolumeConfig, VolumeInner, io_at, remove_if_exists};
use crate::diff::DiffArea;
use crate::error::{Result, VolumeError};
use crate::events::{DeleteReason, EventHub, VolumeEvent};
use crate::file_id::FileId;
use crate::host::sync_host_dir;
use crate::snapshot::{self, Snapshot};

impl Volume {
    /// Opens an existing volume: recovers persistent snapshots (rebuilding diff-area indexes
    /// and cutting torn log tails), and removes non-persistent and half-committed ones, whose
    /// preserved blocks are first handed to the next older snapshot that may read through them.
    pub fn open(root: impl Into<PathBuf>) -> Result<Volume> {
        let root: PathBuf = root.into();
        let root_c = root.clone();
        let err = io_at(&root_c);
        let hidden = root.join(HIDDEN);
        let cfg_path = hidden.join("volume.json");
        let cfg: VolumeConfig =
            serde_json::from_slice(&fs::read(&cfg_path).map_err(&err)?).map_err(|e| {
                VolumeError::CorruptMetadata { path: cfg_path.clone(), why: e.to_string() }
            })?;
        for d in ["snapshots", "links"] {
            fs::create_dir_all(hidden.join(d)).map_err(&err)?;
        }
        let lock_path = hidden.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(&err)?;
        // Released when `lock` is closed, with the volume.
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(VolumeError::Locked { root, lock: lock_path });
        }
        let diff_dir = diff_dir_of(&cfg.storage, cfg.guid);
        fs::create_dir_all(&diff_dir).map_err(&err)?;
        // Make the metadata directories themselves durable (once per open), so that a
        // persistent snapshot's files never hang off a directory entry a crash could lose.
        let mut to_sync = vec![hidden.clone()];
        to_sync.extend(diff_dir.ancestors().skip(1).take(2).map(Path::to_path_buf));
        for d in to_sync {
            sync_host_dir(&d).map_err(&err)?;
        }

        let inner = VolumeInner {
            hidden: hidden.clone(),
            label: cfg.label,
            guid: cfg.guid,
            block_size: cfg.block_size,
            barrier: RwLock::new(()),
            mutations: AtomicU64::new(0),
            ns: Mutex::new(()),
            snaps: RwLock::new(Vec::new()),
            epoch: AtomicU64::new(0),
            next_seq: AtomicU64::new(1),
            files: Mutex::new(HashMap::new()),
            linked: Mutex::new(HashSet::new()),
            storage: Mutex::new(cfg.storage),
            room: Mutex::new(()),
            used: AtomicU64::new(0),
            preserved_blocks: AtomicU64::new(0),
            near_full: AtomicBool::new(false),
            events: EventHub::default(),
            before_delete: RwLock::new(None),
            _lock: lock,
            root,
        };
        inner.recover(&diff_dir)?;
        Ok(Volume { inner: Arc::new(inner) })
    }
}

/// A snapshot found on disk at open.
enum Loaded {
    Kept(Arc<Snapshot>),
    Discard { diff: DiffArea, seq: u64, id: Uuid },
}

impl VolumeInner {
    /// Startup recovery; see [`Volume::open`].
    fn recover(&self, diff_dir: &Path) -> Result<()> {
        let err = self.err();
        let snap_root = self.hidden.join("snapshots");
        let mut logs: Vec<(u64, Uuid)> = Vec::new();
        for e in fs::read_dir(diff_dir).map_err(&err)? {
            let name = e.map_err(&err)?.file_name().to_string_lossy().into_owned();
            match name.strip_suffix(".log").and_then(snapshot::parse_stem) {
                Some(k) => logs.push(k),
                None => tracing::warn!(file = %name, "shadow storage: ignoring unknown file"),
            }
        }
        logs.sort();
        // Snapshot directories without a log are leftovers of an interrupted deletion.
        for e in fs::read_dir(&snap_root).map_err(&err)? {
            let e = e.map_err(&err)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !snapshot::parse_stem(&name).is_some_and(|k| logs.contains(&k)) {
                fs::remove_dir_all(e.path()).map_err(&err)?;
            }
        }
        // Load everything, oldest first: persistent snapshots with metadata are kept, the rest
        // (non-persistent, or a commit that never finished) are discarded below.
        let mut all: Vec<Loaded> = Vec::new();
        for (seq, id) in logs {
            let stem = snapshot::stem(seq, id);
            let log = diff_dir.join(format!("{stem}.log"));
            let dir = snap_root.join(&stem);
            let meta = Snapshot::load_meta(&dir).map_err(&err)?;
            let diff = DiffArea::open(&log, true).map_err(&err)?;
            self.next_seq.fetch_max(seq + 1, Ordering::AcqRel);
            match meta {
                Some(m) if m.persistent => {
                    if m.block_size != self.block_size {
                        return Err(VolumeError::CorruptMetadata {
                            path: dir.join("meta.json"),
                            why: format!(
                                "block size {} differs from the volume's {}",
                                m.block_size, self.block_size
                            ),
                        });
                    }
                    all.push(Loaded::Kept(Snapshot::from_meta(m, diff, dir)));
                }
                _ => all.push(Loaded::Discard { diff, seq, id }),
            }
        }
        // Discard newest first, handing each log's blocks to the next older snapshot.
        for i in (0..all.len()).rev() {
            let Loaded::Discard { diff, seq, id } = &all[i] else { continue };
            if i > 0 {
                let (target, table) = match &all[i - 1] {
                    Loaded::Kept(s) => (&s.diff, Some(&s.table)),
                    Loaded::Discard { diff, .. } => (diff, None),
                };
                merge_into(diff, target, table).map_err(&err)?;
            }
            let stem = snapshot::stem(*seq, *id);
            if let Err(e) = fs::remove_dir_all(snap_root.join(&stem))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(volume = %self.label, snapshot = %id, error = %e,
                    "could not remove the metadata of a discarded snapshot");
            }
            remove_if_exists(diff.path()).map_err(&err)?;
            self.events.emit(VolumeEvent::SnapshotDeleted {
                volume: self.guid,
                snapshot: *id,
                reason: DeleteReason::Restart,
                bytes_freed: diff.bytes(),
            });
        }
        sync_host_dir(diff_dir).map_err(&err)?;
        let kept: Vec<Arc<Snapshot>> = all
            .into_iter()
            .filter_map(|a| match a {
                Loaded::Kept(s) => Some(s),
                Loaded::Discard { .. } => None,
            })
            .collect();
        let used = kept.iter().map(|s| s.diff.bytes()).sum();
        self.used.store(used, Ordering::Release);
        *self.snaps.write() = kept;
        // Parked files.
        let mut linked = self.linked.lock();
        for e in fs::read_dir(self.links_dir()).map_err(&err)? {
            let name = e.map_err(&err)?.file_name().to_string_lossy().into_owned();
            if let Some(id) = FileId::from_link_name(&name) {
                linked.insert(id);
            }
        }
        drop(linked);
        self.gc_links().map_err(&err)?;
        Ok(())
    }
}
