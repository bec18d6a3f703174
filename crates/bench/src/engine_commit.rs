//! `engine-commit`: durable commits of one 1 KiB row each, with 1, 4 and 16 concurrent
//! committers, the engine side by side with SQLite (WAL, synchronous=FULL) on the same disk.
//!
//! Both sides get the same time window per committer count; the figures are commits per second
//! and CPU microseconds per commit (user + system time of the whole process over the window,
//! from `getrusage`, so the log flusher and the lazy writer count too). On a fast disk the CPU
//! per commit, not the fsync, decides the rate: the engine's group commit lets concurrent
//! committers share one log fsync, so at 16 committers its rate is bounded by the work done
//! under its writer lock; SQLite serializes writers and fsyncs its WAL once per commit.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use ese::{Durability, Instance, InstanceConfig};

use crate::cpu::Cpu;
use volume::{FsRef, HostFs};

const ROW: usize = 1024;

fn window() -> Duration {
    Duration::from_millis(
        std::env::var("BENCH_WINDOW_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2500),
    )
}

pub(crate) fn row(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; ROW];
    for (n, b) in v.iter_mut().enumerate() {
        *b = (i as usize).wrapping_mul(31).wrapping_add(n) as u8;
    }
    v
}

pub(crate) fn run_threads(
    committers: usize,
    work: Arc<dyn Fn(usize, u64) -> Result<()> + Send + Sync>,
) -> Result<f64> {
    Ok(run_measured(committers, work)?.rate())
}

/// What one side did in its window.
pub(crate) struct Run {
    pub commits: u64,
    pub elapsed: Duration,
    pub cpu: Cpu,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `work` on `committers` threads for the window; counts the operations and the CPU time
/// the whole process used meanwhile.
pub(crate) fn run_measured(
    committers: usize,
    work: Arc<dyn Fn(usize, u64) -> Result<()> + Send + Sync>,
) -> Result<Run> {
    let cpu = Cpu::now();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..committers)
        .map(|th| {
            let (stop, done, work) = (stop.clone(), done.clone(), work.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    work(th, i)?;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(window());
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("a committer thread panicked"))??;
    }
    let (elapsed, cpu) = (start.elapsed(), Cpu::since(cpu));
    Ok(Run { commits: done.load(Ordering::Relaxed), elapsed, cpu })
}

fn engine(dir: &Path, committers: usize) -> Result<Run> {
    let fs: FsRef = Arc::new(HostFs::new(dir.join(format!("engine-{committers}")))?);
    let inst =
        Arc::new(Instance::create(InstanceConfig::new(fs.clone(), "logs", fs.clone(), "sys"))?);
    inst.create_database("db", fs.clone(), "db/db.edb")?;
    let mut t = inst.begin_write()?;
    t.create_table("db", "rows")?;
    t.commit(Durability::Durable)?;
    let i2 = inst.clone();
    let run = run_measured(
        committers,
        Arc::new(move |th, i| {
            let mut t = i2.begin_write()?;
            t.put("db", "rows", &((th as u64) << 40 | i).to_be_bytes(), &row(i))?;
            t.commit(Durability::Durable)?;
            Ok(())
        }),
    )?;
    inst.shutdown()?;
    Ok(run)
}

fn sqlite(dir: &Path, committers: usize) -> Result<Run> {
    let path = dir.join(format!("sqlite-{committers}.db"));
    let c = rusqlite::Connection::open(&path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.execute("CREATE TABLE rows (k INTEGER PRIMARY KEY, v BLOB NOT NULL)", [])?;
    drop(c);
    let conns: Vec<_> = (0..committers)
        .map(|_| -> Result<_> {
            let c = rusqlite::Connection::open(&path)?;
            c.pragma_update(None, "synchronous", "FULL")?;
            c.busy_timeout(Duration::from_secs(30))?;
            Ok(parking(c))
        })
        .collect::<Result<_>>()?;
    let conns = Arc::new(conns);
    run_measured(
        committers,
        Arc::new(move |th, i| {
            // A poisoned lock means another committer panicked; its join reports that.
            let c = conns[th].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            c.execute(
                "INSERT INTO rows (k, v) VALUES (?1, ?2)",
                rusqlite::params![((th as i64) << 40) | i as i64, row(i)],
            )?;
            Ok(())
        }),
    )
}

fn parking(c: rusqlite::Connection) -> std::sync::Mutex<rusqlite::Connection> {
    std::sync::Mutex::new(c)
}

/// Runs the scenario and prints one JSON line per committer count.
pub fn run() -> Result<()> {
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/work".into());
    let dir = tempfile::Builder::new().prefix("bench-engine-commit-").tempdir_in(base)?;
    let counts: Vec<usize> = match std::env::var("BENCH_COMMITTERS") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1, 4, 16],
    };
    for committers in counts {
        let e = engine(dir.path(), committers)?;
        let s = sqlite(dir.path(), committers)?;
        let (eu, es, et) = e.cpu.per_op_us(e.commits);
        let (su, ss, st) = s.cpu.per_op_us(s.commits);
        let (er, sr) = (e.rate(), s.rate());
        println!(
            "{}",
            serde_json::json!({
                "scenario": "engine-commit",
                "committers": committers,
                "engine_commits_s": (er * 10.0).round() / 10.0,
                "sqlite_commits_s": (sr * 10.0).round() / 10.0,
                "ratio": ((er / sr) * 100.0).round() / 100.0,
                "engine_cpu_us_per_commit": et,
                "engine_user_us": eu,
                "engine_sys_us": es,
                "sqlite_cpu_us_per_commit": st,
                "sqlite_user_us": su,
                "sqlite_sys_us": ss,
                "cpu_ratio": if et > 0.0 { (st / et * 100.0).round() / 100.0 } else { 0.0 },
            })
        );
    }
    Ok(())
}
