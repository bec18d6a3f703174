//! Benchmarks of Shadowcopy.
//!
//! `cargo run --release -p bench -- <scenario>` prints one JSON object per line. Every scenario
//! measures the thing and its baseline side by side in the same run and reports the ratio,
//! because these machines are noisy: absolute figures move, ratios much less.

use anyhow::bail;

mod engine_commit;
mod engine_replay;

fn main() -> anyhow::Result<()> {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    match scenario.as_str() {
        "list" | "" => {
            println!("scenarios: (none yet)");
            Ok(())
        }
        "engine-commit" => engine_commit::run(),
        "engine-replay" => engine_replay::run(),
        other => bail!("unknown scenario {other:?}; run with `list` to see the scenarios"),
    }
}
