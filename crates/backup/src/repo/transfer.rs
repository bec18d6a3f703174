//! Copying backup sets from one repository to another (`shadowcopy backup copy`), like
//! restic's `copy` and Proxmox Backup Server's sync jobs: an off-site copy of the sets that
//! matter, made from the repository rather than from the live data.
//!
//! A set travels with every set it builds on (an incremental is no use without its full), bases
//! first, so that the target never holds a set whose base it lacks, even if the copy stops
//! half-way. Each file is read from the source through [`open_stored`] — every chunk
//! authenticated and checked against its id there — and written through the target's own
//! [`SetWriter`] pipeline: chunk ids are computed under the target's key (two encrypted
//! repositories name the same content differently), only chunks the target lacks are stored,
//! and they are sealed under the target's key. A set keeps its id and creation time, so a copy
//! run again skips what is already there, and the copy is verified in the target before it
//! counts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{RepoError, Result};
use super::stored::open_stored;
use super::writer::{SetMeta, SetWriter};
use super::{BackupSet, Repository};
use crate::restore::chain;

/// What one copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReport {
    /// Sets copied, in the order they were (bases first).
    pub copied: Vec<Uuid>,
    /// Sets the target already held.
    pub present: Vec<Uuid>,
    /// Bytes of files read from the source.
    pub bytes_read: u64,
    /// Bytes the target stored (new chunks only, as stored).
    pub bytes_stored: u64,
    /// Bytes of the copies read back and checked in the target before publishing.
    pub bytes_verified: u64,
    /// Sets left out of an all-sets copy because a set they build on is missing from the
    /// source (each with why); a set named on the command line is never left out silently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// Where a copy is, for progress reports: `Copying` with `bytes` 0 starts each set.
#[derive(Debug, Clone, Copy)]
pub enum TransferStep<'a> {
    /// Copying `set` (`index` of `count`), `bytes` of its files done.
    Copying { set: &'a BackupSet, index: usize, count: usize, bytes: u64 },
    /// Verifying the copy of `set` in the target.
    Verifying { set: &'a BackupSet },
}

/// The sets `wanted` names (ids or unambiguous prefixes; every set of `from` when empty) with
/// every set a restore of them needs (the rule restore and retention share:
/// [`chain::dependencies`]), bases first. A named set whose chain is broken is an error saying
/// why; with no names, such sets are left out and returned beside, with why.
pub fn with_bases(from: &Repository, wanted: &[String]) -> Result<(Vec<BackupSet>, Vec<String>)> {
    let all = from.list_sets()?;
    let by_id: HashMap<Uuid, &BackupSet> = all.iter().map(|s| (s.id, s)).collect();
    let roots: Vec<Uuid> = if wanted.is_empty() {
        all.iter().map(|s| s.id).collect()
    } else {
        wanted.iter().map(|w| from.load_set(w).map(|s| s.id)).collect::<Result<_>>()?
    };
    let mut needed = HashSet::new();
    let mut skipped = Vec::new();
    for root in roots {
        let Some(set) = by_id.get(&root) else { continue };
        let lookup = |id: Uuid| {
            by_id.get(&id).map(|b| (*b).clone()).ok_or_else(|| "missing from the source".into())
        };
        if let Err(broken) = chain::resolve_chain(set, lookup) {
            let err = RepoError::BrokenChain { set: root.to_string(), why: broken.why };
            if !wanted.is_empty() {
                return Err(err);
            }
            skipped.push(err.to_string());
            continue;
        }
        needed.insert(root);
        needed.extend(chain::dependencies(set, &all));
    }
    let bases: HashMap<Uuid, Option<Uuid>> = all.iter().map(|s| (s.id, s.base_set)).collect();
    // Bases first: by depth in the chain (should clocks disagree), then by time.
    let depth = |s: &BackupSet| {
        let (mut d, mut cur) = (0usize, s.base_set);
        while let Some(b) = cur.filter(|_| d <= bases.len()) {
            d += 1;
            cur = bases.get(&b).copied().flatten();
        }
        d
    };
    let mut out: Vec<BackupSet> = all.iter().filter(|s| needed.contains(&s.id)).cloned().collect();
    out.sort_by_key(|s| (depth(s), s.created_unix_ms));
    Ok((out, skipped))
}

/// Copies `wanted` (see [`with_bases`]) from `from` into `to`, skipping sets `to` holds, and
/// verifies each copy in `to`.
pub fn copy_sets(
    from: &Arc<Repository>,
    to: &Repository,
    wanted: &[String],
    progress: &dyn Fn(TransferStep<'_>),
) -> Result<TransferReport> {
    let (sets, skipped) = with_bases(from, wanted)?;
    let present: HashSet<String> = to.set_ids()?.into_iter().collect();
    let mut report = TransferReport { skipped, ..TransferReport::default() };
    let count = sets.len();
    for (index, set) in sets.iter().enumerate() {
        if present.contains(&set.id.to_string()) {
            report.present.push(set.id);
            continue;
        }
        let mut w = SetWriter::copy_of(to, set);
        progress(TransferStep::Copying { set, index, count, bytes: 0 });
        let mut done = 0u64;
        for f in &set.files {
            let src = open_stored(from.clone(), f.clone());
            let step =
                |n: u64| progress(TransferStep::Copying { set, index, count, bytes: done + n });
            let copied = w.add_file_checked(
                &f.path,
                f.role,
                &f.component,
                src.as_ref(),
                f.mode,
                None,
                &step,
            )?;
            // Read through the source's checks and hashed again on the way in: the two must
            // agree, or the copy is not the set.
            if copied.blake3 != f.blake3 || copied.size != f.size {
                return Err(RepoError::FileHashMismatch {
                    file: f.path.clone(),
                    expected: f.blake3.clone(),
                    actual: copied.blake3.clone(),
                });
            }
            done += f.size;
        }
        report.bytes_read += w.read_bytes();
        report.bytes_stored += w.stored_bytes();
        // Read back from the target before the set exists there: a copy that does not verify
        // is never published (a later run would take it for done).
        w.seal()?;
        progress(TransferStep::Verifying { set });
        for f in w.files() {
            to.read_file(f, &mut |_, _| Ok(()))?;
            report.bytes_verified += f.size;
        }
        w.publish(SetMeta::of(set))?;
        report.copied.push(set.id);
    }
    Ok(report)
}
