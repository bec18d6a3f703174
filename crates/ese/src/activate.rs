//! Activation: a passive copy becomes the storage group's active instance, continuing the
//! old active's log stream (switchover and failover).
//!
//! The copy's directory holds the passive databases (dirty shutdown, written only by redo),
//! the shipped closed generations in the log directory (the inbox), perhaps a partial current
//! log `<prefix>.log` there (a byte prefix of the old active's current log, as block-mode
//! shipping leaves it, possibly torn at its end), and the passive checkpoint. [`activate`]:
//!
//! 1. opens the passive ([`PassiveReplay::open`]), which first repairs pages from a valid
//!    journal one generation ahead of its checkpoint;
//! 2. turns a usable partial current log into a closed generation: cut at its last valid
//!    record, an end-of-generation record written there, padded with zeros to the generation
//!    size (so other copies' log inspectors accept it as any closed generation), renamed to its
//!    closed name. A current log that cannot be used (no valid record, another stream, not the
//!    generation after the last closed one) is renamed aside (`<prefix>.log.unused`), never
//!    deleted;
//! 3. replays every closed generation after the passive checkpoint with the passive's own
//!    apply (journaled, so a crash or power loss during activation tears nothing), and
//!    refuses ([`EngineError::LogGap`]) when they end before the highest log position the
//!    copy's databases require (a seed whose generations never arrived);
//! 4. starts a new instance whose first generation L+1 follows the last generation L replayed
//!    with the header a roll on the old active would have written (same signature,
//!    `previous_created` = L's creation time), the databases keeping their ids, and writes
//!    its checkpoint;
//! 5. renames the passive checkpoint aside (`<passive checkpoint>.activated`) and removes the
//!    passive journal: the directory is an active instance now.
//!
//! Every step is idempotent, so an activation cut off anywhere is simply run again: before
//! step 4 writes the checkpoint, nothing was acknowledged by the new instance, and the empty
//! current log an interrupted step 4 may have left has no record and is set aside; once the
//! checkpoint exists (its generation is past the passive's last replayed one), the call opens
//! the instance with ordinary soft recovery and finishes step 5. A transaction whose commit
//! is not in the replayed generations (an open one at the end of the stream, or one torn off
//! the partial log) is never applied: it was never acknowledged by a durable commit.
//!
//! What a rerun cannot report any more: the partial log of an earlier attempt that got as far
//! as renaming it is an ordinary closed generation for the rerun (`partial_log` is `None`).

use std::path::{Path, PathBuf};

use volume::OpenMode;

use crate::error::{EngineError, IoContext, Result};
use crate::instance::{DatabaseSpec, Instance, InstanceConfig};
use crate::logfmt::{self, LOG_HEADER_SIZE, LogHeader, Record, ScanEnd};
use crate::lsn::Lsn;
use crate::replay::{self, PassiveConfig, PassiveReplay};

/// Generations applied in one passive apply batch (their page images are held in memory).
const BATCH: usize = 8;

/// The partial current log an activation used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartialLog {
    /// Its generation (now a closed generation of the stream).
    pub generation: u32,
    /// The offset just past its last valid record: the end-of-generation record is there.
    pub valid_end: u32,
    /// Whether bytes past `valid_end` failed the record checks (a torn tail was cut off).
    pub torn: bool,
}

/// What an activation did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Activation {
    /// The new active's first generation: every generation from it on is the new epoch's.
    pub first_generation: u32,
    /// The last generation of the old stream replayed into the copy (`first_generation - 1`).
    pub last_generation_replayed: u32,
    /// Committed transactions replayed by this call (the passive's apply of the generations
    /// after its checkpoint, plus soft recovery when an earlier activation had completed).
    pub transactions: u64,
    /// Generations this call applied to the copy.
    pub generations_applied: Vec<u32>,
    /// The partial current log used, if any.
    pub partial_log: Option<PartialLog>,
    /// Files renamed aside (unusable current logs).
    pub set_aside: Vec<PathBuf>,
    /// An earlier activation had already started the instance: this call reopened it.
    pub reopened: bool,
}

/// Where the passive checkpoint goes once the copy is active.
pub fn activated_checkpoint_path(passive: &PassiveConfig) -> PathBuf {
    let mut p = passive.checkpoint_path.clone().into_os_string();
    p.push(".activated");
    PathBuf::from(p)
}

