//! `shadowcopy mail send` and `mail check`, the client that proves no acknowledged message is
//! lost, run as the real binary against real nodes: every acknowledgement is in the file and
//! in the store, a line the store never acknowledged is named, and the client moves on from a
//! node it cannot reach or where the storage group is not active.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;

use cli::client::Endpoint;
use common::{Served, config};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "the command failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `mail send --messages N --json` with the given extra arguments.
fn send(served: &Served, acks: &Path, n: u64, extra: &[&str]) -> serde_json::Value {
    let n = n.to_string();
    let mut args =
        vec!["mail", "send", "--sg", "SG1", "--db", "DB1", "--messages", &n, "--acks", path(acks)];
    args.extend_from_slice(extra);
    args.push("--json");
    json(&served.cli_output(&args))
}

fn check(served: &Served, acks: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["mail", "check", "--sg", "SG1", "--db", "DB1", "--acks", path(acks)];
    args.extend_from_slice(extra);
    served.cli_output(&args)
}

fn lines(acks: &Path) -> Vec<String> {
    std::fs::read_to_string(acks).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn every_acknowledged_message_is_in_the_file_and_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &config(dir.path(), ""));
    let acks = dir.path().join("acks.txt");

    let v = send(&served, &acks, 200, &["--threads", "2"]);
    assert_eq!(
        (&v["sent"], &v["acknowledged"], &v["unacknowledged"], &v["failed_attempts"]),
        (&200.into(), &200.into(), &0.into(), &0.into()),
        "{v:#}"
    );
    let socket = served.socket.to_str().unwrap();
    assert_eq!(
        v["nodes_used"],
        serde_json::json!([{ "node": "mbx1", "endpoint": socket, "acknowledged": 200 }])
    );
    assert!(v["longest_gap_ms"].as_f64().is_some() && v["pauses"].is_array(), "{v:#}");

    let lines = lines(&acks);
    assert_eq!(lines.len(), 200);
    let mut ids = HashSet::new();
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f.len(), 4, "{l}");
        assert_eq!(f[2].len(), 64, "a BLAKE3 hash in hex: {l}");
        assert_eq!(f[3], "mbx1", "{l}");
        assert!(ids.insert((f[0].to_string(), f[1].to_string())), "acknowledged twice: {l}");
    }
    let count = served.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert!(count["messages"].as_u64().unwrap() >= 200, "{count}");

    let v = json(&check(&served, &acks, &["--json", "--batch", "64"]));
    assert_eq!((&v["checked"], &v["missing"]), (&200.into(), &serde_json::json!([])), "{v:#}");
    let out = check(&served, &acks, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Checked 200 acknowledged messages") && text.contains("0 missing"),
        "{text}"
    );

    // A line for a message never delivered, and one whose body is not the stored one.
    let first: Vec<&str> = lines[0].split(' ').collect();
    let other = blake3::hash(b"another body").to_hex().to_string();
    let mut tampered = std::fs::OpenOptions::new().append(true).open(&acks).unwrap();
    use std::io::Write;
    writeln!(tampered, "client000 987654321 {} mbx1", first[2]).unwrap();
    writeln!(tampered, "{} {} {other} mbx1", first[0], first[1]).unwrap();
    drop(tampered);
    let out = check(&served, &acks, &[]);
    assert!(!out.status.success(), "a foreign line must fail the check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 of 202 acknowledged messages are not stored"), "{err}");
    assert!(err.contains("line 201: message 987654321 of client000"), "{err}");
    assert!(err.contains(&format!("line 202: message {} of {}", first[1], first[0])), "{err}");
}

/// With `--seconds` the client delivers until the end and every acknowledged message checks.
#[test]
fn a_timed_run_acknowledges_what_it_sends() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &config(dir.path(), ""));
    let acks = dir.path().join("acks.txt");
    let args = ["mail", "send", "--sg", "SG1", "--db", "DB1", "--seconds", "1", "--threads", "3"];
    let mut args = args.to_vec();
    args.extend(["--acks", path(&acks), "--seed", "42", "--json"]);
    let v = json(&served.cli_output(&args));
    let acked = v["acknowledged"].as_u64().unwrap();
    assert!(acked > 0, "{v:#}");
    assert_eq!(v["sent"].as_u64().unwrap(), acked, "nothing failed, so every sent one: {v:#}");
    assert_eq!(v["seed"], 42);
    assert_eq!(lines(&acks).len() as u64, acked);
    let v = json(&check(&served, &acks, &["--json"]));
    assert_eq!((v["checked"].as_u64().unwrap(), &v["missing"]), (acked, &serde_json::json!([])));
}

