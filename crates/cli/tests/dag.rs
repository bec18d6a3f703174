//! The database availability group end to end (issue 13, "Tests"): a real etcd and
//! `shadowcopy serve` processes on loopback, driven through the CLI as an administrator would.
//!
//! Each test makes a DAG of its own (`common/dag.rs`); the first node holds SG1 active.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/dag.rs"]
mod dag;
#[path = "../../replication/tests/common/etcd.rs"]
mod etcd;

use dag::{DEADLINE, Dag, now_ms};

fn gen_of(row: &serde_json::Value, field: &str) -> u64 {
    row[field].as_u64().unwrap_or_else(|| panic!("{field} in {row}"))
}

/// Flips one byte of the first log record of `path` (just past the 4 KiB header), which
/// inspection must catch; returns the original byte.
fn flip_record_byte(path: &std::path::Path) -> u8 {
    let mut bytes = std::fs::read(path).unwrap();
    let at = 4096 + 16;
    let was = bytes[at];
    bytes[at] ^= 0xFF;
    std::fs::write(path, &bytes).unwrap();
    was
}

#[test]
fn copies_reach_healthy_drain_and_equal_the_active() {
    let dag = Dag::start(&["a", "b", "c"]);
    dag.wait_for(DEADLINE, "dag status to list a, b and c up", || {
        let v = dag.node("b").json(&["dag", "status"]);
        let up: Vec<&str> = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["up"] == true)
            .filter_map(|m| m["node"].as_str())
            .collect();
        (up == ["a", "b", "c"]).then_some(())
    });
    dag.load("a", 300);
    dag.add_copy("a", "b");
    dag.add_copy("a", "c");
    let load = dag.load_in_background("a", 5);
    dag.wait_status("b", "Healthy");
    dag.wait_status("c", "Healthy");
    assert!(load.wait(DEADLINE).success(), "the mail load failed");
    dag.wait_converged("a", &["b", "c"]);
    let (messages, _) = dag.count("a");
    assert!(messages >= 300, "{messages} messages on the active");
}

#[test]
fn seeding_while_mail_is_delivered_converges() {
    let dag = Dag::start(&["a", "b"]);
    dag.load("a", 200);
    let load = dag.load_in_background("a", 6);
    dag.wait_for(DEADLINE, "the background load to deliver", || {
        (dag.count("a").0 > 200).then_some(())
    });
    let t = now_ms();
    dag.add_copy("a", "b");
    dag.wait_status("b", "Healthy");
    assert_eq!(dag.repl_events("b", 4102, t).len(), 1, "one seed started on b");
    assert_eq!(dag.repl_events("b", 4103, t).len(), 1, "one seed done on b");
    assert!(load.wait(DEADLINE).success(), "the mail load failed");
    dag.wait_converged("a", &["b"]);
}

#[test]
fn a_passive_killed_mid_replay_resumes_from_its_checkpoint() {
    let mut dag = Dag::start(&["a", "b"]);
    dag.load("a", 200);
    dag.add_copy("a", "b");
    let r0 = gen_of(&dag.wait_status("b", "Healthy"), "last_replayed_generation");
    assert_eq!(dag.repl_events("b", 4102, 0).len(), 1, "b seeded once");
    let load = dag.load_in_background("a", 12);
    dag.wait_for(DEADLINE, "b to replay generations of the load", || {
        dag.row("b").filter(|r| gen_of(r, "last_replayed_generation") > r0)
    });
    dag.kill9("b");
    let restarted = now_ms();
    dag.start_node("b");
    assert!(load.wait(DEADLINE).success(), "the mail load failed");
    dag.wait_converged("a", &["b"]);
    assert_eq!(
        dag.repl_events("b", 4102, restarted),
        Vec::<serde_json::Value>::new(),
        "b seeded again after its restart instead of resuming from its checkpoint"
    );
}

