//! `shadowcopy dag init`: a CA, a certificate and a configuration per node that the node
//! accepts, owner-only keys, and nothing overwritten or half-made on a second run or a bad
//! name. (The DAG's multi-node behaviour is in `dag.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_shadowcopy");

fn init(dir: &std::path::Path, nodes: &str) -> Output {
    Command::new(BIN)
        .args(["dag", "init", "--name", "DAG1", "--nodes", nodes, "--dir"])
        .arg(dir)
        .args([
            "--etcd",
            "http://127.0.0.1:23999",
            "--base-port",
            "17700",
            "--storage-group",
            "SG1",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn init_writes_a_ca_certificates_and_configurations_the_nodes_accept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dag1");
    let out = init(&dir, "a,b,c");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        let cfg = node::Config::load(&dir.join(n).join("node.toml")).unwrap();
        let dag = cfg.dag.as_ref().expect("a [dag] section");
        assert_eq!(dag.name, "DAG1");
        assert_eq!(dag.etcd, vec!["http://127.0.0.1:23999".to_string()]);
        assert_eq!(dag.listen.port(), 17700 + i as u16);
        // The relative TLS paths resolve beside the configuration, and load.
        let tls = replication::tls::DagTls::load(&dag.ca, &dag.cert, &dag.key).unwrap();
        assert_eq!(tls.node_name(), *n);
        let mode = std::fs::metadata(&dag.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "node key of {n}");
        // Only the first node holds the storage group.
        assert_eq!(cfg.storage_groups.len(), usize::from(i == 0), "storage groups of {n}");
        assert!(stdout.contains(&format!("{n}/node.toml")), "start line of {n}: {stdout}");
    }
    let ca_key = std::fs::metadata(dir.join("ca.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(ca_key, 0o600);
    assert!(stdout.contains("copy add --sg SG1 --on b"), "{stdout}");

    // A second run never replaces the DAG's CA.
    let before = std::fs::read(dir.join("ca.pem")).unwrap();
    let again = init(&dir, "a,b,c");
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("ca.pem"), "{err}");
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), before);
}

#[test]
fn a_bad_node_name_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dag1");
    let out = init(&dir, "a,Node_B");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Node_B"), "{err}");
    assert!(!dir.join("ca.pem").exists(), "a CA was written for a refused DAG");
}
