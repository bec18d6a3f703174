//! Benchmarks of Shadowcopy.
//!
//! `cargo run --release -p bench -- <scenario> [options]` prints one JSON object per line.
//! Every scenario measures the thing and its baseline side by side in the same run and reports
//! the ratio, because these machines are noisy: absolute figures move, ratios much less.
//!
//! Scenarios:
//! - `snapshot-scaling [--runs N] [--files N] [--dir D]`: snapshot commit time (the
//!   flush-and-hold window) of a volume with 1 GiB vs 1 TiB of sparse data.
//! - `cow-overhead [--size-mib N] [--dir D]`: 16 KiB overwrite throughput without a snapshot,
//!   under a fresh snapshot, and once every block is preserved.
//! - `backup-throughput [--db-mib N] [--phases 1] [--dir D]`: full backup of a mail store vs
//!   `cp` and `restic backup` of the same files.
//! - `restore-throughput [--db-mib N] [--phases 1] [--dir D]`: restore of that backup vs
//!   `cp -r` back.
//! - `incremental-cost [--base-mib N] [--new-mib N] [--random-bodies 1] [--dir D]`: repository
//!   bytes written by an incremental after N MiB of new mail.

mod args;
mod backup_throughput;
mod cow_overhead;
mod engine_commit;
mod engine_replay;
mod incremental_cost;
mod restore_throughput;
mod snapshot_scaling;
mod store_setup;

use anyhow::bail;

/// What `bench help` prints: the scenarios and their options.
const USAGE: &str = "\
usage: bench <scenario> [--name value ...]   (one JSON object per line on stdout)

scenarios:
  snapshot-scaling   [--runs N] [--files N] [--dir D]   snapshot commit, 1 GiB vs 1 TiB sparse volume
  cow-overhead       [--size-mib N] [--dir D]           overwrites: no snapshot / first write / preserved
  engine-commit                                         durable commits/s vs SQLite WAL at 1, 4, 16 threads
  engine-replay                                         soft-recovery replay speed in MiB/s
  backup-throughput  [--db-mib N] [--runs N] [--phases 1] [--dir D]
                                                        full backup vs cp -r and restic backup
  restore-throughput [--db-mib N] [--runs N] [--phases 1] [--dir D]
                                                        restore vs cp -r back
  incremental-cost   [--base-mib N] [--new-mib N] [--random-bodies 1] [--dir D]
                                                        repository bytes written by an incremental

example: cargo run --release -p bench -- backup-throughput --db-mib 4096 --dir /var/tmp
";

fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args().skip(1);
    let scenario = argv.next().unwrap_or_default();
    let opts = args::Opts::parse(argv)?;
    match scenario.as_str() {
        "list" | "" | "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        "snapshot-scaling" => snapshot_scaling::run(&opts),
        "cow-overhead" => cow_overhead::run(&opts),
        "engine-commit" => engine_commit::run(),
        "engine-replay" => engine_replay::run(),
        "backup-throughput" => backup_throughput::run(&opts),
        "restore-throughput" => restore_throughput::run(&opts),
        "incremental-cost" => incremental_cost::run(&opts),
        other => bail!("unknown scenario {other:?}; run with `list` to see the scenarios"),
    }
}
