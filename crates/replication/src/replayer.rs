//! The replayer: applies the generations shipped into a passive copy's inbox, in order.
//!
//! The log copier (not here yet) drops closed generations into the inbox directory under their
//! closed names. The replayer takes the generation after the last one applied, has the
//! [`Inspector`] check it, and applies it with [`ese::PassiveReplay`], whose checkpoint makes
//! a restarted replayer continue where it stopped. Generations the passive no longer needs
//! (below its replay start) are deleted from the inbox afterwards; a generation still needed
//! by an open transaction is kept until that transaction's commit has been applied.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use ese::logfmt;
use ese::{ApplyReport, PassiveConfig, PassiveReplay};
use volume::FsRef;

use crate::inspector::{InspectError, Inspector};

/// At most this many generations, and about this many bytes of log, are applied in one batch
/// (their changed pages are held in memory until journaled).
const MAX_BATCH_GENERATIONS: usize = 64;
const MAX_BATCH_BYTES: u64 = 64 << 20;

/// Why the replayer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("replay into the passive copy failed: {0}")]
    Engine(#[from] ese::EngineError),
    #[error("inbox {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the replayer thread could not be started or panicked: {0}")]
    Thread(String),
}

/// Where the replayer reads shipped generations and which passive copy it feeds.
#[derive(Debug, Clone)]
pub struct ReplayerConfig {
    pub passive: PassiveConfig,
    pub inbox_fs: FsRef,
    pub inbox: PathBuf,
}

/// Applies shipped generations to a passive copy.
#[derive(Debug)]
pub struct Replayer {
    cfg: ReplayerConfig,
    passive: PassiveReplay,
    inspector: Inspector,
    /// The oldest generation the active still has, when known: shipped generations from it on
    /// are kept even once replayed (the active has not truncated them, so a backup of the
    /// copy may still need them). `None`: only the checkpoint decides.
    active_oldest: Option<u32>,
}

impl Replayer {
    /// Opens the passive copy (resuming from its checkpoint) and its inbox.
    pub fn open(cfg: ReplayerConfig) -> Result<Replayer, ReplayError> {
        let passive = PassiveReplay::open(cfg.passive.clone())?;
        let st = passive.state();
        let previous = (st.last_created != 0).then_some(st.last_created);
        let inspector = Inspector::new(
            cfg.passive.prefix.clone(),
            st.signature,
            st.replayed_generation + 1,
            previous,
        );
        cfg.inbox_fs
            .create_dir_all(&cfg.inbox)
            .map_err(|source| ReplayError::Io { path: cfg.inbox.clone(), source })?;
        Ok(Replayer { cfg, passive, inspector, active_oldest: None })
    }

    /// The last generation applied.
    pub fn replayed_generation(&self) -> u32 {
        self.passive.replayed_generation()
    }

    /// The passive copy.
    pub fn passive(&self) -> &PassiveReplay {
        &self.passive
    }

    /// Applies the next generation if it is in the inbox; `None` when it is not there yet.
    pub fn step(&mut self) -> Result<Option<ApplyReport>, ReplayError> {
        let next = self.passive.replayed_generation() + 1;
        let path = self.cfg.inbox.join(logfmt::generation_name(&self.cfg.passive.prefix, next));
        let fs = self.cfg.inbox_fs.clone();
        let there =
            fs.exists(&path).map_err(|source| ReplayError::Io { path: path.clone(), source })?;
        if !there {
            return Ok(None);
        }
        let inspected = self.inspector.check(fs.as_ref(), &path)?;
        let report = self.passive.apply(&fs, &path)?;
        self.inspector.accept(&inspected);
        tracing::debug!(
            generation = next,
            transactions = report.transactions,
            "generation replayed"
        );
        self.prune()?;
        Ok(Some(report))
    }

    /// Applies every generation available in order, in batches (see
    /// [`PassiveReplay::apply_batch`]); returns one report per batch. A generation that fails
    /// inspection stops it after the good ones before it were applied.
    pub fn catch_up(&mut self) -> Result<Vec<ApplyReport>, ReplayError> {
        self.catch_up_until(u32::MAX)
    }

