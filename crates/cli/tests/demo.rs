//! The README's main job: `shadowcopy demo` runs to the end and proves no message was lost.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_proves_no_message_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shadowcopy"))
        .args(["demo", "--messages", "150", "--dir"])
        .arg(dir.path().join("demo"))
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("identical to before the disaster"), "{stdout}");
    assert!(stdout.contains("no message lost."), "{stdout}");
    // The whole trail of the full backup is printed, one line per event: ID, source, message.
    let start = stdout.find("\n6. ").expect("the trail's heading");
    let end = start + stdout[start..].find("\n7. ").expect("the next step's heading");
    let trail = &stdout[start..end];
    let events: Vec<&str> = trail
        .lines()
        .filter(|l| l.starts_with(' ') && l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    for line in &events {
        let mut words = line.split_whitespace();
        let (id, source) = (words.next().unwrap(), words.next().unwrap_or(""));
        assert!(id.parse::<u32>().is_ok(), "not an event line: {line:?}");
        assert!(
            ["coordinator", "store", "engine", "provider", "requester", "replication"]
                .contains(&source),
            "no source on {line:?}"
        );
        assert!(words.next().is_some(), "no message on {line:?}");
    }
    let has = |id: &str, source: &str| {
        events.iter().any(|l| l.split_whitespace().take(2).eq([id, source]))
    };
    // Every component's part: the store writer and the engine in the reference system's
    // order; the coordinator's session from start to shutdown; the requester's copy and set.
    in_order(trail, &["9606", "2005", "9811", "9608", "2001", "2003", "224", "2006"]);
    in_order(trail, &["8000", "8003", "8005", "8007", "8006", "8009", "8010", "8011"]);
    in_order(trail, &["8000", "9606", "8203", "8010", "9621", "8011"]);
    for (id, source) in [
        ("8000", "coordinator"),
        ("8007", "coordinator"),
        ("8011", "coordinator"),
        ("8200", "requester"),
        ("8203", "requester"),
        ("9606", "store"),
        ("2001", "engine"),
    ] {
        assert!(has(id, source), "event {id} of the {source} missing:\n{trail}");
    }
}

/// Asserts that the events `ids` appear in `trail` in this order.
fn in_order(trail: &str, ids: &[&str]) {
    let mut pos = 0;
    for id in ids {
        let found = trail[pos..]
            .find(&format!("{id:>5} "))
            .unwrap_or_else(|| panic!("event {id} missing or out of order in {ids:?}:\n{trail}"));
        pos += found;
    }
}
