//! One snapshot of one volume: its identity, frozen file table and diff area, and the
//! persisted metadata that lets a persistent snapshot survive a restart.
//!
//! Layout: `<volume>/.shadowcopy/snapshots/<seq>-<id>/meta.json` holds the identity and file
//! table (written once, atomically, at commit); the diff-area log lives in the shadow-storage
//! location, `<storage volume>/.shadowcopy/diff/<volume guid>/<seq>-<id>.log`. A snapshot
//! directory without `meta.json` is an interrupted commit and is removed on open.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::diff::DiffArea;
use crate::table::{FileTable, Row};

/// What the provider reports about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowCopyInfo {
    pub id: Uuid,
    pub set_id: Uuid,
    pub volume: Uuid,
    pub volume_label: String,
    /// Creation order within the volume (higher is newer).
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    pub persistent: bool,
    /// Bytes the diff area occupies in shadow storage.
    pub diff_area_bytes: u64,
    pub files: usize,
}

/// Persisted identity and table of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub id: Uuid,
    pub set_id: Uuid,
    pub volume: Uuid,
    pub seq: u64,
    pub created_unix_ms: u64,
    pub persistent: bool,
    pub block_size: u64,
    pub rows: Vec<Row>,
}

/// A live snapshot.
#[derive(Debug)]
pub struct Snapshot {
    pub id: Uuid,
    pub set_id: Uuid,
    pub volume: Uuid,
    pub seq: u64,
    pub created: SystemTime,
    pub persistent: bool,
    pub table: FileTable,
    pub diff: DiffArea,
    /// `<volume>/.shadowcopy/snapshots/<seq>-<id>`.
    pub dir: PathBuf,
}

/// Name of a snapshot's directory and log stem.
pub fn stem(seq: u64, id: Uuid) -> String {
    format!("{seq:016}-{id}")
}

/// Parses [`stem`].
pub fn parse_stem(name: &str) -> Option<(u64, Uuid)> {
    let (s, id) = name.split_once('-')?;
    Some((s.parse().ok()?, id.parse().ok()?))
}

impl Snapshot {
    /// Creation time in milliseconds since the epoch.
    pub fn created_unix_ms(&self) -> u64 {
        self.created.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
    }

    /// Writes `meta.json` durably (atomic rename, then directory sync).
    pub fn persist_meta(&self, block_size: u64) -> io::Result<()> {
        let meta = SnapshotMeta {
            id: self.id,
            set_id: self.set_id,
            volume: self.volume,
            seq: self.seq,
            created_unix_ms: self.created_unix_ms(),
            persistent: self.persistent,
            block_size,
            rows: self.table.rows(),
        };
        let bytes = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        let tmp = self.dir.join("meta.json.tmp");
        let f = fs::File::create(&tmp)?;
        use std::io::Write;
        (&f).write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join("meta.json"))?;
        crate::host::sync_host_dir(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            crate::host::sync_host_dir(parent)?;
        }
        Ok(())
    }

    /// Loads a snapshot directory's metadata; `None` if the commit never completed.
    pub fn load_meta(dir: &Path) -> io::Result<Option<SnapshotMeta>> {
        let p = dir.join("meta.json");
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
        })
    }

    /// Builds a snapshot from loaded metadata and its opened diff area.
    pub fn from_meta(meta: SnapshotMeta, diff: DiffArea, dir: PathBuf) -> Arc<Self> {
        Arc::new(Snapshot {
            id: meta.id,
            set_id: meta.set_id,
            volume: meta.volume,
            seq: meta.seq,
            created: UNIX_EPOCH + Duration::from_millis(meta.created_unix_ms),
            persistent: meta.persistent,
            table: FileTable::from_rows(meta.rows),
            diff,
            dir,
        })
    }
}
