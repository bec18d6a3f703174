//! Copying backup sets from one repository to another (`shadowcopy backup copy`), like
//! restic's `copy` and Proxmox Backup Server's sync jobs: an off-site copy of the sets that
//! matter, made from the repository rather than from the live data.
//!
//! A set travels with every set it builds on (an incremental is no use without its full), bases
//! first, so that the target never holds a set whose base it lacks, even if the copy stops
//! half-way. Each file is read from the source through [`open_stored`] — its chunk list
//! checked against its identity, every chunk authenticated and checked against its id there
//! (and, for a set written before chunk-list identities, the whole content hashed on the way
//! against its recorded hash) — and written through the target's own
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
            let whole = f.check_chunk_list()?;
            let stored = open_stored(from.clone(), f.clone());
            let hashing = HashingFile::new(stored.as_ref(), whole);
            let step =
                |n: u64| progress(TransferStep::Copying { set, index, count, bytes: done + n });
            let copied =
                w.add_file_checked(&f.path, f.role, &f.component, &hashing, f.mode, None, &step)?;
            if copied.size != f.size {
                return Err(RepoError::FileSizeMismatch {
                    file: f.path.clone(),
                    expected: f.size,
                    actual: copied.size,
                });
            }
            // An older set's file was hashed whole on the way: it must be what was backed up.
            if let Some(actual) = hashing.finish()
                && actual != f.blake3
            {
                return Err(RepoError::FileHashMismatch {
                    file: f.path.clone(),
                    expected: f.blake3.clone(),
                    actual,
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

/// A source file whose content is hashed as it is read in order (the copy pipeline's reader
/// reads each file once, front to back), for files of sets identified by a whole-content hash.
struct HashingFile<'a> {
    inner: &'a dyn volume::fs::File,
    /// The hasher and the offset it has reached; `None` when no hash is wanted.
    state: Option<parking_lot::Mutex<(blake3::Hasher, u64, bool)>>,
}

impl std::fmt::Debug for HashingFile<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingFile").field("inner", &self.inner).finish()
    }
}

impl<'a> HashingFile<'a> {
    fn new(inner: &'a dyn volume::fs::File, hash: bool) -> Self {
        let state = hash.then(|| parking_lot::Mutex::new((blake3::Hasher::new(), 0, true)));
        Self { inner, state }
    }

    /// The content's hash, hex, if one was wanted; a read out of order (which the pipeline
    /// never makes) yields a hash no file has, so the copy fails rather than passing unchecked.
    fn finish(self) -> Option<String> {
        let (hasher, _, in_order) = self.state?.into_inner();
        Some(if in_order {
            hasher.finalize().to_hex().to_string()
        } else {
            "read out of order".into()
        })
    }
}

impl volume::fs::File for HashingFile<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        if let Some(state) = &self.state {
            let mut s = state.lock();
            if s.1 == offset {
                s.0.update(&buf[..n]);
                s.1 += n as u64;
            } else {
                s.2 = false;
            }
        }
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }

    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.inner.sync()
    }
}
