//! Hard recovery: bringing restored database files to a consistent, clean-shutdown state.
//!
//! After a restore the database files are as the snapshot caught them (dirty shutdown) and
//! the backup's log generations sit in a directory. Hard recovery replays those generations
//! from the oldest position the database headers require, optionally continuing through later
//! generations still on the original log volume (roll-forward) up to a stopping generation,
//! and marks the databases clean. A foreign log signature, a missing generation or a damaged
//! record stops it with an error naming the file and generation.

use std::collections::HashMap;
use std::path::PathBuf;

use volume::FsRef;

use crate::dbheader::{self, DbState};
use crate::error::{EngineError, Result};
use crate::instance::DatabaseSpec;
use crate::logfmt::{self, LogFile};
use crate::lsn::Lsn;
use crate::redo;

/// What to recover.
#[derive(Debug, Clone)]
pub struct HardRecovery {
    /// The restored database files (names as in the storage group).
    pub databases: Vec<DatabaseSpec>,
    /// The restored log generations.
    pub log_fs: FsRef,
    pub log_dir: PathBuf,
    pub prefix: String,
    /// Later generations to roll forward through (e.g. the live log directory).
    pub roll_forward: Option<(FsRef, PathBuf)>,
    /// Stop after this generation.
    pub stop_after_generation: Option<u32>,
}

/// What hard recovery did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HardRecoveryReport {
    pub generations: Vec<u32>,
    pub transactions: u64,
    pub pages_written: u64,
    pub end: Lsn,
}

/// Runs hard recovery.
pub fn hard_recover(req: &HardRecovery) -> Result<HardRecoveryReport> {
    let mut dbs = HashMap::new();
    let mut headers = Vec::new();
    for spec in &req.databases {
        let f = spec
            .fs
            .open(&spec.path, volume::OpenMode::ReadWrite)
            .map_err(|e| EngineError::io(&spec.path, e))?;
        let h = dbheader::read_header(f.as_ref(), &spec.path)?;
        dbs.insert(
            spec.name.clone(),
            redo::RedoDb {
                path: spec.path.clone(),
                file: f.clone(),
                page_size: h.page_size as usize,
            },
        );
        headers.push((spec.clone(), f, h));
    }
    let Some((_, _, first)) = headers.first() else {
        return Err(EngineError::Recovery("no database to recover".into()));
    };
    let signature = first.log_signature;
    for (spec, _, h) in &headers {
        if h.log_signature != signature {
            return Err(EngineError::DatabaseMismatch {
                path: spec.path.clone(),
                why: "its log signature differs from the other restored databases".into(),
            });
        }
    }
    let dirty: Vec<_> =
        headers.iter().filter(|(_, _, h)| h.state == DbState::DirtyShutdown).collect();
    let start = dirty.iter().map(|(_, _, h)| h.min_required).min();
    let mut report = HardRecoveryReport::default();
    let mut stamps = Vec::new();
    if let Some(start) = start {
        let mut logs: Vec<(FsRef, LogFile)> =
            logfmt::list_logs(req.log_fs.as_ref(), &req.log_dir, &req.prefix)?
                .into_iter()
                .map(|l| (req.log_fs.clone(), l))
                .collect();
        if let Some((fs, dir)) = &req.roll_forward {
            let have: Vec<u32> = logs.iter().map(|l| l.1.header.generation).collect();
            for l in logfmt::list_logs(fs.as_ref(), dir, &req.prefix)? {
                if !have.contains(&l.header.generation) {
                    logs.push((fs.clone(), l));
                }
            }
        }
        logs.sort_by_key(|l| l.1.header.generation);
        logs.retain(|l| {
            l.1.header.generation >= start.generation()
                && req.stop_after_generation.is_none_or(|s| l.1.header.generation <= s)
        });
        if logs.is_empty() {
            return Err(EngineError::LogGap {
                missing: start.generation(),
                after_path: req.log_dir.clone(),
            });
        }
        // The databases may hold pages whose changes are logged up to their max required
        // generation: stopping short of it would leave them inconsistent.
        let max_required =
            dirty.iter().map(|(_, _, h)| h.max_required_generation()).max().unwrap_or(0);
        #[allow(clippy::expect_used)] // checked non-empty above
        let last_log = &logs.last().expect("non-empty").1;
        let last = last_log.header.generation;
        if last < max_required && req.stop_after_generation.is_none_or(|s| s >= max_required) {
            return Err(EngineError::LogGap {
                missing: last + 1,
                after_path: last_log.path.clone(),
            });
        }
        let fs_by_path: HashMap<PathBuf, FsRef> =
            logs.iter().map(|(fs, l)| (l.path.clone(), fs.clone())).collect();
        let files: Vec<LogFile> = logs.into_iter().map(|(_, l)| l).collect();
        let out = redo::replay(
            &|l: &LogFile| fs_by_path[&l.path].clone(),
            &files,
            start,
            signature,
            &dbs,
            HashMap::new(),
            redo::Unknown::Skip,
            true,
        )?;
        stamps = out.stamps;
        report = HardRecoveryReport {
            generations: out.generations,
            transactions: out.transactions,
            pages_written: out.pages_written,
            end: out.end,
        };
    }
    for (spec, f, mut h) in headers {
        // Surrogate backups recorded in the logs replayed (the live database had them).
        redo::apply_stamps(&stamps, &spec.name, &mut h);
        h.mark_clean_shutdown();
        dbheader::write_header(f.as_ref(), &spec.path, &mut h)?;
    }
    tracing::info!(?report, "hard recovery done");
    Ok(report)
}
