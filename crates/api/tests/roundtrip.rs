//! Every type of the contract survives serialize → deserialize unchanged, and answers in the
//! node's wire format from before the contract existed still read.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;

use api::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: T) {
    let text = serde_json::to_string(&v).unwrap();
    let back: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(back, v, "{text}");
}

/// A sample in the wire format reads as `want`, and writes back as the same JSON.
fn reads<T: Serialize + DeserializeOwned + PartialEq + Debug>(wire: serde_json::Value, want: T) {
    let got: T = serde_json::from_value(wire.clone()).unwrap_or_else(|e| panic!("{wire}: {e}"));
    assert_eq!(got, want);
    assert_eq!(serde_json::to_value(&got).unwrap(), wire, "written back differently");
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn slot() -> BackupSlot {
    BackupSlot { time: 1_700_000_000, gen_low: 3, gen_high: 9, kind: SlotKind::Snapshot }
}

fn set() -> SetSummary {
    SetSummary {
        id: id(1),
        created_unix_ms: 1_700_000_000_000,
        node: "node-1".into(),
        backup_type: "full".into(),
        storage_group: "SG1".into(),
        job: Some(id(2)),
        base_set: None,
        log_range: Some(LogRange { low: 1, high: 7 }),
        files: 4,
        bytes: 1 << 20,
    }
}

#[test]
fn every_type_round_trips() {
    round_trip(ErrorBody {
        error: ErrorDetail { code: "no_such_set".into(), message: "no set".into(), status: None },
    });
    round_trip(WriterList {
        writers: vec![Writer {
            writer_name: "Store Writer".into(),
            writer_id: id(3),
            instance_name: "SG1".into(),
            state: 1,
            state_name: "Stable".into(),
            failure: Some("retryable".into()),
            message: None,
        }],
    });
    let volume = VolumeInfo {
        guid: id(4),
        label: "db".into(),
        root: "/srv/db".into(),
        block_size: 4096,
        snapshots: 2,
    };
    round_trip(ProviderList {
        providers: vec![Provider {
            provider_id: id(5),
            name: "software".into(),
            provider_type: "software".into(),
        }],
        volumes: vec![volume],
    });
    let shadow = Shadow {
        id: id(6),
        set_id: id(7),
        volume: id(4),
        volume_label: "db".into(),
        seq: 3,
        created_unix_ms: 5,
        persistent: true,
        diff_area_bytes: 8192,
        files: 2,
        exposed_at: Some("/mnt/db".into()),
    };
    round_trip(ShadowList { shadows: vec![shadow.clone()] });
    round_trip(CreateShadow { for_volume: "db".into() });
    round_trip(CreatedShadow {
        set_id: id(7),
        shadows: vec![shadow],
        hold_ms: 1.5,
        commit_ms: 3.0,
    });
    round_trip(DeleteShadows { for_volume: Some("db".into()), oldest: true, ..Default::default() });
    round_trip(DeletedShadows { deleted: vec![id(6)] });
    round_trip(ExposeShadow { shadow: id(6), at: "/mnt/db".into() });
    round_trip(UnexposeShadow { at: Some("/mnt/db".into()), ..Default::default() });
    round_trip(Exposures {
        exposures: vec![Exposure { shadow: id(6), at: "/mnt/db".into(), persistent: true }],
    });
    round_trip(ShadowStorageList {
        shadow_storage: vec![ShadowStorage {
            for_volume: id(4),
            for_label: "db".into(),
            on_volume: id(8),
            on_root: "/srv/logs".into(),
            used_bytes: 0,
            max_bytes: None,
        }],
    });
    for max_size in [MaxSize::Bytes(2 << 30), MaxSize::Percent(20), MaxSize::Unbounded] {
        round_trip(AddShadowStorage { for_volume: "db".into(), on: Some("logs".into()), max_size });
        round_trip(ResizeShadowStorage { for_volume: "db".into(), max_size });
    }
    round_trip(StoreStatus {
        storage_groups: vec![StorageGroupStatus {
            name: "SG1".into(),
            mounted: true,
            mount_error: None,
            log: Some(LogStatus {
                current_generation: 9,
                checkpoint_generation: 8,
                log_files: 9,
                lowest_generation: Some(1),
                highest_generation: Some(9),
                disk_full: false,
            }),
            databases: vec![
                DatabaseStatus {
                    name: "DB1".into(),
                    state: Some("DirtyShutdown".into()),
                    previous_full: Some(slot()),
                    ..DatabaseStatus::named("DB1")
                },
                DatabaseStatus { error: Some("unreadable".into()), ..DatabaseStatus::named("DB2") },
            ],
            backup_in_progress: Some(id(9)),
            copy_databases: vec![],
            truncation: Some(TruncationStatus {
                last_attempt: Some(TruncationAttempt {
                    event_id: 225,
                    time_ms: 7,
                    job: Some(id(9)),
                    truncated: false,
                    first: None,
                    last: None,
                    limit: Some("differential backups keep the logs".into()),
                    message: "no log files can be truncated".into(),
                }),
                last_truncated: None,
            }),
            copy_truncation: None,
        }],
    });
    let database = CreateDatabase { name: "DB1".into(), volume: "db".into(), path: None };
    round_trip(CreateStorageGroup {
        name: "SG2".into(),
        log_volume: "logs".into(),
        log_dir: None,
        system_dir: Some("SG2".into()),
        prefix: Some("E01".into()),
        circular_logging: true,
        database: database.clone(),
    });
    round_trip(database);
    let db = DatabaseConfig { name: "DB1".into(), volume: "db".into(), path: "SG2/DB1.edb".into() };
    round_trip(CreatedStorageGroup {
        storage_group: StorageGroupConfig {
            name: "SG2".into(),
            log_volume: "logs".into(),
            log_dir: "SG2".into(),
            system_dir: None,
            prefix: "E01".into(),
            circular_logging: false,
            databases: vec![db.clone()],
        },
        mounted: true,
    });
    round_trip(CreatedDatabase { storage_group: "SG2".into(), database: db });
    round_trip(Mounted { storage_group: "SG1".into(), mounted: false });
    round_trip(MailLoad {
        sg: "SG1".into(),
        db: "DB1".into(),
        messages: Some(5),
        ..Default::default()
    });
    round_trip(MailLoaded {
        storage_group: "SG1".into(),
        database: "DB1".into(),
        delivered: 5,
        errors: 0,
        last_error: None,
        elapsed_ms: 12.5,
    });
    round_trip(MailCountQuery {
        sg: "SG1".into(),
        db: "DB1".into(),
        path: Some("/x".into()),
        copy: true,
    });
    round_trip(MailCount {
        storage_group: "SG1".into(),
        database: "DB1".into(),
        path: None,
        messages: 5,
        mailboxes: 2,
        bytes: 100,
        digest: "ab".into(),
    });
    for backup_type in
        [BackupType::Full, BackupType::Incremental, BackupType::Differential, BackupType::Copy]
    {
        round_trip(BackupRequest {
            backup_type,
            sg: "SG1".into(),
            repo: "/r".into(),
            databases: vec!["DB1".into()],
            from: Some("passive".into()),
            password: Some("secret".into()),
        });
    }
    let backup = BackupReport {
        set: set(),
        job: id(2),
        bytes: 10,
        stored_bytes: 5,
        hold_ms: 1.0,
        elapsed_ms: 2.0,
        throughput_bytes_per_second: 5000.0,
        encrypted: true,
    };
    round_trip(backup.clone());
    round_trip(RepoQuery { repo: "/r".into() });
    round_trip(SetList {
        sets: vec![set()],
        encrypted: true,
        stats: Some(RepoFigures {
            sets: 1,
            chunks: 3,
            set_bytes: 300,
            raw_bytes: 200,
            stored_bytes: 100,
        }),
        verifications: vec![SetVerification {
            set: set().id,
            time_ms: 5,
            verified: false,
            error: Some("bad chunk".into()),
        }],
    });
    round_trip(VerifyRequest { repo: "/r".into(), set: "3f2a".into(), password: None });
    round_trip(VerifyRequest {
        repo: "/r".into(),
        set: "3f2a".into(),
        password: Some("pw".into()),
    });
    let verify = VerifyReport {
        set: set(),
        verified: true,
        report: VerifyFigures {
            files: 4,
            bytes: 100,
            headers: vec![DatabaseHeader {
                page_size: 8192,
                state: "clean_shutdown".into(),
                log_signature: "00ff".into(),
                dbid: 1,
                name: "DB1".into(),
                created: 1,
                last_attach: 2,
                last_detach: 3,
                min_required: 0,
                max_required: 4 << 32,
                update_count: 7,
                previous_full: Some(slot()),
                previous_incremental: None,
                previous_differential: None,
                previous_copy: None,
            }],
            databases: 1,
            pages: 10,
            first: 1,
            last: 7,
            records: 99,
        },
        elapsed_ms: 3.0,
    };
    round_trip(verify);
    round_trip(RestoreRequest {
        repo: "/r".into(),
        set: "3f2a".into(),
        to: Some("/x".into()),
        roll_forward: Some(false),
        ..Default::default()
    });
    let restore = RestoreReport {
        job: id(3),
        storage_group: "SG1".into(),
        sets: vec![id(1)],
        files: 4,
        bytes: 100,
        generations_replayed: vec![1, 2],
        transactions: 3,
        pages_written: 4,
        databases: vec![RestoredDatabase { name: "DB1".into(), path: "/x/DB1.edb".into() }],
        superseded_logs: Some(SupersededLogs {
            volume: "logs".into(),
            dir: "SG1/superseded-1".into(),
            path: Some("/srv/logs/SG1/superseded-1".into()),
            prefix: "E00".into(),
            first: Some(3),
            last: Some(9),
            files: vec!["E00.chk".into()],
        }),
        elapsed_ms: 5.0,
    };
    round_trip(restore);
    round_trip(EventQuery { job: Some(id(2).to_string()), limit: Some(5), ..Default::default() });
    round_trip(DagStatus {
        dag: "DAG1".into(),
        node: "a".into(),
        etcd: vec!["http://127.0.0.1:2379".into()],
        etcd_reachable: false,
        members: vec![
            DagMember { node: "a".into(), replication: Some("127.0.0.1:7400".into()), up: true },
            DagMember { node: "c".into(), replication: None, up: false },
        ],
        primary_active_manager: Some("a".into()),
    });
    round_trip(CopyAdd { sg: "SG1".into(), node: "b".into(), preference: Some(2) });
    round_trip(CopyAdd { sg: "SG1".into(), node: "b".into(), preference: None });
    round_trip(CopyChange { sg: "SG1".into(), node: "b".into(), reason: Some("disk".into()) });
    round_trip(CopyQuery { sg: Some("SG1".into()) });
    round_trip(CopyList {
        copies: vec![CopyRow {
            sg: "SG1".into(),
            node: "b".into(),
            role: "passive".into(),
            status: "FailedAndSuspended".into(),
            copy_queue_length: 3,
            replay_queue_length: 1,
            last_inspected_generation: 0x3A,
            last_replayed_generation: 0x39,
            activation_preference: 2,
            last_error: Some("log file E000000003B.log failed inspection twice".into()),
            suspended: None,
            node_up: true,
            shipping: Some("block mode".into()),
        }],
        groups: vec![GroupRow {
            sg: "SG1".into(),
            active: "a".into(),
            epoch: 3,
            since_generation: 0x41,
            previous: Some("c".into()),
            mount_dial: "lossless".into(),
            sync_copies: 1,
            sync_policy: "strict".into(),
        }],
    });
    round_trip(CopyActivate { sg: "SG1".into(), node: "b".into(), skip_checks: true });
    round_trip(CopyActivated {
        sg: "SG1".into(),
        from: "a".into(),
        to: "b".into(),
        epoch: 2,
        generation: 0x40,
        pause_ms: 312,
        manager: "c".into(),
    });
    round_trip(CopySettings {
        sg: "SG1".into(),
        mount_dial: Some("good".into()),
        sync_copies: None,
        sync_policy: Some("available".into()),
    });
    let mut fields = serde_json::Map::new();
    fields.insert("bytes".into(), json!(5));
    round_trip(EventList {
        events: vec![Event {
            time_ms: 1,
            node: "n".into(),
            source: "requester".into(),
            id: 8200,
            level: "info".into(),
            job: Some(id(2)),
            message: "Copied".into(),
            fields,
        }],
        unreachable: vec!["b: cannot reach node b at 127.0.0.1:1: connection refused".into()],
    });
    let lines: Vec<ProgressLine<BackupReport>> = vec![
        ProgressLine::Step { what: "copying".into() },
        ProgressLine::Bytes { done: 1, total: 2 },
        ProgressLine::Files { done: 1, total: 2 },
        ProgressLine::Done { report: backup },
        ProgressLine::Error {
            error: ErrorDetail { code: "x".into(), message: "y".into(), status: Some(500) },
        },
    ];
    for line in lines {
        round_trip(line);
    }
}

#[test]
fn answers_in_the_old_wire_format_still_read() {
    reads(
        json!({"error": {"code": "no_such_set", "message": "no set abc"}}),
        ErrorBody {
            error: ErrorDetail {
                code: "no_such_set".into(),
                message: "no set abc".into(),
                status: None,
            },
        },
    );
    reads(
        json!({"event": "error", "error": {"code": "busy", "message": "m", "status": 503}}),
        ProgressLine::<serde_json::Value>::Error {
            error: ErrorDetail { code: "busy".into(), message: "m".into(), status: Some(503) },
        },
    );
    reads(
        json!({"event": "bytes", "done": 5, "total": 10}),
        ProgressLine::<serde_json::Value>::Bytes { done: 5, total: 10 },
    );
    reads(
        json!({"for": "db", "on": "logs", "max_size": "20%"}),
        AddShadowStorage {
            for_volume: "db".into(),
            on: Some("logs".into()),
            max_size: MaxSize::Percent(20),
        },
    );
    // Sizes as people write them are read, and written back as bytes.
    let r: ResizeShadowStorage =
        serde_json::from_value(json!({"for": "db", "max_size": "2GiB"})).unwrap();
    assert_eq!(r.max_size, MaxSize::Bytes(2 << 30));
    let r: ResizeShadowStorage =
        serde_json::from_value(json!({"for": "db", "max_size": "unbounded"})).unwrap();
    assert_eq!(r.max_size, MaxSize::Unbounded);
    for bad in ["0%", "101%", "2 parsecs", ""] {
        let e =
            serde_json::from_value::<ResizeShadowStorage>(json!({"for": "db", "max_size": bad}))
                .unwrap_err();
        assert!(e.to_string().contains("is not a size"), "{bad}: {e}");
    }
    reads(
        json!({"type": "incremental", "sg": "SG1", "repo": "/r", "databases": []}),
        BackupRequest {
            backup_type: BackupType::Incremental,
            sg: "SG1".into(),
            repo: "/r".into(),
            databases: vec![],
            from: None,
            password: None,
        },
    );
    let b: BackupRequest =
        serde_json::from_value(json!({"type": "Full", "sg": "SG1", "repo": "/r"})).unwrap();
    assert_eq!(b.backup_type, BackupType::Full, "the type was read in any case before");
    reads(
        json!({
            "id": id(1), "created_unix_ms": 1_700_000_000_000u64, "node": "node-1",
            "type": "full", "storage_group": "SG1", "job": id(2), "base_set": null,
            "log_range": {"low": 1, "high": 7}, "files": 4, "bytes": 1048576
        }),
        set(),
    );
    reads(
        json!({
            "name": "DB1", "state": "CleanShutdown", "previous_full": {
                "time": 1_700_000_000u64, "gen_low": 3, "gen_high": 9, "kind": "snapshot"
            },
            "previous_incremental": null, "previous_differential": null, "previous_copy": null
        }),
        DatabaseStatus {
            state: Some("CleanShutdown".into()),
            previous_full: Some(slot()),
            ..DatabaseStatus::named("DB1")
        },
    );
    // A database whose header could not be read had only its name and the error.
    let d: DatabaseStatus =
        serde_json::from_value(json!({"name": "DB2", "error": "gone"})).unwrap();
    assert_eq!(d, DatabaseStatus { error: Some("gone".into()), ..DatabaseStatus::named("DB2") });
    reads(
        json!({"writers": [{
            "writer_name": "W", "writer_id": id(3), "instance_name": "SG1", "state": 1,
            "state_name": "Stable", "failure": null, "message": null
        }]}),
        WriterList {
            writers: vec![Writer {
                writer_name: "W".into(),
                writer_id: id(3),
                instance_name: "SG1".into(),
                state: 1,
                state_name: "Stable".into(),
                failure: None,
                message: None,
            }],
        },
    );
    reads(
        json!({"providers": [{"provider_id": id(5), "name": "p", "type": "software"}], "volumes": []}),
        ProviderList {
            providers: vec![Provider {
                provider_id: id(5),
                name: "p".into(),
                provider_type: "software".into(),
            }],
            volumes: vec![],
        },
    );
}

#[test]
fn the_document_has_every_endpoint_and_no_other() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut table: Vec<(String, String)> =
        ENDPOINTS.iter().map(|e| (e.method.as_str().to_string(), e.path.to_string())).collect();
    table.sort();
    assert_eq!(documented, table);
    // Every schema a path refers to is in the components.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "{name} is referred to but not defined");
    }
}

