//! `shadowcopy schedule list`: the node's schedules (`[[schedule]]` in its configuration),
//! each with its next run, its last run and how that ended.

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;

use crate::client::Endpoint;

#[derive(Debug, Subcommand)]
pub enum Schedule {
    /// Lists the schedules: name, action, cron expression, storage group, next run, last run
    /// and its result (with the error of a failed one).
    #[command(
        after_help = "Examples:\n  shadowcopy schedule list\n  shadowcopy schedule list --json"
    )]
    List {
        /// Print the node's JSON answer instead of the table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(node: &Endpoint, cmd: &Schedule) -> Result<()> {
    match cmd {
        Schedule::List { json } => {
            let v: api::ScheduleList = node.get("/v1/schedules")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_list(&mut std::io::stdout().lock(), &v)?;
            }
        }
    }
    Ok(())
}

fn print_list(o: &mut impl Write, v: &api::ScheduleList) -> Result<()> {
    if v.schedules.is_empty() {
        writeln!(o, "No schedules: the node's configuration has no [[schedule]] entry.")?;
        return Ok(());
    }
    let rows: Vec<[String; 7]> = v
        .schedules
        .iter()
        .map(|s| {
            let action = match (s.action, s.backup_type) {
                (api::ScheduleAction::Backup, Some(t)) => format!("backup {}", t.name()),
                (a, _) => a.name().to_string(),
            };
            let next = match (&s.next_run, s.running) {
                (_, true) => "running now".to_string(),
                (Some(t), false) => t.clone(),
                (None, false) => "never".to_string(),
            };
            let result = match (s.last_result, &s.last_error) {
                (Some(r), Some(e)) => format!("{}: {e}", r.name()),
                (Some(r), None) => r.name().to_string(),
                (None, _) if s.running => "running".to_string(),
                (None, _) => "-".to_string(),
            };
            [
                s.name.clone(),
                action,
                format!("{} ({})", s.cron, s.timezone),
                s.sg.clone().unwrap_or_else(|| "-".into()),
                next,
                s.last_run.clone().unwrap_or_else(|| "-".into()),
                result,
            ]
        })
        .collect();
    let head = ["NAME", "ACTION", "CRON", "SG", "NEXT RUN", "LAST RUN", "LAST RESULT"];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |o: &mut dyn Write, cells: [&str; 7]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(c);
            } else {
                text.push_str(&format!("{c:<w$}  "));
            }
        }
        writeln!(o, "{}", text.trim_end())
    };
    line(o, head)?;
    for r in &rows {
        line(o, [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]])?;
    }
    Ok(())
}