/// Activates the passive copy `passive` as a new active instance configured by `cfg` (whose
/// log directory is the copy's inbox) over `databases` (the copy's database files): see the
/// module documentation. Idempotent: run again after a crash at any point.
pub fn activate(
    passive: &PassiveConfig,
    cfg: InstanceConfig,
    databases: Vec<DatabaseSpec>,
) -> Result<(Instance, Activation)> {
    let pfs = &passive.checkpoint_fs;
    let pchk = &passive.checkpoint_path;
    let aside = activated_checkpoint_path(passive);
    let chk_path = cfg.system_dir.join(logfmt::checkpoint_name(&cfg.prefix));
    let has_pchk = pfs.exists(pchk).at(pchk)?;
    let chk = if cfg.system_fs.exists(&chk_path).at(&chk_path)? {
        crate::checkpoint::read_checkpoint(cfg.system_fs.as_ref(), &chk_path).ok()
    } else {
        None
    };
    // The instance was started by an earlier activation when its checkpoint lies past the
    // passive's last replayed generation (a checkpoint from an older life of the directory
    // lies before it and is overwritten below).
    let passive_state = if has_pchk {
        Some(replay::read_state(pfs.as_ref(), pchk)?.1)
    } else if pfs.exists(&aside).at(&aside)? {
        Some(replay::read_state(pfs.as_ref(), &aside)?.1)
    } else {
        None
    };
    if let (Some(chk), Some(st)) = (&chk, &passive_state)
        && chk.signature == st.signature
        && chk.generation() > st.replayed_generation
    {
        let inst = Instance::open(cfg, databases)?;
        finish(passive, &aside)?;
        let rec = inst.recovery_info();
        let act = Activation {
            first_generation: st.replayed_generation + 1,
            last_generation_replayed: st.replayed_generation,
            transactions: rec.transactions,
            generations_applied: Vec::new(),
            partial_log: None,
            set_aside: Vec::new(),
            reopened: true,
        };
        return Ok((inst, act));
    }
    if !has_pchk && chk.is_some() {
        // An instance's directory, not a copy's (or a copy whose activation record is gone):
        // treating its databases as a seed would start a second stream over them.
        return Err(EngineError::InstanceFiles(format!(
            "nothing to activate: {} is an instance's checkpoint and there is no passive \
             checkpoint {}; open the instance instead",
            chk_path.display(),
            pchk.display()
        )));
    }

    // 1. The passive, its journal repaired (a seed never opened as a passive gets its first
    // checkpoint here).
    let mut rep = PassiveReplay::open(passive.clone())?;
    let signature = rep.state().signature;
    let log_fs = cfg.log_fs.clone();
    let dir = cfg.log_dir.clone();
    let closed_on_disk = |rep: &PassiveReplay| -> Result<Vec<u32>> {
        let mut v: Vec<u32> = match logfmt::read_dir_stable(log_fs.as_ref(), &dir) {
            Ok(entries) => entries
                .iter()
                .filter_map(|e| logfmt::parse_generation_name(&cfg.prefix, &e.name))
                .filter(|g| *g > rep.replayed_generation())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(EngineError::io(&dir, e)),
        };
        v.sort_unstable();
        Ok(v)
    };

    // 2. The partial current log.
    let mut set_aside = Vec::new();
    let newer = closed_on_disk(&rep)?;
    let last_closed = newer.last().copied().unwrap_or(rep.replayed_generation());
    let partial = seal_partial(&cfg, signature, last_closed, &mut set_aside)?;

    // 3. Every closed generation after the passive checkpoint.
    let mut generations_applied = Vec::new();
    let mut transactions = 0;
    let newer = closed_on_disk(&rep)?;
    for chunk in newer.chunks(BATCH) {
        let paths: Vec<PathBuf> =
            chunk.iter().map(|g| dir.join(logfmt::generation_name(&cfg.prefix, *g))).collect();
        let r = rep.apply_batch(&log_fs, &paths)?;
        if r.applied {
            transactions += r.transactions;
            generations_applied.extend_from_slice(chunk);
        }
    }
    let st = rep.state();
    // The copy's pages may hold changes logged up to its databases' highest required
    // position (the seed's, or the generations applied): a stream that ends before it would
    // leave them inconsistent. (A position at the very start of a generation needs nothing
    // of it.)
    let needed = rep
        .headers()
        .iter()
        .map(|h| {
            let m = h.max_required;
            if m.offset() <= LOG_HEADER_SIZE {
                m.generation().saturating_sub(1)
            } else {
                m.generation()
            }
        })
        .max()
        .unwrap_or(0);
    if st.replayed_generation < needed {
        return Err(EngineError::LogGap { missing: st.replayed_generation + 1, after_path: dir });
    }
    drop(rep);

    // 4. The new instance, continuing the stream.
    let cur = dir.join(logfmt::current_name(&cfg.prefix));
    if log_fs.exists(&cur).at(&cur)? {
        // Only an unusable current log is left here by step 2 (or by an earlier step 4).
        set_aside.push(put_aside(&cfg, &cur)?);
    }
    let inst = Instance::start_activated(
        cfg,
        databases,
        signature,
        st.replayed_generation + 1,
        st.last_created,
    )?;

    // 5. The passive checkpoint out of the way.
    finish(passive, &aside)?;
    let act = Activation {
        first_generation: st.replayed_generation + 1,
        last_generation_replayed: st.replayed_generation,
        transactions,
        generations_applied,
        partial_log: partial,
        set_aside,
        reopened: false,
    };
    tracing::info!(?act, "passive copy activated");
    Ok((inst, act))
}

