//! Moving recovered files into place, all or none.
//!
//! Every rename, directory and file a placement makes is written down in a [`Journal`]; when
//! a later step fails the journal is played backwards, so the target ends exactly as it was:
//! databases, logs and checkpoint under their own names, with their own bytes.

use std::path::{Path, PathBuf};

use ese::DatabaseSpec;
use ese::logfmt::{
    checkpoint_name, current_name, generation_name, parse_generation_name, tmp_name,
};
use serde::Serialize;
use store::{DatabaseDef, StorageGroupDef};
use uuid::Uuid;
use volume::FsRef;

use super::{Staged, io_err};
use crate::error::{RequesterError, Result};

/// What a placement did, to be undone in reverse order.
enum Done {
    Renamed { fs: FsRef, from: PathBuf, to: PathBuf },
    Created { fs: FsRef, path: PathBuf },
    MadeDir { fs: FsRef, path: PathBuf },
}

/// The steps of one placement so far.
#[derive(Default)]
pub(super) struct Journal {
    done: Vec<Done>,
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Journal {
    /// Renames `from` to `to`; `op` and `named` say what failed if it does.
    pub(super) fn rename(
        &mut self,
        fs: &FsRef,
        from: &Path,
        to: &Path,
        op: &'static str,
        named: &Path,
    ) -> Result<()> {
        fs.rename(from, to).map_err(io_err(op, named))?;
        self.done.push(Done::Renamed { fs: fs.clone(), from: from.into(), to: to.into() });
        Ok(())
    }

    /// Notes a file about to be created (a partial one is removed on undo too).
    pub(super) fn creating(&mut self, fs: &FsRef, path: &Path) {
        self.done.push(Done::Created { fs: fs.clone(), path: path.into() });
    }

    /// Creates directory `path` (its parent exists).
    pub(super) fn make_dir(&mut self, fs: &FsRef, path: &Path) -> Result<()> {
        fs.create_dir_all(path).map_err(io_err("creating", path))?;
        self.done.push(Done::MadeDir { fs: fs.clone(), path: path.into() });
        Ok(())
    }

    /// Plays the journal backwards, best effort (each step is tried whatever the others
    /// did), and makes the restored names durable.
    pub(super) fn undo(self) {
        let mut touched: Vec<(FsRef, PathBuf)> = Vec::new();
        for d in self.done.into_iter().rev() {
            match d {
                Done::Renamed { fs, from, to } => {
                    if let Err(e) = fs.rename(&to, &from) {
                        tracing::error!(from = %to.display(), to = %from.display(), error = %e, "putting a file back after a failed restore");
                    }
                    touched.push((fs.clone(), parent(&from)));
                    touched.push((fs, parent(&to)));
                }
                Done::Created { fs, path } => {
                    if let Err(e) = fs.remove_file(&path) {
                        tracing::warn!(file = %path.display(), error = %e, "removing a file a failed restore created");
                    }
                    touched.push((fs, parent(&path)));
                }
                Done::MadeDir { fs, path } => {
                    if let Err(e) = fs.remove_dir(&path) {
                        tracing::warn!(dir = %path.display(), error = %e, "removing a directory a failed restore made");
                    }
                    touched.push((fs, parent(&path)));
                }
            }
        }
        for (fs, dir) in touched {
            if let Err(e) = fs.sync_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "syncing a directory a failed restore put back");
            }
        }
    }
}

fn sync_dir(fs: &FsRef, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(io_err("syncing", dir))
}

/// Where a point-in-time restore over the original location moved the storage group's live
/// log stream. Nothing is deleted: those logs are the only record of what happened after
/// the backup, and an administrator may need them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupersededLogs {
    /// The label of the log volume.
    pub volume: String,
    /// The directory on the log volume (inside the log directory).
    pub dir: PathBuf,
    /// The storage group's log prefix (`E00`): generation `g` is `<prefix><g as 8 hex>.log`.
    pub prefix: String,
    /// The lowest and highest generation moved, if any generation file was there.
    pub generations: Option<(u32, u32)>,
    /// The names of the files moved, the checkpoint among them.
    pub files: Vec<String>,
}

