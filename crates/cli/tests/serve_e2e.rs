//! End to end through the real binary: a node served on its socket, driven by the command.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BIN, Served, config};

#[test]
fn create_load_backup_list_verify_restore_and_count_through_the_command() {
    let dir = tempfile::tempdir().unwrap();
    // A node with volumes and shadow storage but no storage group: it is created below.
    let text = config(dir.path(), "");
    let volumes_only = text.split("[[storage_group]]").next().unwrap();
    let node = Served::start(dir.path(), volumes_only);
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();

    let create = [
        "store",
        "create",
        "storage-group",
        "SG1",
        "--log-volume",
        "logs",
        "--database",
        "DB1",
        "--database-volume",
        "db",
    ];
    let out = node.cli(&create);
    assert!(out.contains("Storage group SG1 is created and mounted"), "{out}");
    assert!(out.contains("logs:SG1 (prefix E00)") && out.contains("db:SG1/DB1.edb"), "{out}");
    let again = node.cli_output(&create);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("already_exists"), "{err}");

    let writers = node.cli(&["admin", "list", "writers"]);
    assert!(
        writers.contains("State: [1]") && writers.contains("Last error: No error"),
        "{writers}"
    );

    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "150"]);
    let full = node.cli(&["backup", "run", "--type", "full", "--sg", "SG1", "--repo", repo]);
    assert!(full.contains("(full of SG1)"), "{full}");
    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "50"]);
    node.cli(&["backup", "run", "--type", "incremental", "--sg", "SG1", "--repo", repo]);

    let sets = node.json(&["backup", "list", "--repo", repo]);
    let sets = sets["sets"].as_array().unwrap();
    let types: Vec<&str> = sets.iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["full", "incremental"]);
    for s in sets {
        let out = node.cli(&["backup", "verify", "--repo", repo, s["id"].as_str().unwrap()]);
        assert!(out.contains("verified"), "{out}");
    }

    // The database header keeps the history the backups stamped.
    let status = node.json(&["store", "status"]);
    let db = &status["storage_groups"][0]["databases"][0];
    assert!(!db["previous_full"].is_null() && !db["previous_incremental"].is_null(), "{status}");

    let count = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert_eq!(count["messages"], 200);

    // Restore the incremental (with its full) elsewhere; the copy is clean and checks out
    // offline, page by page.
    let alt = dir.path().join("restored");
    let inc = sets[1]["id"].as_str().unwrap();
    let out = node.cli(&["restore", "--repo", repo, "--set", inc, "--to", alt.to_str().unwrap()]);
    assert!(out.contains("Restored SG1 from 2 set(s)"), "{out}");
    let edb = alt.join("DB1.edb");
    let header = node.json(&["inspect", "header", edb.to_str().unwrap()]);
    assert_eq!(header["state"], "clean_shutdown", "{header}");
    let verify = node.cli(&["inspect", "verify", edb.to_str().unwrap()]);
    assert!(verify.contains("verified"), "{verify}");
    // And it holds every message the incremental saw: the same count and content digest as
    // the live database (no mail arrived since).
    let restored = node.json(&[
        "mail",
        "count",
        "--sg",
        "SG1",
        "--db",
        "DB1",
        "--path",
        alt.to_str().unwrap(),
    ]);
    assert_eq!(restored["messages"], 200, "{restored}");
    assert_eq!(restored["digest"], count["digest"], "{restored} vs {count}");

    // The full alone elsewhere, rolling forward through the live logs while the store stays
    // mounted: every message is there too.
    let rolled = dir.path().join("rolled");
    let full_id = sets[0]["id"].as_str().unwrap();
    let to = rolled.to_str().unwrap();
    let out =
        node.cli(&["restore", "--repo", repo, "--set", full_id, "--to", to, "--roll-forward"]);
    assert!(out.contains("Restored SG1 from 1 set(s)"), "{out}");
    let rolled = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1", "--path", to]);
    assert_eq!(rolled["digest"], count["digest"], "{rolled} vs {count}");

    // Disaster: the database file is lost. Restore over the original location, rolling
    // forward through the logs still on disk: every message is back.
    node.cli(&["store", "dismount", "SG1"]);
    std::fs::remove_file(dir.path().join("db/SG1/DB1.edb")).unwrap();
    let out = node.cli(&["restore", "--repo", repo, "--set", inc, "--original"]);
    assert!(out.contains("Restored SG1"), "{out}");
    if node.json(&["store", "status"])["storage_groups"][0]["mounted"] != true {
        node.cli(&["store", "mount", "SG1"]);
    }
    let after = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert_eq!(after["digest"], count["digest"], "the restored store holds the same messages");

    // Back to the full's point in time, in place: the live logs are moved aside, not lost,
    // and the command says where.
    let out = node.cli(&[
        "restore",
        "--repo",
        repo,
        "--set",
        full_id,
        "--original",
        "--allow-overwrite",
        "--no-roll-forward",
    ]);
    let moved = out
        .lines()
        .find_map(|l| l.split_once("Superseded logs: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no superseded logs in {out}"));
    let superseded = std::path::Path::new(moved.rsplit_once(" were moved to ").unwrap().1);
    assert!(superseded.join("E00.chk").exists(), "{out}");
    let pit = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert_eq!(pit["messages"], 150, "{pit}");

    // The trail of the full backup is in the event log.
    let job = node.json(&["backup", "list", "--repo", repo])["sets"][0]["job"]
        .as_str()
        .unwrap()
        .to_string();
    let lines = node.cli(&["events", "--job", &job]);
    assert!(lines.lines().count() >= 3 && lines.contains(&job), "{lines}");

    // Metrics report the backups and the storage group.
    let (code, metrics) = common::raw_http(
        std::os::unix::net::UnixStream::connect(&node.socket).unwrap(),
        "GET",
        "/metrics",
        "",
    );
    assert_eq!(code, 200);
    for name in [
        "shadowcopy_backup_hold_seconds{",
        "shadowcopy_backup_throughput_bytes_per_second{",
        "shadowcopy_log_generation{storage_group=\"SG1\"}",
        "shadowcopy_checkpoint_generation{storage_group=\"SG1\"}",
        "shadowcopy_shadow_storage_used_bytes{volume=\"db\"}",
        "shadowcopy_blocks_preserved_total{volume=\"db\"}",
        "origin=\"backup\"",
        "shadowcopy_backups_completed_total 2",
        "shadowcopy_restores_completed_total 4",
        "shadowcopy_backup_bytes_total ",
        "shadowcopy_restore_bytes_total ",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }

    // SIGTERM: a clean stop that removes the socket.
    let socket = node.socket.clone();
    let config_path = node.config.clone();
    assert!(node.terminate().success());
    assert!(!socket.exists());

    // The storage group created through the command is the node's after a restart.
    let node = Served::start_with(dir.path(), &config_path);
    let status = node.json(&["store", "status"]);
    assert_eq!(status["storage_groups"][0]["name"], "SG1", "{status}");
    assert_eq!(status["storage_groups"][0]["mounted"], true, "{status}");
    let count = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert_eq!(count["digest"], pit["digest"], "the point-in-time restore's content");
}

