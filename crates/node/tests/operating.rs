//! Operating a node (issue 12, item 8): a log volume pointed at the wrong directory, and a
//! volume path that does not exist.

// Test helpers unwrap as the tests do: clippy.toml allows it only inside #[test] functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use node::{Config, Node, NodeError};

fn config(dir: &Path) -> Config {
    node::sample::Sample::default().config(dir).unwrap()
}

/// The mount error of SG1 as the store keeps it.
fn sg1_mount_error(node: &Node) -> String {
    let sg = node.store().storage_group("SG1").unwrap();
    assert!(!sg.is_mounted(), "SG1 mounted without its logs");
    sg.mount_error().expect("SG1 has no mount error")
}

#[test]
fn a_database_without_its_logs_is_refused_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).unwrap();
    // The node "crashes": no dismount, the database stays in dirty shutdown.
    drop(node);

    // After the crash the log volume is pointed at an empty directory.
    let mut moved = config(dir.path());
    let logs = moved.volumes.iter_mut().find(|v| v.label == "logs").unwrap();
    logs.path = dir.path().join("empty-logs");
    let node = Node::start(moved).unwrap();
    let e = sg1_mount_error(&node);
    assert!(e.contains("DB1") && e.contains("logs are missing"), "{e}");
    assert!(e.contains("E00.chk") && e.contains("logs:SG1"), "where it looked: {e}");
    assert!(e.contains("log generations 0x") && e.contains("E0000000"), "which generations: {e}");
    assert!(!e.contains("File exists"), "{e}");
    // Nothing was created beside the database.
    assert!(!dir.path().join("empty-logs/SG1/E00.log").exists());
    node.shutdown();
}

#[test]
fn a_volume_directory_that_does_not_exist_is_an_error_unless_created() {
    let dir = tempfile::tempdir().unwrap();
    let mut typo = config(dir.path());
    let db = typo.volumes.iter_mut().find(|v| v.label == "db").unwrap();
    db.create = false;
    db.path = dir.path().join("dbb");
    let e = Node::start(typo).unwrap_err();
    assert!(matches!(e, NodeError::MissingVolume { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("dbb") && text.contains("create = true"), "{text}");
    assert!(!dir.path().join("dbb").exists(), "the mistyped directory was created");
}

#[test]
fn a_database_of_another_log_stream_is_refused_naming_both() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&a, &b] {
        let node = Node::start(config(dir.path())).unwrap();
        assert!(node.shutdown().is_empty());
    }
    // B's database (shut down cleanly) copied over A's.
    let edb = |d: &Path| d.join("db/SG1/DB1.edb");
    std::fs::copy(edb(b.path()), edb(a.path())).unwrap();
    let node = Node::start(config(a.path())).unwrap();
    let e = sg1_mount_error(&node);
    assert!(e.contains("DB1") && e.contains("another log stream"), "{e}");
    assert!(e.contains("E00.chk") && e.matches("log signature").count() == 1, "{e}");
    node.shutdown();
}

/// Issue 12: changing `block_size` of an existing volume is refused at start, naming the
/// volume and both sizes, instead of being silently ignored.
#[test]
fn changing_the_block_size_of_an_existing_volume_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let set = |cfg: &mut Config, size: &str| {
        let db = cfg.volumes.iter_mut().find(|v| v.label == "db").unwrap();
        db.block_size = Some(size.into());
    };
    set(&mut cfg, "4KiB");
    let node = Node::start(cfg.clone()).unwrap();
    assert!(node.shutdown().is_empty());
    drop(node);
    set(&mut cfg, "8KiB");
    let e = Node::start(cfg.clone()).unwrap_err();
    assert!(matches!(e, NodeError::Volume { ref label, .. } if label == "db"), "{e}");
    let text = e.to_string();
    assert!(text.contains("4096") && text.contains("8192"), "{text}");
    set(&mut cfg, "4KiB");
    let node = Node::start(cfg).unwrap();
    node.shutdown();
}
