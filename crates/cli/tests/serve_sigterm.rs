//! SIGTERM of a node in the middle of a backup: the job is aborted through the coordinator
//! (writers told abort, then backup shutdown), the node waits for it, dismounts cleanly and
//! exits 0; nothing was published or truncated, and the next start mounts without recovery.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Served, config};

/// The log files of SG1 on disk.
fn log_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("logs/SG1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect()
}

/// The state of DB1 as its header says, read offline.
fn header_state(dir: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["inspect", "header", "--json"])
        .arg(dir.join("db/SG1/DB1.edb"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["state"].clone()
}

/// `shadowcopy events ARGS --json`: one event per line.
fn events(node: &Served, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["events"];
    a.extend_from_slice(args);
    a.push("--json");
    node.cli(&a).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn sigterm_during_a_backup_aborts_it_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap().to_string();
    let text = config(dir.path(), "");
    let mut node = Served::start(dir.path(), &text);
    let messages = if std::env::var_os("SHADOWCOPY_STRESS").is_some() { 6000 } else { 1500 };
    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", &messages.to_string()]);

    // Start a full backup and SIGTERM the node as soon as the storage group is held by it.
    // The job checks for the shutdown between chunks up to publishing its set, so it is
    // aborted unless the signal lands in the instant between its last check and publishing;
    // then the set exists, and the attempt is repeated on a restarted node.
    let mut aborted = None;
    for attempt in 0..5 {
        let logs_before = log_files(dir.path());
        let backup = node.spawn_full_backup(&repo, true);
        let until = Instant::now() + Duration::from_secs(120);
        let job = loop {
            if let Some(job) = node.backup_in_progress() {
                break job;
            }
            assert!(Instant::now() < until, "the backup never started");
            std::thread::sleep(Duration::from_millis(1));
        };
        let status = node.terminate();
        assert!(status.success(), "the node exits 0 after a clean shutdown: {status}");
        let out = backup.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            eprintln!("attempt {attempt}: job {job} published its set before the signal");
            node = Served::start(dir.path(), &text);
            continue;
        }
        aborted = Some((job, stderr, logs_before));
        break;
    }
    let (job, stderr, logs_before) = aborted.expect("no backup was ever caught before publishing");
    assert!(stderr.contains("aborted_by_shutdown"), "the client is told why: {stderr}");

    // Offline: the database was dismounted cleanly, and no log file was truncated.
    assert_eq!(header_state(dir.path()), "clean_shutdown");
    let logs_after = log_files(dir.path());
    assert!(
        logs_before.is_subset(&logs_after),
        "no log truncated: {logs_before:?} → {logs_after:?}"
    );

    // After a restart: the job is reported aborted by the shutdown, not found interrupted; no
    // set of it exists; the store mounted without recovery and takes the next full.
    let node = Served::start(dir.path(), &text);
    let trail = events(&node, &["--job", &job]);
    let has = |id: u64, text: &str| {
        trail.iter().any(|e| e["id"] == id && e["message"].as_str().unwrap().contains(text))
    };
    assert!(has(8012, "the node is shutting down"), "abort issued with the reason: {trail:#?}");
    assert!(has(8011, "aborted"), "the session shut down as aborted: {trail:#?}");
    assert!(has(2007, ""), "the engine reports the backup aborted: {trail:#?}");
    for never in [8015, 8010, 8203] {
        assert!(!has(never, ""), "event {never} for the aborted job: {trail:#?}");
    }
    let published = node.json(&["backup", "list", "--repo", &repo])["sets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["job"].as_str() == Some(job.as_str()));
    assert!(!published, "no set of the aborted job");
    let status = node.json(&["store", "status"]);
    let sg = &status["storage_groups"][0];
    assert_eq!(sg["mounted"], true, "{status}");
    assert!(sg["backup_in_progress"].is_null(), "{status}");
    let mounted = events(&node, &["--id", "9623"]);
    let last = mounted.last().unwrap();
    assert!(
        last["message"].as_str().unwrap().contains("clean shutdown"),
        "the restart mounted a cleanly shut down store: {last}"
    );
    let out = node.cli(&["backup", "run", "--type", "full", "--sg", "SG1", "--repo", &repo]);
    assert!(out.contains("(full of SG1)"), "{out}");
    let count = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert_eq!(count["messages"].as_u64(), Some(messages));
    assert!(node.terminate().success());
}
