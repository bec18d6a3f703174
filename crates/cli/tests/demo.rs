//! The README's main job: `shadowcopy demo` runs to the end and proves no message was lost.

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
    // The trail of the full backup is printed in the reference system's order.
    let ids: Vec<&str> =
        ["9606", "2005", "9811", "9608", "2001", "2003", "224", "2006"].into_iter().collect();
    let mut pos = 0;
    for id in ids {
        let found = stdout[pos..]
            .find(&format!("{id:>5} "))
            .unwrap_or_else(|| panic!("event {id} missing or out of order:\n{stdout}"));
        pos += found;
    }
}