#[test]
fn the_mail_clients_types_round_trip() {
    let stored = MailRef { mailbox: "client001".into(), message_id: 7, body_hash: "ab".repeat(32) };
    round_trip(MailDeliver {
        sg: "SG1".into(),
        db: "DB1".into(),
        mailbox: "client001".into(),
        from: None,
        subject: "s".into(),
        body: "b".into(),
    });
    round_trip(MailDelivered {
        storage_group: "SG1".into(),
        database: "DB1".into(),
        mailbox: "client001".into(),
        message_id: 7,
        node: "a".into(),
        body_hash: "ab".repeat(32),
    });
    round_trip(MailCheck { sg: "SG1".into(), db: "DB1".into(), messages: vec![stored.clone()] });
    round_trip(MailChecked { checked: 1, missing: vec![stored], node: "a".into() });
    // A request without a sender or subject reads (scripts send the least they can).
    let minimal: MailDeliver =
        serde_json::from_value(json!({"sg": "SG1", "db": "DB1", "mailbox": "m", "body": "b"}))
            .unwrap();
    assert_eq!((minimal.from, minimal.subject.as_str()), (None, ""));
}

#[test]
fn the_schedule_list_round_trips_with_its_wire_names() {
    let list = ScheduleList {
        schedules: vec![ScheduleInfo {
            name: "nightly".into(),
            action: ScheduleAction::Backup,
            cron: "0 2 * * *".into(),
            timezone: "utc".into(),
            sg: Some("SG1".into()),
            backup_type: Some(BackupType::Incremental),
            repo: "/srv/backups".into(),
            running: false,
            next_run_unix_ms: Some(1_767_578_400_000),
            next_run: Some("2026-01-05T02:00:00Z".into()),
            last_run_unix_ms: Some(1_767_492_000_000),
            last_run: Some("2026-01-04T02:00:00Z".into()),
            last_result: Some(ScheduleResult::Failed),
            last_error: Some("disk full".into()),
            last_job: None,
            last_success_unix_ms: None,
        }],
    };
    round_trip(list.clone());
    let v = serde_json::to_value(&list).unwrap();
    let s = &v["schedules"][0];
    assert_eq!(s["action"], "backup");
    assert_eq!(s["type"], "incremental");
    assert_eq!(s["last_result"], "failed");
}
