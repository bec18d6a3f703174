//! `replication-lag`: how far a passive copy trails its active under a steady mail load.
//!
//! An engine instance on the host file system is the active (default configuration: 1 MiB
//! generations); a small [`ActiveSource`] over it answers the replication protocol (the log
//! stream, closed generations, and a seed: the database file copied while the engine holds it
//! frozen). A real [`PassiveCopy`] on another directory seeds itself over mutual TLS on
//! loopback, then fetches, inspects and replays on its own thread, polling every 500 ms as
//! the node's copies do. As the node does, the active's log is rolled when nothing was logged
//! for a tick (500 ms), so a quiet storage group's last commits still reach the copy.
//!
//! The load: `--rate` messages per second (default 20) for `--seconds` (default 60), each one
//! durable transaction storing a `--body-kib` KiB body (default 16) under a new key. Every
//! 20 ms a sampler records the copy's `copy_queue_length` (generations the active closed that
//! the copy has not inspected, as the copy reports it: against the active's last closed
//! generation as last heard, at the start of its round), the same against the active's actual
//! last closed generation (`copy_queue_length_vs_active`), the replay queue, and when each
//! generation was closed on the active and replayed on the passive. A commit's lag is the time
//! from its commit to the replay of the generation holding it (so it includes the time that
//! generation took to fill up and close); `close_to_replayed_ms` is the copy's own part, from
//! a generation's close to its replay (within the 20 ms sampling). Reported: p50/p99/max.
//!
//! Block mode: the source also serves the tail of the active's current generation
//! ([`replication::tail::serve_tail`], no synchronous-copy gate), so once caught up the copy
//! follows the generation being written and its `durable` position moves with each flush,
//! not with each close. A second sampler records the copy's report every millisecond (its
//! `durable` LSN and `block_mode`); `block_commit_to_durable_ms` is, per commit, the time from
//! `commit` returning to the first sample whose `durable` is at or past the commit's LSN
//! (so within about 1 ms of sampling), and `block_mode_share` the share of those samples taken
//! with the copy in block mode. With `--no-block` the source offers no tail: the copy follows
//! closed generations only and `durable` moves with each generation it inspects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ese::{BackupKind, Durability, Instance, InstanceConfig, Lsn, logfmt};
use events::MemorySink;
use parking_lot::Mutex;
use replication::copy::{CopyConfig, Desired, PassiveCopy};
use replication::protocol::{self, SeedFile, SeedManifest, StreamInfo, TailChunk};
use replication::source::{ActiveSource, SeedReader, SourceError};
use serde_json::json;
use uuid::Uuid;
use volume::{FsRef, HostFs, OpenMode};

use crate::args::{LagArgs, latency_summary as summary};
use crate::replication_throughput::{ACTIVE, Loopback, SG};
use crate::store_setup::MIB;

pub(crate) const DB: &str = "db";
const TABLE: &str = "rows";
/// The node's tick: the copies' poll and the idle roll.
const TICK: Duration = Duration::from_millis(500);
/// How long the copy may take to seed, and to catch up after the load.
const DEADLINE: Duration = Duration::from_secs(120);
/// How often the block-mode sampler reads the copy's report: the resolution of
/// `block_commit_to_durable_ms`.
const FAST_SAMPLE: Duration = Duration::from_millis(1);

/// The active's side of the protocol over a running instance.
pub(crate) struct InstanceSource {
    pub(crate) inst: Arc<Instance>,
    pub(crate) fs: FsRef,
    pub(crate) db_path: PathBuf,
}

fn internal(e: impl std::fmt::Display) -> SourceError {
    SourceError::Internal(e.to_string())
}

impl InstanceSource {
    fn seed_path(id: Uuid) -> PathBuf {
        PathBuf::from("seeds").join(format!("{id}.edb"))
    }
}

impl ActiveSource for InstanceSource {
    fn stream(&self, sg: &str) -> Result<StreamInfo, SourceError> {
        let log = self.inst.log_state().map_err(internal)?;
        Ok(StreamInfo {
            sg: sg.into(),
            prefix: self.inst.config().prefix.clone(),
            signature: protocol::hex(&self.inst.signature()),
            produced: log.current_generation.saturating_sub(1),
            oldest: log.generations.first().copied().unwrap_or(log.current_generation),
            node: ACTIVE.into(),
            epoch: 0,
        })
    }

    fn log_file(&self, _: &str, generation: u32) -> Result<Vec<u8>, SourceError> {
        let cfg = self.inst.config();
        let path = cfg.log_dir.join(logfmt::generation_name(&cfg.prefix, generation));
        volume::fs::read_all(self.fs.as_ref(), &path)
            .map_err(|e| SourceError::NotFound(format!("{}: {e}", path.display())))
    }