    /// [`Self::catch_up`], but no further than generation `last`: a copier that makes the
    /// arrival of a batch in the inbox durable only at its end admits replay up to it, so that
    /// the checkpoint never passes a generation whose name a power loss could still take back.
    pub fn catch_up_until(&mut self, last: u32) -> Result<Vec<ApplyReport>, ReplayError> {
        let mut out = Vec::new();
        loop {
            let fs = self.cfg.inbox_fs.clone();
            let mut inspector = self.inspector.clone();
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            let mut failed = None;
            while batch.len() < MAX_BATCH_GENERATIONS && bytes < MAX_BATCH_BYTES {
                let g = inspector.next_generation();
                if g > last {
                    break;
                }
                let path =
                    self.cfg.inbox.join(logfmt::generation_name(&self.cfg.passive.prefix, g));
                let there = fs
                    .exists(&path)
                    .map_err(|source| ReplayError::Io { path: path.clone(), source })?;
                if !there {
                    break;
                }
                match inspector.check(fs.as_ref(), &path) {
                    Ok(ins) => {
                        bytes += u64::from(ins.header.file_size);
                        inspector.accept(&ins);
                        batch.push(path);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                let report = self.passive.apply_batch(&fs, &batch)?;
                self.inspector = inspector;
                tracing::debug!(
                    generation = report.generation,
                    generations = batch.len(),
                    transactions = report.transactions,
                    "generations replayed"
                );
                self.prune()?;
                out.push(report);
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
            if batch.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Tells the replayer the oldest generation the active still has on disk: shipped
    /// generations are deleted only below it (and below the checkpoint).
    pub fn set_active_oldest(&mut self, oldest: u32) {
        self.active_oldest = Some(oldest);
    }

    /// Deletes the inbox's generations the passive will not read again and the active has
    /// truncated; returns the range deleted, if any.
    pub fn prune(&self) -> Result<Option<(u32, u32)>, ReplayError> {
        let keep_from =
            self.passive.oldest_needed_generation().min(self.active_oldest.unwrap_or(u32::MAX));
        let inbox = &self.cfg.inbox;
        let fs = &self.cfg.inbox_fs;
        let io = |source| ReplayError::Io { path: inbox.clone(), source };
        let mut deleted: Option<(u32, u32)> = None;
        for e in logfmt::read_dir_stable(fs.as_ref(), inbox).map_err(io)? {
            if let Some(g) = logfmt::parse_generation_name(&self.cfg.passive.prefix, &e.name)
                && g < keep_from
            {
                let p = inbox.join(&e.name);
                fs.remove_file(&p).map_err(|source| ReplayError::Io { path: p.clone(), source })?;
                deleted = Some(match deleted {
                    Some((lo, hi)) => (lo.min(g), hi.max(g)),
                    None => (g, g),
                });
            }
        }
        Ok(deleted)
    }

    /// Runs the replayer on its own thread: it catches up, then looks at the inbox again
    /// every `poll` until the handle stops it or an error stops it.
    pub fn spawn(mut self, poll: Duration) -> Result<ReplayerHandle, ReplayError> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("replayer".into())
            .spawn(move || {
                loop {
                    self.catch_up()?;
                    match stop_rx.recv_timeout(poll) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(self),
                    }
                }
            })
            .map_err(|e| ReplayError::Thread(e.to_string()))?;
        Ok(ReplayerHandle { stop: stop_tx, thread })
    }
}

/// A replayer running on its own thread.
#[derive(Debug)]
pub struct ReplayerHandle {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Result<Replayer, ReplayError>>,
}

impl ReplayerHandle {
    /// Whether the thread has ended (stopped by an error).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the thread after its current step; returns the replayer, or the error that
    /// stopped it.
    pub fn stop(self) -> Result<Replayer, ReplayError> {
        // The thread may already have ended on an error; the join below reports it.
        let _ = self.stop.send(());
        self.thread.join().map_err(|_| ReplayError::Thread("replayer thread panicked".into()))?
    }
}
