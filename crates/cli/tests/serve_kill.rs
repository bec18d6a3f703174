//! `kill -9` of a node in the middle of a backup: the next start reports the job failed
//! (event 8015), leaves none of its snapshots, no log was truncated for it, the store mounts,
//! and the next full succeeds.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Served, config};

#[test]
fn kill_9_during_a_backup_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap().to_string();
    let node = Served::start(dir.path(), &config(dir.path(), ""));
    let messages = if std::env::var_os("SHADOWCOPY_STRESS").is_some() { "3000" } else { "600" };
    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", messages]);
    let before = node.json(&["store", "status"]);
    let lowest = before["storage_groups"][0]["log"]["lowest_generation"].as_u64().unwrap();
    let highest = before["storage_groups"][0]["log"]["highest_generation"].as_u64().unwrap();

    // Start a full backup and kill the node as soon as the storage group is held by it. A
    // backup that finished before it was seen is simply tried again.
    let mut killed_job = None;
    let mut client = None;
    for _ in 0..20 {
        let mut backup = node.spawn_full_backup(&repo, true);
        let until = Instant::now() + Duration::from_secs(60);
        while backup.try_wait().unwrap().is_none() && Instant::now() < until {
            if let Some(job) = node.backup_in_progress() {
                killed_job = Some(job);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if killed_job.is_some() {
            client = Some(backup);
            break;
        }
        let _ = backup.wait_with_output();
    }
    let job = killed_job.expect("no backup was ever seen in progress");
    node.kill9();
    // The command following the job hears the connection close in the middle of its progress
    // stream, and says so and where to look (unless the job ended just before the kill).
    let out = client.expect("the backup's command").wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(said.contains("closed the connection in the middle of the job"), "{said}");
        assert!(said.contains("shadowcopy backup list --repo"), "{said}");
        assert!(!said.contains("chunk size"), "{said}");
    }

    let node = Served::start(dir.path(), &config(dir.path(), ""));
    // The interrupted job is reported failed.
    let trail = node.cli(&["events", "--id", "8015"]);
    assert!(trail.contains(&job), "event 8015 for {job} missing:\n{trail}");
    // Nothing was truncated for it unless its set was published before the kill (then the
    // backup exists and truncating behind it was right).
    let published = node.json(&["backup", "list", "--repo", &repo])["sets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["job"].as_str() == Some(job.as_str()));
    eprintln!("job {job} killed; its set was published before the kill: {published}");
    let after = node.json(&["store", "status"]);
    let sg = &after["storage_groups"][0];
    assert_eq!(sg["mounted"], true, "{after}");
    assert!(sg["backup_in_progress"].is_null(), "{after}");
    // The killed backup's snapshots were non-persistent: start-up removed them.
    let shadows = node.json(&["admin", "list", "shadows"]);
    assert_eq!(shadows["shadows"].as_array().map(Vec::len), Some(0), "{shadows}");
    if !published {
        assert_eq!(sg["log"]["lowest_generation"].as_u64(), Some(lowest), "{after}");
        assert!(sg["log"]["highest_generation"].as_u64().unwrap() >= highest);
    }
    // The next full backup succeeds, and truncates.
    let out = node.cli(&["backup", "run", "--type", "full", "--sg", "SG1", "--repo", &repo]);
    assert!(out.contains("(full of SG1)"), "{out}");
    let count = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert_eq!(count["messages"].as_u64(), Some(messages.parse().unwrap()));
    assert!(node.terminate().success());
}
