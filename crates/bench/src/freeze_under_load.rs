//! `freeze-under-load`: what a full backup costs the mail it interrupts.
//!
//! A node with one storage group takes a mail load from several committers, each delivering
//! small messages with durable commits as fast as the store acknowledges them (a closed loop:
//! the highest rate the store sustains here). First a quiet period with no backup, then full
//! backups one after another. Reported, p50/p99/max:
//!
//! - the **freeze window**: from the engine's freeze (event 2001) to its thaw (2003), timed by
//!   a subscriber to the node's event log as each event is emitted;
//! - the **hold**: how long the provider held the volumes' writes to commit the snapshot set
//!   (the backup report's `hold`);
//! - where each hold went: the drain of writes in flight, preparing the snapshots (and any
//!   rescan of a volume that changed since its scan ahead), the nested work (`hold_parts`);
//! - **commit latency** of the deliveries outside any backup, during a backup, and during a
//!   freeze (a delivery counts as during a span when the two overlap).
//!
//! Targets (issue 18): freeze p99 < 50 ms, hold p99 < 5 ms, commit p99 during a backup at most
//! 2× outside.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use ese::Durability;
use events::{Event, Filter, Source};
use serde_json::json;
use store::message::Headers;
use vss::BackupType;

use crate::args::{FreezeUnderLoadArgs, latency_summary};
use crate::hold_parts;
use crate::store_setup::{self, DB, SG};

/// A span of time, as seen by this process.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: Instant,
    end: Instant,
}

impl Span {
    fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }

    fn ms(&self) -> f64 {
        (self.end - self.start).as_secs_f64() * 1e3
    }
}

/// Collects the freeze windows: pairs each job's 2001 with its 2003, stamped on arrival.
fn freeze_windows(rx: Receiver<Event>, stop: Arc<AtomicBool>) -> Vec<Span> {
    let mut open: Vec<(Option<uuid::Uuid>, Instant)> = Vec::new();
    let mut spans = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(e) => {
                let now = Instant::now();
                match e.id {
                    2001 => open.push((e.job, now)),
                    2003 => {
                        if let Some(i) = open.iter().position(|(job, _)| *job == e.job) {
                            let (_, start) = open.swap_remove(i);
                            spans.push(Span { start, end: now });
                        }
                    }
                    _ => {}
                }
            }
            Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Acquire) => {}
            Err(_) => return spans,
        }
    }
}

/// One committer: delivers `body_kib` KiB messages durably until `stop`; returns each
/// delivery's span.
fn committer(
    node: &node::Node,
    n: usize,
    body_kib: u64,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<Span>> {
    let mail = node.store().storage_group(SG)?.mail(DB)?;
    let mailbox = format!("load{n}");
    if !mail.mailboxes()?.contains(&mailbox) {
        mail.create_mailbox(&mailbox)?;
    }
    let mut spans = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        let body = store::load::body((body_kib << 10) as usize, (n as u64) << 40 | i);
        let headers = Headers {
            from: "load@example.org".into(),
            to: vec![format!("{mailbox}@example.org")],
            subject: format!("load {n}/{i}"),
            received_unix_ms: events::now_ms(),
        };
        let start = Instant::now();
        mail.deliver(&mailbox, "Inbox", headers, &body, Durability::Durable)
            .with_context(|| format!("committer {n}, delivery {i}"))?;
        spans.push(Span { start, end: Instant::now() });
        i += 1;
    }
    Ok(spans)
}

/// The latencies (ms) of the deliveries that overlap one of `spans` (`inside`) or none.
fn latencies(commits: &[Span], spans: &[Span], inside: bool) -> Vec<f64> {
    commits.iter().filter(|c| spans.iter().any(|s| s.overlaps(c)) == inside).map(Span::ms).collect()
}