#[test]
fn the_active_killed_mid_shipping_copies_disconnect_then_catch_up() {
    let mut dag = Dag::start(&["a", "b", "c"]);
    dag.load("a", 200);
    dag.add_copy("a", "b");
    dag.add_copy("a", "c");
    let i0 = gen_of(&dag.wait_status("b", "Healthy"), "last_inspected_generation");
    dag.wait_status("c", "Healthy");
    let load = dag.load_in_background("a", 12);
    dag.wait_for(DEADLINE, "b to fetch generations of the load", || {
        dag.row("b").filter(|r| gen_of(r, "last_inspected_generation") > i0)
    });
    // This test is about the copies waiting for their active: no failover (a lossless dial
    // without synchronous copies never fails over by itself).
    dag.node("a").cli(&["copy", "settings", "--sg", "SG1", "--mount-dial", "lossless"]);
    dag.kill9("a");
    drop(load);
    dag.wait_status("b", "Disconnected");
    dag.wait_status("c", "Disconnected");
    let restarted = now_ms();
    dag.start_node("a");
    dag.wait_for(DEADLINE, "a to mount SG1 again", || {
        dag.node("a")
            .cli_output(&["mail", "count", "--sg", "SG1", "--db", "DB1", "--json"])
            .status
            .success()
            .then_some(())
    });
    dag.wait_converged("a", &["b", "c"]);
    for p in ["b", "c"] {
        assert_eq!(
            dag.repl_events(p, 4102, restarted),
            Vec::<serde_json::Value>::new(),
            "{p} seeded again after the active came back"
        );
    }
}