#[test]
fn a_dead_node_is_left_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &config(dir.path(), ""));
    let acks = dir.path().join("acks.txt");
    let dead = dir.path().join("nobody-listens.sock");

    let v = send(&served, &acks, 30, &["--node", path(&dead), "--node", path(&served.socket)]);
    assert_eq!((&v["acknowledged"], &v["failed_attempts"]), (&30.into(), &1.into()), "{v:#}");
    let used = v["nodes_used"].as_array().unwrap();
    assert_eq!(used.len(), 1, "{v:#}");
    assert_eq!(used[0]["endpoint"], path(&served.socket));
    let errors = v["errors"].to_string();
    assert!(errors.contains("nobody-listens.sock"), "{errors}");
    assert_eq!(lines(&acks).len(), 30);

    // The human summary says the same.
    let out = served.cli_output(&[
        "mail",
        "send",
        "--sg",
        "SG1",
        "--db",
        "DB1",
        "--messages",
        "5",
        "--acks",
        path(&acks),
        "--node",
        path(&dead),
        "--node",
        path(&served.socket),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5 acknowledged") && text.contains("1 failed attempts"), "{text}");
    assert!(text.contains("Nodes used, in order: mbx1"), "{text}");
    let out = check(&served, &acks, &["--node", path(&dead), "--node", path(&served.socket)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Checked 35 "));
}

#[test]
fn a_node_where_the_storage_group_is_not_active_says_so_and_the_client_moves_on() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a = Served::start(a_dir.path(), &config(a_dir.path(), ""));
    let b_config = node::sample::Sample { node: "mbx2", ..Default::default() }.toml(b_dir.path());
    let b = Served::start(b_dir.path(), &b_config);
    a.cli(&["store", "dismount", "SG1"]);

    let deliver = api::MailDeliver {
        sg: "SG1".into(),
        db: "DB1".into(),
        mailbox: "someone".into(),
        from: None,
        subject: "hello".into(),
        body: "a body".into(),
    };
    let e = Endpoint::Unix(a.socket.clone())
        .post::<_, api::MailDelivered>("/v1/mail/deliver", &deliver)
        .unwrap_err();
    let e = e.downcast_ref::<cli::client::ApiError>().unwrap();
    assert_eq!((e.status, e.code.as_str()), (503, api::NOT_ACTIVE), "{e}");
    assert!(e.message.contains("storage group SG1 is not active on node mbx1"), "{e}");
    let delivered: api::MailDelivered =
        Endpoint::Unix(b.socket.clone()).post("/v1/mail/deliver", &deliver).unwrap();
    assert_eq!(delivered.node, "mbx2");
    assert_eq!(delivered.body_hash, blake3::hash(b"a body").to_hex().to_string());

    let acks = a_dir.path().join("acks.txt");
    let nodes = ["--node", path(&a.socket), "--node", path(&b.socket)];
    let v = send(&a, &acks, 25, &nodes);
    assert_eq!((&v["acknowledged"], &v["failed_attempts"]), (&25.into(), &1.into()), "{v:#}");
    assert_eq!(v["nodes_used"][0]["node"], "mbx2", "{v:#}");
    let errors = v["errors"].to_string();
    assert!(
        errors.contains("not active on node mbx1") && errors.contains("not_active"),
        "{errors}"
    );
    assert!(lines(&acks).iter().all(|l| l.ends_with(" mbx2")));

    // Checked where the storage group is active; the dismounted node says it is not.
    let out = check(&a, &acks, &nodes);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Checked 25 "));
    let out = check(&a, &acks, &["--node", path(&a.socket)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not active on node mbx1"), "{err}");
}

#[test]
fn the_help_explains_every_option() {
    let help = |verb: &str| {
        let out = std::process::Command::new(common::BIN)
            .args(["mail", verb, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let help_send = help("send");
    for option in [
        "--sg",
        "--db",
        "--messages",
        "--seconds",
        "--acks",
        "--threads",
        "--mailboxes",
        "--seed",
        "--timeout-ms",
        "--retry-for",
        "--json",
        "--node",
    ] {
        assert!(help_send.contains(option), "{option} in {help_send}");
    }
    assert!(help_send.contains("mailbox message_id body_hash node"), "{help_send}");
    let help = help("check");
    for option in ["--acks", "--batch", "--json", "--node"] {
        assert!(help.contains(option), "{option} in {help}");
    }
}

/// A request no node can take fails at once naming why; a message no node acknowledges fails
/// the run when `--retry-for` runs out, naming the message and the last error. Neither writes
/// an acknowledgement.
#[test]
fn the_client_gives_up_naming_what_it_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &config(dir.path(), ""));
    let acks = dir.path().join("acks.txt");
    let base = ["mail", "send", "--sg", "SG1", "--messages", "3", "--acks", path(&acks)];

    let mut args = base.to_vec();
    args.extend(["--db", "NOPE"]);
    let out = served.cli_output(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_database"), "{err}");

    let dead = dir.path().join("nobody-listens.sock");
    let mut args = base.to_vec();
    args.extend(["--db", "DB1", "--node", path(&dead), "--retry-for", "1", "--json"]);
    let out = served.cli_output(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no node acknowledged message 0") && err.contains("nobody-listens.sock"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&v["sent"], &v["acknowledged"]), (&1.into(), &0.into()), "{v:#}");
    assert!(v["failed"].as_str().unwrap().contains("within 1 s"), "{v:#}");
    assert_eq!(std::fs::read_to_string(&acks).unwrap(), "");
}
