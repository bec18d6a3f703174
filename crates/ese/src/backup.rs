//! Snapshot-backup hooks: the session the store writer drives for one backup job.
//!
//! States (as in the reference engine): start → prepare → freeze → thaw | timeout; thaw →
//! truncate → end; end is allowed from prepare, thaw and truncate; abort from anywhere until
//! end or abort. Any other call is an [`EngineError::InvalidSequence`].
//!
//! - **prepare** claims the instance (one backup at a time: *backup in progress*) and checks
//!   the backup type (incremental and differential need a previous full backup and no
//!   circular logging).
//! - **freeze** waits for the running write transaction, rolls the log so that every
//!   generation the snapshot holds is closed, then holds log flushes, page writes, checkpoint
//!   and header updates (and so file growth) in memory. Transactions continue; durable
//!   commits wait. A watchdog thread thaws by itself when the freeze timeout passes, so a hung
//!   requester cannot keep the instance frozen.
//! - **thaw** releases the held writes. Backup in progress stays set until end.
//! - **truncate** (full and incremental only) deletes generations below min(last generation
//!   the backup copied, checkpoint generation), after checking that the backup copied every
//!   generation the snapshot held.
//! - **end** stamps the header slot the backup type selects; a new full clears the previous
//!   incremental and differential slots.
//!
//! A *surrogate* backup ([`EngineBackup::set_surrogate`]) copies a passive copy of the
//! databases on another node, so this instance is never frozen: prepare → stamp_surrogate →
//! truncate → end. Its stamp is a log record as well as a header write, so that it reaches
//! every copy through the replicated log.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::codec::now_secs;
use crate::dbheader::{self, BackupSlot, SlotKind};
use crate::error::{EngineError, Result};
use crate::instance::{Inner, Instance};
use crate::logfmt::Record;

/// The type of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Full,
    Incremental,
    Differential,
    Copy,
}

impl BackupKind {
    /// The byte that stands for the type in log records.
    pub(crate) fn code(self) -> u8 {
        match self {
            BackupKind::Full => 1,
            BackupKind::Incremental => 2,
            BackupKind::Differential => 3,
            BackupKind::Copy => 4,
        }
    }
    pub(crate) fn from_code(v: u8) -> Option<Self> {
        Some(match v {
            1 => BackupKind::Full,
            2 => BackupKind::Incremental,
            3 => BackupKind::Differential,
            4 => BackupKind::Copy,
            _ => return None,
        })
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
            BackupKind::Differential => "differential",
            BackupKind::Copy => "copy",
        })
    }
}

/// What the engine reports during a backup. The store maps these to event IDs
/// (2005/2008/2009/2010, 2001, 2003, 2004, 224, 225, 2006, 2007; 210 and 213 for a surrogate
/// backup).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum EngineNotice {
    BackupStarted {
        prefix: String,
        kind: BackupKind,
        snapshot_instance: u64,
    },
    FreezeStarted {
        prefix: String,
        snapshot_instance: u64,
        rolled_generation: u32,
    },
    FreezeEnded {
        prefix: String,
        snapshot_instance: u64,
    },
    FreezeTimedOut {
        prefix: String,
        snapshot_instance: u64,
        seconds: f64,
    },
    /// `kept_for`: why generations above `high` that the backup allowed stay (a database copy
    /// that has not replayed them), when that is so.
    LogsTruncated {
        prefix: String,
        snapshot_instance: u64,
        low: u32,
        high: u32,
        kept_for: Option<String>,
    },
    NoTruncation {
        prefix: String,
        snapshot_instance: u64,
        reason: String,
    },
    BackupCompleted {
        prefix: String,
        snapshot_instance: u64,
        kind: BackupKind,
    },
    BackupAborted {
        prefix: String,
        snapshot_instance: u64,
    },
    /// A surrogate backup (of a passive copy on `passive_node`) claimed this instance: in
    /// place of [`EngineNotice::BackupStarted`].
    SurrogateStarted {
        prefix: String,
        snapshot_instance: u64,
        kind: BackupKind,
        passive_node: String,
    },
    /// The surrogate backup is recorded: logged, stamped in the headers, and its log
    /// generation `generation` closed (so it ships to the copies). Takes the place of
    /// [`EngineNotice::BackupCompleted`] for a surrogate backup. `time` is the slot's (Unix
    /// seconds).
    SurrogateStamped {
        prefix: String,
        snapshot_instance: u64,
        kind: BackupKind,
        passive_node: String,
        time: u64,
        gen_low: u32,
        gen_high: u32,
        generation: u32,
    },
}

