//! The chain of sets a restore reads (a full or copy, and the incrementals or differential
//! built on it) and the log generations it needs: from the chain, and after it from later sets
//! of the same full; checked for continuity and agreement before recovery replays any.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ese::DatabaseSpec;
use uuid::Uuid;
use volume::FsRef;
use vss::BackupType;

use super::{Restorer, recovery_failed};
use crate::error::{RequesterError, Result};
use crate::repo::{BackupSet, FileEntry, FileRole, Repository};

impl Restorer {
    /// The sets to restore for `set`, oldest first.
    pub fn chain(&self, set: &BackupSet) -> Result<Vec<BackupSet>> {
        resolve_chain(set, |base| self.repo.load_set(&base.to_string()).map_err(|e| e.to_string()))
            .map_err(|broken| RequesterError::RestoreRefused(broken.why))
    }
}

/// A chain that cannot be restored, with the sets found before the walk stopped.
#[derive(Debug)]
pub(crate) struct ChainBroken {
    /// `set` and the bases found, oldest first.
    pub found: Vec<BackupSet>,
    pub why: String,
}

/// The chain of `set`, oldest first: its full (or `set` itself for a full or copy) and every
/// set between, each base found by `lookup`. Pure, so that a restore (which reads the
/// repository) and retention (which decides over a list of sets) agree on what a set needs.
pub(crate) fn resolve_chain(
    set: &BackupSet,
    lookup: impl Fn(Uuid) -> std::result::Result<BackupSet, String>,
) -> std::result::Result<Vec<BackupSet>, ChainBroken> {
    let mut chain = vec![set.clone()];
    let refuse = |chain: &mut Vec<BackupSet>, why: String| {
        chain.reverse();
        ChainBroken { found: std::mem::take(chain), why }
    };
    let mut seen = std::collections::HashSet::from([set.id]);
    let mut cur = set.clone();
    while matches!(cur.backup_type, BackupType::Incremental | BackupType::Differential) {
        let Some(base) = cur.base_set else {
            return Err(refuse(&mut chain, format!("set {} names no base set", cur.id)));
        };
        if !seen.insert(base) {
            return Err(refuse(
                &mut chain,
                format!("the base chain of {} loops through {base}", set.id),
            ));
        }
        let b = match lookup(base) {
            Ok(b) => b,
            Err(e) => {
                return Err(refuse(&mut chain, format!("base set {base} of {}: {e}", cur.id)));
            }
        };
        // Sets of one database taken on different copies of a DAG share its log stream
        // (the same log signature): a full taken on one copy is a base of an
        // incremental taken on another.
        let same_database = b.node == set.node
            || log_signatures(&b).is_some_and(|sig| Some(sig) == log_signatures(set));
        if b.storage_group != set.storage_group || !same_database {
            return Err(refuse(
                &mut chain,
                format!(
                    "base set {base} is of {}/{}, not {}/{}",
                    b.node, b.storage_group, set.node, set.storage_group
                ),
            ));
        }
        let allowed: &[BackupType] = match cur.backup_type {
            BackupType::Differential => &[BackupType::Full],
            _ => &[BackupType::Full, BackupType::Incremental],
        };
        if !allowed.contains(&b.backup_type) {
            return Err(refuse(
                &mut chain,
                format!(
                    "{} {} cannot build on a {} backup",
                    cur.backup_type, cur.id, b.backup_type
                ),
            ));
        }
        chain.push(b.clone());
        cur = b;
    }
    if !matches!(cur.backup_type, BackupType::Full | BackupType::Copy) {
        return Err(refuse(
            &mut chain,
            format!("the chain of {} starts with a {} backup", set.id, cur.backup_type),
        ));
    }
    chain.reverse();
    Ok(chain)
}

/// Whether `s`'s chain of bases leads to `full`. Bounded by the number of sets, in case a
/// damaged repository holds a loop.
fn builds_on(s: &BackupSet, full: Uuid, by_id: &HashMap<Uuid, &BackupSet>) -> bool {
    let mut cur = s.base_set;
    for _ in 0..by_id.len() {
        match cur {
            Some(id) if id == full => return true,
            Some(id) => cur = by_id.get(&id).and_then(|b| b.base_set),
            None => return false,
        }
    }
    false
}

