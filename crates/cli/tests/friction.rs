//! Friction an administrator met (issue 12): flags, missing choices, an unreachable node,
//! `--json` reports of the jobs, a restore's own job.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output, Stdio};

use common::{BIN, Served, config};

fn run(args: &[&str], node: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SHADOWCOPY_NODE", node)
        .env_remove("SHADOWCOPY_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn missing_choices_name_every_alternative_and_flags_say_what_they_do() {
    let nowhere = "/nonexistent/shadowcopy.sock";
    let out = run(&["restore", "--repo", "/r", "--set", "abc"], nowhere);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("--original") && e.contains("--to"), "{e}");

    let out = run(&["mail", "load", "--sg", "SG1", "--db", "DB1"], nowhere);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("--messages") && e.contains("--seconds"), "{e}");

    let out = run(&["restore", "--help"], nowhere);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--point-in-time"), "{help}");
    assert!(help.contains("dismount it and overwrite"), "{help}");

    // The unreachable node's error says how to choose another.
    let out = run(&["store", "status"], nowhere);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("--node") && e.contains("SHADOWCOPY_NODE"), "{e}");
}

#[test]
fn jobs_report_as_json_and_a_restore_names_its_own_job() {
    let dir = tempfile::tempdir().unwrap();
    let node = Served::start(dir.path(), &config(dir.path(), ""));
    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "20"]);
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let backup = node.json(&["backup", "run", "--type", "full", "--sg", "SG1", "--repo", repo]);
    let set = backup["set"]["id"].as_str().unwrap().to_string();
    let verify = node.json(&["backup", "verify", "--repo", repo, &set]);
    assert_eq!(verify["verified"], true, "{verify}");

    let to = dir.path().join("restored");
    let to = to.to_str().unwrap();
    let restore =
        node.json(&["restore", "--repo", repo, "--set", &set[..8], "--to", to, "--point-in-time"]);
    let job = restore["job"].as_str().unwrap();
    assert_ne!(job, backup["job"].as_str().unwrap());
    // Its trail is found by the prefix the text output shows.
    let out = node.cli(&["events", "--job", &job[..8]]);
    for id in ["8204", "8205", "9626"] {
        assert!(out.contains(id), "{id} missing from the restore's trail:\n{out}");
    }
    assert!(out.contains(to), "the trail names the whole target {to}:\n{out}");
    let text = node.cli(&["restore", "--repo", repo, "--set", &set, "--to", &format!("{to}2")]);
    assert!(text.contains("Job:"), "{text}");

    // Log generations in hex, as in the file names; a mounted database's state explained.
    let list = node.cli(&["backup", "list", "--repo", repo]);
    assert!(list.contains("0x"), "{list}");
    let status = node.cli(&["store", "status"]);
    assert!(status.contains("Log generation:        0x"), "{status}");
    assert!(status.contains("in use; a mounted database"), "{status}");
    assert!(node.terminate().success(), "the node stopped with an error");
}
