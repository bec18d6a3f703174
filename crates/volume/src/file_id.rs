//! File identity: the host (device, inode) pair.
//!
//! Snapshots record files by identity rather than by name, so that a rename after the snapshot
//! changes nothing for it. Host inode numbers are stable across renames and restarts; the volume
//! keeps every inode a live snapshot still needs allocated (a removed file is parked under the
//! hidden directory instead of being unlinked), so an inode number is never reused while a
//! snapshot refers to it.

use std::fs;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

/// Identity of a file on the host: device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity of the file behind host metadata.
    pub fn of(m: &fs::Metadata) -> Self {
        FileId { dev: m.dev(), ino: m.ino() }
    }

    /// The name under which the file is parked in the hidden `links` directory.
    pub fn link_name(&self) -> String {
        format!("{}-{}", self.dev, self.ino)
    }

    /// Parses [`FileId::link_name`].
    pub fn from_link_name(name: &str) -> Option<Self> {
        let (d, i) = name.split_once('-')?;
        Some(FileId { dev: d.parse().ok()?, ino: i.parse().ok()? })
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inode {}:{}", self.dev, self.ino)
    }
}
