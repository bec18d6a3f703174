//! The requester finds a storage group's components by the files the writers describe, not by
//! a writer's id, instance name or logical path: a second writer of the same class (the
//! replication writer, describing its copies under a `Replica` logical path) is not taken for
//! the store's, whichever order the coordinator lists them in.

// Test helpers: a failed unwrap is a failed test, with its line (as clippy.toml allows in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use backup::repo::Repository;
use backup::requester::find_components;
use volume::{FsRef, HostFs};
use vss::{ComponentType, WriterDescription, WriterKey, WriterMetadata};

/// The store writer's metadata as a real backup recorded it (the format-1 fixture).
fn store_metadata() -> WriterMetadata {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let fs: FsRef = Arc::new(HostFs::new(&dir).unwrap());
    let repo = Repository::open(fs, "repo-format1").unwrap();
    let set = repo.load_set("cfe8c479").unwrap();
    serde_json::from_value(set.writer_metadata).unwrap()
}

fn describe(metadata: WriterMetadata) -> WriterDescription {
    WriterDescription {
        key: WriterKey {
            writer_id: metadata.writer_id,
            instance_name: metadata.instance_name.clone(),
        },
        metadata,
        status: Default::default(),
    }
}

/// A replication writer's metadata: same writer id, its own instance, the same storage
/// group's components (same names) under a `Replica` logical path, over the replica's files.
fn replica_metadata(store: &WriterMetadata) -> WriterMetadata {
    let mut m = store.clone();
    m.instance_name = "Shadowcopy Replication Service".into();
    for c in &mut m.components {
        c.logical_path = c.logical_path.replace("Information Store", "Replica");
        for fd in &mut c.files {
            fd.path = format!("replica/{}", fd.path);
        }
    }
    m
}

#[test]
fn the_store_writers_components_are_found_beside_a_replica_writer() {
    let n = common::node();
    let sg = n.store.storage_group("SG1").unwrap();
    let store = store_metadata();
    let replica = replica_metadata(&store);
    for writers in [
        vec![describe(store.clone()), describe(replica.clone())],
        vec![describe(replica.clone()), describe(store.clone())],
    ] {
        let found = find_components(&writers, &sg.def()).expect("the storage group is offered");
        let w = &writers[found.writer];
        assert_eq!(w.metadata.instance_name, store.instance_name, "the store's writer");
        assert_eq!(found.logs.name, "Logs");
        assert_eq!(found.logs.component_type, ComponentType::Filegroup);
        let dbs: Vec<(&str, &str)> =
            found.databases.iter().map(|(n, c)| (n.as_str(), c.name.as_str())).collect();
        assert_eq!(dbs, [("DB1", "DB1")]);
        assert!(!found.logs.logical_path.contains("Replica"));
    }
    // Only the replica offering it: not the live storage group's files, so not found.
    assert!(find_components(&[describe(replica)], &sg.def()).is_none());
}

/// The live backup through the real coordinator selects exactly those components.
#[test]
fn a_backup_records_the_components_found_by_their_files() {
    let n = common::node();
    let req = backup::BackupRequest {
        storage_group: "SG1".into(),
        backup_type: vss::BackupType::Full,
        databases: vec![],
        replica: None,
        history_nodes: vec![],
    };
    let report = n.requester.backup(&req, &backup::Quiet).unwrap();
    let names: Vec<&str> = report
        .document
        .writers
        .iter()
        .flat_map(|w| w.components.iter().map(|c| c.name.as_str()))
        .collect();
    assert_eq!(names, ["DB1", "Logs"], "{:?}", report.document);
}
