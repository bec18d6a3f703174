//! Installing as a service: `serve` tells systemd when it is ready and when it stops
//! (sd_notify over `NOTIFY_SOCKET`); `generate` writes the man pages and completions that the
//! Debian package ships; the unit file in packaging/ starts a command the binary has.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, config, raw_http};

/// Receives notifications on `sock` until one holds the line `wanted`, and returns the
/// messages received up to and including it; fails naming `what` after `limit`.
fn receive_until(sock: &UnixDatagram, wanted: &str, what: &str, limit: Duration) -> Vec<String> {
    let until = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {wanted} within {limit:?} ({what}); received: {seen:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
                let done = msg.lines().any(|l| l == wanted);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("no {wanted} within {limit:?} ({what}); received: {seen:?}")
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("receiving notifications: {e}"),
        }
    }
}

/// The value of `key=` in the last message that sets it.
fn last_value(messages: &[String], key: &str) -> Option<String> {
    messages
        .iter()
        .rev()
        .flat_map(|m| m.lines().rev())
        .filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .next()
        .map(str::to_string)
}

/// Waits for `child` to exit, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < until, "the node did not exit within {limit:?} of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_notifies_ready_when_the_api_answers_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("node.toml");
    std::fs::write(&config_path, config(dir.path(), "")).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let api = dir.path().join("data/api.sock");

    // Killed whatever happens below, so that a failed assertion leaves no node running.
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut node = Reap(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let started = receive_until(&notify, "READY=1", "the node starting", Duration::from_secs(120));
    assert!(node.0.try_wait().unwrap().is_none(), "the node exited after READY=1");

    // At READY=1 the API answers at once: no retry, no wait.
    let s = UnixStream::connect(&api)
        .unwrap_or_else(|e| panic!("READY=1 came but {} refused: {e}", api.display()));
    let (code, body) = raw_http(s, "GET", "/v1/store", "");
    assert_eq!(code, 200, "the API right after READY=1: {body}");
    let store: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sg = &store["storage_groups"][0];
    assert!(
        sg["name"] == "SG1" && sg["mounted"] == true,
        "the storage group is mounted at READY=1: {body}"
    );
    let status = last_value(&started, "STATUS").unwrap_or_default();
    assert!(
        status.contains("listening on") && status.contains("SG1"),
        "the ready STATUS= says where it listens and what is mounted: {started:?}"
    );
    assert!(
        started
            .first()
            .is_some_and(|m| !m.lines().any(|l| l == "READY=1") && m.contains("STATUS=starting")),
        "a starting STATUS= comes before READY=1: {started:?}"
    );

    let pid = rustix::process::Pid::from_child(&node.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let stopping = receive_until(&notify, "STOPPING=1", "after SIGTERM", Duration::from_secs(60));
    assert!(
        last_value(&stopping, "STATUS").is_some_and(|s| s.starts_with("stopping")),
        "STOPPING=1 comes with a stopping STATUS=: {stopping:?}"
    );
    let status = wait_exit(&mut node.0, Duration::from_secs(60));
    assert!(status.success(), "the node exits 0 after SIGTERM: {status}");
}

/// The verbs listed under "Commands:" in `shadowcopy PATH… --help` (clap's own list),
/// without clap's `help`.
fn listed_subcommands(path: &[String]) -> Vec<String> {
    let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
    assert!(out.status.success(), "shadowcopy {path:?} --help failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let Some((_, after)) = text.split_once("\nCommands:\n") else { return Vec::new() };
    after
        .lines()
        .take_while(|l| !l.trim().is_empty())
        // A verb's line is indented by two; a wrapped description by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .map(str::to_string)
        .collect()
}

/// Every command path, the program's own (empty) first, walking `--help` at every level.
fn command_paths() -> Vec<Vec<String>> {
    let mut paths = vec![Vec::new()];
    let mut i = 0;
    while i < paths.len() {
        let path = paths[i].clone();
        for sub in listed_subcommands(&path) {
            let mut p = path.clone();
            p.push(sub);
            paths.push(p);
        }
        i += 1;
    }
    paths
}

#[test]
fn generate_man_writes_a_roff_page_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man");
    let out = Command::new(BIN).args(["generate", "man", "--out"]).arg(&out_dir).output().unwrap();
    assert!(out.status.success(), "generate man: {}", String::from_utf8_lossy(&out.stderr));

    let paths = command_paths();
    assert!(paths.len() > 10, "the walk of --help found the verbs: {paths:?}");
    let expected: BTreeSet<String> = paths
        .iter()
        .map(|p| {
            let mut name = vec!["shadowcopy".to_string()];
            name.extend(p.iter().cloned());
            format!("{}.1", name.join("-"))
        })
        .collect();
    let written: BTreeSet<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, expected, "one page per command, as `--help` lists them");
    assert!(written.contains("shadowcopy-backup-run.1"), "{written:?}");

    let groff = Command::new("groff").arg("--version").output().is_ok_and(|o| o.status.success());
    if !groff {
        eprintln!("groff is not installed: the pages are checked for their structure only");
    }
    for name in &written {
        let path = out_dir.join(name);
        let page = std::fs::read_to_string(&path).unwrap();
        // clap_mangen opens with the `.ie`/`.el` pair defining the quote string; the first
        // request after it is the title: name, section, date, source, manual, each given.
        let th = page
            .lines()
            .find(|l| l.starts_with('.') && !l.starts_with(".ie ") && !l.starts_with(".el "))
            .unwrap_or_default();
        let command = name.trim_end_matches(".1");
        let date = th.strip_prefix(&format!(".TH {command} 1 ")).unwrap_or_default();
        let date = date.trim_start_matches('"');
        assert!(
            date.len() >= 10
                && date[..10].bytes().enumerate().all(|(i, b)| match i {
                    4 | 7 => b == b'-',
                    _ => b.is_ascii_digit(),
                }),
            "{name}: a roff page whose first request is .TH NAME 1 YYYY-MM-DD: {th}"
        );
        assert!(th.contains("\"shadowcopy ") && th.ends_with("\"Shadowcopy Manual\""), "{th}");
        assert!(page.contains("\n.SH NAME\n"), "{name} has a NAME section");
        if groff {
            // -k: the pages hold UTF-8 (em dashes), which man-db's preconv handles the same way.
            let checked = Command::new("groff")
                .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                checked.status.success() && checked.stderr.is_empty(),
                "groff reads {name} without a warning: {}",
                String::from_utf8_lossy(&checked.stderr)
            );
        }
    }
    let run = std::fs::read_to_string(out_dir.join("shadowcopy-backup-run.1")).unwrap();
    assert!(run.contains("\\-\\-repo"), "the page of backup run documents --repo: {run}");
}