/// Where a backup session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Start,
    Prepared,
    Frozen,
    Thawed,
    TimedOut,
    Truncated,
    Ended,
    Aborted,
}

/// The instance's record of the running backup (in memory only, like the reference's).
#[derive(Debug, Default)]
pub(crate) struct BackupRegistry {
    pub active: Option<u64>,
    pub state: Option<SessionState>,
}

/// What truncation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    Deleted { low: u32, high: u32 },
    Nothing { reason: String },
}

/// One backup job's conversation with the engine.
pub struct EngineBackup {
    inner: Arc<Inner>,
    kind: BackupKind,
    slot_kind: SlotKind,
    id: u64,
    state: SessionState,
    rolled: u32,
    snapshot_generations: Vec<u32>,
    copied: Option<(u32, u32)>,
    frozen_at: Option<Instant>,
    /// The databases the backup covers (`None`: all of them). Only these need a prior full
    /// for an incremental or differential, and only these get the header stamp.
    databases: Option<Vec<String>>,
    /// The node whose passive copy a surrogate backup copies (`None`: a backup of this
    /// instance's own files).
    passive_node: Option<String>,
    /// The surrogate backup's stamp is logged and in the headers: end() stamps nothing more.
    stamped: bool,
}

impl std::fmt::Debug for EngineBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBackup")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("state", &self.state)
            .field("passive_node", &self.passive_node)
            .finish()
    }
}

impl Instance {
    /// A new backup session (state start).
    pub fn backup_session(&self, kind: BackupKind) -> Result<EngineBackup> {
        self.inner.check_open()?;
        Ok(EngineBackup {
            inner: self.inner.clone(),
            kind,
            slot_kind: SlotKind::Snapshot,
            id: 0,
            state: SessionState::Start,
            rolled: 0,
            snapshot_generations: Vec::new(),
            copied: None,
            frozen_at: None,
            databases: None,
            passive_node: None,
            stamped: false,
        })
    }

    /// The snapshot instance number of the running backup, if any.
    pub fn backup_in_progress(&self) -> Option<u64> {
        self.inner.backup.lock().active
    }
}

impl EngineBackup {
    fn bad(&self, call: &'static str) -> EngineError {
        EngineError::InvalidSequence { call, state: format!("{:?}", self.current_state()) }
    }

    /// The state, including a watchdog timeout that happened behind the session's back.
    pub fn current_state(&self) -> SessionState {
        if self.state == SessionState::Frozen {
            let reg = self.inner.backup.lock();
            if reg.active == Some(self.id) && reg.state == Some(SessionState::TimedOut) {
                return SessionState::TimedOut;
            }
        }
        self.state
    }

    /// The engine's snapshot instance number of this job (0 before prepare).
    pub fn snapshot_instance(&self) -> u64 {
        self.id
    }

    /// The backup type.
    pub fn kind(&self) -> BackupKind {
        self.kind
    }

    /// Limits the backup to `names` (before prepare): a backup of some of the instance's
    /// databases checks and stamps only those. (Whether logs may be truncated is the
    /// caller's to decide: only when every database was backed up.)
    pub fn limit_to(&mut self, names: Vec<String>) -> Result<()> {
        if self.state != SessionState::Start {
            return Err(self.bad("limit_to"));
        }
        let dbs = self.inner.dbs.read();
        if let Some(missing) = names.iter().find(|n| !dbs.iter().any(|d| &d.name == *n)) {
            return Err(EngineError::DatabaseMissing { name: missing.clone(), dbid: 0 });
        }
        drop(dbs);
        self.databases = Some(names);
        Ok(())
    }

    fn covers(&self, name: &str) -> bool {
        self.databases.as_ref().is_none_or(|d| d.iter().any(|n| n == name))
    }

    /// Marks this session as a surrogate backup taken by `passive_node` (before prepare): the
    /// files are copied from that node's passive copy, so this instance is never frozen;
    /// [`Self::prepare`] emits [`EngineNotice::SurrogateStarted`] instead of
    /// [`EngineNotice::BackupStarted`], and [`Self::stamp_surrogate`] records the backup.
    pub fn set_surrogate(&mut self, passive_node: impl Into<String>) {
        self.slot_kind = SlotKind::Surrogate;
        self.passive_node = Some(passive_node.into());
    }

