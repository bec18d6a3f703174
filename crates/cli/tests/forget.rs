//! `shadowcopy backup forget`, run as a user runs it, on a repository written through the
//! library: a dry run removes nothing, a real run removes exactly the sets the policy does
//! not keep (never a set a kept one needs), and `--json` is the plan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use backup::repo::{BackupSet, Repository, SetMeta};
use backup::retention::ForgetPlan;
use uuid::Uuid;
use vss::BackupType;

const BIN: &str = env!("CARGO_BIN_EXE_shadowcopy");

/// UTC times of the sets, in milliseconds since the Unix epoch.
const NOV_01: u64 = 1_793_527_200_000; // 2026-11-01 10:00
const NOV_02: u64 = 1_793_613_600_000;
const NOV_10: u64 = 1_794_304_800_000;
const NOV_20: u64 = 1_795_168_800_000;
const NOV_28: u64 = 1_795_860_000_000;
const NOV_29: u64 = 1_795_946_400_000; // 2026-11-29 10:00
const NOV_29_11H: u64 = 1_795_950_000_000; // 2026-11-29 11:00

/// Publishes a set with no files and sets its creation time (publish stamps the clock's).
fn publish(
    repo: &Repository,
    sg: &str,
    kind: BackupType,
    base: Option<&BackupSet>,
    at: u64,
) -> BackupSet {
    let meta = SetMeta {
        node: "n1".into(),
        backup_type: kind,
        storage_group: sg.into(),
        base_set: base.map(|b| b.id),
        ..SetMeta::default()
    };
    let mut set = repo.begin_set().publish(meta).unwrap();
    set.created_unix_ms = at;
    repo.rewrite_manifest(&set).unwrap();
    set
}

fn forget(repo: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["backup", "forget", "--repo"])
        .arg(repo)
        .args(args)
        .env_remove("SHADOWCOPY_PASSWORD_FILE")
        .env_remove("SHADOWCOPY_NODE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn ids(repo: &Repository) -> BTreeSet<Uuid> {
    repo.list_sets().unwrap().iter().map(|s| s.id).collect()
}

fn short(s: &BackupSet) -> String {
    s.id.to_string()[..8].to_string()
}

#[test]
fn forget_keeps_what_the_rules_and_the_chains_need_and_removes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = Repository::open_or_init_host(&dir).unwrap();
    let f1 = publish(&repo, "SG1", BackupType::Full, None, NOV_01);
    let i1 = publish(&repo, "SG1", BackupType::Incremental, Some(&f1), NOV_02);
    let f2 = publish(&repo, "SG1", BackupType::Full, None, NOV_20);
    let i2 = publish(&repo, "SG1", BackupType::Incremental, Some(&f2), NOV_28);
    let d = publish(&repo, "SG1", BackupType::Differential, Some(&f2), NOV_29);
    let f3 = publish(&repo, "SG2", BackupType::Full, None, NOV_10);
    let f4 = publish(&repo, "SG2", BackupType::Full, None, NOV_29_11H);
    let all = ids(&repo);

    // The newest day of each group: the differential (with its full and the incremental
    // before it, whose logs it lacks) and SG2's last full.
    let out = ok(&forget(&dir, &["--keep-daily", "1", "--dry-run"]));
    assert_eq!(ids(&repo), all, "a dry run removed sets:\n{out}");
    assert!(out.contains("4 kept, 3 would be forgotten"), "{out}");
    assert!(out.contains("TIME (UTC)"), "{out}");
    let line = |s: &BackupSet| {
        out.lines()
            .find(|l| l.starts_with(&short(s)))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    assert!(line(&d).contains("2026-11-29 10:00:00"), "{out}");
    assert!(line(&d).contains("differential") && line(&d).contains("daily 2026-11-29"), "{out}");
    assert!(line(&i2).contains(&format!("needed by {}", short(&d))), "{out}");
    assert!(line(&f2).contains("keep"), "{out}");
    assert!(line(&f1).contains("forget") && line(&i1).contains("forget"), "{out}");

    let json = ok(&forget(&dir, &["--keep-daily", "1", "--dry-run", "--json"]));
    let plan: ForgetPlan = serde_json::from_str(&json).unwrap();
    assert!(!plan.applied);
    let kept: BTreeSet<Uuid> = plan.decisions.iter().filter(|x| x.keep).map(|x| x.set).collect();
    assert_eq!(kept, BTreeSet::from([f2.id, i2.id, d.id, f4.id]));
    assert_eq!(plan.decisions.len(), 7);
    assert_eq!(ids(&repo), all);

    // A real run on SG1 only: SG2's old full stays.
    let out = ok(&forget(&dir, &["--sg", "SG1", "--keep-daily", "1"]));
    assert!(out.contains("3 kept, 2 forgotten"), "{out}");
    assert_eq!(ids(&repo), BTreeSet::from([f2.id, i2.id, d.id, f3.id, f4.id]));

    // Then every group, as JSON.
    let json = ok(&forget(&dir, &["--keep-last", "1", "--json"]));
    let plan: ForgetPlan = serde_json::from_str(&json).unwrap();
    assert!(plan.applied);
    assert_eq!(ids(&repo), BTreeSet::from([f2.id, i2.id, d.id, f4.id]));
}

#[test]
fn forget_without_a_rule_is_refused_and_removes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = Repository::open_or_init_host(&dir).unwrap();
    publish(&repo, "SG1", BackupType::Full, None, NOV_01);
    publish(&repo, "SG1", BackupType::Full, None, NOV_02);
    let all = ids(&repo);
    for args in [&[][..], &["--keep-last", "0"][..]] {
        let out = forget(&dir, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains("give at least one --keep-* rule"), "{stderr}");
        assert_eq!(ids(&repo), all);
    }
}

#[test]
fn forget_names_a_missing_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nothing-here");
    let out = forget(&dir, &["--keep-last", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("opening repository"), "{stderr}");
    assert!(!dir.exists(), "forget created a repository");
}