/// Renames the passive checkpoint aside and removes its journal, if still there.
fn finish(passive: &PassiveConfig, aside: &Path) -> Result<()> {
    let fs = &passive.checkpoint_fs;
    let pchk = &passive.checkpoint_path;
    if fs.exists(pchk).at(pchk)? {
        fs.rename(pchk, aside).at(aside)?;
    }
    let jrn = pchk.with_extension("jrn");
    if fs.exists(&jrn).at(&jrn)? {
        fs.remove_file(&jrn).at(&jrn)?;
    }
    let parent = pchk.parent().map(Path::to_path_buf).unwrap_or_default();
    fs.sync_dir(&parent).at(&parent)
}

/// Renames `path` to `<path>.unused` (replacing an older one) and syncs the directory.
fn put_aside(cfg: &InstanceConfig, path: &Path) -> Result<PathBuf> {
    let mut to = path.to_path_buf().into_os_string();
    to.push(".unused");
    let to = PathBuf::from(to);
    cfg.log_fs.rename(path, &to).at(&to)?;
    cfg.log_fs.sync_dir(&cfg.log_dir).at(&cfg.log_dir)?;
    tracing::warn!(path = %path.display(), aside = %to.display(), "activation: current log not used");
    Ok(to)
}

/// Seals the partial current log of generation `last_closed + 1`, if there is a usable one,
/// into a closed generation; sets an unusable one aside.
fn seal_partial(
    cfg: &InstanceConfig,
    signature: [u8; 16],
    last_closed: u32,
    set_aside: &mut Vec<PathBuf>,
) -> Result<Option<PartialLog>> {
    let fs = &cfg.log_fs;
    let cur = cfg.log_dir.join(logfmt::current_name(&cfg.prefix));
    if !fs.exists(&cur).at(&cur)? {
        return Ok(None);
    }
    let image = volume::fs::read_all(fs.as_ref(), &cur).at(&cur)?;
    let header = LogHeader::decode(&image[..image.len().min(LOG_HEADER_SIZE as usize)]).ok();
    let usable = header.filter(|h| {
        h.signature == signature
            && h.generation == last_closed.wrapping_add(1)
            && h.file_size == cfg.log_file_size
    });
    let Some(h) = usable else {
        set_aside.push(put_aside(cfg, &cur)?);
        return Ok(None);
    };
    let g = h.generation;
    let scan = logfmt::scan(g, &image, 0);
    if !scan.records.iter().any(|(_, r)| !matches!(r, Record::EndOfGeneration)) {
        // Nothing to replay: an empty block-mode log, or the fresh current log of an
        // activation cut off before its checkpoint. The new active's first generation takes
        // its number.
        set_aside.push(put_aside(cfg, &cur)?);
        return Ok(None);
    }
    let torn = matches!(scan.how, ScanEnd::Damaged(_));
    let end = scan.end;
    let (valid_end, mut closed) = match scan.how {
        ScanEnd::Closed => {
            // Already sealed: the end record is the last one read.
            let at = scan.records.last().map(|(l, _)| l.offset()).unwrap_or(end);
            (at, image[..end as usize].to_vec())
        }
        _ => {
            let mut v = image[..end as usize].to_vec();
            v.extend_from_slice(&Record::EndOfGeneration.encode(Lsn::new(g, end)));
            (end, v)
        }
    };
    if closed.len() > cfg.log_file_size as usize {
        return Err(EngineError::LogCorrupt {
            path: cur,
            generation: g,
            why: "its records and end-of-generation record exceed the generation size".into(),
        });
    }
    closed.resize(cfg.log_file_size as usize, 0);
    let f = fs.open(&cur, OpenMode::ReadWrite).at(&cur)?;
    // Only past the valid records: what a torn write could damage is nothing they need.
    f.write_at(&closed[end as usize..], u64::from(end)).at(&cur)?;
    f.set_len(closed.len() as u64).at(&cur)?;
    f.sync().at(&cur)?;
    drop(f);
    let named = cfg.log_dir.join(logfmt::generation_name(&cfg.prefix, g));
    fs.rename(&cur, &named).at(&named)?;
    fs.sync_dir(&cfg.log_dir).at(&cfg.log_dir)?;
    tracing::info!(generation = g, valid_end, torn, "activation: partial current log sealed");
    Ok(Some(PartialLog { generation: g, valid_end, torn }))
}
