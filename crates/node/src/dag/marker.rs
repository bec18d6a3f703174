//! The node's own record of the storage groups it holds active, in its data directory.
//!
//! Why a local record beside the cluster database's `active/<sg>`: the cluster database says who
//! *should* be active; only the node knows which epoch its files were last mounted under and
//! where they are (the storage group's configured directories, or a passive copy it activated
//! under `copies/<sg>/`). A node that restarts mounts a storage group only when the cluster
//! database still names it active *at the epoch of its marker*; a marker older than the record
//! means another copy was made active meanwhile, so the files here may hold generations the new
//! active never had (they diverged): they are set aside, never mounted, never deleted.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where a storage group's active files are on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// The directories the node's configuration (or layout) gives the storage group.
    Config,
    /// The passive copy this node activated, under `copies/<sg>/` on its copy volume.
    Copy,
}

/// This node held `sg` active under `epoch`, with its files at `location`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveMarker {
    pub sg: String,
    pub epoch: u64,
    pub location: Location,
}

fn file(sg: &str) -> String {
    format!("dag-active-{sg}.toml")
}

/// The marker of `sg`, if this node ever held it active (and did not hand it on since).
pub fn load(data_dir: &Path, sg: &str) -> Result<Option<ActiveMarker>, String> {
    crate::state_file::load(data_dir, &file(sg))
        .map_err(|e| format!("{}: {e}", data_dir.join(file(sg)).display()))
}

/// Records (durably) that this node holds `sg` active under `epoch`.
pub fn save(data_dir: &Path, m: &ActiveMarker) -> std::io::Result<()> {
    crate::state_file::save(
        data_dir,
        &file(&m.sg),
        "# Written by shadowcopy: the epoch under which this node holds the storage group active.",
        m,
    )
}

/// Forgets the marker of `sg` (its files were set aside, or handed on).
pub fn remove(data_dir: &Path, sg: &str) -> std::io::Result<()> {
    match std::fs::remove_file(data_dir.join(file(sg))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => std::fs::File::open(data_dir)?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_marker_loads_back_and_removal_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "SG1").unwrap(), None);
        let m = ActiveMarker { sg: "SG1".into(), epoch: 7, location: Location::Copy };
        save(dir.path(), &m).unwrap();
        assert_eq!(load(dir.path(), "SG1").unwrap(), Some(m));
        assert_eq!(load(dir.path(), "SG2").unwrap(), None);
        remove(dir.path(), "SG1").unwrap();
        remove(dir.path(), "SG1").unwrap();
        assert_eq!(load(dir.path(), "SG1").unwrap(), None);
    }

    #[test]
    fn a_damaged_marker_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file("SG1")), "epoch = \"x\"").unwrap();
        let e = load(dir.path(), "SG1").unwrap_err();
        assert!(e.contains("dag-active-SG1.toml"), "{e}");
    }
}