#[test]
fn errors_come_back_as_json_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let node = Served::start(dir.path(), &config(dir.path(), ""));
    let out = node.cli_output(&["store", "mount", "NOPE"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_storage_group") && err.contains("NOPE"), "{err}");
    let repo = dir.path().join("repo");
    let out = node.cli_output(&[
        "backup",
        "run",
        "--type",
        "incremental",
        "--sg",
        "SG1",
        "--repo",
        repo.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no_base_backup"), "{err}");
    let (code, body) = common::raw_http(
        std::os::unix::net::UnixStream::connect(&node.socket).unwrap(),
        "GET",
        "/v1/nothing",
        "",
    );
    assert_eq!(code, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "no_such_endpoint");
}

#[test]
fn a_bad_configuration_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), "").replace("volume = \"db\"", "volume = \"dbx\"");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out =
        std::process::Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage_group[0].database[0].volume") && err.contains("dbx"), "{err}");
}

#[test]
fn events_follow_prints_new_events_as_they_happen() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let node = Served::start(dir.path(), &config(dir.path(), ""));
    // Follow the coordinator's "session shut down" events; none exist yet.
    let mut follow = Command::new(BIN)
        .args(["events", "--follow", "--source", "coordinator", "--id", "8011"])
        .env("SHADOWCOPY_NODE", &node.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let repo = dir.path().join("repo");
    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "20"]);
    node.cli(&["backup", "run", "--type", "full", "--sg", "SG1", "--repo", repo.to_str().unwrap()]);
    let mut line = String::new();
    BufReader::new(follow.stdout.take().unwrap()).read_line(&mut line).unwrap();
    follow.kill().unwrap();
    follow.wait().unwrap();
    assert!(line.contains("8011") && line.contains("coordinator"), "{line}");
}

#[test]
fn sigterm_stops_a_running_mail_load_and_dismounts_cleanly() {
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let node = Served::start(dir.path(), &config(dir.path(), ""));
    let load = Command::new(BIN)
        .args(["mail", "load", "--sg", "SG1", "--db", "DB1", "--seconds", "600"])
        .env("SHADOWCOPY_NODE", &node.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until deliveries are under way.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"])["messages"] == 0 {
        assert!(std::time::Instant::now() < until, "waited 120 s for a first delivery");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let config_path = node.config.clone();
    assert!(node.terminate().success());
    let out = load.wait_with_output().unwrap();
    assert!(out.status.success(), "the load request is answered at shutdown");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Delivered"));
    // Dismounted clean: the database header says so, read offline.
    let header = std::process::Command::new(BIN)
        .args(["inspect", "header", "--json"])
        .arg(dir.path().join("db/SG1/DB1.edb"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&header.stdout).unwrap();
    assert_eq!(v["state"], "clean_shutdown", "{v}");
    // And the node starts again from the same configuration.
    let node = Served::start_with(dir.path(), &config_path);
    assert_eq!(node.json(&["store", "status"])["storage_groups"][0]["mounted"], true);
}
