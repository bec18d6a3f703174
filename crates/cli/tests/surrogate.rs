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
    let restored = a.json(&[
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        "--set",
        inc["set"]["id"].as_str().unwrap(),
        "--original",
    ]);
    assert_eq!(restored["sets"].as_array().unwrap().len(), 2, "{restored}");
    assert_eq!(dag.count("a"), before, "every message is back, byte for byte");
}