    /// The node whose passive copy this surrogate backup copies.
    pub fn passive_node(&self) -> Option<&str> {
        self.passive_node.as_deref()
    }

    /// The last generation closed by the freeze (0 before freeze).
    pub fn rolled_generation(&self) -> u32 {
        self.rolled
    }

    /// The generations the snapshot holds (closed ones, as of the freeze).
    pub fn snapshot_generations(&self) -> &[u32] {
        &self.snapshot_generations
    }

    fn set_registry(&self, s: SessionState) {
        let mut reg = self.inner.backup.lock();
        if reg.active == Some(self.id) {
            reg.state = Some(s);
        }
        self.inner.backup_cond.notify_all();
    }

    /// Claims the instance for this backup and checks the backup type.
    pub fn prepare(&mut self) -> Result<()> {
        if self.state != SessionState::Start {
            return Err(self.bad("prepare"));
        }
        let inner = &self.inner;
        if matches!(self.kind, BackupKind::Incremental | BackupKind::Differential) {
            if inner.cfg.circular_logging {
                return Err(EngineError::BackupNotAllowed {
                    kind: self.kind.to_string(),
                    why: "circular logging is enabled; only full and copy backups are possible"
                        .into(),
                });
            }
            for db in inner.dbs.read().iter().filter(|d| self.covers(&d.name)) {
                if db.header.lock().previous_full.is_none() {
                    return Err(EngineError::MissingFullBackup(db.name.clone()));
                }
            }
        }
        {
            let mut reg = inner.backup.lock();
            if let Some(id) = reg.active {
                return Err(EngineError::BackupInProgress(id));
            }
            self.id = inner.snapshot_counter.fetch_add(1, Ordering::SeqCst) + 1;
            reg.active = Some(self.id);
            reg.state = Some(SessionState::Prepared);
        }
        self.state = SessionState::Prepared;
        inner.notify(match &self.passive_node {
            Some(node) => EngineNotice::SurrogateStarted {
                prefix: inner.cfg.prefix.clone(),
                snapshot_instance: self.id,
                kind: self.kind,
                passive_node: node.clone(),
            },
            None => EngineNotice::BackupStarted {
                prefix: inner.cfg.prefix.clone(),
                kind: self.kind,
                snapshot_instance: self.id,
            },
        });
        Ok(())
    }

    /// Rolls the log and holds writes; returns the generation closed by the roll.
    /// A surrogate session never freezes: its snapshot is the passive node's.
    pub fn freeze(&mut self) -> Result<u32> {
        if self.state != SessionState::Prepared || self.passive_node.is_some() {
            return Err(self.bad("freeze"));
        }
        let inner = self.inner.clone();
        let rolled = {
            let _w = inner.writer.lock();
            let rolled = inner.log.roll()?;
            inner.log.set_frozen(true);
            rolled
        };
        self.rolled = rolled;
        self.snapshot_generations =
            inner_generations(&inner)?.into_iter().filter(|g| *g <= rolled).collect();
        self.state = SessionState::Frozen;
        self.frozen_at = Some(Instant::now());
        self.set_registry(SessionState::Frozen);
        inner.notify(EngineNotice::FreezeStarted {
            prefix: inner.cfg.prefix.clone(),
            snapshot_instance: self.id,
            rolled_generation: rolled,
        });
        if let Err(e) = spawn_watchdog(&inner, self.id, inner.cfg.freeze_timeout) {
            // No freeze without the watchdog that bounds it: release the writes at once.
            if let Err(t) = self.thaw() {
                tracing::warn!(prefix = %inner.cfg.prefix, snapshot_instance = self.id,
                    error = %t, "thaw after a failed watchdog start failed");
            }
            return Err(e);
        }
        Ok(rolled)
    }

    /// Releases the held writes.
    pub fn thaw(&mut self) -> Result<()> {
        let inner = self.inner.clone();
        {
            let mut reg = inner.backup.lock();
            if self.state == SessionState::Frozen && reg.state == Some(SessionState::TimedOut) {
                self.state = SessionState::TimedOut;
                return Err(EngineError::FreezeTimedOut {
                    session: self.id,
                    secs: inner.cfg.freeze_timeout.as_secs_f64(),
                });
            }
            if self.state != SessionState::Frozen {
                drop(reg);
                return Err(self.bad("thaw"));
            }
            reg.state = Some(SessionState::Thawed);
            inner.log.set_frozen(false);
            inner.backup_cond.notify_all();
        }
        self.state = SessionState::Thawed;
        inner.notify(EngineNotice::FreezeEnded {
            prefix: inner.cfg.prefix.clone(),
            snapshot_instance: self.id,
        });
        Ok(())
    }

