//! `sync-commit-cost`: what a synchronous copy costs a durable commit.
//!
//! Side by side, per committer count (1 and 16, or `BENCH_COMMITTERS`): durable commits of one
//! 1 KiB row each on an engine instance on the host file system with no commit gate, and on
//! another with a [`SyncGate`] requiring one copy, a real [`PassiveCopy`] following the
//! current generation in block mode over mutual TLS on loopback (its node's disk is the same
//! disk here). Each commit then waits for its local fsync, the copy's long-poll answer, the
//! copy's append and fsync, and its next request (the acknowledgement). Figures: commits/s
//! for both and the ratio; group commit carries over, so 16 committers share both waits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ese::{Durability, Instance, InstanceConfig};
use events::MemorySink;
use replication::copy::{CopyConfig, Desired, PassiveCopy};
use replication::protocol::{SeedManifest, StreamInfo, TailChunk};
use replication::source::{ActiveSource, SeedReader, SourceError};
use replication::sync::{SyncGate, SyncMode};
use uuid::Uuid;
use volume::{FsRef, HostFs};

use crate::engine_commit::{row, run_threads};
use crate::replication_lag::{DB, InstanceSource};
use crate::replication_throughput::Loopback;

/// How long the copy may take to seed and start following.
const DEADLINE: Duration = Duration::from_secs(120);

/// The instance source, with block mode answered through the gate.
struct GatedSource {
    inner: InstanceSource,
    gate: Arc<SyncGate>,
}

impl ActiveSource for GatedSource {
    fn stream(&self, sg: &str) -> Result<StreamInfo, SourceError> {
        self.inner.stream(sg)
    }
    fn log_file(&self, sg: &str, generation: u32) -> Result<Vec<u8>, SourceError> {
        self.inner.log_file(sg, generation)
    }
    fn log_tail(
        &self,
        _sg: &str,
        peer: &str,
        generation: u32,
        from: u64,
        wait: Duration,
    ) -> Result<TailChunk, SourceError> {
        replication::tail::serve_tail(
            &self.inner.inst,
            Some(&self.gate),
            peer,
            generation,
            from,
            wait,
        )
    }
    fn start_seed(&self, sg: &str, peer: &str) -> Result<SeedManifest, SourceError> {
        self.inner.start_seed(sg, peer)
    }
    fn seed_file(&self, id: Uuid, index: usize) -> Result<SeedReader, SourceError> {
        self.inner.seed_file(id, index)
    }
    fn end_seed(&self, id: Uuid) -> Result<(), SourceError> {
        self.inner.end_seed(id)
    }
    fn refused(&self, addr: &str, reason: &str) {
        self.inner.refused(addr, reason)
    }
}

fn instance(fs: &FsRef) -> Result<Arc<Instance>> {
    let inst =
        Arc::new(Instance::create(InstanceConfig::new(fs.clone(), "logs", fs.clone(), "sys"))?);
    inst.create_database(DB, fs.clone(), PathBuf::from("db").join(format!("{DB}.edb")))?;
    let mut t = inst.begin_write()?;
    t.create_table(DB, "rows")?;
    t.commit(Durability::Durable)?;
    Ok(inst)
}

fn commits(inst: &Arc<Instance>, committers: usize) -> Result<f64> {
    let i2 = inst.clone();
    run_threads(
        committers,
        Arc::new(move |th, i| {
            let mut t = i2.begin_write()?;
            t.put(DB, "rows", &((th as u64) << 40 | i).to_be_bytes(), &row(i))?;
            t.commit(Durability::Durable)?;
            Ok(())
        }),
    )
}

fn no_gate(dir: &std::path::Path, committers: usize) -> Result<f64> {
    let fs: FsRef = Arc::new(HostFs::new(dir.join(format!("plain-{committers}")))?);
    let inst = instance(&fs)?;
    let rate = commits(&inst, committers)?;
    inst.shutdown()?;
    Ok(rate)
}

fn with_copy(dir: &std::path::Path, committers: usize) -> Result<f64> {
    let base = dir.join(format!("sync-{committers}"));
    let afs: FsRef = Arc::new(HostFs::new(base.join("active"))?);
    let pfs: FsRef = Arc::new(HostFs::new(base.join("passive"))?);
    let inst = instance(&afs)?;
    let gate = Arc::new(SyncGate::new("SG1", Arc::new(MemorySink::new("active"))));
    let inner = InstanceSource {
        inst: inst.clone(),
        fs: afs.clone(),
        db_path: PathBuf::from("db").join(format!("{DB}.edb")),
    };
    let source = Arc::new(GatedSource { inner, gate: gate.clone() });
    let lo = Loopback::start(&base.join("pki"), source)?;
    let copy = PassiveCopy::start(
        CopyConfig {
            sg: "SG1".into(),
            node: "passive".into(),
            fs: pfs,
            dir: "copy".into(),
            events: Arc::new(MemorySink::new("passive")),
            poll: Duration::from_millis(100),
            runtime: lo.rt.handle().clone(),
        },
        Desired {
            active: Some(lo.client.clone()),
            suspended: None,
            seed_serial: 1,
            resumes: 0,
            epoch: 0,
        },
    )?;
    let start = Instant::now();
    while !copy.report().block_mode {
        if start.elapsed() > DEADLINE {
            bail!("the copy never followed the active: {:?}", copy.report());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    gate.set(1, SyncMode::Strict, Duration::from_secs(30));
    inst.set_commit_gate(Some(gate.clone()));
    let rate = commits(&inst, committers);
    inst.set_commit_gate(None);
    copy.stop();
    lo.stop()?;
    inst.shutdown()?;
    rate
}

/// Runs the scenario and prints one JSON line per committer count.
pub fn run() -> Result<()> {
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/work".into());
    let dir = tempfile::Builder::new().prefix("bench-sync-commit-").tempdir_in(base)?;
    let counts: Vec<usize> = match std::env::var("BENCH_COMMITTERS") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1, 16],
    };
    for committers in counts {
        let plain = no_gate(dir.path(), committers)?;
        let sync = with_copy(dir.path(), committers)?;
        println!(
            "{}",
            serde_json::json!({
                "scenario": "sync-commit-cost",
                "committers": committers,
                "no_gate_commits_s": (plain * 10.0).round() / 10.0,
                "sync_commits_s": (sync * 10.0).round() / 10.0,
                "ratio": ((sync / plain) * 100.0).round() / 100.0,
            })
        );
    }
    Ok(())
}
