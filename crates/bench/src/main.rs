//! Benchmarks of Shadowcopy.
//!
//! `cargo run --release -p bench -- <scenario> [options]` prints one JSON object per line.
//! Every scenario measures the thing and its baseline side by side in the same run and reports
//! the ratio, because these machines are noisy: absolute figures move, ratios much less.
//! `bench help` lists the scenarios and `bench <scenario> --help` their options; an unknown
//! option is refused (see `args`).

mod args;
mod backup_throughput;
mod cow_overhead;
mod cpu;
mod dag_procs;
mod engine_commit;
mod engine_replay;
mod event_emit;
mod expose_read;
mod failover_time;
mod freeze_under_load;
mod hold_parts;
mod incremental_cost;
mod prune_cost;
mod replication_lag;
mod replication_throughput;
mod repo_scale;
mod restore_throughput;
mod s3_target;
mod seed_throughput;
mod snapshot_scaling;
mod snapshot_set;
mod store_setup;
mod surrogate_backup;
mod sync_commit_cost;

use clap::{CommandFactory, Parser};

use crate::args::{Cli, Scenario};

fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::List => {
            Cli::command().print_help()?;
            Ok(())
        }
        Scenario::SnapshotScaling(o) => snapshot_scaling::run(&o),
        Scenario::CowOverhead(o) => cow_overhead::run(&o),
        Scenario::ExposeRead(o) => expose_read::run(&o),
        Scenario::EngineCommit => engine_commit::run(),
        Scenario::SyncCommitCost => sync_commit_cost::run(),
        Scenario::EngineReplay => engine_replay::run(),
        Scenario::BackupThroughput(o) => backup_throughput::run(&o),
        Scenario::RestoreThroughput(o) => restore_throughput::run(&o),
        Scenario::IncrementalCost(o) => incremental_cost::run(&o),
        Scenario::PruneCost(o) => prune_cost::run(&o),
        Scenario::EventEmit(o) => event_emit::run(&o),
        Scenario::SnapshotSet(o) => snapshot_set::run(&o),
        Scenario::ReplicationThroughput(o) => replication_throughput::run(&o),
        Scenario::SeedThroughput(o) => seed_throughput::run(&o),
        Scenario::ReplicationLag(o) => replication_lag::run(&o),
        Scenario::SurrogateBackup(o) => surrogate_backup::run(&o),
        Scenario::FreezeUnderLoad(o) => freeze_under_load::run(&o),
        Scenario::FailoverTime(o) => failover_time::run(&o),
        Scenario::RepoScale(o) => repo_scale::run(&o),
    }
}