    fn start_seed(&self, sg: &str, _: &str) -> Result<SeedManifest, SourceError> {
        let id = Uuid::new_v4();
        let to = Self::seed_path(id);
        let mut b = self.inst.backup_session(BackupKind::Copy).map_err(internal)?;
        b.prepare().map_err(internal)?;
        let generation = b.freeze().map_err(internal)?;
        let copied = (|| -> std::io::Result<u64> {
            self.fs.create_dir_all(Path::new("seeds"))?;
            let data = volume::fs::read_all(self.fs.as_ref(), &self.db_path)?;
            let f = self.fs.open(&to, OpenMode::Create)?;
            f.write_at(&data, 0)?;
            f.sync()?;
            Ok(data.len() as u64)
        })();
        b.thaw().map_err(internal)?;
        b.end().map_err(internal)?;
        let size = copied.map_err(internal)?;
        let cfg = self.inst.config();
        Ok(SeedManifest {
            id,
            sg: sg.into(),
            prefix: cfg.prefix.clone(),
            signature: protocol::hex(&self.inst.signature()),
            generation,
            log_file_size: cfg.log_file_size,
            page_size: cfg.page_size as u32,
            databases: vec![SeedFile { name: DB.into(), size }],
            snapshot_set: Uuid::nil(),
        })
    }

    fn seed_file(&self, id: Uuid, index: usize) -> Result<SeedReader, SourceError> {
        if index != 0 {
            return Err(SourceError::NotFound(format!("no database {index}")));
        }
        let p = Self::seed_path(id);
        let file = self.fs.open(&p, OpenMode::Read).map_err(internal)?;
        let len = file.len().map_err(internal)?;
        Ok(SeedReader { file, len })
    }

    fn end_seed(&self, id: Uuid) -> Result<(), SourceError> {
        self.fs.remove_file(&Self::seed_path(id)).map_err(internal)
    }

    /// Block mode without a synchronous-copy gate: the copy follows the current generation,
    /// commits never wait for it.
    fn log_tail(
        &self,
        _: &str,
        peer: &str,
        generation: u32,
        from: u64,
        wait: Duration,
    ) -> Result<TailChunk, SourceError> {
        replication::tail::serve_tail(&self.inst, None, peer, generation, from, wait)
    }

    fn refused(&self, addr: &str, reason: &str) {
        eprintln!("warning: connection from {addr} refused: {reason}");
    }
}

/// `--no-block`: the instance source without block mode (the trait's default `log_tail`,
/// which refuses), so the copy follows closed generations only, as before block mode.
struct ClosedOnly(InstanceSource);

impl ActiveSource for ClosedOnly {
    fn stream(&self, sg: &str) -> Result<StreamInfo, SourceError> {
        self.0.stream(sg)
    }
    fn log_file(&self, sg: &str, generation: u32) -> Result<Vec<u8>, SourceError> {
        self.0.log_file(sg, generation)
    }
    fn start_seed(&self, sg: &str, peer: &str) -> Result<SeedManifest, SourceError> {
        self.0.start_seed(sg, peer)
    }
    fn seed_file(&self, id: Uuid, index: usize) -> Result<SeedReader, SourceError> {
        self.0.seed_file(id, index)
    }
    fn end_seed(&self, id: Uuid) -> Result<(), SourceError> {
        self.0.end_seed(id)
    }
    fn refused(&self, addr: &str, reason: &str) {
        self.0.refused(addr, reason)
    }
}

/// One reading of the copy's report by the block-mode sampler.
#[derive(Debug, Clone, Copy)]
struct DurableSample {
    at: Instant,
    durable: Lsn,
    block_mode: bool,
}

/// Per commit (when `commit` returned, its LSN), the milliseconds until the first sample at or
/// after it whose `durable` reaches the LSN; commits no sample saw durable are counted apart.
/// `samples` is in time order (one sampler thread).
fn commit_to_durable(commits: &[(Instant, Lsn)], samples: &[DurableSample]) -> (Vec<f64>, usize) {
    let mut lags = Vec::with_capacity(commits.len());
    let mut missed = 0;
    for (t, lsn) in commits {
        let first = samples.partition_point(|s| s.at < *t);
        match samples[first..].iter().find(|s| s.durable >= *lsn) {
            Some(s) => lags.push(s.at.saturating_duration_since(*t).as_secs_f64() * 1e3),
            None => missed += 1,
        }
    }
    (lags, missed)
}