#[test]
fn bash_completions_name_every_top_level_verb_and_parse() {
    let out = Command::new(BIN).args(["generate", "completions", "bash"]).output().unwrap();
    assert!(out.status.success(), "generate completions: {}", String::from_utf8_lossy(&out.stderr));
    let script = String::from_utf8(out.stdout).unwrap();
    let verbs = listed_subcommands(&[]);
    assert!(verbs.len() > 5, "`shadowcopy --help` lists the verbs: {verbs:?}");
    let words: BTreeSet<&str> =
        script.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_')).collect();
    for verb in &verbs {
        assert!(words.contains(verb.as_str()), "the bash completion offers `{verb}`");
    }

    // And bash itself reads it without a syntax error.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shadowcopy.bash");
    std::fs::write(&file, &script).unwrap();
    let checked = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(checked.status.success(), "bash -n: {}", String::from_utf8_lossy(&checked.stderr));
}

fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/shadowcopy.service")
}

#[test]
fn the_unit_is_type_notify_and_starts_a_command_the_binary_has() {
    let text = std::fs::read_to_string(unit_file()).unwrap();
    let settings: Vec<(&str, &str)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let one = |key: &str| {
        let found: Vec<&str> =
            settings.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v).collect();
        assert_eq!(found.len(), 1, "the unit sets {key}= once: {found:?}");
        found[0]
    };
    assert_eq!(one("Type"), "notify", "serve sends READY=1, so the unit waits for it");
    assert_eq!(one("Restart"), "on-failure");

    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(exec.first(), Some(&"/usr/bin/shadowcopy"), "the packaged binary: {exec:?}");
    let verb = exec.get(1).expect("ExecStart names a subcommand");
    let help = Command::new(BIN).args([verb, "--help"]).output().unwrap();
    assert!(
        help.status.success(),
        "`shadowcopy {verb} --help` (the unit's subcommand): {}",
        String::from_utf8_lossy(&help.stderr)
    );
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in exec.iter().skip(2).filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag), "`shadowcopy {verb}` takes {flag}: {help}");
    }
}
