//! Figures the node keeps for `/metrics` (Prometheus text format).
//!
//! Job figures (hold, duration, bytes) are recorded by the API when its jobs end, twice: as
//! gauges of the last few jobs (labelled by job, to read one job's figures) and as `*_total`
//! counters since the node started (what rates and alerts are computed from: a gauge of
//! recent jobs forgets the oldest, a counter never does). Gauges that describe the present
//! (shadow storage, log generations) and the volumes' copy-on-write counters are read when
//! scraped.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::Node;

/// How many finished jobs of each kind are kept.
const KEEP: usize = 16;

/// One finished backup, as `/metrics` reports it.
#[derive(Debug, Clone)]
pub struct BackupFigures {
    pub job: String,
    pub storage_group: String,
    pub backup_type: String,
    pub hold_seconds: f64,
    pub elapsed_seconds: f64,
    pub bytes: u64,
    pub stored_bytes: u64,
}

/// One snapshot set committed, by `create shadow` or for a backup job.
#[derive(Debug, Clone)]
pub struct CommitFigures {
    pub set: String,
    /// `create_shadow` or `backup`.
    pub origin: &'static str,
    pub commit_seconds: f64,
    pub hold_seconds: f64,
}

/// Counters since the node started.
#[derive(Debug, Default)]
struct Totals {
    backups_completed: AtomicU64,
    backups_failed: AtomicU64,
    backup_bytes: AtomicU64,
    backup_stored_bytes: AtomicU64,
    restores_completed: AtomicU64,
    restores_failed: AtomicU64,
    restore_bytes: AtomicU64,
}

/// The recorded figures.
#[derive(Debug, Default)]
pub struct Metrics {
    backups: Mutex<VecDeque<BackupFigures>>,
    commits: Mutex<VecDeque<CommitFigures>>,
    totals: Totals,
    /// Per storage group, when a backup of it last succeeded (Unix seconds): what an alert
    /// on "no backup for a day" is written against.
    last_success: Mutex<BTreeMap<String, f64>>,
    /// Scheduled runs by (schedule, result).
    schedule_runs: Mutex<BTreeMap<(String, String), u64>>,
}

