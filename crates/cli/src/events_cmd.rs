//! `shadowcopy events`: the node's event trail, filtered; `--follow` keeps printing new ones.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use crate::client::{Endpoint, encode};

/// How often `--follow` asks the node for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Shows logged events (newest last), optionally only one job's, source's or id's.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  shadowcopy events --job 8d1e…\n  shadowcopy events --source store --id 9811\n  shadowcopy events --follow --limit 20"
)]
pub struct Events {
    /// Only this job's events (its ID, as `backup run` prints it).
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

fn query(e: &Events, since: Option<u64>) -> String {
    let mut q = Vec::new();
    if let Some(j) = &e.job {
        q.push(format!("job={}", encode(j)));
    }
    if let Some(s) = &e.source {
        q.push(format!("source={}", encode(s)));
    }
    if let Some(i) = e.id {
        q.push(format!("id={i}"));
    }
    if let Some(s) = since {
        q.push(format!("since_ms={s}"));
    }
    if let Some(l) = e.limit.filter(|_| since == e.since) {
        q.push(format!("limit={l}"));
    }
    format!("/v1/events?{}", q.join("&"))
}

fn print(ev: &Value, json: bool) {
    if json {
        println!("{ev}");
        return;
    }
    let job = ev["job"].as_str().map(|j| format!(" job {j}")).unwrap_or_default();
    println!(
        "{} {:<7} {:<11} {:>5}{job}: {}",
        ev["time_ms"],
        ev["level"].as_str().unwrap_or("?"),
        ev["source"].as_str().unwrap_or("?"),
        ev["id"],
        ev["message"].as_str().unwrap_or("")
    );
}

pub fn run(node: &Endpoint, e: &Events) -> Result<()> {
    let v = node.get(&query(e, e.since))?;
    let mut last_time = e.since.unwrap_or(0);
    // Events with the newest time already printed: a later poll asks from that time again
    // (`since` is inclusive) and skips exactly these.
    let mut printed_at_last: Vec<Value> = Vec::new();
    let mut show = |events: &[Value], last_time: &mut u64| {
        for ev in events {
            let t = ev["time_ms"].as_u64().unwrap_or(0);
            if t == *last_time && printed_at_last.contains(ev) {
                continue;
            }
            if t > *last_time {
                *last_time = t;
                printed_at_last.clear();
            }
            printed_at_last.push(ev.clone());
            print(ev, e.json);
        }
    };
    show(v["events"].as_array().map_or(&[][..], Vec::as_slice), &mut last_time);
    if !e.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(FOLLOW_EVERY);
        let v = node.get(&query(e, Some(last_time)))?;
        show(v["events"].as_array().map_or(&[][..], Vec::as_slice), &mut last_time);
    }
}
