//! Every `compression` setting, end to end: a full backup of a store whose mail is partly
//! text and partly incompressible, verified (pages and log records read back through the
//! repository), its log files compared byte for byte with the live ones, and the database
//! lost and restored in place from it, rolled forward to the same mail.

// Test helpers: a failed unwrap is a failed test, with its line (as clippy.toml allows in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use backup::repo::{Compression, FileRole, InitOptions};
use backup::{BackupRequest, Quiet, RestoreRequest, RestoreTarget, Restorer};
use vss::BackupType;

/// Text bodies and random ones (already compressed attachments), so that chunks of both
/// kinds are in the set.
fn deliver(n: &common::Node, count: u64, seed: u64) {
    let mail = n.store.storage_group("SG1").unwrap().mail("DB1").unwrap();
    if !mail.mailboxes().unwrap().contains(&"a".to_string()) {
        mail.create_mailbox("a").unwrap();
    }
    for i in 0..count {
        let body = if i % 3 == 2 {
            store::load::random_body(20_000, seed + i)
        } else {
            store::load::body(20_000, seed + i)
        };
        let h = store::message::Headers {
            from: "x@example.com".into(),
            to: vec!["a@example.com".into()],
            subject: format!("message {i}"),
            received_unix_ms: 0,
        };
        mail.deliver("a", "Inbox", h, &body, ese::Durability::Durable).unwrap();
    }
}

#[test]
fn every_setting_backs_up_and_restores_bit_exact() {
    for setting in ["auto", "zstd:3", "lz4", "none"] {
        let compression: Compression = setting.parse().unwrap();
        let n = common::node_with_repo(InitOptions { compression, ..common::repo_options() });
        deliver(&n, 60, 1);
        let request = BackupRequest {
            storage_group: "SG1".into(),
            backup_type: BackupType::Full,
            databases: vec![],
            replica: None,
            history_nodes: vec![],
        };
        let full = n.requester.backup(&request, &Quiet).unwrap();
        let repo = n.requester.repo().clone();
        assert_eq!(repo.config().compression_setting(), compression);
        let stats = repo.stats().unwrap();
        match compression {
            Compression::None => assert_eq!(stats.stored_bytes, stats.raw_bytes, "{setting}"),
            _ => assert!(stats.stored_bytes < stats.raw_bytes, "{setting}: {stats:?}"),
        }
        // Every page and log record, read back through the repository.
        let report = backup::verify_set(&repo, &full.set, &Quiet).unwrap();
        assert_eq!(report.physical.databases, 1, "{setting}");

        // Closed log generations never change: those still live are the set's, byte for byte.
        let mut compared = 0;
        for f in full.set.files.iter().filter(|f| f.role == FileRole::Log) {
            let on_volume = f.path.strip_prefix("logs/").unwrap();
            let Ok(live) = volume::fs::read_all(n.logs.as_ref(), Path::new(on_volume)) else {
                continue;
            };
            let mut restored = vec![0u8; f.size as usize];
            repo.read_file(f, &mut |off, d| {
                restored[off as usize..off as usize + d.len()].copy_from_slice(d);
                Ok(())
            })
            .unwrap();
            assert!(restored == live, "{setting}: {} differs from the live file", f.path);
            compared += 1;
        }
        assert!(compared > 0, "{setting}: a log generation of the set is still live");

        // Lose the database; restore it from the set in place, rolling forward.
        deliver(&n, 10, 1000);
        let sg = n.store.storage_group("SG1").unwrap();
        let before = sg.mail("DB1").unwrap().digest().unwrap();
        sg.dismount(false).unwrap();
        n.db.remove_file(Path::new("SG1/DB1.edb")).unwrap();
        let restorer =
            Restorer::new(n.coordinator.clone(), n.store.clone(), repo.clone(), n.events.clone());
        let request = RestoreRequest {
            set: full.set.id.to_string(),
            target: RestoreTarget::Original { allow_overwrite: false },
            roll_forward: true,
        };
        restorer.restore(&request, &Quiet).unwrap();
        assert!(sg.mail("DB1").unwrap().digest().unwrap() == before, "{setting}: same mail");
    }
}
