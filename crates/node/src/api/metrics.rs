//! Figures the node keeps for `/metrics` (Prometheus text format).
//!
//! Job figures (hold, duration, bytes) are recorded by the API when its jobs end; gauges that
//! describe the present (shadow storage, log generations) are read when scraped.

use std::collections::VecDeque;
use std::fmt::Write;

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

/// One snapshot set committed through `create shadow`.
#[derive(Debug, Clone)]
pub struct CommitFigures {
    pub set: String,
    pub commit_seconds: f64,
    pub hold_seconds: f64,
}

/// The recorded figures.
#[derive(Debug, Default)]
pub struct Metrics {
    backups: Mutex<VecDeque<BackupFigures>>,
    commits: Mutex<VecDeque<CommitFigures>>,
    failed_backups: std::sync::atomic::AtomicU64,
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

impl Metrics {
    pub fn record_backup(&self, f: BackupFigures) {
        push(&self.backups, f);
    }

    pub fn record_backup_failure(&self) {
        self.failed_backups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        head(
            &mut o,
            "shadowcopy_backups_failed_total",
            "counter",
            "Backup jobs run through the API that failed.",
        );
        let _ = writeln!(
            o,
            "shadowcopy_backups_failed_total {}",
            self.failed_backups.load(std::sync::atomic::Ordering::Relaxed)
        );
        let commits: Vec<CommitFigures> = self.commits.lock().iter().cloned().collect();
        head(
            &mut o,
            "shadowcopy_snapshot_commit_seconds",
            "gauge",
            "Duration of a recent snapshot-set commit made with `create shadow`.",
        );
        for c in &commits {
            let _ = writeln!(
                o,
                "shadowcopy_snapshot_commit_seconds{{set=\"{}\"}} {}",
                c.set, c.commit_seconds
            );
        }
        head(
            &mut o,
            "shadowcopy_snapshot_hold_seconds",
            "gauge",
            "How long writes were held by a recent `create shadow` commit.",
        );
        for c in &commits {
            let _ = writeln!(
                o,
                "shadowcopy_snapshot_hold_seconds{{set=\"{}\"}} {}",
                c.set, c.hold_seconds
            );
        }
        let storage = node.provider().list_shadow_storage();
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
        for v in node.provider().volumes() {
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
