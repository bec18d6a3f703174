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

/// The demo's process, killed by its PID if the test fails before it stops it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 exchange on loopback: the status and the whole answer.
fn http(port: u16, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    // The URL is printed just before the node binds its port: connected within a deadline.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() > until => panic!("port {port}: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    (text.split_whitespace().nth(1).unwrap().parse().unwrap(), text)
}

#[test]
fn demo_serve_keeps_the_node_with_the_console_until_stopped() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowcopy"))
        .args(["demo", "--serve", "--messages", "60", "--dir"])
        .arg(dir.path().join("demo"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The demo runs to its end, then prints the console's URL and token.
    let until = Instant::now() + Duration::from_secs(300);
    let (mut url, mut token, mut seen) = (None, None, Vec::new());
    while url.is_none() || token.is_none() {
        let left = until.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|e| {
            panic!("no console URL and token within 300 s ({e}):\n{}", seen.join("\n"))
        });
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        match words.as_slice() {
            [w, u] if w == "open" => url = Some(u.clone()),
            [w, t] if w == "token" => token = Some(t.clone()),
            _ => {}
        }
        seen.push(line);
    }
    let (url, token) = (url.unwrap(), token.unwrap());
    assert!(seen.iter().any(|l| l.contains("no message lost.")), "{}", seen.join("\n"));
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|r| r.strip_suffix("/ui/"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not the console's URL: {url}"));

    // Logging in with the printed token opens a session; the API answers it with the demo's
    // jobs: both backups' events are in the node's trail.
    let body = format!("token={token}");
    let (code, answer) = http(
        port,
        &format!(
            "POST /ui/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: \
             application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(code, 303, "{answer}");
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie:").or_else(|| l.strip_prefix("Set-Cookie:")))
        .and_then(|c| c.trim().split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {answer}"))
        .to_string();
    let get = |path: &str| {
        http(
            port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n"
            ),
        )
    };
    let (code, page) = get("/ui/");
    assert_eq!(code, 200, "{page}");
    let (code, trail) = get("/v1/events?id=8203");
    assert_eq!(code, 200, "{trail}");
    assert_eq!(trail.matches("\"id\":8203").count(), 2, "the full and the incremental: {trail}");

    // SIGTERM (as Ctrl-C): the node stops and the demo ends well.
    let mut demo = demo;
    let pid = rustix::process::Pid::from_child(&demo.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = demo.0.wait().unwrap();
    assert!(status.success(), "the demo ended with {status}");
    // The rest of its output, to its end (the reader ends at end of file; 30 s at most).
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        rest.push(line);
    }
    assert!(rest.iter().any(|l| l.contains("the console stopped")), "{rest:?}");
}
