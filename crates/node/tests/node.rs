//! A node on real copy-on-write volumes: backups through the software provider, restart.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backup::repo::Repository;
use backup::{BackupRequest, Quiet, RestoreRequest, RestoreTarget};
use node::{Config, Node};
use store::load::{LoadConfig, LoadGenerator};
use volume::{FsRef, HostFs};
use vss::BackupType;

pub fn config(dir: &Path) -> Config {
    node::sample::Sample::default().config(dir).unwrap()
}

#[test]
fn backups_through_real_copy_on_write_snapshots_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).unwrap();
    let repo_fs: FsRef = Arc::new(HostFs::new(dir.path().join("repo")).unwrap());
    let repo = Arc::new(Repository::open_or_init(repo_fs, "").unwrap());
    let mail = node.store().storage_group("SG1").unwrap().mail("DB1").unwrap();
    let load = LoadGenerator::start(
        mail,
        LoadConfig {
            mailboxes: 4,
            body_min: 1000,
            body_max: 60_000,
            seed: 3,
            ..Default::default()
        },
    )
    .unwrap();
    wait_for_deliveries(&load, 100);
    let requester = node.requester(repo.clone());
    let req = |t| BackupRequest {
        storage_group: "SG1".into(),
        backup_type: t,
        databases: vec![],
        replica: None,
        history_nodes: vec![],
    };
    let full = requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    wait_for_deliveries(&load, load.acknowledged() + 100);
    let inc = requester.backup(&req(BackupType::Incremental), &Quiet).unwrap();
    let ledger = load.stop();
    assert_eq!(ledger.errors, 0, "{:?}", ledger.last_error);
    assert!(node.provider().query().is_empty(), "backup snapshots are released with the job");
    repo.verify_set(&full.set, &|_| {}).unwrap();
    repo.verify_set(&inc.set, &|_| {}).unwrap();

    // The full's trail is readable from the persistent event log.
    let trail = node.events().query(&events::Filter::job(full.job)).unwrap();
    assert!(trail.iter().any(|e| e.id == 2001) && trail.iter().any(|e| e.id == 2006));

    // Restart: the store mounts after recovery and holds everything acknowledged.
    assert!(node.shutdown().is_empty());
    drop(requester); // it holds the store, and so the volumes: their locks go with it
    drop(node);
    let node = Node::start(config(dir.path())).unwrap();
    let sg = node.store().storage_group("SG1").unwrap();
    ledger.verify(&sg.mail("DB1").unwrap(), u64::MAX).unwrap();

    // Disaster and restore from full + incremental, rolling forward.
    sg.dismount(false).unwrap();
    std::fs::remove_file(dir.path().join("db/SG1/DB1.edb")).unwrap();
    node.restorer(repo.clone())
        .restore(
            &RestoreRequest {
                set: inc.set.id.to_string(),
                target: RestoreTarget::Original { allow_overwrite: false },
                roll_forward: true,
            },
            &Quiet,
        )
        .unwrap();
    ledger.verify(&sg.mail("DB1").unwrap(), u64::MAX).unwrap();
}

/// Waits until the load generator has `n` deliveries acknowledged; fails after a deadline
/// generous for a slow machine, naming what it waited for.
fn wait_for_deliveries(load: &LoadGenerator, n: u64) {
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while load.acknowledged() < n {
        assert!(
            std::time::Instant::now() < until,
            "waited 120 s for {n} acknowledged deliveries; {} arrived",
            load.acknowledged()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
