//! End to end through the real binary with the repository in an S3 bucket: a node (with the
//! `AWS_*` variables of a `moto_server` on loopback) backs up to `s3://bucket/prefix`, lists,
//! verifies and restores from it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../../backup/tests/common/s3_server.rs"]
mod s3_server;

use common::{Served, config};
use s3_server::S3Server;

#[test]
fn backup_list_verify_and_restore_through_the_node_with_an_s3_repository() {
    let Some(server) = S3Server::start("shadowcopy-e2e") else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = Served::start_env(dir.path(), &config(dir.path(), ""), &server.env());
    let repo = server.url("node/repo");

    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "100"]);
    let full = node.cli(&["backup", "run", "--type", "full", "--sg", "SG1", "--repo", &repo]);
    assert!(full.contains("(full of SG1)"), "{full}");
    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "30"]);
    node.cli(&["backup", "run", "--type", "incremental", "--sg", "SG1", "--repo", &repo]);

    let sets = node.json(&["backup", "list", "--repo", &repo]);
    let sets = sets["sets"].as_array().unwrap();
    let types: Vec<&str> = sets.iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["full", "incremental"]);
    for s in sets {
        let out = node.cli(&["backup", "verify", "--repo", &repo, s["id"].as_str().unwrap()]);
        assert!(out.contains("verified"), "{out}");
    }

    let inc = sets[1]["id"].as_str().unwrap();
    let alt = dir.path().join("restored");
    let out = node.cli(&["restore", "--repo", &repo, "--set", inc, "--to", alt.to_str().unwrap()]);
    assert!(out.contains("Restored SG1 from 2 set(s)"), "{out}");
    assert!(alt.join("DB1.edb").exists(), "the database was restored into {alt:?}");

    // A repository that is not there is said as such, with its URL.
    let missing = server.url("nothing/here");
    let out = node.cli_output(&["backup", "list", "--repo", &missing]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&missing), "{err}");
}
