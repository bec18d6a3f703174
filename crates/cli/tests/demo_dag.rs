//! The README's DAG demo: `shadowcopy demo --dag` runs etcd and three nodes, backs up two
//! passive copies, restores the active from them and proves no message was lost.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_dag_demo_restores_the_active_from_two_copies_and_loses_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shadowcopy"))
        .args(["demo", "--dag", "--messages", "150", "--dir"])
        .arg(dir.path().join("demo"))
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo --dag failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("identical to before the disaster"), "{stdout}");
    assert!(stdout.contains("no message lost."), "{stdout}");

    // The full backup's trail (step 3) names each event's node: the replication writer's 960
    // on b, which took the backup, and the store's 913 on a, which recorded it.
    let start = stdout.find("\n3. ").expect("step 3's heading");
    let end = start + stdout[start..].find("\n4. ").expect("step 4's heading");
    let trail: Vec<(&str, &str)> = stdout[start..end]
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (node, id) = (w.next()?, w.next()?);
            id.parse::<u32>().is_ok().then_some((node, id))
        })
        .collect();
    for (node, id) in [("b", "960"), ("a", "910"), ("a", "913"), ("b", "2037")] {
        assert!(
            trail.contains(&(node, id)),
            "no event {id} of node {node} in the trail:\n{stdout}"
        );
    }
    let pos = |node, id| trail.iter().position(|e| *e == (node, id)).unwrap();
    assert!(pos("a", "910") < pos("b", "960"), "the claim comes before 960:\n{stdout}");
    assert!(pos("b", "960") < pos("a", "913"), "the stamp comes after 960:\n{stdout}");

    // The incremental was taken on c, on top of the full taken on b.
    assert!(stdout.contains("incremental set"), "{stdout}");
    assert!(stdout.contains("taken on node c"), "{stdout}");
    assert!(stdout.contains("restored on a from 2 sets"), "{stdout}");

    // Every process the demo started is gone: nothing under its directory is still running.
    let demo_dir = dir.path().join("demo");
    let still: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(demo_dir.to_str().unwrap()))
        .collect();
    assert!(still.is_empty(), "processes of the demo still run: {still:?}");
}

#[test]
fn without_etcd_the_dag_demo_says_which_package_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shadowcopy"))
        .args(["demo", "--dag", "--dir"])
        .arg(dir.path().join("demo"))
        // A PATH with no etcd on it.
        .env("PATH", dir.path())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the demo ran without etcd: {stderr}");
    assert!(stderr.contains("no `etcd` is on PATH"), "{stderr}");
    assert!(stderr.contains("etcd-server"), "{stderr}");
}
