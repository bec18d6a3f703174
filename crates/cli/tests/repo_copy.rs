//! `shadowcopy backup copy` run as a user would: sets copied between two repositories on disk,
//! the copies readable and equal, a second run copying nothing, and a missing target refused
//! by name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;

use backup::repo::{FileRole, InitOptions, Repository, SetMeta};
use volume::fs::{FileSystem, OpenMode};

const BIN: &str = env!("CARGO_BIN_EXE_shadowcopy");

fn host_repo(dir: &std::path::Path) -> Repository {
    let fs: volume::FsRef = Arc::new(volume::HostFs::new(dir).unwrap());
    Repository::init(fs, "", InitOptions { chunk_size: 64 << 10, ..InitOptions::default() })
        .unwrap()
}

fn copy(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["backup", "copy"])
        .args(args)
        .env_remove("SHADOWCOPY_PASSWORD_FILE")
        .env_remove("SHADOWCOPY_FROM_PASSWORD_FILE")
        .output()
        .unwrap()
}

#[test]
fn backup_copy_copies_sets_once_and_refuses_a_missing_target() {
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("r1"), tmp.path().join("r2"));
    let r1 = host_repo(&d1);
    host_repo(&d2);
    let src = volume::mem::MemFs::new();
    let data = store::load::random_body(300_000, 5);
    let f = src.open(std::path::Path::new("db.edb"), OpenMode::Create).unwrap();
    f.write_at(&data, 0).unwrap();
    let mut w = r1.begin_set();
    w.add_file("vol/db.edb", FileRole::Database, "SG1/db", f.as_ref(), &|_| {}).unwrap();
    let set = w.publish(SetMeta { storage_group: "SG1".into(), ..SetMeta::default() }).unwrap();

    let out = copy(&["--from", d1.to_str().unwrap(), "--to", d2.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["copied"], serde_json::json!([set.id.to_string()]));
    assert_eq!(report["bytes_verified"], serde_json::json!(data.len()));
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains(&format!("copying set {}", set.id))
            && progress.contains(&format!("verifying the copy of {}", set.id)),
        "{progress}"
    );

    let r2 = Repository::open_host(&d2).unwrap();
    let copied = r2.load_set(&set.id.to_string()).unwrap();
    let mut back = vec![0u8; data.len()];
    r2.read_file(&copied.files[0], &mut |off, d| {
        back[off as usize..off as usize + d.len()].copy_from_slice(d);
        Ok(())
    })
    .unwrap();
    assert!(back == data, "the copy reads back the original bytes");

    let again = copy(&["--from", d1.to_str().unwrap(), "--to", d2.to_str().unwrap()]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("0 set(s) copied") && text.contains("1 already"), "{text}");

    let missing = tmp.path().join("nowhere");
    let refused = copy(&["--from", d1.to_str().unwrap(), "--to", missing.to_str().unwrap()]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("nowhere") && err.contains("not a Shadowcopy repository"), "{err}");
    assert!(!missing.exists(), "a refused copy creates nothing");
}