/// The engine's truncation events (224, 225) on `node` since `since`, as messages.
fn truncation_messages(dag: &Dag, node: &str, since: u64) -> Vec<String> {
    dag.events(node, &["--source", "engine", "--since", &since.to_string()])
        .into_iter()
        .filter(|e| e["id"] == 224 || e["id"] == 225)
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn truncation_keeps_what_a_suspended_copy_lacks_until_it_catches_up() {
    let dag = Dag::start(&["a", "b", "c"]);
    let repo = dag.dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    dag.load("a", 200);
    dag.add_copy("a", "b");
    dag.add_copy("a", "c");
    dag.wait_converged("a", &["b", "c"]);
    dag.node("a").cli(&["copy", "suspend", "--sg", "SG1", "--on", "c", "--reason", "test"]);
    let rc = gen_of(&dag.wait_status("c", "Suspended"), "last_replayed_generation") as u32;
    dag.load("a", 300);
    dag.wait_converged("a", &["b"]);
    let produced = gen_of(&dag.row("a").unwrap(), "last_replayed_generation") as u32;
    assert!(produced > rc + 1, "the load closed generations after c's {rc:#X}: {produced:#X}");

    let t = now_ms();
    dag.node("a").cli(&["backup", "run", "--type", "full", "--sg", "SG1", "--repo", repo]);
    for g in rc + 1..=produced {
        let p = dag.active_log("a", g);
        assert!(p.exists(), "{} went although suspended copy c has not replayed it", p.display());
    }
    let messages = truncation_messages(&dag, "a", t);
    assert!(
        messages.iter().any(|m| m.contains("copy SG1 on c")),
        "no truncation event names copy SG1 on c: {messages:?}"
    );

    dag.node("a").cli(&["copy", "resume", "--sg", "SG1", "--on", "c"]);
    dag.wait_converged("a", &["b", "c"]);
    dag.load("a", 100);
    dag.wait_converged("a", &["b", "c"]);
    let repo2 = dag.dir.path().join("repo2");
    dag.node("a").cli(&[
        "backup",
        "run",
        "--type",
        "full",
        "--sg",
        "SG1",
        "--repo",
        repo2.to_str().unwrap(),
    ]);
    let p = dag.active_log("a", rc + 1);
    assert!(!p.exists(), "{} is still there after c caught up and a full backup", p.display());
}

#[test]
fn a_damaged_generation_on_the_active_fails_the_copy_naming_it() {
    let dag = Dag::start(&["a", "b"]);
    dag.load("a", 200);
    dag.add_copy("a", "b");
    dag.wait_converged("a", &["b"]);
    dag.node("a").cli(&["copy", "suspend", "--sg", "SG1", "--on", "b", "--reason", "test"]);
    let inspected = gen_of(&dag.wait_status("b", "Suspended"), "last_inspected_generation") as u32;
    // A suspended copy has replayed every generation it inspected (what its inbox still
    // holds is kept only until the active truncates it): the damage goes into the next
    // generation it fetches, on the active.
    dag.load("a", 200);
    let g = inspected + 1;
    dag.wait_for(DEADLINE, &format!("a to close generation {g:#X}"), || {
        dag.row("a").filter(|r| gen_of(r, "last_replayed_generation") as u32 > g)
    });
    let path = dag.active_log("a", g);
    let was = flip_record_byte(&path);

    let t = now_ms();
    dag.node("a").cli(&["copy", "resume", "--sg", "SG1", "--on", "b"]);
    dag.wait_status("b", "FailedAndSuspended");
    let name = format!("E00{g:08X}.log");
    let inspections = dag.repl_events("b", 4105, t);
    assert!(
        inspections.iter().any(|e| e["message"].as_str().unwrap().contains(&name)),
        "no inspection failure names {name}: {inspections:?}"
    );
    let failed = dag.repl_events("b", 4106, t);
    assert!(
        failed.iter().any(|e| e["message"].as_str().unwrap().contains(&name)),
        "no copy failure names {name}: {failed:?}"
    );

    // Repaired at the source, the resumed copy fetches it again and catches up.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4096 + 16] = was;
    std::fs::write(&path, &bytes).unwrap();
    dag.node("a").cli(&["copy", "resume", "--sg", "SG1", "--on", "b"]);
    dag.wait_converged("a", &["b"]);
}

#[test]
fn a_foreign_certificate_is_refused() {
    let dag = Dag::start(&["a", "b"]);
    let addr = format!("127.0.0.1:{}", dag.base_port);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stream = replication::protocol::stream_path("SG1");

    // A member's certificate is served (the control).
    let home = dag.dir.path();
    let tls = replication::tls::DagTls::load(
        &home.join("ca.pem"),
        &home.join("b/tls/node.pem"),
        &home.join("b/tls/node.key"),
    )
    .unwrap();
    let member = replication::client::PeerClient::new(tls, "a", addr.clone());
    dag.wait_for(DEADLINE, "a to serve SG1's stream to member b", || {
        rt.block_on(member.get_json::<serde_json::Value>(&stream)).ok()
    });

    // Another DAG's (another CA's) is not.
    let other = tempfile::tempdir().unwrap();
    dag::dag_init("DAG2", &["a"], other.path(), &dag.etcd.endpoint, dag.base_port);
    let o = other.path();
    let tls = replication::tls::DagTls::load(
        &o.join("ca.pem"),
        &o.join("a/tls/node.pem"),
        &o.join("a/tls/node.key"),
    )
    .unwrap();
    let t = now_ms();
    let foreign = replication::client::PeerClient::new(tls, "a", addr);
    let r = rt.block_on(foreign.get_json::<serde_json::Value>(&stream));
    assert!(r.is_err(), "a served a foreign certificate: {r:?}");
    dag.wait_for(DEADLINE, "a's event 4111 (refused connection)", || {
        let e = dag.repl_events("a", 4111, t);
        (!e.is_empty()).then_some(())
    });
}

#[test]
fn a_partition_disconnects_the_copies_and_they_catch_up_when_healed() {
    // The copies reach a through a proxy the test cuts: a advertises the proxy's address.
    let proxy = dag::Proxy::start();
    let port = proxy.port;
    let dag = Dag::start_edited(&["a", "b", "c"], |node, text| {
        if node == "a" {
            text.replace("\nca = ", &format!("\nadvertise = \"127.0.0.1:{port}\"\nca = "))
        } else {
            text
        }
    });
    proxy.set_target(dag.base_port);
    dag.load("a", 200);
    dag.add_copy("a", "b");
    dag.add_copy("a", "c");
    dag.wait_converged("a", &["b", "c"]);

    let t = now_ms();
    proxy.cut();
    dag.wait_status("b", "Disconnected");
    dag.wait_status("c", "Disconnected");
    // The active keeps working while its copies cannot reach it.
    dag.load("a", 200);
    proxy.restore();
    dag.wait_converged("a", &["b", "c"]);
    for p in ["b", "c"] {
        assert!(!dag.repl_events(p, 4109, t).is_empty(), "no 4109 (disconnected) on {p}");
        assert_eq!(
            dag.repl_events(p, 4102, t),
            Vec::<serde_json::Value>::new(),
            "{p} seeded again after the partition healed"
        );
    }
}

#[test]
fn a_passive_whose_disk_fills_fails_and_the_active_keeps_running() {
    // Declared before the DAG, so unmounted after its nodes are gone.
    let disk = dag::Tmpfs::mount("6m");
    let volume = disk.path().display().to_string();
    let dag = Dag::start_edited(&["a", "b"], |node, text| {
        if node != "b" {
            return text;
        }
        // b's only volume (it holds no storage group of its own) goes onto the small disk.
        let lines: Vec<String> = text
            .lines()
            .map(|l| if l.starts_with("path = ") { format!("path = {volume:?}") } else { l.into() })
            .collect();
        lines.join("\n") + "\n"
    });
    dag.load("a", 100);
    dag.add_copy("a", "b");
    dag.wait_status("b", "Healthy");
    let t = now_ms();
    let load = dag.load_in_background("a", 60);
    let row = dag.wait_status("b", "FailedAndSuspended");
    drop(load);
    let failed = dag.repl_events("b", 4106, t);
    assert!(
        failed.iter().any(|e| e["message"].as_str().unwrap().contains("No space left on device")),
        "no 4106 (copy failed) on b for the full disk: {failed:?}; its row: {row}"
    );
    // The active is unharmed: it still delivers and counts, and stays mounted.
    dag.load("a", 20);
    let (messages, _) = dag.count("a");
    assert!(messages > 100, "{messages} messages on a");
    assert_eq!(dag.row("a").unwrap()["status"], "Mounted");
}

#[test]
fn a_log_of_another_stream_fails_the_copy_naming_it() {
    // Another node's SG1: the same prefix and generation numbers, another log stream.
    let other = tempfile::tempdir().unwrap();
    let stranger = common::Served::start(other.path(), &common::config(other.path(), ""));
    let dag = Dag::start(&["a", "b"]);
    dag.load("a", 200);
    dag.add_copy("a", "b");
    dag.wait_converged("a", &["b"]);
    dag.node("a").cli(&["copy", "suspend", "--sg", "SG1", "--on", "b", "--reason", "test"]);
    let g = gen_of(&dag.wait_status("b", "Suspended"), "last_inspected_generation") as u32 + 1;
    dag.load("a", 200);
    dag.wait_for(DEADLINE, &format!("a to close generation {g:#X}"), || {
        dag.row("a").filter(|r| gen_of(r, "last_replayed_generation") as u32 > g)
    });
    let name = format!("E00{g:08X}.log");
    let foreign = other.path().join("logs/SG1").join(&name);
    dag.wait_for(DEADLINE, &format!("the other node to close its {name}"), || {
        if foreign.exists() {
            return Some(());
        }
        stranger.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "100"]);
        None
    });
    let path = dag.active_log("a", g);
    let original = std::fs::read(&path).unwrap();
    std::fs::copy(&foreign, &path).unwrap();

    let t = now_ms();
    dag.node("a").cli(&["copy", "resume", "--sg", "SG1", "--on", "b"]);
    let row = dag.wait_status("b", "FailedAndSuspended");
    let failed = dag.repl_events("b", 4106, t);
    assert!(
        failed.iter().any(|e| {
            let m = e["message"].as_str().unwrap();
            m.contains(&name) && m.contains("another log stream")
        }),
        "no copy failure names {name} as another stream's: {failed:?}; b's row: {row}"
    );

    std::fs::write(&path, original).unwrap();
    dag.node("a").cli(&["copy", "resume", "--sg", "SG1", "--on", "b"]);
    dag.wait_converged("a", &["b"]);
}

