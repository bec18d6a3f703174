//! The active manager with real processes: etcd and three `shadowcopy serve` nodes on
//! loopback, a mail client (`shadowcopy mail send`) that follows the active and writes down
//! every acknowledged delivery, switchovers and failovers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/dag.rs"]
mod dag;
#[path = "../../replication/tests/common/etcd.rs"]
mod etcd;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dag::{Bg, DEADLINE, Dag, Proxy};
use serde_json::Value;

use crate::common::BIN;

/// `mail send` into SG1/DB1 for `seconds`, following the active among `nodes`, its
/// acknowledgements written to `acks`, its JSON summary to `summary`.
fn mail_client(dag: &Dag, nodes: &[&str], seconds: u64, acks: &Path, summary: &Path) -> Bg {
    let mut cmd = Command::new(BIN);
    cmd.args(["mail", "send", "--sg", "SG1", "--db", "DB1", "--seconds", &seconds.to_string()])
        .arg("--acks")
        .arg(acks)
        .arg("--json");
    for n in nodes {
        cmd.arg("--node").arg(&dag.node(n).socket);
    }
    let out = std::fs::File::create(summary).unwrap();
    Bg(cmd.stdin(Stdio::null()).stdout(out).stderr(Stdio::null()).spawn().unwrap())
}

fn acked(acks: &Path) -> usize {
    std::fs::read_to_string(acks).map(|t| t.lines().count()).unwrap_or(0)
}

