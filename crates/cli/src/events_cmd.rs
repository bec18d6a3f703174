//! `shadowcopy events`: the node's event trail, filtered; `--follow` keeps printing new ones.
//!
//! On a DAG member, `--job` shows the job's trail from every member (a surrogate backup logs
//! on the passive copy's node and on the active's), so each line names its node; members that
//! could not be asked are named in a warning on stderr (stdout stays the trail, one event a
//! line with `--json`, as without a DAG).

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::client::{Endpoint, with_query};

/// How often `--follow` asks the node for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Shows logged events (newest last), optionally only one job's, source's or id's. On a DAG
/// member, a job's events come from every member, each line naming its node.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  shadowcopy events --job 8d1e2f04\n  shadowcopy events --source store --id 9811\n  shadowcopy events --follow --limit 20"
)]
pub struct Events {
    /// Only this job's events: its ID, as `backup run` and `restore` print it, or a unique
    /// prefix of it (`--job 046c38f8`). On a DAG member, from every member of the DAG.
    #[arg(long, value_name = "ID")]
    job: Option<String>,
    /// Only events of this source: coordinator, store, engine, replication, provider or
    /// requester.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
    /// Only this event ID (the reference system's numbering, e.g. 9811).
    #[arg(long, value_name = "N")]
    id: Option<u32>,
    /// Only events at or after this time (milliseconds since the Unix epoch).
    #[arg(long, value_name = "MS")]
    since: Option<u64>,
    /// At most this many (the newest).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Keep waiting for new events and print them as they come (until interrupted).
    #[arg(long)]
    follow: bool,
    /// Print each event as one JSON object per line.
    #[arg(long)]
    json: bool,
}

fn query(e: &Events, since: Option<u64>) -> Result<String> {
    // The node resolves a prefix (and names the candidates of an ambiguous one).
    let q = api::EventQuery {
        job: e.job.clone(),
        source: e.source.clone(),
        id: e.id,
        since_ms: since,
        limit: e.limit.filter(|_| since == e.since),
    };
    with_query("/v1/events", &q)
}

fn print(ev: &api::Event, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(ev)?);
        return Ok(());
    }
    let job = ev.job.map(|j| format!(" job {j}")).unwrap_or_default();
    println!(
        "{} {:<8} {:<7} {:<11} {:>5}{job}: {}",
        ev.time_ms, ev.node, ev.level, ev.source, ev.id, ev.message
    );
    Ok(())
}

/// The warning naming the members whose events the trail lacks, once per change of them (a
/// `--follow` asks again and again).
fn warn_unreachable(now: &[String], before: &mut Vec<String>) {
    if now != before.as_slice() && !now.is_empty() {
        eprintln!(
            "warning: the trail lacks the events of {} member(s) of the DAG: {}",
            now.len(),
            now.join("; ")
        );
    }
    *before = now.to_vec();
}

pub fn run(node: &Endpoint, e: &Events) -> Result<()> {
    let v: api::EventList = node.get(&query(e, e.since)?)?;
    let mut unreachable = Vec::new();
    warn_unreachable(&v.unreachable, &mut unreachable);
    let mut last_time = e.since.unwrap_or(0);
    // Events with the newest time already printed: a later poll asks from that time again
    // (`since` is inclusive) and skips exactly these.
    let mut printed_at_last: Vec<api::Event> = Vec::new();
    let mut show = |events: &[api::Event], last_time: &mut u64| -> Result<()> {
        for ev in events {
            let t = ev.time_ms;
            if t == *last_time && printed_at_last.contains(ev) {
                continue;
            }
            if t > *last_time {
                *last_time = t;
                printed_at_last.clear();
            }
            printed_at_last.push(ev.clone());
            print(ev, e.json)?;
        }
        Ok(())
    };
    show(&v.events, &mut last_time)?;
    if !e.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(FOLLOW_EVERY);
        let v: api::EventList = node.get(&query(e, Some(last_time))?)?;
        warn_unreachable(&v.unreachable, &mut unreachable);
        show(&v.events, &mut last_time)?;
    }
}
