//! Writer metadata and backup components documents survive JSON unchanged.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use uuid::Uuid;
use vss::*;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 _\\\\/.*?{}\"é-]{0,12}"
}

fn component() -> impl Strategy<Value = Component> {
    (
        text(),
        text(),
        prop_oneof![Just(ComponentType::Database), Just(ComponentType::Filegroup)],
        text(),
        prop::collection::vec((text(), text(), text(), any::<bool>()), 0..3),
        any::<bool>(),
    )
        .prop_map(|(logical_path, name, component_type, caption, files, selectable)| {
            Component {
                logical_path,
                name,
                component_type,
                caption,
                files: files
                    .into_iter()
                    .map(|(volume, path, filespec, recursive)| FileDescriptor {
                        volume,
                        path,
                        filespec,
                        recursive,
                    })
                    .collect(),
                selectable,
            }
        })
}

fn feature() -> impl Strategy<Value = SchemaFeature> {
    prop_oneof![
        Just(SchemaFeature::Differential),
        Just(SchemaFeature::Incremental),
        Just(SchemaFeature::ExclusiveIncrementalDifferential),
        Just(SchemaFeature::Log),
        Just(SchemaFeature::Copy),
        Just(SchemaFeature::RestoreWithMove),
        Just(SchemaFeature::RollForwardRestore),
        Just(SchemaFeature::NewTarget),
    ]
}

fn backup_type() -> impl Strategy<Value = BackupType> {
    prop_oneof![
        Just(BackupType::Full),
        Just(BackupType::Incremental),
        Just(BackupType::Differential),
        Just(BackupType::Log),
        Just(BackupType::Copy),
    ]
}

fn metadata() -> impl Strategy<Value = WriterMetadata> {
    (
        uuid(),
        text(),
        text(),
        prop::collection::vec(component(), 0..4),
        prop::collection::btree_set(feature(), 0..4),
    )
        .prop_map(|(writer_id, writer_name, instance_name, components, features)| {
            WriterMetadata {
                version: vss::metadata::WRITER_METADATA_VERSION,
                writer_id,
                writer_name,
                instance_name,
                components,
                schema: BackupSchema { features },
                restore_method: RestoreMethod::StopRestoreStart,
            }
        })
}

fn writer_entry() -> impl Strategy<Value = WriterEntry> {
    (
        uuid(),
        text(),
        text(),
        backup_type(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        prop::collection::vec((text(), text(), proptest::option::of(any::<bool>())), 0..3),
    )
        .prop_map(|(id, inst, name, backup_type, backup_stamp, previous_stamp, comps)| {
            WriterEntry {
                key: WriterKey { writer_id: id, instance_name: inst },
                writer_name: name,
                backup_type,
                backup_stamp,
                previous_stamp,
                components: comps
                    .into_iter()
                    .map(|(logical_path, name, succeeded)| ComponentEntry {
                        logical_path,
                        name,
                        component_type: ComponentType::Database,
                        succeeded,
                    })
                    .collect(),
            }
        })
}

fn document() -> impl Strategy<Value = BackupComponentsDocument> {
    (
        uuid(),
        text(),
        backup_type(),
        proptest::option::of(uuid()),
        prop::collection::vec((text(), uuid()), 0..3),
        proptest::option::of(uuid()),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
        prop::collection::vec(writer_entry(), 0..3),
    )
        .prop_map(
            |(job, node, backup_type, snapshot_set, snaps, base_job, time, completed, writers)| {
                let mut d = BackupComponentsDocument {
                    version: vss::document::DOCUMENT_VERSION,
                    job,
                    node,
                    context: SnapshotContext::Backup,
                    backup_type,
                    snapshot_set,
                    snapshots: snaps
                        .into_iter()
                        .map(|(volume, snapshot_id)| SnapshotRecord {
                            volume,
                            snapshot_id,
                            provider: "p".into(),
                        })
                        .collect(),
                    base_job,
                    snapshot_time_ms: time,
                    completed,
                    writers,
                };
                d.normalize();
                d
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn writer_metadata_round_trips(m in metadata()) {
        let json = m.to_json();
        let back = WriterMetadata::from_json(&json).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.to_json(), json);
    }

    #[test]
    fn components_document_round_trips_and_is_stable(d in document()) {
        let json = d.to_json();
        let back = BackupComponentsDocument::from_json(&json).unwrap();
        prop_assert_eq!(&back, &d);
        prop_assert_eq!(back.to_json(), json);
    }
}

#[test]
fn a_newer_document_version_is_refused_by_name() {
    let mut v: serde_json::Value = serde_json::from_str(
        &BackupComponentsDocument {
            version: 1,
            job: Uuid::nil(),
            node: "n".into(),
            context: SnapshotContext::Backup,
            backup_type: BackupType::Full,
            snapshot_set: None,
            snapshots: vec![],
            base_job: None,
            snapshot_time_ms: None,
            completed: false,
            writers: vec![],
        }
        .to_json(),
    )
    .unwrap();
    v["version"] = 99.into();
    let err = BackupComponentsDocument::from_json(&v.to_string()).unwrap_err();
    assert!(err.to_string().contains("version 99"), "{err}");
}
