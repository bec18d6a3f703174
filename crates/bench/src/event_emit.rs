//! `event-emit`: what an event costs its emitter.
//!
//! Appends to the persistent event log with an fsync per record (the default, so an event
//! survives a crash right after the action it reports), every 64 records, and never; then 8
//! threads emitting with an fsync per record, which share fsyncs (group commit). Was a test
//! that returned early unless `SHADOWCOPY_STRESS` was set.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use events::catalog::COORD_ABORT;
use events::{EventLog, EventSink, LogOptions};
use serde_json::json;
use uuid::Uuid;
use volume::{FsRef, HostFs};

use crate::args::ScratchDir;

fn open(dir: &std::path::Path, sync_every: u32) -> anyhow::Result<EventLog> {
    let fs: FsRef = Arc::new(HostFs::new(dir)?);
    Ok(EventLog::open(fs, "events", "bench", LogOptions { sync_every, ..LogOptions::default() })?)
}

/// Runs the scenario.
pub fn run(opts: &ScratchDir) -> anyhow::Result<()> {
    let scratch = opts.scratch()?;
    for sync_every in [1u32, 64, 0] {
        let log = open(&scratch.path.join(format!("sync-{sync_every}")), sync_every)?;
        let n = if sync_every == 1 { 2_000 } else { 50_000 };
        let t = Instant::now();
        for i in 0..n {
            log.emit(&COORD_ABORT, Some(Uuid::nil()), json!({"writers": 2, "reason": i}));
        }
        log.sync()?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({
                "scenario": "event-emit",
                "sync_every": sync_every,
                "events": n,
                "per_sec": n as f64 / secs,
                "us_per_event": secs * 1e6 / n as f64,
            })
        );
    }
    let log = Arc::new(open(&scratch.path.join("group"), 1)?);
    let (threads, per_thread) = (8, 250);
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    log.emit(&COORD_ABORT, None, json!({"writers": 1, "reason": i}));
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("an emitting thread panicked"))
            .context("group commit")?;
    }
    let secs = t.elapsed().as_secs_f64();
    let n = threads * per_thread;
    println!(
        "{}",
        json!({
            "scenario": "event-emit",
            "group_commit_threads": threads,
            "sync_every": 1,
            "events": n,
            "per_sec": n as f64 / secs,
        })
    );
    Ok(())
}