/// Runs the scenario.
pub fn run(opts: &FreezeUnderLoadArgs) -> anyhow::Result<()> {
    let recorder = hold_parts::Recorder::install()?;
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let node = store_setup::start(dir, false)?;
    store_setup::fill(&node, opts.db_mib, 7)?;
    let repo = store_setup::repository(&dir.join("repo"))?;

    let stop_events = Arc::new(AtomicBool::new(false));
    let rx = node.events().subscribe(Filter { source: Some(Source::Engine), ..Filter::default() });
    let collector = {
        let stop = stop_events.clone();
        thread::spawn(move || freeze_windows(rx, stop))
    };

    let stop = AtomicBool::new(false);
    let quiet = Duration::from_secs(opts.quiet_seconds);
    let (commits, backups, holds) = thread::scope(|s| -> anyhow::Result<_> {
        let load: Vec<_> = (0..opts.committers)
            .map(|n| {
                let (node, stop) = (&node, &stop);
                s.spawn(move || committer(node, n as usize, opts.body_kib, stop))
            })
            .collect();
        let run = || -> anyhow::Result<(Vec<Span>, Vec<f64>)> {
            thread::sleep(quiet);
            let (mut backups, mut holds) = (Vec::new(), Vec::new());
            for _ in 0..opts.backups {
                let start = Instant::now();
                let report = store_setup::backup(&node, &repo, BackupType::Full)?;
                backups.push(Span { start, end: Instant::now() });
                holds.push(report.hold.as_secs_f64() * 1e3);
            }
            Ok((backups, holds))
        };
        let ran = run();
        stop.store(true, Ordering::Release);
        let mut commits = Vec::new();
        for h in load {
            let spans = h.join().map_err(|_| anyhow::anyhow!("a committer panicked"))??;
            commits.extend(spans);
        }
        let (backups, holds) = ran?;
        Ok((commits, backups, holds))
    })?;
    stop_events.store(true, Ordering::Release);
    let freezes = collector.join().map_err(|_| anyhow::anyhow!("the event collector panicked"))?;
    anyhow::ensure!(
        freezes.len() as u64 >= opts.backups,
        "saw {} freeze windows (2001 → 2003) for {} backups",
        freezes.len(),
        opts.backups
    );

    let outside = latencies(&commits, &backups, false);
    let during = latencies(&commits, &backups, true);
    let frozen = latencies(&commits, &freezes, true);
    let p99 = |xs: &[f64]| latency_summary(xs.to_vec())["p99"].as_f64().unwrap_or(f64::NAN);
    let first = backups.first().map_or_else(Instant::now, |b| b.start);
    let last = backups.last().map_or_else(Instant::now, |b| b.end);
    let backing_up = (last - first).as_secs_f64();
    let freeze_ms: Vec<f64> = freezes.iter().map(Span::ms).collect();
    println!(
        "{}",
        json!({
            "scenario": "freeze-under-load",
            "db_mib": opts.db_mib,
            "committers": opts.committers,
            "body_kib": opts.body_kib,
            "backups": backups.len(),
            "commits_per_s_outside": outside.len() as f64 / quiet.as_secs_f64().max(1e-9),
            "commits_per_s_during": during.len() as f64 / backing_up.max(1e-9),
            "freeze_ms": latency_summary(freeze_ms.clone()),
            "hold_ms": latency_summary(holds.clone()),
            "hold_parts": recorder.summary(),
            "commit_ms_outside": latency_summary(outside.clone()),
            "commit_ms_during_backup": latency_summary(during.clone()),
            "commit_ms_during_freeze": latency_summary(frozen),
            "commit_p99_ratio": p99(&during) / p99(&outside),
            "targets": {
                "freeze_p99_ms_lt": 50,
                "hold_p99_ms_lt": 5,
                "commit_p99_ratio_le": 2,
                "met": p99(&freeze_ms) < 50.0 && p99(&holds) < 5.0
                    && p99(&during) <= 2.0 * p99(&outside),
            },
        })
    );
    Ok(())
}
