//! The storage group's later logs, for a restore to an alternate location that rolls
//! forward.
//!
//! The live log directory is only read: the store may be mounted and writing, and the
//! restore must neither replay into its files nor disturb its stream. A mounted storage group
//! first rolls its log, so that every commit acknowledged before the restore started sits in
//! a closed generation, which the log writer never changes again; only closed generations are
//! copied. A dismounted one holds its tail in the current log file, which a clean dismount
//! left as it is; it is copied under the current log's name, so that the alternate directory
//! continues it as the engine would have.

use std::path::{Path, PathBuf};

use ese::logfmt::{current_name, generation_name, parse_generation_name};
use store::{StorageGroup, StoreError};
use volume::{FileSystem, FsRef, OpenMode};

use super::io_err;
use super::place::header_generation;
use crate::error::{RequesterError, Result};
use crate::repo::{Crypto, FileEntry};
use crate::requester::Progress;

/// A live log file to copy into the staging directory.
#[derive(Debug, Clone)]
pub(super) struct LiveLog {
    /// Its path in the live log directory.
    pub source: PathBuf,
    /// Its name in the staging directory (the current log keeps the current name).
    pub name: String,
    pub generation: u32,
}

/// The storage group's log files after generation `after` (the backup's last, backed up as
/// `last`), oldest first, contiguous from `after + 1`. Rolls the log first if the storage
/// group is mounted.
pub(super) fn later_live_logs(
    sg: &StorageGroup,
    after: u32,
    last: &FileEntry,
    crypto: &Crypto,
) -> Result<Vec<LiveLog>> {
    let def = sg.def();
    let (fs, dir, prefix) = (&def.log_volume.fs, &def.log_dir, def.prefix.as_str());
    check_same_history(fs, dir, prefix, after, last, crypto)?;
    let rolled = match sg.roll_log() {
        Ok(g) => Some(g),
        Err(StoreError::NotMounted(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let entries = ese::logfmt::read_dir_stable(fs.as_ref(), dir).map_err(io_err("listing", dir))?;
    let mut found: Vec<LiveLog> = entries
        .iter()
        .filter_map(|e| parse_generation_name(prefix, &e.name).map(|g| (g, &e.name)))
        .filter(|(g, _)| *g > after && rolled.is_none_or(|r| *g <= r))
        .map(|(generation, name)| LiveLog {
            source: dir.join(name),
            name: name.clone(),
            generation,
        })
        .collect();
    // Dismounted: the current log file holds the stream's tail.
    let current = dir.join(current_name(prefix));
    let tail = match rolled {
        Some(_) => None,
        None => header_generation(fs, &current),
    };
    if let Some(g) = tail
        && g > after
        && !found.iter().any(|l| l.generation == g)
    {
        found.push(LiveLog { source: current, name: current_name(prefix), generation: g });
    }
    found.sort_by_key(|l| l.generation);
    let stream_end = rolled.or(tail).into_iter().chain(found.last().map(|l| l.generation)).max();
    if let Some(end) = stream_end
        && end <= after
    {
        return Err(RequesterError::RestoreRefused(format!(
            "the log stream of storage group {} ends at {}, before the backup's last generation {}: its logs do not continue this backup (was an earlier backup restored over it since?); restore without roll-forward",
            def.name,
            generation_name(prefix, end),
            generation_name(prefix, after)
        )));
    }
    check_continuous(&found, after, prefix, dir)?;
    Ok(found)
}

/// Fails if the live directory holds the backup's last generation with other content: the
/// storage group's stream was rewound since the backup (a point-in-time restore over it), so
/// its later generations continue another history, under the same numbers and signature.
/// (Closed generations never change, so the same stream holds the very same file.)
pub(super) fn check_same_history(
    fs: &FsRef,
    dir: &Path,
    prefix: &str,
    after: u32,
    last: &FileEntry,
    crypto: &Crypto,
) -> Result<()> {
    let name = generation_name(prefix, after);
    let path = dir.join(&name);
    let live = match volume::fs::read_all(fs.as_ref(), &path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("reading", &path)(e)),
    };
    if last.is_content(crypto, &live) {
        return Ok(());
    }
    Err(RequesterError::RestoreFailed(format!(
        "log generation {name} in {} differs from the backup's copy: the storage group's log stream was rewound since the backup (a point-in-time restore over it), so its later logs do not continue this backup; restore without roll-forward",
        dir.display()
    )))
}

/// Fails naming the first generation missing between the backup's last and the live ones.
fn check_continuous(found: &[LiveLog], after: u32, prefix: &str, dir: &Path) -> Result<()> {
    for (expected, l) in (after + 1..).zip(found) {
        if l.generation != expected {
            return Err(RequesterError::RestoreFailed(format!(
                "log generation {} is missing: the backup ends at {} and the log directory {} continues only from {}, and no set building on this backup holds it, so roll-forward cannot reach the later logs (a later full backup truncated them?)",
                generation_name(prefix, expected),
                generation_name(prefix, after),
                dir.display(),
                generation_name(prefix, l.generation)
            )));
        }
    }
    Ok(())
}

/// Copies a live log file into `to` on `to_fs`, durably, reading it only.
pub(super) fn copy_live_log(
    from_fs: &FsRef,
    l: &LiveLog,
    to_fs: &dyn FileSystem,
    to: &Path,
    progress: &dyn Progress,
) -> Result<u64> {
    if let Some(reason) = progress.cancelled() {
        return Err(crate::requester::aborted(reason));
    }
    let data =
        volume::fs::read_all(from_fs.as_ref(), &l.source).map_err(io_err("reading", &l.source))?;
    let f = to_fs.open(to, OpenMode::CreateNew).map_err(io_err("creating", to))?;
    f.write_at(&data, 0).map_err(io_err("writing", to))?;
    f.sync().map_err(io_err("syncing", to))?;
    Ok(data.len() as u64)
}