    /// Truncates the logs after a successful full or incremental backup that copied
    /// `copied_generations`.
    pub fn truncate(&mut self, copied_generations: &[u32]) -> Result<Truncation> {
        if self.state != SessionState::Thawed || self.kind == BackupKind::Copy {
            return Err(self.bad("truncate"));
        }
        let inner = self.inner.clone();
        let mut copied: Vec<u32> = copied_generations.to_vec();
        copied.sort_unstable();
        copied.dedup();
        if let Some(missing) =
            self.snapshot_generations.iter().find(|g| copied.binary_search(g).is_err())
        {
            return Err(EngineError::TruncationRefused(format!(
                "the backup did not copy generation {missing:#X} of its range {:#X}..={:#X}",
                self.snapshot_generations.first().copied().unwrap_or(0),
                self.rolled
            )));
        }
        if let Some(w) = copied.windows(2).find(|w| w[1] != w[0] + 1) {
            return Err(EngineError::TruncationRefused(format!(
                "the copied generations have a gap after {:#X}",
                w[0]
            )));
        }
        self.copied = match (copied.first(), copied.last()) {
            (Some(lo), Some(hi)) => Some((*lo, *hi)),
            _ => None,
        };
        self.state = SessionState::Truncated;
        self.set_registry(SessionState::Truncated);
        let nothing = |reason: String| {
            inner.notify(EngineNotice::NoTruncation {
                prefix: inner.cfg.prefix.clone(),
                snapshot_instance: self.id,
                reason: reason.clone(),
            });
            Ok(Truncation::Nothing { reason })
        };
        if self.kind == BackupKind::Differential {
            return nothing(
                "no log files can be truncated: differential backups do not truncate logs".into(),
            );
        }
        if inner.cfg.circular_logging {
            return nothing(
                "no log files can be truncated: circular logging removes logs itself".into(),
            );
        }
        let Some(last_copied) = copied.last().copied() else {
            return nothing(
                "no log files can be truncated: the backup copied no log generation".into(),
            );
        };
        {
            let _w = inner.writer.lock();
            inner.flush_pages()?;
        }
        let checkpoint_gen = inner.checkpoint.lock().generation();
        let mut limit = last_copied.min(checkpoint_gen);
        // A database copy on another node that has not replayed a generation keeps it here.
        let mut kept_for = None;
        if let Some((copy_limit, why)) = inner.cfg.truncation_limit.as_ref().and_then(|f| f())
            && copy_limit < limit
        {
            limit = copy_limit;
            kept_for = Some(why);
        }
        match inner.delete_generations_below(limit)? {
            Some((low, high)) => {
                inner.notify(EngineNotice::LogsTruncated {
                    prefix: inner.cfg.prefix.clone(),
                    snapshot_instance: self.id,
                    low,
                    high,
                    kept_for,
                });
                Ok(Truncation::Deleted { low, high })
            }
            None => {
                let why = if let Some(why) = kept_for {
                    why
                } else if checkpoint_gen <= last_copied {
                    format!(
                        "the checkpoint is at generation {checkpoint_gen:#X} and no older generation is on disk"
                    )
                } else {
                    format!(
                        "the backup's last generation is {last_copied:#X} and no older generation is on disk"
                    )
                };
                nothing(format!("no log files can be truncated: {why}"))
            }
        }
    }