/// `mail check` of every acknowledged delivery on `node`: (checked, missing).
fn check(dag: &Dag, node: &str, acks: &Path) -> (u64, Vec<Value>) {
    let out = dag.node(node).cli_output(&[
        "mail",
        "check",
        "--sg",
        "SG1",
        "--db",
        "DB1",
        "--acks",
        acks.to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mail check on {node}: {e}\nstdout {}\nstderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v["checked"].as_u64().unwrap(), v["missing"].as_array().cloned().unwrap_or_default())
}

/// The group row of SG1 (active, epoch, settings) as `copy status` shows it.
fn group(dag: &Dag, via: &str) -> Value {
    let v = dag.node(via).json(&["copy", "status", "--sg", "SG1"]);
    v["groups"].as_array().and_then(|g| g.first().cloned()).unwrap_or(Value::Null)
}

/// Waits until SG1 is active on a node other than `old` (asked of b) and that node has
/// acknowledged 20 more deliveries; returns it.
fn wait_new_active(dag: &Dag, old: &str, acks: &Path) -> String {
    let new_active = dag.wait_for(DEADLINE, "another copy to be made active", || {
        let g = group(dag, "b");
        (g["active"] != old && g["active"].is_string())
            .then(|| g["active"].as_str().unwrap().to_string())
    });
    let before = acked(acks);
    dag.wait_for(DEADLINE, "acknowledgements from the new active", || {
        (acked(acks) > before + 20).then_some(())
    });
    new_active
}

fn tmp_file(dag: &Dag, name: &str) -> PathBuf {
    dag.dir.path().join(name)
}

/// A DAG of `nodes` (SG1 active on the first, `messages` delivered) whose other nodes
/// hold Healthy copies of SG1.
fn with_copies(nodes: &[&str], messages: u64) -> Dag {
    let dag = Dag::start(nodes);
    dag.load(nodes[0], messages);
    for n in &nodes[1..] {
        dag.add_copy(nodes[0], n);
    }
    for n in &nodes[1..] {
        dag.wait_status(n, "Healthy");
    }
    dag
}

#[test]
fn switchover_a_b_c_a_under_mail_loses_no_acknowledged_message() {
    let dag = with_copies(&["a", "b", "c"], 100);
    let (acks, summary) = (tmp_file(&dag, "acks"), tmp_file(&dag, "summary.json"));
    let client = mail_client(&dag, &["a", "b", "c"], 600, &acks, &summary);
    dag.wait_for(DEADLINE, "the mail client's first acknowledgements", || {
        (acked(&acks) > 20).then_some(())
    });
    let first = group(&dag, "a")["epoch"].as_u64().unwrap();
    let mut pauses = Vec::new();
    for (epoch, (from, to)) in (first..).zip([("a", "b"), ("b", "c"), ("c", "a")]) {
        // The target must be a healthy copy (the old active of the previous move reseeds).
        dag.wait_status(to, "Healthy");
        let before = acked(&acks);
        let v = dag.node(from).json(&["copy", "activate", "--sg", "SG1", "--on", to]);
        assert_eq!(v["from"], from, "{v}");
        assert_eq!(v["to"], to, "{v}");
        assert_eq!(v["epoch"].as_u64().unwrap(), epoch + 1, "the epoch grows by one: {v}");
        pauses.push(v["pause_ms"].as_u64().unwrap());
        let g = group(&dag, "a");
        assert_eq!(g["active"], to, "{g}");
        assert_eq!(g["previous"], from, "{g}");
        // Mail goes on, on the new active.
        dag.wait_for(DEADLINE, &format!("acknowledgements from {to} after the move"), || {
            (acked(&acks) > before + 20).then_some(())
        });
        let (checked, missing) = check(&dag, to, &acks);
        assert!(checked > 0);
        assert!(missing.is_empty(), "acknowledged messages missing on {to}: {missing:?}");
        // The old active is a passive copy of the new one, reseeded.
        dag.wait_status(from, "Healthy");
    }
    drop(client);
    let (checked, missing) = check(&dag, "a", &acks);
    assert!(missing.is_empty(), "acknowledged messages missing after a→b→c→a: {missing:?}");
    eprintln!("switchover pauses (ms): {pauses:?}; {checked} acknowledged messages checked");
    // The trail: the manager's switchover events, and each old active's hand-over.
    let all: Vec<Value> =
        ["a", "b", "c"].iter().flat_map(|n| dag.repl_events(n, 4131, 0)).collect();
    assert_eq!(all.len(), 3, "one 4131 per switchover: {all:?}");
    for n in ["a", "b", "c"] {
        assert_eq!(dag.repl_events(n, 4138, 0).len(), 1, "{n} handed over once");
    }
}

#[test]
fn switchover_and_back_keeps_every_message() {
    let dag = with_copies(&["a", "b"], 200);
    let want = dag.count("a");
    let v = dag.node("b").json(&["copy", "activate", "--sg", "SG1", "--on", "b"]);
    assert_eq!(v["to"], "b", "{v}");
    assert_eq!(dag.count("b"), want, "b holds every message a had");
    dag.load("b", 50);
    let want = dag.count("b");
    // a reseeds from b, then takes it back.
    dag.wait_status("a", "Healthy");
    let v = dag.node("a").json(&["copy", "activate", "--sg", "SG1", "--on", "a"]);
    assert_eq!(v["to"], "a", "{v}");
    assert_eq!(v["epoch"].as_u64().unwrap(), 3, "{v}");
    assert_eq!(dag.count("a"), want, "a holds every message b had");
    dag.load("a", 10);
    assert_eq!(dag.count("a").0, want.0 + 10);
}

#[test]
fn copy_activate_refuses_a_copy_that_is_not_healthy_naming_why() {
    let dag = with_copies(&["a", "b"], 20);
    dag.node("a").cli(&["copy", "suspend", "--sg", "SG1", "--on", "b", "--reason", "disk check"]);
    let out = dag.node("b").cli_output(&["copy", "activate", "--sg", "SG1", "--on", "b"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a suspended copy was activated");
    assert!(err.contains("suspended") && err.contains("disk check"), "{err}");
    let out = dag.node("a").cli_output(&["copy", "activate", "--sg", "SG1", "--on", "a"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already the active"));
    // A passive's node may not mount the storage group behind the active manager's back.
    let out = dag.node("b").cli_output(&["store", "mount", "SG1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "b mounted SG1 while a holds it");
    assert!(err.contains("active on node a"), "{err}");
    // Nothing moved.
    assert_eq!(group(&dag, "b")["active"], "a");
}

#[test]
fn the_active_killed_under_mail_fails_over_and_comes_back_as_a_passive() {
    let mut dag = with_copies(&["a", "b", "c"], 100);
    let status = dag.node("b").json(&["dag", "status"]);
    assert!(status["primary_active_manager"].is_string(), "a primary active manager: {status}");
    let (acks, summary) = (tmp_file(&dag, "acks"), tmp_file(&dag, "summary.json"));
    let client = mail_client(&dag, &["a", "b", "c"], 600, &acks, &summary);
    dag.wait_for(DEADLINE, "the mail client's first acknowledgements", || {
        (acked(&acks) > 50).then_some(())
    });
    let killed_at = std::time::Instant::now();
    dag.kill9("a");
    let new_active = wait_new_active(&dag, "a", &acks);
    eprintln!(
        "failover: new active {new_active} taking mail {:?} after the kill",
        killed_at.elapsed()
    );
    let failovers: Vec<Value> =
        ["b", "c"].iter().flat_map(|n| dag.repl_events(n, 4133, 0)).collect();
    assert_eq!(failovers.len(), 1, "one failover decision: {failovers:?}");
    // a comes back: it finds itself replaced, sets its files aside, and becomes a passive.
    dag.start_node("a");
    dag.wait_status("a", "Healthy");
    let diverged = dag.repl_events("a", 4137, 0);
    assert_eq!(diverged.len(), 1, "a reported its divergence once: {diverged:?}");
    let set_aside = dag.volume("a").join("diverged");
    assert!(
        std::fs::read_dir(&set_aside).map(|d| d.count() > 0).unwrap_or(false),
        "a's old files are kept under {}",
        set_aside.display()
    );
    drop(client);
    let (checked, missing) = check(&dag, &new_active, &acks);
    // Asynchronous copies: what the old active acknowledged in its last, unshipped
    // generation may be lost (the mount dial counts closed generations). Say how much.
    eprintln!("{checked} acknowledged, {} missing after the failover", missing.len());
    assert!(checked > 0);
}

/// The node named on each acknowledgement, in the client's order.
fn ack_nodes(acks: &Path) -> Vec<String> {
    std::fs::read_to_string(acks)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

/// Whether the first node wrote its acknowledgements before the second started: one
/// history, never two actives taking mail at the same time.
fn one_history(nodes: &[String]) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for n in nodes {
        match seen.last() {
            Some(last) if *last == n => {}
            _ if seen.contains(&n.as_str()) => {
                return Err(format!("{n} acknowledged again after another node did: {seen:?}"));
            }
            _ => seen.push(n),
        }
    }
    Ok(())
}

#[test]
fn an_active_cut_off_from_etcd_fences_itself_and_rejoins_as_a_passive() {
    let proxy = Proxy::start();
    // a reaches etcd only through the proxy the test cuts.
    let dag = Dag::start_edited(&["a", "b", "c"], |n, text| {
        if n != "a" {
            return text;
        }
        let at = text.find("http://127.0.0.1:").unwrap() + "http://127.0.0.1:".len();
        let end = at + text[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
        proxy.set_target(text[at..end].parse().unwrap());
        format!("{}{}{}", &text[..at], proxy.port, &text[end..])
    });
    dag.load("a", 100);
    dag.add_copy("a", "b");
    dag.add_copy("a", "c");
    dag.wait_status("b", "Healthy");
    dag.wait_status("c", "Healthy");
    let (acks, summary) = (tmp_file(&dag, "acks"), tmp_file(&dag, "summary.json"));
    let client = mail_client(&dag, &["a", "b", "c"], 600, &acks, &summary);
    dag.wait_for(DEADLINE, "the mail client's first acknowledgements", || {
        (acked(&acks) > 50).then_some(())
    });
    let since = dag::now_ms();
    proxy.cut();
    dag.wait_for(DEADLINE, "a to fence itself (4136)", || {
        (!dag.repl_events("a", 4136, since).is_empty()).then_some(())
    });
    let new_active = wait_new_active(&dag, "a", &acks);
    proxy.restore();
    dag.wait_status("a", "Healthy");
    let diverged = dag.repl_events("a", 4137, since);
    assert_eq!(diverged.len(), 1, "a reported its divergence once: {diverged:?}");
    drop(client);
    one_history(&ack_nodes(&acks)).unwrap();
    // a closed its log when it fenced itself and the copies still reached it: nothing lost.
    let (checked, missing) = check(&dag, &new_active, &acks);
    assert!(
        missing.is_empty(),
        "{} of {checked} acknowledged messages missing: {missing:?}",
        missing.len()
    );
}

#[test]
fn etcd_restarted_fails_nothing_over_and_loses_nothing() {
    let mut dag = with_copies(&["a", "b"], 50);
    let epoch = group(&dag, "a")["epoch"].as_u64().unwrap();
    let (acks, summary) = (tmp_file(&dag, "acks"), tmp_file(&dag, "summary.json"));
    let client = mail_client(&dag, &["a", "b"], 600, &acks, &summary);
    dag.wait_for(DEADLINE, "the mail client's first acknowledgements", || {
        (acked(&acks) > 30).then_some(())
    });
    dag.etcd.restart();
    let before = acked(&acks);
    dag.wait_for(DEADLINE, "acknowledgements after etcd's restart", || {
        (acked(&acks) > before + 30).then_some(())
    });
    drop(client);
    let g = group(&dag, "a");
    assert_eq!(g["active"], "a", "no failover: {g}");
    assert_eq!(g["epoch"].as_u64().unwrap(), epoch, "no change of active: {g}");
    let (_, missing) = check(&dag, "a", &acks);
    assert!(missing.is_empty(), "acknowledged messages missing: {missing:?}");
}

#[test]
fn with_a_lossless_dial_a_failover_never_mounts_a_copy_that_lacks_generations() {
    let mut dag = with_copies(&["a", "b"], 50);
    let v = dag.node("a").json(&["copy", "settings", "--sg", "SG1", "--mount-dial", "lossless"]);
    assert_eq!(v["groups"][0]["mount_dial"], "lossless", "{v}");
    // b stops copying: whatever a closes from now on, b lacks.
    dag.node("a").cli(&["copy", "suspend", "--sg", "SG1", "--on", "b", "--reason", "test"]);
    dag.load("a", 400);
    dag.wait_for(DEADLINE, "a to publish its closed generations", || {
        let r = dag.row("b")?;
        (r["copy_queue_length"].as_u64()? > 0).then_some(())
    });
    dag.node("a").cli(&["copy", "resume", "--sg", "SG1", "--on", "b"]);
    dag.kill9("a");
    // b either has everything (then it may mount) or the group stays dismounted, saying why.
    let outcome = dag.wait_for(DEADLINE, "a failover or its refusal", || {
        let failed_over = dag.repl_events("b", 4133, 0);
        if let Some(e) = failed_over.first() {
            return Some(Ok(e.clone()));
        }
        dag.repl_events("b", 4134, 0).first().cloned().map(Err)
    });
    match outcome {
        Ok(e) => assert_eq!(e["fields"]["missing"], 0, "mounted with a loss the dial forbids: {e}"),
        Err(e) => {
            eprintln!("failover refused: {}", e["message"]);
            assert_eq!(group(&dag, "b")["active"], "a", "nothing mounted");
        }
    }
}

/// How many times [`killing_the_active_again_and_again_with_a_synchronous_copy_loses_nothing`]
/// kills the active (`SHADOWCOPY_FAILOVER_KILLS`, 20 by default).
fn kills() -> usize {
    std::env::var("SHADOWCOPY_FAILOVER_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

#[test]
fn killing_the_active_again_and_again_with_a_synchronous_copy_loses_nothing() {
    let mut dag = with_copies(&["a", "b", "c"], 50);
    let v = dag.node("a").json(&[
        "copy",
        "settings",
        "--sg",
        "SG1",
        "--sync-copies",
        "1",
        "--sync-policy",
        "strict",
    ]);
    assert_eq!(v["groups"][0]["sync_copies"], 1, "{v}");
    let (acks, summary) = (tmp_file(&dag, "acks"), tmp_file(&dag, "summary.json"));
    let client = mail_client(&dag, &["a", "b", "c"], 3600, &acks, &summary);
    let mut active = "a".to_string();
    let mut times = Vec::new();
    for round in 0..kills() {
        // A different moment each time: after 10 to 70 more acknowledgements.
        let more = 10 + (dag::now_ms() % 61) as usize;
        let before = acked(&acks);
        dag.wait_for(
            DEADLINE,
            &format!("round {round}: {more} acknowledgements from {active}"),
            || (acked(&acks) >= before + more).then_some(()),
        );
        let killed_at = std::time::Instant::now();
        dag.kill9(&active);
        let next =
            dag.wait_for(DEADLINE, &format!("round {round}: a new active after {active}"), || {
                let via = ["a", "b", "c"].into_iter().find(|n| *n != active).unwrap();
                let g = group(&dag, via);
                (g["active"].as_str().is_some_and(|n| n != active))
                    .then(|| g["active"].as_str().unwrap().to_string())
            });
        let before = acked(&acks);
        dag.wait_for(DEADLINE, &format!("round {round}: acknowledgements from {next}"), || {
            (acked(&acks) > before).then_some(())
        });
        times.push(killed_at.elapsed().as_millis());
        let (checked, missing) = check(&dag, &next, &acks);
        assert!(
            missing.is_empty(),
            "round {round}: {} of {checked} acknowledged messages missing on {next} after {active} was killed: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        // The killed node comes back as a passive copy of the new active.
        dag.start_node(&active);
        dag.wait_status(&active, "Healthy");
        active = next;
    }
    drop(client);
    eprintln!("kill -9 to the first acknowledgement on the new active (ms): {times:?}");
}

#[test]
fn the_primary_active_manager_killed_with_the_active_another_member_fails_over() {
    let mut dag = with_copies(&["a", "b", "c"], 50);
    let pam = dag.node("b").json(&["dag", "status"])["primary_active_manager"]
        .as_str()
        .expect("a primary active manager")
        .to_string();
    // The active dies, and so does the member that would have decided the failover (the
    // same node when a is the manager).
    let since = dag::now_ms();
    dag.kill9("a");
    if pam != "a" {
        dag.kill9(&pam);
    }
    let survivors: Vec<&str> = ["b", "c"].into_iter().filter(|n| *n != pam).collect();
    let g = dag.wait_for(DEADLINE, "a surviving member to fail SG1 over", || {
        let g = group(&dag, survivors[0]);
        (g["active"].as_str().is_some_and(|n| survivors.contains(&n))).then_some(g)
    });
    let active = g["active"].as_str().unwrap().to_string();
    dag.wait_mounted(&active);
    // The member elected after the kill decided it.
    let managers: Vec<&str> =
        survivors.iter().copied().filter(|n| !dag.repl_events(n, 4130, since).is_empty()).collect();
    assert_eq!(managers.len(), 1, "one new primary active manager among {survivors:?}");
    let decided = dag.repl_events(managers[0], 4133, since);
    assert_eq!(decided.len(), 1, "{} decided the failover: {decided:?}", managers[0]);
    let status = dag.node(&active).json(&["dag", "status"]);
    assert_eq!(status["primary_active_manager"], managers[0], "{status}");
}
