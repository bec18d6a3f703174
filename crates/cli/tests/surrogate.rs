//! The surrogate backup end to end (issue 14): a backup of a passive copy taken on the node that
//! holds it, with the active's store holding backup in progress and recording the backup in its
//! header as a logged change that reaches every copy. Real etcd and `shadowcopy serve`
//! processes on loopback, driven through the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/dag.rs"]
mod dag;
#[path = "../../replication/tests/common/etcd.rs"]
mod etcd;

use dag::{DEADLINE, Dag};
use serde_json::Value;

/// The trail of `job` gathered from every member (asked of `via`): (node, id) in time order.
fn trail(dag: &Dag, via: &str, job: &str) -> Vec<(String, u64)> {
    dag.node(via)
        .cli(&["events", "--job", job, "--json"])
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            (e["node"].as_str().unwrap().to_string(), e["id"].as_u64().unwrap())
        })
        .collect()
}

/// The position of the first event `id` of `node` in `trail`, failing with the trail.
fn at(trail: &[(String, u64)], node: &str, id: u64) -> usize {
    trail
        .iter()
        .position(|(n, i)| n == node && *i == id)
        .unwrap_or_else(|| panic!("no event {id} on {node} in the trail {trail:?}"))
}

/// Asserts that the events `ids` of `node` appear in this order in `trail`.
fn in_order(trail: &[(String, u64)], node: &str, ids: &[u64]) {
    let pos: Vec<usize> = ids.iter().map(|id| at(trail, node, *id)).collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "{node}'s events {ids:?} out of order in {trail:?}"
    );
}

/// `backup run` of SG1 asked of `via`, `--from from`; the report.
fn backup(dag: &Dag, via: &str, kind: &str, from: &str, repo: &std::path::Path) -> Value {
    dag.node(via).json(&[
        "backup",
        "run",
        "--type",
        kind,
        "--sg",
        "SG1",
        "--from",
        from,
        "--repo",
        repo.to_str().unwrap(),
    ])
}