fn push<T>(q: &Mutex<VecDeque<T>>, v: T) {
    let mut q = q.lock();
    if q.len() == KEEP {
        q.pop_front();
    }
    q.push_back(v);
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// A backup that published its set.
    pub fn record_backup(&self, f: BackupFigures) {
        self.record_backup_success(&f.storage_group);
        add(&self.totals.backups_completed, 1);
        add(&self.totals.backup_bytes, f.bytes);
        add(&self.totals.backup_stored_bytes, f.stored_bytes);
        push(&self.backups, f);
    }

    /// A backup of `storage_group` succeeded now (here, or on the member it was forwarded to).
    pub fn record_backup_success(&self, storage_group: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.lock().insert(storage_group.to_string(), now);
    }

    /// Makes a schedule's run counters exist at zero, so that a rate or an alert over them
    /// has a series before the first run.
    pub fn register_schedule(&self, schedule: &str) {
        let mut runs = self.schedule_runs.lock();
        for result in [api::ScheduleResult::Ok, api::ScheduleResult::Failed] {
            runs.entry((schedule.to_string(), result.name().to_string())).or_insert(0);
        }
    }

    /// One scheduled run ended with `result`.
    pub fn record_schedule_run(&self, schedule: &str, result: api::ScheduleResult) {
        *self
            .schedule_runs
            .lock()
            .entry((schedule.to_string(), result.name().to_string()))
            .or_insert(0) += 1;
    }

    pub fn record_backup_failure(&self) {
        add(&self.totals.backups_failed, 1);
    }

    /// A restore that put its databases in place; `bytes` written from the repository.
    pub fn record_restore(&self, bytes: u64) {
        add(&self.totals.restores_completed, 1);
        add(&self.totals.restore_bytes, bytes);
    }

    pub fn record_restore_failure(&self) {
        add(&self.totals.restores_failed, 1);
    }

    pub fn record_commit(&self, f: CommitFigures) {
        push(&self.commits, f);
    }

    /// Renders every metric. Reads the node's present state (blocking, briefly).
    pub fn render(&self, node: &Node) -> String {
        let mut o = String::new();
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let backups: Vec<BackupFigures> = self.backups.lock().iter().cloned().collect();
        let series = [
            (
                "shadowcopy_backup_hold_seconds",
                "How long writes were held (frozen) for the snapshot set of a recent backup job.",
            ),
            ("shadowcopy_backup_duration_seconds", "Wall-clock duration of a recent backup job."),
            ("shadowcopy_backup_bytes", "Bytes read from the snapshots by a recent backup job."),
            (
                "shadowcopy_backup_stored_bytes",
                "Bytes new in the repository after a recent backup job.",
            ),
            (
                "shadowcopy_backup_throughput_bytes_per_second",
                "Bytes read per second of a recent backup job.",
            ),
        ];
        for (i, (name, help)) in series.iter().enumerate() {
            head(&mut o, name, "gauge", help);
            for b in &backups {
                let v = match i {
                    0 => b.hold_seconds,
                    1 => b.elapsed_seconds,
                    2 => b.bytes as f64,
                    3 => b.stored_bytes as f64,
                    _ => b.bytes as f64 / b.elapsed_seconds.max(1e-9),
                };
                let _ = writeln!(
                    o,
                    "{name}{{job=\"{}\",storage_group=\"{}\",type=\"{}\"}} {v}",
                    esc(&b.job),
                    esc(&b.storage_group),
                    esc(&b.backup_type)
                );
            }
        }
        let t = &self.totals;
        let totals = [
            (
                "shadowcopy_backups_completed_total",
                "Backup jobs run through the API that published their set.",
                &t.backups_completed,
            ),
            (
                "shadowcopy_backups_failed_total",
                "Backup jobs run through the API that failed (or were aborted).",
                &t.backups_failed,
            ),
            (
                "shadowcopy_backup_bytes_total",
                "Bytes read from the snapshots by completed backup jobs.",
                &t.backup_bytes,
            ),
            (
                "shadowcopy_backup_stored_bytes_total",
                "Bytes new in the repositories after completed backup jobs.",
                &t.backup_stored_bytes,
            ),
            (
                "shadowcopy_restores_completed_total",
                "Restore jobs run through the API that put their databases in place.",
                &t.restores_completed,
            ),
            (
                "shadowcopy_restores_failed_total",
                "Restore jobs run through the API that failed (the target was left as it was).",
                &t.restores_failed,
            ),
            (
                "shadowcopy_restore_bytes_total",
                "Bytes written from the repositories by completed restore jobs.",
                &t.restore_bytes,
            ),
        ];
        for (name, help, counter) in totals {
            head(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", counter.load(Ordering::Relaxed));
        }
        head(
            &mut o,
            "shadowcopy_last_successful_backup_timestamp_seconds",
            "gauge",
            "When a backup of the storage group last succeeded (Unix time), scheduled or not, \
             since the node started.",
        );
        for (sg, t) in self.last_success.lock().iter() {
            let _ = writeln!(
                o,
                "shadowcopy_last_successful_backup_timestamp_seconds{{storage_group=\"{}\"}} {t}",
                esc(sg)
            );
        }
        head(
            &mut o,
            "shadowcopy_schedule_runs_total",
            "counter",
            "Runs of a schedule since the node started, by result (ok, failed, interrupted).",
        );
        for ((schedule, result), n) in self.schedule_runs.lock().iter() {
            let _ = writeln!(
                o,
                "shadowcopy_schedule_runs_total{{schedule=\"{}\",result=\"{result}\"}} {n}",
                esc(schedule)
            );
        }
        let commits: Vec<CommitFigures> = self.commits.lock().iter().cloned().collect();
        head(
            &mut o,
            "shadowcopy_snapshot_commit_seconds",
            "gauge",
            "Duration of a recent snapshot-set commit (origin create_shadow: the provider's \
             commit; origin backup: prepare, freeze, commit, thaw and post-snapshot).",
        );
        for c in &commits {
            let _ = writeln!(
                o,
                "shadowcopy_snapshot_commit_seconds{{set=\"{}\",origin=\"{}\"}} {}",
                c.set, c.origin, c.commit_seconds
            );
        }
        head(
            &mut o,
            "shadowcopy_snapshot_hold_seconds",
            "gauge",
            "How long writes were held by a recent snapshot-set commit.",
        );
        for c in &commits {
            let _ = writeln!(
                o,
                "shadowcopy_snapshot_hold_seconds{{set=\"{}\",origin=\"{}\"}} {}",
                c.set, c.origin, c.hold_seconds
            );
        }
        head(
            &mut o,
            "shadowcopy_blocks_preserved_total",
            "counter",
            "Blocks of a volume copied on write into a snapshot's diff area since the node \
             started.",
        );
        for v in node.provider().volumes() {
            if let Some(vol) = node.volume(&v.label) {
                let _ = writeln!(
                    o,
                    "shadowcopy_blocks_preserved_total{{volume=\"{}\"}} {}",
                    esc(&v.label),
                    vol.blocks_preserved()
                );
            }
        }
        let mut storage = node.provider().list_shadow_storage();
        storage.extend(node.btrfs_provider().list_shadow_storage());
        head(
            &mut o,
            "shadowcopy_shadow_storage_used_bytes",
            "gauge",
            "Shadow storage used by the diff areas of a volume's snapshots.",
        );
        for s in &storage {
            let _ = writeln!(
                o,
                "shadowcopy_shadow_storage_used_bytes{{volume=\"{}\"}} {}",
                esc(&s.for_label),
                s.used_bytes
            );
        }
        head(
            &mut o,
            "shadowcopy_shadow_storage_max_bytes",
            "gauge",
            "Shadow storage limit of a volume (absent when unbounded).",
        );
        for s in &storage {
            if let Some(m) = s.max_bytes {
                let _ = writeln!(
                    o,
                    "shadowcopy_shadow_storage_max_bytes{{volume=\"{}\"}} {m}",
                    esc(&s.for_label)
                );
            }
        }
        head(&mut o, "shadowcopy_snapshots", "gauge", "Live snapshots of a volume.");
        for v in node.provider().volumes().into_iter().chain(node.btrfs_provider().volumes()) {
            let _ =
                writeln!(o, "shadowcopy_snapshots{{volume=\"{}\"}} {}", esc(&v.label), v.snapshots);
        }
        let groups = node.store().storage_groups();
        let states: Vec<_> = groups
            .iter()
            .map(|g| (g.name().to_string(), g.is_mounted(), g.log_state().ok()))
            .collect();
        head(
            &mut o,
            "shadowcopy_storage_group_mounted",
            "gauge",
            "1 when the storage group is mounted.",
        );
        for (n, m, _) in &states {
            let _ = writeln!(
                o,
                "shadowcopy_storage_group_mounted{{storage_group=\"{}\"}} {}",
                esc(n),
                u8::from(*m)
            );
        }
        head(
            &mut o,
            "shadowcopy_log_generation",
            "gauge",
            "Generation of the storage group's current log file.",
        );
        for (n, _, s) in &states {
            if let Some(s) = s {
                let _ = writeln!(
                    o,
                    "shadowcopy_log_generation{{storage_group=\"{}\"}} {}",
                    esc(n),
                    s.current_generation
                );
            }
        }
        head(
            &mut o,
            "shadowcopy_checkpoint_generation",
            "gauge",
            "Log generation of the storage group's checkpoint.",
        );
        for (n, _, s) in &states {
            if let Some(s) = s {
                let _ = writeln!(
                    o,
                    "shadowcopy_checkpoint_generation{{storage_group=\"{}\"}} {}",
                    esc(n),
                    s.checkpoint_generation
                );
            }
        }
        head(
            &mut o,
            "shadowcopy_log_files",
            "gauge",
            "Log generations on disk for the storage group.",
        );
        for (n, _, s) in &states {
            if let Some(s) = s {
                let _ = writeln!(
                    o,
                    "shadowcopy_log_files{{storage_group=\"{}\"}} {}",
                    esc(n),
                    s.generations.len()
                );
            }
        }
        o
    }
}

/// The queue gauges of this node's passive copies (each node reports its own copies; the
/// active reports none).
pub fn copy_metrics(dag: &crate::dag::Dag, node: &str) -> String {
    let mut o = String::new();
    let reports = dag.local_reports();
    type Gauge = (&'static str, &'static str, fn(&replication::copy::CopyReport) -> u32);
    let gauges: [Gauge; 2] = [
        (
            "shadowcopy_copy_queue_length",
            "Generations the active copy closed that this passive copy has not inspected.",
            |r| r.copy_queue(),
        ),
        (
            "shadowcopy_replay_queue_length",
            "Generations this passive copy inspected and has not replayed.",
            |r| r.replay_queue(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (sg, r) in &reports {
            let _ = writeln!(
                o,
                "{name}{{storage_group=\"{}\",node=\"{}\"}} {}",
                esc(sg),
                esc(node),
                value(r)
            );
        }
    }
    o
}