    /// Records the surrogate backup that `passive_node` took of its copy, covering log
    /// generations `gen_low..=gen_high` (a surrogate session in state prepared; the active is
    /// never frozen). Returns the generation that holds the record.
    ///
    /// In this order: a [`Record::BackupStamp`] is appended and made durable; the covered
    /// databases' headers are stamped as [`Self::end`] would stamp them and written; the log
    /// is rolled, so the generation holding the record is closed and ships to the copies,
    /// whose replay stamps their headers the same way (one backup history on every copy: a
    /// full taken on one node is the base of an incremental taken on another). The record
    /// goes first so a crash before the header write loses nothing: recovery applies it.
    /// Then [`EngineNotice::SurrogateStamped`], and the session is thawed with the snapshot
    /// generations `gen_low..=gen_high`, so that [`Self::truncate`] and [`Self::end`] follow
    /// (end stamps nothing more).
    ///
    /// An error once the record is durable (a failed header write or roll) leaves the session
    /// prepared, to be aborted; the record stays in the log, and recovery and the copies
    /// apply it: the passive's backup exists, and the history records it.
    pub fn stamp_surrogate(&mut self, gen_low: u32, gen_high: u32) -> Result<u32> {
        let Some(node) = self.passive_node.clone() else {
            return Err(self.bad("stamp_surrogate"));
        };
        if self.state != SessionState::Prepared {
            return Err(self.bad("stamp_surrogate"));
        }
        let inner = self.inner.clone();
        inner.check_writable()?;
        if gen_low == 0 || gen_low > gen_high {
            return Err(EngineError::SurrogateStampRefused(format!(
                "generations {gen_low:#X}..={gen_high:#X} are not a range of log generations"
            )));
        }
        let slot = BackupSlot { time: now_secs(), gen_low, gen_high, kind: SlotKind::Surrogate };
        let generation = {
            let _w = inner.writer.lock();
            let current = inner.log.generation();
            if gen_high >= current {
                // The passive replays closed generations only: it cannot hold this one.
                return Err(EngineError::SurrogateStampRefused(format!(
                    "generation {gen_high:#X} is not closed on this node (the current one is \
                     {current:#X})"
                )));
            }
            let dbs: Vec<_> =
                inner.dbs.read().iter().filter(|d| self.covers(&d.name)).cloned().collect();
            let record = Record::BackupStamp {
                kind: self.kind,
                slot,
                databases: dbs.iter().map(|d| d.name.clone()).collect(),
            };
            let (at, end) = inner.log.append(vec![record])?;
            inner.log.flush_to(end)?;
            for db in &dbs {
                let mut h = db.header.lock();
                h.record_backup(self.kind, slot);
                dbheader::write_header(db.file.as_ref(), &db.path, &mut h)?;
            }
            let closed = inner.log.roll()?;
            debug_assert_eq!(closed, at.generation(), "nothing else appends under the writer lock");
            closed
        };
        self.stamped = true;
        self.rolled = gen_high;
        self.snapshot_generations = (gen_low..=gen_high).collect();
        self.state = SessionState::Thawed;
        self.set_registry(SessionState::Thawed);
        inner.notify(EngineNotice::SurrogateStamped {
            prefix: inner.cfg.prefix.clone(),
            snapshot_instance: self.id,
            kind: self.kind,
            passive_node: node,
            time: slot.time,
            gen_low,
            gen_high,
            generation,
        });
        Ok(generation)
    }

    /// Ends the backup: stamps the database headers (when a snapshot was taken, and not
    /// already by [`Self::stamp_surrogate`]) and clears backup in progress.
    pub fn end(&mut self) -> Result<()> {
        if !matches!(
            self.state,
            SessionState::Prepared | SessionState::Thawed | SessionState::Truncated
        ) {
            return Err(self.bad("end"));
        }
        let inner = self.inner.clone();
        if self.state != SessionState::Prepared && !self.stamped {
            let (low, high) = self.copied.unwrap_or((
                self.snapshot_generations.first().copied().unwrap_or(self.rolled),
                self.rolled,
            ));
            let slot =
                BackupSlot { time: now_secs(), gen_low: low, gen_high: high, kind: self.slot_kind };
            let _w = inner.writer.lock();
            let dbs: Vec<_> =
                inner.dbs.read().iter().filter(|d| self.covers(&d.name)).cloned().collect();
            // The stamp is logged too, so that database copies replaying this log record the
            // same history (a backup of the active is a base for one taken on a copy). A log
            // that cannot take it (storage full) still gets the header stamp here.
            let record = Record::BackupStamp {
                kind: self.kind,
                slot,
                databases: dbs.iter().map(|d| d.name.clone()).collect(),
            };
            if let Err(e) =
                inner.log.append(vec![record]).and_then(|(_, end)| inner.log.flush_to(end))
            {
                tracing::warn!(prefix = %inner.cfg.prefix, error = %e,
                    "the backup's header stamp could not be logged; copies will not show it");
            }
            for db in &dbs {
                let mut h = db.header.lock();
                h.record_backup(self.kind, slot);
                dbheader::write_header(db.file.as_ref(), &db.path, &mut h)?;
            }
        }
        self.state = SessionState::Ended;
        self.release();
        // A surrogate backup's completion was SurrogateStamped (213 takes the place of 2006).
        if self.passive_node.is_none() {
            inner.notify(EngineNotice::BackupCompleted {
                prefix: inner.cfg.prefix.clone(),
                snapshot_instance: self.id,
                kind: self.kind,
            });
        }
        Ok(())
    }