/// A point-in-time restore's log swap: the live stream set aside, the recovered stream (the
/// backed-up generations hard recovery replayed) put in its place with a checkpoint at the
/// end of what was replayed, so that mounting replays nothing and continues the stream at the
/// next generation.
pub(super) struct Rewind<'a> {
    pub def: &'a StorageGroupDef,
    pub set: Uuid,
    /// The staging directory holding the restored generations (on the log volume).
    pub staged: &'a Path,
    pub generations: Vec<u32>,
    /// Where hard recovery stopped.
    pub end: ese::Lsn,
    pub log_file_size: u32,
}

/// What a placement over the original location did.
pub(super) struct Placed {
    /// Each database and where it is now.
    pub databases: Vec<(String, PathBuf)>,
    /// Where the live logs went, at a point in time.
    pub superseded: Option<SupersededLogs>,
}

/// Moves each staged database over its original file and, for a point-in-time restore, swaps
/// the log stream, all or none: each database file there is first set aside (as
/// `<name>.previous` in its staging directory, removed with it), the live logs are moved
/// into a new `superseded-…` directory, and any failure puts every file back where it was.
pub(super) fn place_all(
    stages: &[(Staged, &DatabaseDef)],
    rewind: Option<&Rewind>,
) -> Result<Placed> {
    let mut journal = Journal::default();
    let outcome = (|| -> Result<_> {
        set_aside_databases(&mut journal, stages)?;
        let superseded = rewind.map(|r| set_aside_live_logs(&mut journal, r)).transpose()?;
        let databases = place_databases(&mut journal, stages)?;
        if let Some(r) = rewind {
            place_recovered_logs(&mut journal, r, stages)?;
        }
        Ok(Placed { databases, superseded })
    })();
    if outcome.is_err() {
        journal.undo();
    }
    outcome
}

fn file_name(db: &DatabaseDef) -> std::ffi::OsString {
    db.path.file_name().unwrap_or_default().to_owned()
}

fn set_aside_databases(j: &mut Journal, stages: &[(Staged, &DatabaseDef)]) -> Result<()> {
    for (stage, db) in stages {
        let fs = &db.volume.fs;
        match fs.metadata(&db.path) {
            Ok(_) => {
                let mut aside = file_name(db);
                aside.push(".previous");
                j.rename(fs, &db.path, &stage.dir.join(aside), "setting aside", &db.path)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("reading", &db.path)(e)),
        }
    }
    Ok(())
}

fn place_databases(
    j: &mut Journal,
    stages: &[(Staged, &DatabaseDef)],
) -> Result<Vec<(String, PathBuf)>> {
    let mut placed = Vec::new();
    for (stage, db) in stages {
        let fs = &db.volume.fs;
        let staged = stage.dir.join(file_name(db));
        j.rename(fs, &staged, &db.path, "moving into place", &db.path)?;
        sync_dir(fs, &parent(&db.path))?;
        placed.push((db.name.clone(), db.path.clone()));
    }
    Ok(placed)
}