#[test]
fn a_damaged_generation_in_a_passives_inbox_is_fetched_again() {
    let mut dag = Dag::start(&["a", "b"]);
    dag.load("a", 200);
    dag.add_copy("a", "b");
    dag.wait_converged("a", &["b"]);
    let g = gen_of(&dag.row("b").unwrap(), "last_replayed_generation") as u32 + 1;
    // With b down, a closes generation g; it is put into b's inbox damaged, as if the disk
    // had spoiled it after inspection.
    dag.kill9("b");
    dag.load("a", 200);
    dag.wait_for(DEADLINE, &format!("a to close generation {g:#X}"), || {
        dag.row("a").filter(|r| gen_of(r, "last_replayed_generation") as u32 > g)
    });
    let name = format!("E00{g:08X}.log");
    let inboxed = dag.copy_dir("b").join("inbox").join(&name);
    std::fs::copy(dag.active_log("a", g), &inboxed).unwrap();
    flip_record_byte(&inboxed);

    let t = now_ms();
    dag.start_node("b");
    dag.wait_converged("a", &["b"]);
    for id in [4102, 4106] {
        assert_eq!(
            dag.repl_events("b", id, t),
            Vec::<serde_json::Value>::new(),
            "event {id} on b: the damaged {name} was not simply fetched again"
        );
    }
}
