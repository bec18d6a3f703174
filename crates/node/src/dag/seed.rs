//! Seeds served by the active copy's node: a snapshot of the storage group taken through the
//! coordinator (a copy-type session with the store writer, so the database files are
//! crash-consistent images whose headers name the log range replay needs), held open while the
//! copy streams the database files out of it.
//!
//! The seed records no backup: every component is reported not backed up at the end, so the
//! store writer stamps no header and truncates nothing, and the storage group's backup history
//! is untouched. A seed the copy never ends is ended after [`SEED_IDLE_LIMIT`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use events::EventSink;
use parking_lot::Mutex;
use replication::protocol::{self, SeedFile, SeedManifest};
use replication::source::{SeedReader, SourceError};
use uuid::Uuid;
use vss::{BackupSession, BackupType, ComponentKey, SnapshotContext};

use crate::Node;

/// How long a seed may sit without a request before it is ended.
pub const SEED_IDLE_LIMIT: Duration = Duration::from_secs(600);

struct Seed {
    session: BackupSession,
    keys: Vec<ComponentKey>,
    /// Per database file: its snapshot view and path.
    files: Vec<(volume::FsRef, PathBuf)>,
    touched: Instant,
}

/// The seeds this node serves.
#[derive(Default)]
pub struct Seeds {
    open: Mutex<HashMap<Uuid, Seed>>,
}

fn internal(e: impl std::fmt::Display) -> SourceError {
    SourceError::Internal(e.to_string())
}

impl Seeds {
    /// Takes the snapshot and holds it as seed for `peer`.
    pub fn start(
        &self,
        node: &Node,
        sg_name: &str,
        peer: &str,
    ) -> Result<SeedManifest, SourceError> {
        self.expire();
        let sg = node
            .store()
            .storage_group(sg_name)
            .map_err(|e| SourceError::NotFound(e.to_string()))?;
        if !sg.is_mounted() {
            return Err(SourceError::NotActive(format!("storage group {sg_name} is not mounted")));
        }
        let def = sg.def();
        let mut session =
            node.coordinator().backup_session(SnapshotContext::Backup).map_err(internal)?;
        let writers = session.gather_writer_metadata().map_err(internal)?;
        let found = backup::requester::find_components(&writers, &def)
            .ok_or_else(|| internal(format!("the store writer does not list {sg_name}")))?;
        let desc = &writers[found.writer];
        let mut keys = vec![found.logs.key(&desc.key)];
        keys.extend(found.databases.iter().map(|(_, c)| c.key(&desc.key)));
        let state = backup::requester::selection_state(
            &writers,
            &desc.key,
            keys.clone(),
            BackupType::Copy,
            None,
        );
        session.set_backup_state(state).map_err(|e| SourceError::Busy(e.to_string()))?;
        session.prepare_for_backup().map_err(|e| SourceError::Busy(e.to_string()))?;
        let set = session.do_snapshot_set().map_err(internal)?;
        let snapshot_set = set.id;
        let mut files = Vec::new();
        let mut databases = Vec::new();
        for d in &def.databases {
            let view = set
                .snapshots
                .iter()
                .find(|s| s.volume == d.volume.label)
                .map(|s| s.view.clone())
                .ok_or_else(|| internal(format!("no snapshot of volume {}", d.volume.label)))?;
            let size = view
                .open(&d.path, volume::OpenMode::Read)
                .and_then(|f| f.len())
                .map_err(|e| internal(format!("database {} in the snapshot: {e}", d.name)))?;
            databases.push(SeedFile { name: d.name.clone(), size });
            files.push((view, d.path.clone()));
        }
        let inst = sg.instance().map_err(|e| SourceError::NotActive(e.to_string()))?;
        let log = sg.log_state().map_err(internal)?;
        let manifest = SeedManifest {
            id: session.job(),
            sg: sg_name.to_string(),
            prefix: def.prefix.clone(),
            signature: protocol::hex(&inst.signature()),
            generation: log.current_generation.saturating_sub(1),
            log_file_size: def.tuning.log_file_size,
            page_size: def.tuning.page_size as u32,
            databases,
            snapshot_set,
        };
        node.events().emit(
            &events::catalog::REPL_SEED_SERVED,
            Some(manifest.id),
            serde_json::json!({"sg": sg_name, "peer": peer, "snapshot_set": snapshot_set,
                               "generation": manifest.generation}),
        );
        self.open
            .lock()
            .insert(manifest.id, Seed { session, keys, files, touched: Instant::now() });
        Ok(manifest)
    }

    /// Database file `index` of seed `id`.
    pub fn file(&self, id: Uuid, index: usize) -> Result<SeedReader, SourceError> {
        let mut open = self.open.lock();
        let seed =
            open.get_mut(&id).ok_or_else(|| SourceError::NotFound(format!("no seed {id}")))?;
        seed.touched = Instant::now();
        let (view, path) = seed
            .files
            .get(index)
            .ok_or_else(|| SourceError::NotFound(format!("seed {id} has no file {index}")))?;
        let file = view.open(path, volume::OpenMode::Read).map_err(internal)?;
        let len = file.len().map_err(internal)?;
        Ok(SeedReader { file, len })
    }

    /// Ends seed `id`: every component reported not backed up (no stamp, no truncation),
    /// then the session ends and its snapshots go.
    pub fn end(&self, id: Uuid) -> Result<(), SourceError> {
        let seed = self
            .open
            .lock()
            .remove(&id)
            .ok_or_else(|| SourceError::NotFound(format!("no seed {id}")))?;
        finish(seed);
        Ok(())
    }

    /// Ends the seeds nobody asked for within [`SEED_IDLE_LIMIT`].
    pub fn expire(&self) {
        let stale: Vec<Seed> = {
            let mut open = self.open.lock();
            let ids: Vec<Uuid> = open
                .iter()
                .filter(|(_, s)| s.touched.elapsed() > SEED_IDLE_LIMIT)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| open.remove(&id)).collect()
        };
        stale.into_iter().for_each(finish);
    }
}

fn finish(mut seed: Seed) {
    for k in &seed.keys {
        let _ = seed.session.set_backup_succeeded(k, false);
    }
    if let Err(e) = seed.session.backup_complete() {
        tracing::warn!("ending a seed: {e}");
    }
    seed.session.shutdown();
}

/// Shared handle.
pub type SeedsRef = Arc<Seeds>;
