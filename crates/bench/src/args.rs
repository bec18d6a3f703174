//! The command line: one subcommand per scenario, each with its own options.
//!
//! Parsed with clap so that an unknown or misspelt option is refused instead of silently
//! running the scenario with its defaults (a figure measured with the wrong size looks
//! plausible and is easily published), and so that `bench <scenario> --help` documents each
//! scenario's options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Reproducible benchmarks of Shadowcopy: each scenario prints one JSON object per line on
/// stdout, measured side by side with its baseline.
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    arg_required_else_help = true,
    after_help = "example: cargo run --release -p bench -- backup-throughput --db-mib 4096 --dir /var/tmp"
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Lists the scenarios (the same as `help`).
    List,
    /// Snapshot commit time (the flush-and-hold window), 1 GiB vs 1 TiB sparse volume.
    SnapshotScaling(SnapshotScalingArgs),
    /// 16 KiB overwrites: no snapshot, first write under a snapshot, block already preserved.
    CowOverhead(CowOverheadArgs),
    /// Sequential read of a 1 GiB file through a shadow copy exposed over FUSE vs the same
    /// file read directly (needs root and /dev/fuse).
    ExposeRead(ExposeReadArgs),
    /// Durable engine commits/s vs SQLite WAL at 1, 4 and 16 threads.
    EngineCommit,
    /// Durable commits/s with one synchronous copy (following over loopback TLS) vs none, at
    /// 1 and 16 committers.
    SyncCommitCost,
    /// Soft-recovery replay speed in MiB/s.
    EngineReplay,
    /// Full backup of a mail store vs `cp -r` and `restic backup` of the same files.
    BackupThroughput(ThroughputArgs),
    /// Restore of that backup vs `cp -r` back.
    RestoreThroughput(ThroughputArgs),
    /// Repository bytes written by an incremental after N MiB of new mail.
    IncrementalCost(IncrementalCostArgs),
    /// `backup prune` after half of a history of sets is forgotten: time and bytes rewritten,
    /// vs `restic prune` of the same history.
    PruneCost(PruneCostArgs),
    /// Event log appends/s with an fsync per record, every 64 records, never, and 8 threads
    /// sharing fsyncs (group commit).
    EventEmit(ScratchDir),
    /// Flush-and-hold window and whole snapshot-set time of full jobs over the software
    /// provider (two volumes, a 64 MiB database).
    SnapshotSet(SnapshotSetArgs),
    /// Log shipping to a passive copy over mutual TLS on loopback, and its replay, vs `cp` of
    /// the same log files.
    ReplicationThroughput(ReplicationArgs),
    /// Seeding a passive copy (a database file streamed over the seed endpoints) vs `cp`.
    SeedThroughput(SeedArgs),
    /// How far a passive copy trails its active under a steady mail load: copy queue length
    /// and commit-to-replayed time, p50/p99.
    ReplicationLag(LagArgs),
    /// A full backup taken from a passive copy vs from the active, in a DAG of two
    /// `shadowcopy serve` nodes and etcd, under a fixed rate of mail on the active: backup
    /// times and the active's delivery latency p50/p99 with no backup and during each.
    SurrogateBackup(SurrogateArgs),
    /// A full backup's cost to the mail it interrupts: freeze window (2001 → 2003), writes
    /// held in the provider commit, and durable delivery latency during backups vs outside,
    /// p50/p99, under a closed-loop mail load and many full backups one after another.
    FreezeUnderLoad(FreezeUnderLoadArgs),
    /// The repository's chunk index at 10 M chunks: memory per chunk, open time, lookup time,
    /// vs the `HashMap` it replaced.
    RepoScale(RepoScaleArgs),
    /// Seconds from a `kill -9` of the active to the first delivery acknowledged by the new
    /// active, in a DAG of three `shadowcopy serve` nodes and etcd, against the member TTL.
    FailoverTime(FailoverArgs),
}

/// Where a scenario keeps its files.
#[derive(Debug, Args)]
pub struct ScratchDir {
    /// Parent directory of the scratch directory (default: a fresh temporary directory).
    /// The scratch directory is removed at the end either way.
    #[arg(long, value_name = "D")]
    pub dir: Option<PathBuf>,
}