/// The header slots of SG1/DB1: the active's (`store status` on `active`) or a passive copy's.
fn header(dag: &Dag, node: &str, copy: bool) -> Value {
    let v = dag.node(node).json(&["store", "status"]);
    let sg = v["storage_groups"].as_array().unwrap().iter().find(|g| g["name"] == "SG1").unwrap();
    let dbs = if copy { &sg["copy_databases"] } else { &sg["databases"] };
    dbs.as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "DB1"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_full_backup_of_a_passive_copy_leaves_the_reference_trail_on_both_nodes() {
    let dag = Dag::start(&["a", "b"]);
    dag.load("a", 200);
    dag.add_copy("a", "b");
    dag.wait_status("b", "Healthy");
    let repo = dag.home("b").join("repo");
    let report = backup(&dag, "a", "full", "passive", &repo);
    assert_eq!(report["set"]["node"], "b", "the passive copy on b was backed up: {report}");
    let job = report["job"].as_str().unwrap().to_string();
    // The passive's last two steps come once it replayed the active's header update.
    let t = dag.wait_for(DEADLINE, "b to replay the header update (2033, 2037)", || {
        let t = trail(&dag, "a", &job);
        t.iter().any(|(n, i)| n == "b" && *i == 2037).then_some(t)
    });
    in_order(&t, "b", &[2021, 2110, 2023, 960, 2025, 2027, 2029, 2035, 963, 2046, 2033, 2037]);
    in_order(&t, "a", &[910, 210, 913, 213]);
    // The active's steps fall between the passive's: the claim before 960, the stamp after
    // 2046 and before 2033 (the trail is in time order across the nodes).
    assert!(at(&t, "a", 910) < at(&t, "b", 960), "{t:?}");
    assert!(at(&t, "b", 2046) < at(&t, "a", 913), "{t:?}");
    assert!(at(&t, "a", 213) < at(&t, "b", 2033), "{t:?}");
    assert!(
        t.iter().any(|(n, i)| n == "a" && (*i == 224 || *i == 225)),
        "the active said what became of its logs: {t:?}"
    );
    // The active's header and the copy's record the same surrogate full.
    let active = header(&dag, "a", false);
    assert_eq!(active["previous_full"]["kind"], "surrogate", "{active}");
    dag.wait_for(DEADLINE, "b's copy header to show the same full backup", || {
        let copy = header(&dag, "b", true);
        (copy["previous_full"] == active["previous_full"]).then_some(())
    });
}

#[test]
fn a_full_on_one_copy_and_an_incremental_on_another_restore_every_message_on_the_active() {
    let dag = Dag::start(&["a", "b", "c"]);
    dag.load("a", 200);
    dag.add_copy("a", "b");
    dag.add_copy("a", "c");
    dag.wait_status("b", "Healthy");
    dag.wait_status("c", "Healthy");
    let repo = dag.home("a").join("repo");
    let full = backup(&dag, "a", "full", "b", &repo);
    assert_eq!(full["set"]["node"], "b", "{full}");
    dag.load("a", 150);
    dag.wait_converged("a", &["b", "c"]);
    let inc = backup(&dag, "b", "incremental", "c", &repo);
    assert_eq!(inc["set"]["node"], "c", "{inc}");
    assert_eq!(
        inc["set"]["base_set"], full["set"]["id"],
        "the incremental taken on c builds on the full taken on b: {inc}"
    );
    let active = header(&dag, "a", false);
    assert_eq!(active["previous_incremental"]["kind"], "surrogate", "{active}");
    let before = dag.count("a");

    // Disaster on the active: its database is lost; the chain taken on the copies restores it.
    let a = dag.node("a");
    a.cli(&["store", "dismount", "SG1"]);
    std::fs::remove_file(dag.volume("a").join("db/SG1/DB1.edb")).unwrap();
    let set = inc["set"]["id"].as_str().unwrap();
    let restore = ["restore", "--repo", repo.to_str().unwrap(), "--set", set, "--original"];
    // The copies replay a's log stream: a restore over a's files is refused, naming them,
    // unless they are to be reseeded.
    let out = a.cli_output(&restore);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a restore over the active's files ignored its copies");
    assert!(err.contains("b, c") && err.contains("--reseed-copies"), "{err}");
    let since = dag::now_ms();
    let mut with_reseed = restore.to_vec();
    with_reseed.push("--reseed-copies");
    let restored = a.json(&with_reseed);
    assert_eq!(restored["sets"].as_array().unwrap().len(), 2, "{restored}");
    assert_eq!(dag.count("a"), before, "every message is back, byte for byte");
    // The copies were suspended through the restore and seed again from the restored active.
    for p in ["b", "c"] {
        dag.wait_for(DEADLINE, &format!("{p} to seed again after the restore"), || {
            (!dag.repl_events(p, 4103, since).is_empty()).then_some(())
        });
    }
    dag.wait_converged("a", &["b", "c"]);
}

/// A replication client holding node `as_node`'s certificate, to `target`'s listener.
fn peer_as(dag: &Dag, as_node: &str, target: &str) -> replication::client::PeerClient {
    let tls_dir = dag.home(as_node).join("tls");
    let tls = replication::tls::DagTls::load(
        &tls_dir.join("ca.pem"),
        &tls_dir.join("node.pem"),
        &tls_dir.join("node.key"),
    )
    .unwrap();
    let text = std::fs::read_to_string(dag.home(target).join("node.toml")).unwrap();
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap();
    replication::client::PeerClient::new(tls, target, listen)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The events `id` of `node` since `since`.
fn events_of(dag: &Dag, node: &str, id: u32, since: u64) -> Vec<Value> {
    dag.events(node, &["--id", &id.to_string(), "--since", &since.to_string()])
}

#[test]
fn incremental_differential_and_copy_backups_of_a_passive_stamp_their_slot() {
    let dag = Dag::start(&["a", "b"]);
    dag.load("a", 100);
    dag.add_copy("a", "b");
    dag.wait_status("b", "Healthy");
    let repo = dag.home("a").join("repo");
    backup(&dag, "b", "full", "passive", &repo);
    for (kind, slot) in [
        ("incremental", "previous_incremental"),
        ("differential", "previous_differential"),
        ("copy", "previous_copy"),
    ] {
        dag.load("a", 30);
        dag.wait_converged("a", &["b"]);
        let since = dag::now_ms();
        let report = backup(&dag, "b", kind, "passive", &repo);
        assert_eq!(report["set"]["node"], "b", "{report}");
        assert_eq!(report["set"]["type"], kind, "{report}");
        let job = report["job"].as_str().unwrap().to_string();
        let t = dag.wait_for(DEADLINE, &format!("the {kind} backup's 2037 on b"), || {
            let t = trail(&dag, "a", &job);
            t.iter().any(|(n, i)| n == "b" && *i == 2037).then_some(t)
        });
        in_order(&t, "b", &[2021, 2023, 960, 2025, 2029, 963, 2046, 2033, 2037]);
        in_order(&t, "a", &[910, 210, 913, 213]);
        let active = header(&dag, "a", false);
        assert_eq!(active[slot]["kind"], "surrogate", "{kind}: {active}");
        dag.wait_for(DEADLINE, &format!("b's copy header to show the {kind}"), || {
            (header(&dag, "b", true)[slot] == active[slot]).then_some(())
        });
        let deleted = events_of(&dag, "a", 224, since);
        match kind {
            // Differential and copy backups truncate nothing; the active says so (225).
            "differential" | "copy" => {
                assert!(deleted.is_empty(), "a {kind} truncated logs: {deleted:?}");
                assert!(
                    t.iter().any(|(n, i)| n == "a" && *i == 225),
                    "the {kind} said why nothing was truncated: {t:?}"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn a_second_backup_while_a_surrogate_holds_the_storage_group_is_refused_naming_it() {
    let dag = Dag::start(&["a", "b", "c"]);
    dag.load("a", 50);
    dag.add_copy("a", "b");
    dag.add_copy("a", "c");
    dag.wait_status("b", "Healthy");
    dag.wait_status("c", "Healthy");
    let repo = dag.home("a").join("repo");
    // Node c's replication writer holds SG1 on the active for its job (as its prepare does),
    // then stops renewing: as if c died mid-backup.
    let rt = runtime();
    let c_to_a = peer_as(&dag, "c", "a");
    let job = uuid::Uuid::new_v4();
    let since = dag::now_ms();
    let claim: replication::protocol::SurrogateClaim = rt
        .block_on(c_to_a.post_body(
            &replication::protocol::surrogate_path("SG1", "begin"),
            &replication::protocol::SurrogateBegin {
                job,
                backup_type: vss::BackupType::Full,
                databases: vec![],
            },
        ))
        .unwrap();
    assert_eq!(claim.node, "a");
    for (via, from) in [("b", "b"), ("a", "a")] {
        let out = dag.node(via).cli_output(&[
            "backup",
            "run",
            "--sg",
            "SG1",
            "--from",
            from,
            "--repo",
            repo.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a backup from {from} ran while c's job held SG1");
        assert!(
            err.contains(&job.to_string()) && err.contains("surrogate backup by node c"),
            "the refusal of the backup from {from} names c's job and node: {err}"
        );
    }
    // c never renews: the claim lapses, nothing is stamped, and a backup runs again.
    dag.wait_for(DEADLINE, "c's claim on a to lapse (9629)", || {
        (!events_of(&dag, "a", 9629, since).is_empty()).then_some(())
    });
    assert!(header(&dag, "a", false)["previous_full"].is_null(), "nothing was stamped");
    assert!(events_of(&dag, "a", 224, since).is_empty(), "nothing was truncated");
    let report = backup(&dag, "a", "full", "b", &repo);
    assert_eq!(report["set"]["node"], "b", "{report}");
}

#[test]
fn a_backup_of_a_passive_whose_active_is_down_fails_at_once_naming_it() {
    let mut dag = Dag::start(&["a", "b"]);
    dag.load("a", 50);
    dag.add_copy("a", "b");
    dag.wait_status("b", "Healthy");
    // The active stays down: no failover moves SG1 to b meanwhile (a lossless dial without
    // synchronous copies never fails over by itself).
    dag.node("a").cli(&["copy", "settings", "--sg", "SG1", "--mount-dial", "lossless"]);
    dag.kill9("a");
    let repo = dag.home("b").join("repo");
    let since = dag::now_ms();
    let out = dag.node("b").cli_output(&[
        "backup",
        "run",
        "--sg",
        "SG1",
        "--repo",
        repo.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the backup of b's copy succeeded without its active");
    assert!(err.contains("node a"), "the error names the active node a: {err}");
    // The copy was never held: no suspension, and it is not left suspended.
    assert!(events_of(&dag, "b", 2025, since).is_empty(), "copying was suspended");
    assert_eq!(events_of(&dag, "b", 4116, since).len(), 1, "the failure event on b");
}

#[test]
fn mail_delivered_during_a_surrogate_backup_is_all_kept_and_the_copy_catches_up() {
    let dag = Dag::start(&["a", "b"]);
    dag.load("a", 150);
    dag.add_copy("a", "b");
    dag.wait_status("b", "Healthy");
    let before = dag.count("a").0;
    let load = dag.load_in_background("a", 6);
    dag.wait_for(DEADLINE, "the background load to deliver", || {
        (dag.count("a").0 > before).then_some(())
    });
    let repo = dag.home("b").join("repo");
    let report = backup(&dag, "b", "full", "passive", &repo);
    assert_eq!(report["set"]["node"], "b", "{report}");
    assert!(load.wait(DEADLINE).success(), "the mail load failed during the backup");
    // The copy resumed after the thaw: it drains and holds exactly the active's content.
    dag.wait_converged("a", &["b"]);
    assert!(dag.count("a").0 > before, "mail kept arriving");
}

#[test]
fn a_passive_killed_during_its_backup_leaves_no_claim_and_no_stamp_without_a_set() {
    let mut dag = Dag::start(&["a", "b"]);
    dag.load("a", 400);
    dag.add_copy("a", "b");
    dag.wait_status("b", "Healthy");
    let repo = dag.home("a").join("repo");
    let since = dag::now_ms();
    // The backup runs on b (the copy's node); b is killed once it holds the claim on a, at
    // whatever step its job has reached by then.
    let mut job = dag.node("b").spawn_full_backup(repo.to_str().unwrap(), false);
    dag.wait_for(DEADLINE, "b's job to take its claim on a (960)", || {
        (!events_of(&dag, "b", 960, since).is_empty()).then_some(())
    });
    dag.kill9("b");
    let _ = job.wait();
    // Within the lease, a holds nothing for the dead job.
    dag.wait_for(DEADLINE, "a to hold no backup in progress", || {
        dag.node("a").backup_in_progress().is_none().then_some(())
    });
    // A stamp only ever records a set that exists: if b's job reached the active's stamp,
    // it had published its set first.
    let stamped = !header(&dag, "a", false)["previous_full"].is_null();
    let sets = dag.node("a").json(&["backup", "list", "--repo", repo.to_str().unwrap()]);
    let published = sets["sets"].as_array().is_some_and(|s| !s.is_empty());
    assert!(!stamped || published, "a stamped a backup whose set was never published");
    if !stamped {
        assert!(events_of(&dag, "a", 224, since).is_empty(), "logs truncated without a backup");
    }
    // b comes back: its copy copies and replays again, and a backup runs.
    dag.start_node("b");
    dag.wait_converged("a", &["b"]);
    let report = backup(&dag, "a", "full", "b", &repo);
    assert_eq!(report["set"]["node"], "b", "{report}");
}

#[test]
fn a_full_of_the_active_reaches_the_copies_headers_and_bases_an_incremental_on_a_copy() {
    let dag = Dag::start(&["a", "b"]);
    dag.load("a", 100);
    dag.add_copy("a", "b");
    dag.wait_status("b", "Healthy");
    let repo = dag.home("a").join("repo");
    let full = backup(&dag, "b", "full", "active", &repo);
    assert_eq!(full["set"]["node"], "a", "{full}");
    let active = header(&dag, "a", false);
    assert_eq!(active["previous_full"]["kind"], "snapshot", "{active}");
    dag.wait_for(DEADLINE, "b's copy header to show the active's own full backup", || {
        (header(&dag, "b", true)["previous_full"] == active["previous_full"]).then_some(())
    });
    dag.load("a", 40);
    dag.wait_converged("a", &["b"]);
    let inc = backup(&dag, "a", "incremental", "b", &repo);
    assert_eq!(inc["set"]["node"], "b", "{inc}");
    assert_eq!(inc["set"]["base_set"], full["set"]["id"], "{inc}");
    // And back: an incremental of the active on top of the copy's.
    dag.load("a", 20);
    let again = backup(&dag, "b", "incremental", "active", &repo);
    assert_eq!(again["set"]["node"], "a", "{again}");
    assert_eq!(again["set"]["base_set"], inc["set"]["id"], "{again}");
}