/// The sets among `sets` that restoring `set` reads: its chain (see [`resolve_chain`]) and,
/// for a differential, every incremental of the same full taken before it — an incremental
/// truncates the logs it holds, so the differential after it lacks them and a restore fills
/// the gap from the incremental (see [`collect_files`]). A set whose chain is broken needs
/// the bases that were found. `set` itself is not listed.
pub(crate) fn dependencies(set: &BackupSet, sets: &[BackupSet]) -> Vec<Uuid> {
    let by_id: HashMap<Uuid, &BackupSet> = sets.iter().map(|s| (s.id, s)).collect();
    let chain_of = |s: &BackupSet| {
        resolve_chain(s, |id| {
            by_id.get(&id).map(|b| (*b).clone()).ok_or_else(|| "not among the sets".to_string())
        })
        .unwrap_or_else(|broken| broken.found)
    };
    let chain = chain_of(set);
    let mut out: Vec<Uuid> = chain.iter().map(|s| s.id).filter(|id| *id != set.id).collect();
    if set.backup_type == BackupType::Differential
        && let Some(full) = chain.first().filter(|f| f.backup_type == BackupType::Full)
    {
        for s in sets {
            if s.backup_type == BackupType::Incremental
                && s.created_unix_ms <= set.created_unix_ms
                && builds_on(s, full.id, &by_id)
            {
                out.extend(chain_of(s).iter().map(|c| c.id));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|id| *id != set.id && seen.insert(*id));
    out
}

/// The log signature the databases of `set` record in their headers (as the manifest holds
/// them), if they agree on one.
fn log_signatures(set: &BackupSet) -> Option<String> {
    let mut sigs = set
        .database_headers
        .as_object()?
        .values()
        .filter_map(|h| h.get("log_signature").map(|s| s.to_string()));
    let first = sigs.next()?;
    sigs.all(|s| s == first).then_some(first)
}

/// Every log generation held by the sets that build on `full` (incrementals and
/// differentials whose chain of bases leads to it), with the set holding each. Only those
/// continue `full`'s log stream: a set of another chain may hold the same generation numbers
/// of a stream rewound since by a point-in-time restore.
pub(super) fn later_logs(repo: &Repository, full: &BackupSet) -> Result<BTreeMap<u32, FileEntry>> {
    let sets = repo.list_sets()?;
    let by_id: HashMap<Uuid, &BackupSet> = sets.iter().map(|s| (s.id, s)).collect();
    let mut out = BTreeMap::new();
    for s in &sets {
        if !matches!(s.backup_type, BackupType::Incremental | BackupType::Differential)
            || !builds_on(s, full.id, &by_id)
        {
            continue;
        }
        for f in s.files.iter().filter(|f| f.role == FileRole::Log) {
            let name = Path::new(&f.path).file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some((_, g)) = crate::verify::log_generation(name) {
                out.entry(g).or_insert_with(|| f.clone());
            }
        }
    }
    Ok(out)
}

/// Rolling forward starts with the generations after the chain's last that later sets of the
/// same full hold: a later full or incremental truncated them from the log directory, and
/// the live logs continue only after them.
pub(super) fn roll_forward_from_repository(
    logs: &mut BTreeMap<u32, FileEntry>,
    later: &BTreeMap<u32, FileEntry>,
) {
    let Some(mut next) = logs.keys().next_back().map(|g| g + 1) else { return };
    while let Some(f) = later.get(&next) {
        logs.insert(next, f.clone());
        next += 1;
    }
}

/// The log generations the repository holds after `base` (see [`later_logs`]).
pub fn generations_held(
    repo: &Repository,
    base: &BackupSet,
) -> Result<std::collections::BTreeSet<u32>> {
    Ok(later_logs(repo, base)?.into_keys().collect())
}

/// The database files (from the chain's first set) and every log generation, checked for
/// continuity and for agreement between sets that hold the same generation.
#[allow(clippy::type_complexity)]
pub(super) fn collect_files(
    chain: &[BackupSet],
    prefix: &str,
    extra: &BTreeMap<u32, FileEntry>,
) -> Result<(Vec<(String, FileEntry)>, BTreeMap<u32, FileEntry>)> {
    let first = &chain[0];
    // A database file's component is named after its database.
    let databases: Vec<(String, FileEntry)> = first
        .files
        .iter()
        .filter(|f| f.role == FileRole::Database)
        .map(|f| (f.component.clone(), f.clone()))
        .collect();
    if databases.is_empty() {
        return Err(RequesterError::RestoreRefused(format!(
            "set {} holds no database file",
            first.id
        )));
    }
    let mut logs: BTreeMap<u32, FileEntry> = BTreeMap::new();
    for s in chain {
        for f in s.files.iter().filter(|f| f.role == FileRole::Log) {
            let name = Path::new(&f.path).file_name().and_then(|n| n.to_str()).unwrap_or("");
            let g = ese::logfmt::parse_generation_name(prefix, name).ok_or_else(|| {
                RequesterError::RestoreRefused(format!(
                    "{} in set {} is not a log generation of {prefix}",
                    f.path, s.id
                ))
            })?;
            if let Some(prev) = logs.get(&g)
                && !prev.same_content(f)
            {
                return Err(RequesterError::RestoreRefused(format!(
                    "log generation {g:#X} differs between sets ({} in one, {} in another)",
                    prev.path, f.path
                )));
            }
            logs.insert(g, f.clone());
        }
    }
    let (Some(&lo), Some(&hi)) = (logs.keys().next(), logs.keys().next_back()) else {
        return Err(RequesterError::RestoreRefused(
            "the backup chain holds no log generation".into(),
        ));
    };
    // Generations a later incremental truncated before a differential was taken live in that
    // incremental's set.
    for g in lo..=hi {
        if let (false, Some(f)) = (logs.contains_key(&g), extra.get(&g)) {
            logs.insert(g, f.clone());
        }
    }
    if let Some(missing) = (lo..=hi).find(|g| !logs.contains_key(g)) {
        return Err(RequesterError::RestoreRefused(format!(
            "log generation {} is missing from the backup chain (it holds {} to {})",
            ese::logfmt::generation_name(prefix, missing),
            ese::logfmt::generation_name(prefix, lo),
            ese::logfmt::generation_name(prefix, hi)
        )));
    }
    Ok((databases, logs))
}

/// Checks every staged log generation of `range` — records, continuity, and the log
/// signature of the restored databases — before recovery replays any: a foreign or damaged
/// log stops the restore naming its file, even one recovery would not have needed to read.
pub(super) fn check_logs(
    fs: &FsRef,
    dir: &Path,
    prefix: &str,
    range: (u32, u32),
    databases: &[DatabaseSpec],
) -> Result<()> {
    let signature = match databases.first() {
        Some(db) => Some(
            ese::inspect::dump_database_header(db.fs.as_ref(), &db.path)
                .map_err(recovery_failed)?,
        ),
        None => None,
    }
    .map(|h| h.log_signature);
    ese::inspect::verify_logs(fs.as_ref(), dir, prefix, Some(range), signature)
        .map_err(recovery_failed)?;
    check_chained(fs, dir, prefix)
}

/// Checks that each generation continues the one before it: its header records when the
/// previous generation was created. Generation numbers and the signature alone do not tell
/// two streams apart after a point-in-time restore rewound one (the new stream reuses the
/// numbers), and replaying a mix of them would corrupt the databases. Creation times are in
/// seconds, so streams rolled within the same second pass; what catches a rewound stream for
/// sure, when rolling forward, is comparing the backup's last generation with the live one
/// (see `live::check_same_history`).
pub(super) fn check_chained(fs: &FsRef, dir: &Path, prefix: &str) -> Result<()> {
    let logs = ese::logfmt::list_logs(fs.as_ref(), dir, prefix).map_err(recovery_failed)?;
    for w in logs.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        if next.header.previous_created != prev.header.created {
            return Err(RequesterError::RestoreFailed(format!(
                "log generation {} does not continue {}: it follows a generation created at {} (Unix time), and this one was created at {}; the logs come from two different log streams (was a backup restored over the storage group in between?)",
                ese::logfmt::generation_name(prefix, next.header.generation),
                ese::logfmt::generation_name(prefix, prev.header.generation),
                next.header.previous_created,
                prev.header.created
            )));
        }
    }
    Ok(())
}