/// The files of the storage group's live log stream in its log directory: closed
/// generations, the current generation and a roll's temporary file (reserve logs stay: they
/// belong to no stream).
fn live_log_names(fs: &FsRef, dir: &Path, prefix: &str) -> Result<Vec<String>> {
    let entries = ese::logfmt::read_dir_stable(fs.as_ref(), dir).map_err(io_err("listing", dir))?;
    let mut names: Vec<String> = entries
        .into_iter()
        .map(|e| e.name)
        .filter(|n| {
            parse_generation_name(prefix, n).is_some()
                || *n == current_name(prefix)
                || *n == tmp_name(prefix)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The generation a log file's header names, if it can be read.
pub(super) fn header_generation(fs: &FsRef, path: &Path) -> Option<u32> {
    let f = fs.open(path, volume::OpenMode::Read).ok()?;
    let mut block = vec![0u8; ese::logfmt::LOG_HEADER_SIZE as usize];
    let n = f.read_at(&mut block, 0).ok()?;
    ese::logfmt::LogHeader::decode(&block[..n]).ok().map(|h| h.generation)
}

/// The lowest and highest generation among `names` in `dir` (the current generation by its
/// header, when readable).
fn generation_range(fs: &FsRef, dir: &Path, prefix: &str, names: &[String]) -> Option<(u32, u32)> {
    let generations = names.iter().filter_map(|n| match parse_generation_name(prefix, n) {
        Some(g) => Some(g),
        None if *n == current_name(prefix) => header_generation(fs, &dir.join(n)),
        None => None,
    });
    generations
        .fold(None, |r, g| Some(r.map_or((g, g), |(lo, hi): (u32, u32)| (lo.min(g), hi.max(g)))))
}

/// A new directory in the log directory for the superseded stream, named after the set and
/// the time (a name the engine's log listing ignores).
fn superseded_dir(fs: &FsRef, log_dir: &Path, set: Uuid) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let short = &set.simple().to_string()[..8];
    for n in 0.. {
        let name = match n {
            0 => format!("superseded-{short}-{secs}"),
            _ => format!("superseded-{short}-{secs}-{n}"),
        };
        let dir = log_dir.join(name);
        if !fs.exists(&dir).map_err(io_err("checking", &dir))? {
            return Ok(dir);
        }
    }
    unreachable!("some name is free")
}

/// Moves every file of the live log stream and the checkpoint into a new superseded
/// directory.
fn set_aside_live_logs(j: &mut Journal, r: &Rewind) -> Result<SupersededLogs> {
    let def = r.def;
    let fs = &def.log_volume.fs;
    let names = live_log_names(fs, &def.log_dir, &def.prefix)?;
    let generations = generation_range(fs, &def.log_dir, &def.prefix, &names);
    let dir = superseded_dir(fs, &def.log_dir, r.set)?;
    j.make_dir(fs, &dir)?;
    for n in &names {
        let from = def.log_dir.join(n);
        j.rename(fs, &from, &dir.join(n), "setting aside", &from)?;
    }
    let mut files = names;
    let chk = def.system_dir.join(checkpoint_name(&def.prefix));
    if fs.exists(&chk).map_err(io_err("checking", &chk))? {
        let name = checkpoint_name(&def.prefix);
        j.rename(fs, &chk, &dir.join(&name), "setting aside", &chk)?;
        files.push(name);
    }
    for d in [&dir, &def.log_dir, &def.system_dir] {
        sync_dir(fs, d)?;
    }
    Ok(SupersededLogs {
        volume: def.log_volume.label.clone(),
        dir,
        prefix: def.prefix.clone(),
        generations,
        files,
    })
}

/// Moves the recovered generations into the log directory and writes the checkpoint at the
/// end of what hard recovery replayed.
fn place_recovered_logs(
    j: &mut Journal,
    r: &Rewind,
    stages: &[(Staged, &DatabaseDef)],
) -> Result<()> {
    let def = r.def;
    let fs = &def.log_volume.fs;
    for g in &r.generations {
        let name = generation_name(&def.prefix, *g);
        let to = def.log_dir.join(&name);
        j.rename(fs, &r.staged.join(&name), &to, "moving into place", &to)?;
    }
    let databases: Vec<DatabaseSpec> = stages
        .iter()
        .map(|(_, db)| DatabaseSpec::new(db.name.clone(), db.volume.fs.clone(), db.path.clone()))
        .collect();
    let chk = def.system_dir.join(checkpoint_name(&def.prefix));
    j.creating(fs, &chk);
    let last = r.generations.last().copied().unwrap_or(0);
    write_recovered_checkpoint(
        fs,
        &chk,
        &databases,
        RecoveredStream { end: r.end, last, log_file_size: r.log_file_size },
        def.circular_logging,
    )?;
    for d in [&def.log_dir, &def.system_dir] {
        sync_dir(fs, d)?;
    }
    Ok(())
}

/// The log stream hard recovery left behind.
pub(super) struct RecoveredStream {
    /// Where hard recovery stopped.
    pub end: ese::Lsn,
    /// The last generation it replayed.
    pub last: u32,
    pub log_file_size: u32,
}

/// Writes the checkpoint of a recovered log stream at `path`: at the end of what hard
/// recovery replayed, listing the recovered `databases` (read from their headers), so that
/// the instance opens with nothing left to redo and continues the stream at the next
/// generation. Serves both targets: the original location after a point-in-time restore, and
/// an alternate directory (databases beside `logs/`).
pub(super) fn write_recovered_checkpoint(
    fs: &FsRef,
    path: &Path,
    databases: &[DatabaseSpec],
    stream: RecoveredStream,
    circular_logging: bool,
) -> Result<()> {
    let failed = |e: ese::EngineError| RequesterError::RestoreFailed(e.to_string());
    let mut attached = Vec::new();
    let mut signature = None;
    let mut page_size = 0;
    for db in databases {
        let h = ese::inspect::dump_database_header(db.fs.as_ref(), &db.path).map_err(failed)?;
        signature.get_or_insert(h.log_signature);
        page_size = h.page_size;
        attached.push(ese::logfmt::AttachedDb {
            dbid: h.dbid,
            name: db.name.clone(),
            path: db.path.display().to_string(),
        });
    }
    // Databases that were clean already leave nothing replayed: start at the last
    // generation, whose records their page positions make redo skip.
    let start = ese::Lsn::new(stream.last, ese::logfmt::LOG_HEADER_SIZE);
    let chk = ese::checkpoint::Checkpoint {
        signature: signature.unwrap_or_default(),
        checkpoint: if stream.end == ese::Lsn(0) { start } else { stream.end },
        next_dbid: attached.iter().map(|a| a.dbid).max().unwrap_or(0) + 1,
        attached,
        log_file_size: stream.log_file_size,
        page_size,
        circular_logging,
    };
    ese::checkpoint::write_checkpoint(fs.as_ref(), path, &chk).map_err(failed)
}

/// The recovered files an alternate restore moves out of staging.
pub(super) struct Files<'a> {
    /// Database names (`<name>.edb` in staging).
    pub databases: &'a [String],
    /// Log file names (in `logs/` of staging).
    pub logs: &'a [String],
}

/// Moves the recovered files of an alternate restore from `stage` into `dir` (databases
/// beside `logs/`) and writes the checkpoint there, all or none.
pub(super) fn place_alternate(
    fs: &FsRef,
    stage: &Path,
    dir: &Path,
    prefix: &str,
    files: Files,
    stream: RecoveredStream,
) -> Result<Vec<(String, PathBuf)>> {
    let mut journal = Journal::default();
    let outcome = (|| -> Result<_> {
        let logs = dir.join("logs");
        if !fs.exists(&logs).map_err(io_err("checking", &logs))? {
            journal.make_dir(fs, &logs)?;
        }
        let mut placed = Vec::new();
        for name in files.databases {
            let file = format!("{name}.edb");
            let to = dir.join(&file);
            journal.rename(fs, &stage.join(&file), &to, "moving into place", &to)?;
            placed.push((name.clone(), to));
        }
        for name in files.logs {
            let to = logs.join(name);
            journal.rename(fs, &stage.join("logs").join(name), &to, "moving into place", &to)?;
        }
        let databases: Vec<DatabaseSpec> = placed
            .iter()
            .map(|(n, p)| DatabaseSpec::new(n.clone(), fs.clone(), p.clone()))
            .collect();
        let chk = dir.join(checkpoint_name(prefix));
        journal.creating(fs, &chk);
        write_recovered_checkpoint(fs, &chk, &databases, stream, false)?;
        sync_dir(fs, &logs)?;
        sync_dir(fs, dir)?;
        Ok(placed)
    })();
    if outcome.is_err() {
        journal.undo();
    }
    outcome
}
