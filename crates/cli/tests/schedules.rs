//! Schedules through the real binary: a run missed while the node was down catches up at
//! start-up and backs up through the usual job; a run that fails is an event and a metric,
//! and the node goes on answering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Served, config, raw_http};

/// A daily schedule, with its state file saying it last ran long ago (in 1970): its slot of
/// last night was missed, so it runs once as the node starts.
fn node_with_overdue_schedule(dir: &Path, name: &str, repo: &Path) -> Served {
    let schedule = format!(
        "\n[[schedule]]\nname = \"{name}\"\ncron = \"0 2 * * *\"\ntimezone = \"utc\"\nsg = \"SG1\"\ntype = \"full\"\nrepo = \"{}\"\n",
        repo.display()
    );
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("schedules.toml"), format!("[schedule.{name}]\nanchor_ms = 1000\n"))
        .unwrap();
    Served::start(dir, &format!("{}{schedule}", config(dir, "")))
}

/// Polls `schedule list --json` until the schedule's last run has ended (with a deadline).
fn wait_for_result(node: &Served, name: &str) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let list = node.json(&["schedule", "list"]);
        let s = list["schedules"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap();
        if !s["last_result"].is_null() {
            return s.clone();
        }
        assert!(Instant::now() < until, "schedule {name} never reported a result: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics(node: &Served) -> String {
    let s = std::os::unix::net::UnixStream::connect(&node.socket).unwrap();
    let (code, body) = raw_http(s, "GET", "/metrics", "");
    assert_eq!(code, 200, "{body}");
    body
}

fn event_ids(node: &Served, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["events"];
    a.extend_from_slice(args);
    a.push("--json");
    node.cli(&a).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_run_missed_while_the_node_was_down_backs_up_once_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let node = node_with_overdue_schedule(dir.path(), "nightly", &repo);

    let s = wait_for_result(&node, "nightly");
    assert_eq!(s["last_result"], "ok", "{s}");
    assert_eq!(s["action"], "backup");
    assert!(s["next_run"].as_str().unwrap().ends_with("T02:00:00Z"), "{s}");
    let job = s["last_job"].as_str().unwrap().to_string();

    // The repository holds the set, made by the usual backup job (with its events).
    let sets = node.json(&["backup", "list", "--repo", repo.to_str().unwrap()]);
    let sets = sets["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(
        (sets[0]["type"].as_str(), sets[0]["storage_group"].as_str()),
        (Some("full"), Some("SG1"))
    );
    let trail = event_ids(&node, &["--job", &job]);
    assert!(
        trail.iter().any(|e| e["id"] == 8203),
        "the job's trail lacks the set published: {trail:?}"
    );
    assert!(
        trail.iter().any(|e| e["id"] == 4151),
        "the job's trail lacks the schedule's success: {trail:?}"
    );

    let caught = event_ids(&node, &["--source", "requester", "--id", "4153"]);
    assert_eq!(caught.len(), 1, "one catch-up, not one per missed night: {caught:?}");
    assert_eq!(caught[0]["fields"]["schedule"], "nightly");
    // Decades of nightly slots (the state says 1970) are not counted one by one.
    assert_eq!(caught[0]["fields"]["missed"], "at least 1000", "{caught:?}");
    assert_eq!(event_ids(&node, &["--source", "requester", "--id", "4150"]).len(), 1);

    let m = metrics(&node);
    assert!(
        m.contains("shadowcopy_schedule_runs_total{schedule=\"nightly\",result=\"ok\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("shadowcopy_schedule_runs_total{schedule=\"nightly\",result=\"failed\"} 0\n"),
        "{m}"
    );
    assert!(
        m.contains("shadowcopy_last_successful_backup_timestamp_seconds{storage_group=\"SG1\"} "),
        "{m}"
    );

    // The table says the same.
    let table = node.cli(&["schedule", "list"]);
    assert!(
        table.contains("NEXT RUN") && table.contains("nightly") && table.contains("backup full"),
        "{table}"
    );
    assert!(table.lines().nth(1).unwrap().trim_end().ends_with("ok"), "{table}");
}

#[test]
fn a_failing_scheduled_backup_is_an_event_and_a_metric_and_the_node_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("not-a-directory");
    std::fs::write(&repo, "a regular file").unwrap();
    let node = node_with_overdue_schedule(dir.path(), "broken", &repo);

    let s = wait_for_result(&node, "broken");
    assert_eq!(s["last_result"], "failed", "{s}");
    let error = s["last_error"].as_str().unwrap();
    assert!(error.contains("is a file, not a directory"), "{error}");

    let failed = event_ids(&node, &["--source", "requester", "--id", "4152"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["level"], "error");
    assert_eq!(failed[0]["fields"]["schedule"], "broken");
    assert!(failed[0]["message"].as_str().unwrap().contains("is a file"), "{failed:?}");

    let m = metrics(&node);
    assert!(
        m.contains("shadowcopy_schedule_runs_total{schedule=\"broken\",result=\"failed\"} 1\n"),
        "{m}"
    );
    assert!(!m.contains("shadowcopy_last_successful_backup_timestamp_seconds{"), "{m}");

    // The node still answers, and still backs up when asked.
    let status = node.json(&["store", "status"]);
    assert_eq!(status["storage_groups"][0]["mounted"], true, "{status}");
    let good = dir.path().join("repo");
    let out = node.cli(&[
        "backup",
        "run",
        "--type",
        "full",
        "--sg",
        "SG1",
        "--repo",
        good.to_str().unwrap(),
    ]);
    assert!(out.contains("(full of SG1)"), "{out}");
    let m = metrics(&node);
    assert!(
        m.contains("shadowcopy_last_successful_backup_timestamp_seconds{storage_group=\"SG1\"} "),
        "a backup through the API sets the gauge too: {m}"
    );
}