/// Waits until `done` holds, polling every 20 ms; fails naming `what` after [`DEADLINE`].
fn wait_for(
    what: &str,
    copy: &PassiveCopy,
    done: impl Fn(&PassiveCopy) -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done(copy) {
        if start.elapsed() > DEADLINE {
            bail!("timed out waiting for {what}; the copy reports {:?}", copy.report());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs the scenario.
pub fn run(opts: &LagArgs) -> anyhow::Result<()> {
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let active = HostFs::new(dir.join("active"))?;
    let afs: FsRef = Arc::new(active);
    let pfs: FsRef = Arc::new(HostFs::new(dir.join("passive"))?);
    let db_path = PathBuf::from("db").join(format!("{DB}.edb"));
    let inst =
        Arc::new(Instance::create(InstanceConfig::new(afs.clone(), "logs", afs.clone(), "sys"))?);
    inst.create_database(DB, afs.clone(), &db_path)?;
    let mut tx = inst.begin_write()?;
    tx.create_table(DB, TABLE)?;
    tx.commit(Durability::Durable)?;

    let source = InstanceSource { inst: inst.clone(), fs: afs.clone(), db_path };
    let lo = if opts.no_block {
        Loopback::start(&dir.join("pki"), Arc::new(ClosedOnly(source)))?
    } else {
        Loopback::start(&dir.join("pki"), Arc::new(source))?
    };
    let copy = Arc::new(PassiveCopy::start(
        CopyConfig {
            sg: SG.into(),
            node: "passive".into(),
            fs: pfs.clone(),
            dir: "copy".into(),
            events: Arc::new(MemorySink::new("passive")),
            poll: TICK,
            runtime: lo.rt.handle().clone(),
        },
        Desired {
            active: Some(lo.client.clone()),
            suspended: None,
            seed_serial: 1,
            resumes: 0,
            epoch: 0,
        },
    )?);
    let seeded = inst.log_state()?.current_generation;
    wait_for("the copy to seed and replay up to the seed", &copy, |c| {
        let r = c.report();
        r.last_replayed_generation + 1 >= seeded && r.last_error.is_none()
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    // The idle roll, as the node's tick does it.
    let roller = {
        let (inst, stop) = (inst.clone(), stop.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut seen = inst.log_end();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                let end = inst.log_end();
                if end == seen {
                    inst.roll_log_if_idle(end)?;
                }
                seen = end;
            }
            Ok(())
        })
    };
    // The sampler: queues, and when each generation was first seen replayed.
    let replayed_at: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let closed_at: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let queues: Arc<Mutex<[Vec<f64>; 3]>> = Arc::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, replayed_at, closed_at, queues, copy, inst) = (
            sampling.clone(),
            replayed_at.clone(),
            closed_at.clone(),
            queues.clone(),
            copy.clone(),
            inst.clone(),
        );
        std::thread::spawn(move || {
            let (mut last, mut last_closed) = (0u32, 0u32);
            while sampling.load(Ordering::Relaxed) {
                let closed = inst.log_end().generation().saturating_sub(1);
                let r = copy.report();
                let now = Instant::now();
                if closed > last_closed {
                    last_closed = closed;
                    closed_at.lock().push((closed, now));
                }
                if r.last_replayed_generation > last {
                    last = r.last_replayed_generation;
                    replayed_at.lock().push((last, now));
                }
                let mut q = queues.lock();
                q[0].push(f64::from(r.copy_queue()));
                q[1].push(f64::from(closed.saturating_sub(r.last_inspected_generation)));
                q[2].push(f64::from(r.replay_queue()));
                drop(q);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // The block-mode sampler: the copy's durable position, every millisecond.
    let durable_samples: Arc<Mutex<Vec<DurableSample>>> = Arc::default();
    let fast = {
        let (sampling, samples, copy) = (sampling.clone(), durable_samples.clone(), copy.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                let r = copy.report();
                let s = DurableSample {
                    at: Instant::now(),
                    durable: r.durable,
                    block_mode: r.block_mode,
                };
                samples.lock().push(s);
                std::thread::sleep(FAST_SAMPLE);
            }
        })
    };

    // The mail load.
    let mut commits: Vec<(Instant, u32)> = Vec::new();
    let mut commit_lsns: Vec<(Instant, Lsn)> = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(1) as f64);
    let n = opts.seconds * opts.rate.max(1);
    let mut body = vec![0u8; (opts.body_kib.max(1) * 1024) as usize];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let start = Instant::now();
    let log_start = inst.log_end();
    for i in 0..n {
        let due = start + interval.mul_f64(i as f64);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        for w in body.chunks_mut(8) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            w.copy_from_slice(&rng.to_le_bytes()[..w.len()]);
        }
        let mut tx = inst.begin_write()?;
        tx.put(DB, TABLE, &i.to_be_bytes(), &body)?;
        let lsn = tx.commit(Durability::Durable)?;
        let at = Instant::now();
        commits.push((at, inst.log_end().generation()));
        commit_lsns.push((at, lsn));
    }
    let load_s = start.elapsed().as_secs_f64();
    let last_gen = commits.last().map(|c| c.1).unwrap_or(0);
    let first_gen = commits.first().map(|c| c.1).unwrap_or(0);
    // The idle roll closes the last generation; the copy then catches up.
    // Waits on what the sampler saw, so that the last generation has its time recorded.
    let caught_up = wait_for("the copy to replay the last commit's generation", &copy, |_| {
        replayed_at.lock().last().is_some_and(|(g, _)| *g >= last_gen)
    });
    stop.store(true, Ordering::Relaxed);
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let _ = fast.join();
    roller.join().map_err(|_| anyhow::anyhow!("the roller panicked"))??;
    caught_up?;
    let report = copy.report();
    if let Ok(c) = Arc::try_unwrap(copy) {
        c.stop();
    }
    lo.stop()?;
    inst.shutdown()?;

    let replayed_at = replayed_at.lock().clone();
    let mut lags = Vec::with_capacity(commits.len());
    for (t, g) in &commits {
        let at = replayed_at
            .iter()
            .find(|(r, _)| r >= g)
            .map(|(_, at)| *at)
            .with_context(|| format!("generation {g:#X} was never seen replayed"))?;
        lags.push(at.saturating_duration_since(*t).as_secs_f64() * 1e3);
    }
    let [copy_q, copy_q_actual, replay_q] = queues.lock().clone();
    // Per generation of the load: from its close on the active to its replay.
    let closed_at = closed_at.lock().clone();
    let mut close_lags = Vec::new();
    for (g, closed) in closed_at.iter().filter(|(g, _)| *g >= first_gen && *g <= last_gen) {
        if let Some((_, at)) = replayed_at.iter().find(|(r, _)| r >= g) {
            close_lags.push(at.saturating_duration_since(*closed).as_secs_f64() * 1e3);
        }
    }
    let samples = durable_samples.lock().clone();
    let (block_lags, never_durable) = commit_to_durable(&commit_lsns, &samples);
    let in_block = samples.iter().filter(|s| s.block_mode).count();
    let block_share = in_block as f64 / samples.len().max(1) as f64;
    let generations = last_gen.saturating_sub(log_start.generation()) + 1;
    let log_mib = f64::from(generations) * f64::from(inst.config().log_file_size) / MIB;
    println!(
        "{}",
        json!({
            "scenario": "replication-lag",
            "messages": n,
            "rate_per_s": n as f64 / load_s,
            "body_kib": opts.body_kib,
            "load_s": load_s,
            "generations": generations,
            "log_mib_s": log_mib / load_s,
            "commit_to_replayed_ms": summary(lags),
            "close_to_replayed_ms": summary(close_lags),
            "block_commit_to_durable_ms": summary(block_lags),
            "block_commits_never_seen_durable": never_durable,
            "block_mode_share": block_share,
            "block_offered": !opts.no_block,
            "durable_sample_ms": FAST_SAMPLE.as_millis() as u64,
            "copy_queue_length": summary(copy_q),
            "copy_queue_length_vs_active": summary(copy_q_actual),
            "replay_queue_length": summary(replay_q),
            "final_report": serde_json::to_value(&report)?,
            "poll_ms": TICK.as_millis() as u64,
            "note": "a commit's lag includes its generation filling up and closing (1 MiB generations, idle roll after 500 ms)",
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_lags_until_the_first_later_sample_that_reaches_its_lsn() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let sample = |at: u64, g: u32, off: u32| DurableSample {
            at: ms(at),
            durable: Lsn::new(g, off),
            block_mode: true,
        };
        let samples = [sample(0, 5, 100), sample(2, 5, 300), sample(5, 5, 300), sample(9, 6, 0)];
        let commits = [
            // Already durable at the sample taken when it returned: 0 ms.
            (ms(0), Lsn::new(5, 100)),
            // A sample before the commit returned does not count, even if it reached the LSN.
            (ms(3), Lsn::new(5, 200)),
            // Reached by the next generation's start.
            (ms(4), Lsn::new(5, 400)),
            // Never reached.
            (ms(6), Lsn::new(6, 10)),
        ];
        let (lags, missed) = commit_to_durable(&commits, &samples);
        let rounded: Vec<f64> = lags.iter().map(|l| (l * 1e3).round() / 1e3).collect();
        assert_eq!(rounded, vec![0.0, 2.0, 5.0]);
        assert_eq!(missed, 1);
    }
}
