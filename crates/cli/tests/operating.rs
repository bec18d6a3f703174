//! Operating a node as an administrator would (issue 12): output into a closed pipe, and
//! `inspect` on damaged or foreign files.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{BIN, Served, config};

/// Runs `shadowcopy ARGS` with its standard output a pipe whose reading end is already
/// closed (what `| head -1` leaves once head has exited).
fn into_closed_pipe(node: Option<&Path>, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped());
    if let Some(socket) = node {
        cmd.env("SHADOWCOPY_NODE", socket);
    }
    cmd.output().unwrap()
}

/// Exits as `cat` does into a closed pipe: killed by SIGPIPE or a success, never a panic.
fn assert_quiet(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{what} into a closed pipe: {:?}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

#[test]
fn closed_pipes_end_quietly_and_inspect_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let node = Served::start(dir.path(), &config(dir.path(), ""));
    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "50"]);

    assert_quiet("events", &into_closed_pipe(Some(&node.socket), &["events"]));
    let current = dir.path().join("logs/SG1/E00.log");
    let log = current.to_str().unwrap();
    assert_quiet("inspect log", &into_closed_pipe(None, &["inspect", "log", log]));

    // A truncated copy of the current log: a non-zero exit and one sentence, no Debug value.
    let image = std::fs::read(&current).unwrap();
    let cut = dir.path().join("E00000000AB.log");
    // Cut inside the last record written (the file is preallocated: zeros follow it).
    let written = image.iter().rposition(|&b| b != 0).unwrap();
    std::fs::write(&cut, &image[..written - 5]).unwrap();
    let out = Command::new(BIN).args(["inspect", "log"]).arg(&cut).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "inspect log of a truncated file succeeded: {err}");
    assert!(err.contains("E00000000AB.log") && err.contains("damaged"), "{err}");
    assert!(
        !err.contains("Damaged(") && !String::from_utf8_lossy(&out.stdout).contains("Damaged(")
    );

    // A file that is not a database says so, in one line.
    let random = dir.path().join("random.edb");
    let noise: Vec<u8> = (0..65536u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&random, noise).unwrap();
    let out = Command::new(BIN).args(["inspect", "header"]).arg(&random).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "inspect header of noise succeeded");
    assert!(err.contains("not a database header"), "{err}");
    assert!(!err.contains("checksum"), "{err}");
}

/// Issue 12, item 1: a storage group whose database is lost while the node was down does not
/// keep the node from starting; it stays dismounted with its error, every other verb works,
/// and restoring over the original location brings it back mounted.
#[test]
fn a_storage_group_that_cannot_mount_stays_dismounted_and_can_be_restored() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), "");
    let node = Served::start(dir.path(), &text);
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "60"]);
    node.cli(&["backup", "run", "--type", "full", "--sg", "SG1", "--repo", repo]);
    let count = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert_trail_in_order(&node, repo);
    assert!(node.terminate().success(), "the node stopped with an error");

    let edb = dir.path().join("db/SG1/DB1.edb");
    std::fs::rename(&edb, dir.path().join("DB1.edb.lost")).unwrap();
    let node = Served::start(dir.path(), &text);

    let status = node.json(&["store", "status"]);
    let sg = &status["storage_groups"][0];
    assert_eq!(sg["mounted"], false, "{status}");
    let error = sg["mount_error"].as_str().unwrap_or_else(|| panic!("no mount error: {status}"));
    assert!(error.contains("DB1.edb"), "{error}");
    let text_status = node.cli(&["store", "status"]);
    assert!(
        text_status.contains("Mount failed:") && text_status.contains("DB1.edb"),
        "{text_status}"
    );
    let events = node.cli(&["events", "--id", "9628"]);
    assert!(
        events.contains("SG1") && events.contains("DB1.edb"),
        "no mount-failed event: {events}"
    );
    // Admin verbs work on a node with a dismounted storage group.
    node.cli(&["admin", "list", "writers"]);
    node.cli(&["backup", "list", "--repo", repo]);

    let set = node.json(&["backup", "list", "--repo", repo])["sets"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = node.cli(&["restore", "--repo", repo, "--set", &set, "--original"]);
    assert!(out.contains("Restored SG1"), "{out}");
    let status = node.json(&["store", "status"]);
    if status["storage_groups"][0]["mounted"] != true {
        node.cli(&["store", "mount", "SG1"]);
    }
    let status = node.json(&["store", "status"]);
    assert_eq!(status["storage_groups"][0]["mounted"], true, "{status}");
    assert!(status["storage_groups"][0]["mount_error"].is_null(), "{status}");
    let after = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert_eq!(after["digest"], count["digest"], "the restored store holds the same messages");
    // Issue 12, item 11: everything the node created — databases (the restored one too),
    // logs, checkpoint, packs, its own state — is owner-only.
    for sub in ["db", "logs", "repo", "data"] {
        assert_owner_only(&dir.path().join(sub));
    }
}