impl ScratchDir {
    /// A scratch directory: under `--dir` or a fresh temporary one; removed on drop.
    pub fn scratch(&self) -> anyhow::Result<Scratch> {
        match &self.dir {
            Some(d) => {
                let p = d.join(format!("bench-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&p)?;
                Ok(Scratch { path: p.clone(), _tmp: None, owned: Some(p) })
            }
            None => {
                let t = tempfile::tempdir()?;
                Ok(Scratch { path: t.path().to_path_buf(), _tmp: Some(t), owned: None })
            }
        }
    }
}

/// Options of `snapshot-scaling`.
#[derive(Debug, Args)]
pub struct SnapshotScalingArgs {
    /// Commits per volume (at least 5, so the median means something).
    #[arg(long, value_name = "N", default_value_t = 7)]
    pub runs: u64,
    /// Small files on each volume.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub files: u64,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `freeze-under-load`.
#[derive(Debug, Args)]
pub struct FreezeUnderLoadArgs {
    /// Mail in the database before the load starts, in MiB (each backup copies it all).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub db_mib: u64,
    /// Threads delivering mail, each as fast as its durable commits are acknowledged.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub committers: u64,
    /// Size of each message body, in KiB.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub body_kib: u64,
    /// Full backups, one after another.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub backups: u64,
    /// Seconds of load with no backup first (the latency baseline).
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub quiet_seconds: u64,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `cow-overhead`.
#[derive(Debug, Args)]
pub struct CowOverheadArgs {
    /// Size of the file overwritten, in MiB.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub size_mib: u64,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `expose-read`.
#[derive(Debug, Args)]
pub struct ExposeReadArgs {
    /// Size of the file read, in MiB.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub size_mib: u64,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `backup-throughput` and `restore-throughput`.
#[derive(Debug, Args)]
pub struct ThroughputArgs {
    /// Size of the mail database, in MiB.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub db_mib: u64,
    /// Rounds measured (the median is reported).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: u64,
    /// Also measure the phases (read, hash, compress) one by one: `1`/`true` or `0`/`false`.
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub phases: bool,
    /// Also measure against an S3 server on loopback (moto's, which must be installed),
    /// Shadowcopy and restic side by side: `1`/`true` or `0`/`false`.
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub s3: bool,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `incremental-cost`.
#[derive(Debug, Args)]
pub struct IncrementalCostArgs {
    /// Mail in the full backup, in MiB.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub base_mib: u64,
    /// New mail before the incremental, in MiB.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub new_mib: u64,
    /// New mail with random (incompressible) bodies: `1`/`true` or `0`/`false`.
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub random_bodies: bool,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `prune-cost`.
#[derive(Debug, Args)]
pub struct PruneCostArgs {
    /// Size of the history's data in MiB (the figure is 4096).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub mib: u64,
    /// Sets in the history; those of even rank are forgotten.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub sets: u64,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `snapshot-set`.
#[derive(Debug, Args)]
pub struct SnapshotSetArgs {
    /// Backup jobs measured (the median is reported).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub jobs: u64,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `replication-throughput`.
#[derive(Debug, Args)]
pub struct ReplicationArgs {
    /// Backlog of closed log generations shipped and replayed, in MiB (1 MiB generations).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub mib: u64,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `seed-throughput`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Size of the database file seeded, in MiB.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub mib: u64,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `replication-lag`.
#[derive(Debug, Args)]
pub struct LagArgs {
    /// Messages delivered per second (one durable transaction each).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub rate: u64,
    /// Seconds of load.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub seconds: u64,
    /// Body size of each message, in KiB.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub body_kib: u64,
    /// The active offers no block mode: the copy follows closed generations only.
    #[arg(long)]
    pub no_block: bool,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `surrogate-backup`.
#[derive(Debug, Args)]
#[command(
    after_help = "Needs the release `shadowcopy` binary next to the bench's (`cargo build --release -p cli -p bench`) \
                  or --shadowcopy PATH, and Debian's `etcd` on the PATH.\n\
                  example: cargo run --release -p bench -- surrogate-backup --size-gib 0.25 --dir /tmp"
)]
pub struct SurrogateArgs {
    /// Size the storage group's database is filled to before the copy is added, in GiB.
    #[arg(long, value_name = "X", default_value_t = 2.0)]
    pub size_gib: f64,
    /// Messages delivered per second on the active while measuring (one at a time).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub rate: u64,
    /// Seconds of mail measured with no backup running (the baseline).
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub seconds: u64,
    /// Full backups of each kind measured, alternating which kind goes first (their
    /// latency samples are pooled; the median backup time is reported).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: u64,
    /// The `shadowcopy` binary (default: next to this bench binary).
    #[arg(long, value_name = "PATH")]
    pub shadowcopy: Option<PathBuf>,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `failover-time`.
#[derive(Debug, Args)]
#[command(
    after_help = "Needs the `shadowcopy` binary next to the bench's (`cargo build --release -p cli -p bench`) \
                  or --shadowcopy PATH, and Debian's `etcd` on the PATH.\n\
                  example: cargo run --release -p bench -- failover-time --runs 3 --dir /tmp"
)]
pub struct FailoverArgs {
    /// Failovers measured, each killing the active of the moment (the killed node is
    /// restarted as a passive before the next).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub runs: u64,
    /// The `shadowcopy` binary (default: next to this bench binary).
    #[arg(long, value_name = "PATH")]
    pub shadowcopy: Option<PathBuf>,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// Options of `repo-scale`.
#[derive(Debug, Args)]
pub struct RepoScaleArgs {
    /// Chunks in the repository's index.
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub chunks: u64,
    /// Chunks in each pack (each with its `.idx`).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub chunks_per_pack: u64,
    /// Lookups timed, of chunks present and of chunks absent each.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub lookups: u64,
    /// Internal: the measurement this process makes (`baseline`, `first-open`, `ours`).
    #[arg(long, value_name = "KIND", hide = true)]
    pub measure: Option<String>,
    /// Internal: the repository a `--measure` process opens.
    #[arg(long, value_name = "DIR", hide = true)]
    pub repo: Option<PathBuf>,
    #[command(flatten)]
    pub scratch: ScratchDir,
}

/// A scratch directory removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    owned: Option<PathBuf>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(p) = &self.owned {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Median of a non-empty sample (NaN for an empty one).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// The `p` quantile (0..=1) of a sorted sample (NaN when empty): the nearest rank.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50, p99 and max of a sample, in its unit, as one JSON object.
pub fn latency_summary(mut xs: Vec<f64>) -> serde_json::Value {
    xs.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "p50": quantile(&xs, 0.5),
        "p99": quantile(&xs, 0.99),
        "max": xs.last().copied().unwrap_or(f64::NAN),
        "samples": xs.len(),
    })
}