    /// Aborts: thaws if frozen, truncates nothing, stamps nothing.
    pub fn abort(&mut self) -> Result<()> {
        if matches!(self.state, SessionState::Ended | SessionState::Aborted) {
            return Err(self.bad("abort"));
        }
        let was_claimed = self.state != SessionState::Start;
        self.state = SessionState::Aborted;
        if was_claimed {
            self.release();
            self.inner.notify(EngineNotice::BackupAborted {
                prefix: self.inner.cfg.prefix.clone(),
                snapshot_instance: self.id,
            });
        }
        Ok(())
    }

    fn release(&self) {
        let mut reg = self.inner.backup.lock();
        if reg.active == Some(self.id) {
            if matches!(reg.state, Some(SessionState::Frozen | SessionState::TimedOut)) {
                self.inner.log.set_frozen(false);
            }
            reg.active = None;
            reg.state = None;
        }
        self.inner.backup_cond.notify_all();
    }
}

impl Drop for EngineBackup {
    fn drop(&mut self) {
        if !matches!(self.state, SessionState::Ended | SessionState::Aborted)
            && let Err(e) = self.abort()
        {
            tracing::warn!(prefix = %self.inner.cfg.prefix, snapshot_instance = self.id,
                error = %e, "aborting a dropped backup failed");
        }
    }
}

fn inner_generations(inner: &Inner) -> Result<Vec<u32>> {
    let cfg = &inner.log.cfg;
    let mut v: Vec<u32> = crate::logfmt::read_dir_stable(cfg.fs.as_ref(), &cfg.dir)
        .map_err(|e| EngineError::io(&cfg.dir, e))?
        .iter()
        .filter_map(|e| crate::logfmt::parse_generation_name(&cfg.prefix, &e.name))
        .collect();
    v.sort_unstable();
    Ok(v)
}

fn spawn_watchdog(inner: &Arc<Inner>, id: u64, timeout: Duration) -> Result<()> {
    let weak = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name(format!("ese-freeze-watchdog-{id}"))
        .spawn(move || {
            let deadline = Instant::now() + timeout;
            let Some(inner) = weak.upgrade() else { return };
            let mut reg = inner.backup.lock();
            loop {
                if reg.active != Some(id) || reg.state != Some(SessionState::Frozen) {
                    return;
                }
                if Instant::now() >= deadline {
                    // State first (a late thaw now fails with "timed out"), then the notice,
                    // then the writes are released: whoever waited on them sees the notice.
                    reg.state = Some(SessionState::TimedOut);
                    drop(reg);
                    tracing::warn!(prefix = %inner.cfg.prefix, snapshot_instance = id, "freeze timed out; thawed by the watchdog");
                    inner.notify(EngineNotice::FreezeTimedOut {
                        prefix: inner.cfg.prefix.clone(),
                        snapshot_instance: id,
                        seconds: timeout.as_secs_f64(),
                    });
                    let reg = inner.backup.lock();
                    if reg.active.is_none() || reg.active == Some(id) {
                        inner.log.set_frozen(false);
                    }
                    return;
                }
                inner.backup_cond.wait_until(&mut reg, deadline);
            }
        })
        .map(drop)
        .map_err(|source| EngineError::ThreadSpawn { what: "freeze watchdog", source })
}

/// Aborts the running backup at shutdown or drop: thaws and clears backup in progress.
pub(crate) fn abort_active(inner: &Inner) {
    let mut reg = inner.backup.lock();
    if let Some(id) = reg.active.take() {
        reg.state = None;
        inner.log.set_frozen(false);
        drop(reg);
        inner.backup_cond.notify_all();
        inner.notify(EngineNotice::BackupAborted {
            prefix: inner.cfg.prefix.clone(),
            snapshot_instance: id,
        });
    }
}