/// Asserts that `path` and everything under it give no permission to group or others.
fn assert_owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    let mode = meta.permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            assert_owner_only(&entry.unwrap().path());
        }
    }
}

/// Issue 12, item 10: the full backup's trail says "Copied" (8200) before "Verified" (8202),
/// and 8002 names no excluded writer as "none", not as an empty field.
fn assert_trail_in_order(node: &Served, repo: &str) {
    let job = node.json(&["backup", "list", "--repo", repo])["sets"][0]["job"]
        .as_str()
        .unwrap()
        .to_string();
    let out = node.cli(&["events", "--job", &job, "--json"]);
    let events: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let at = |id: u64| {
        events
            .iter()
            .position(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no event {id} in the trail:\n{out}"))
    };
    assert!(at(8200) < at(8202), "8202 comes before 8200:\n{out}");
    let state_set = events[at(8002)]["message"].as_str().unwrap();
    assert!(state_set.ends_with("writers excluded: none."), "{state_set}");
}

/// The `db` volume's shadow storage as the node lists it: where it is, and its limit.
fn db_shadow_storage(node: &Served) -> (String, serde_json::Value) {
    let v = node.json(&["admin", "list", "shadowstorage"]);
    let s = v["shadow_storage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["for_label"] == "db")
        .unwrap_or_else(|| panic!("no shadow storage for db: {v}"))
        .clone();
    (s["on_root"].as_str().unwrap().to_string(), s["max_bytes"].clone())
}

/// Issue 12, item 2, with the repro: shadow storage moved at runtime while the
/// configuration says otherwise, a shadow copy made, a restart. The change survives the
/// restart (as does a resize), the node starts; once the configuration entry is edited it
/// wins again, and where it cannot be applied (the shadow copy pins the storage) the node
/// reports the conflict and starts with what is on disk.
#[test]
fn runtime_shadow_storage_changes_survive_restarts_and_never_stop_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), "");
    assert!(text.contains("on = \"logs\""), "{text}");
    let node = Served::start(dir.path(), &text);
    node.cli(&["admin", "add", "shadowstorage", "--for", "db", "--on", "db", "--maxsize", "2GiB"]);
    node.cli(&["admin", "create", "shadow", "--for", "db"]);
    assert!(node.terminate().success());

    let node = Served::start(dir.path(), &text);
    let (on, max) = db_shadow_storage(&node);
    assert!(on.ends_with("/db"), "the runtime move was undone: {on}");
    assert_eq!(max, 2u64 << 30);
    node.cli(&["admin", "resize", "shadowstorage", "--for", "db", "--maxsize", "3GiB"]);
    assert!(node.terminate().success());

    let node = Served::start(dir.path(), &text);
    let (on, max) = db_shadow_storage(&node);
    assert!(on.ends_with("/db"), "{on}");
    assert_eq!(max, 3u64 << 30, "the resize was undone");
    assert!(node.terminate().success());

    // The administrator edits the configuration entry: it wins, but cannot move the storage
    // while the shadow copy exists. The node starts anyway, and says why.
    let edited = text.replace("max_size = \"1GiB\"", "max_size = \"5GiB\"");
    assert_ne!(edited, text);
    let node = Served::start(dir.path(), &edited);
    let (on, _) = db_shadow_storage(&node);
    assert!(on.ends_with("/db"), "{on}");
    let events = node.cli(&["events", "--id", "8106"]);
    assert!(events.contains("volume db") && events.contains("kept"), "{events}");
    let shadows = node.json(&["admin", "list", "shadows"]);
    assert_eq!(shadows["shadows"].as_array().map(Vec::len), Some(1), "{shadows}");
}

/// Issue 12, friction: `serve` logs one line when it is ready, without ANSI colours when its
/// stderr is not a terminal; a user error is one line even with RUST_BACKTRACE=1.
#[test]
fn serve_says_when_it_is_ready_and_errors_stay_one_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("node.toml");
    std::fs::write(&config_path, config(dir.path(), "")).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env_remove("SHADOWCOPY_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut seen = Vec::new();
    let ready = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("listening on") => break line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no 'listening on' line from serve ({e}); it wrote: {seen:?}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(!ready.contains('\u{1b}'), "ANSI colours into a pipe: {ready:?}");
    assert!(ready.contains("api.sock") && ready.contains("storage groups mounted: SG1"), "{ready}");
    assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "{seen:?}");

    let out = Command::new(BIN)
        .args(["inspect", "header"])
        .arg(dir.path().join("no-such.edb"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "one line, no trace: {err}");
    assert!(err.starts_with("Error: ") && err.contains("no-such.edb"), "{err}");
}

/// Issue 12, friction: `config sample` prints a configuration the node accepts.
#[test]
fn config_sample_prints_a_valid_configuration() {
    let out = Command::new(BIN).args(["config", "sample"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    node::Config::parse(&text, Path::new("(config sample)")).unwrap();
    assert!(text.contains("[[storage_group.database]]") && text.contains("umask"), "{text}");
}
