//! Prune: removing chunks no set references and repacking packs that are mostly unused.
//!
//! STUB: the types and signature are fixed; the steps are being written.

use serde::{Deserialize, Serialize};

use super::{Repository, Result};

/// Options of `backup prune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneOptions {
    /// A pack whose unused share (of its stored bytes) is above this percentage is repacked.
    pub max_unused_percent: f64,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self { max_unused_percent: 10.0, dry_run: false }
    }
}

/// What a prune did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    pub packs_before: u64,
    pub packs_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bytes of still-used chunks copied into new packs.
    pub bytes_repacked: u64,
    pub chunks_removed: u64,
    pub packs_removed: u64,
    pub dry_run: bool,
}

/// Prunes `repo` (holding its exclusive lock for the whole run).
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let _ = (repo, opts);
    Ok(PruneReport { dry_run: opts.dry_run, ..PruneReport::default() })
}
