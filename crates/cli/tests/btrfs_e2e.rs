//! End to end with the storage group on btrfs volumes (`provider = "btrfs"`): a full backup,
//! the database lost, restored over the original location and rolled forward, and every
//! acknowledged message back; a persistent btrfs shadow across a restart. The btrfs is made on
//! a loop device (needs root: fails under CI without it, else skips saying why).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BIN, Served};
use node::sample::Sample;
use volume::btrfs::scratch::ScratchBtrfs;

/// The sample layout with both volumes on the btrfs provider.
fn btrfs_config(dir: &std::path::Path) -> String {
    let text = Sample { shadow_max: None, ..Default::default() }.toml(dir);
    let text = text.replace("create = true\n", "create = true\nprovider = \"btrfs\"\n");
    assert_eq!(text.matches("provider = \"btrfs\"").count(), 2);
    text
}

#[test]
fn full_backup_restore_and_no_loss_with_the_storage_group_on_btrfs() {
    let Some(b) = ScratchBtrfs::for_test("btrfs end to end") else { return };
    let dir = b.mount_point().to_path_buf();
    b.subvolume("logs").unwrap();
    b.subvolume("db").unwrap();
    let node = Served::start(&dir, &btrfs_config(&dir));
    let repo = dir.join("repo");
    let repo = repo.to_str().unwrap();

    let providers = node.json(&["admin", "list", "providers"]);
    let types: Vec<&str> = providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"software") && types.contains(&"btrfs"), "{providers}");
    assert_eq!(providers["volumes"].as_array().unwrap().len(), 2, "{providers}");
    let text = node.cli(&["admin", "list", "providers"]);
    assert!(text.contains(volume::btrfs::PROVIDER_NAME), "{text}");

    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "150"]);
    let full = node.cli(&["backup", "run", "--type", "full", "--sg", "SG1", "--repo", repo]);
    assert!(full.contains("(full of SG1)"), "{full}");
    let shadows = node.json(&["admin", "list", "shadows"]);
    assert!(shadows["shadows"].as_array().unwrap().is_empty(), "released: {shadows}");
    node.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "50"]);
    let count = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert_eq!(count["messages"], 200);

    let sets = node.json(&["backup", "list", "--repo", repo]);
    let set = sets["sets"][0]["id"].as_str().unwrap().to_string();
    let out = node.cli(&["backup", "verify", "--repo", repo, &set]);
    assert!(out.contains("verified"), "{out}");

    // The backup's trail names the btrfs provider's commit.
    let job = sets["sets"][0]["job"].as_str().unwrap().to_string();
    let trail = node.cli(&["events", "--job", &job]);
    assert!(trail.contains(&job), "{trail}");

    // Disaster: the database file is lost. Restore the full over the original location,
    // rolling forward through the logs on disk: every message is back.
    node.cli(&["store", "dismount", "SG1"]);
    std::fs::remove_file(dir.join("db/SG1/DB1.edb")).unwrap();
    let out = node.cli(&["restore", "--repo", repo, "--set", &set, "--original"]);
    assert!(out.contains("Restored SG1"), "{out}");
    if node.json(&["store", "status"])["storage_groups"][0]["mounted"] != true {
        node.cli(&["store", "mount", "SG1"]);
    }
    let after = node.json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
    assert_eq!(after["messages"], 200, "{after}");
    assert_eq!(after["digest"], count["digest"], "the restored store holds the same messages");

    // A persistent shadow of a btrfs volume survives a restart.
    let created = node.cli(&["admin", "create", "shadow", "--for", "db"]);
    let id = created
        .lines()
        .find_map(|l| l.trim().strip_prefix("Shadow Copy ID: {"))
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("no shadow copy id in {created}"))
        .to_string();
    let config = node.config.clone();
    assert!(node.terminate().success());
    let node = Served::start_with(&dir, &config);
    let shadows = node.json(&["admin", "list", "shadows"]);
    let ids: Vec<&str> =
        shadows["shadows"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id.as_str()], "{shadows}");
    let deleted = node.cli(&["admin", "delete", "shadows", "--shadow", &id]);
    assert!(deleted.contains("Deleted 1 shadow copies") && deleted.contains(&id), "{deleted}");
    assert!(node.terminate().success());
}

#[test]
fn btrfs_on_a_directory_that_is_not_a_subvolume_is_a_config_error_naming_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, btrfs_config(dir.path())).unwrap();
    let out =
        std::process::Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("volume logs") && err.contains("not a btrfs subvolume"), "{err}");
}
