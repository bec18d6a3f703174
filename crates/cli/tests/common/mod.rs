//! Helpers for the end-to-end tests: a node run by the real binary, and the command.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_shadowcopy");

/// A configuration with two volumes and one storage group under `dir`; `extra` is appended.
pub fn config(dir: &Path, extra: &str) -> String {
    node::sample::Sample { extra, ..Default::default() }.toml(dir)
}

/// `shadowcopy serve` in a child process.
pub struct Served {
    pub child: Child,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Served {
    /// Writes `text` as the configuration in `dir`, starts the node and waits for its socket
    /// to answer.
    pub fn start(dir: &Path, text: &str) -> Served {
        let config = dir.join("node.toml");
        std::fs::write(&config, text).unwrap();
        Self::start_with(dir, &config)
    }

    pub fn start_with(dir: &Path, config: &Path) -> Served {
        Self::spawn(dir, config, Command::new(BIN).stderr(Stdio::inherit()))
    }

    /// Like [`Served::start`], with `env` added to the node's environment (the `AWS_*`
    /// variables of a test's S3 server).
    pub fn start_env(dir: &Path, text: &str, env: &[(&str, String)]) -> Served {
        let config = dir.join("node.toml");
        std::fs::write(&config, text).unwrap();
        let mut command = Command::new(BIN);
        command.stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        Self::spawn(dir, &config, &mut command)
    }

    /// Like [`Served::start`], logging everything (`SHADOWCOPY_LOG=trace`) to `log`, for
    /// tests that check what the node writes.
    pub fn start_logged(dir: &Path, text: &str, log: &Path) -> Served {
        let config = dir.join("node.toml");
        std::fs::write(&config, text).unwrap();
        let file = std::fs::File::create(log).unwrap();
        Self::spawn(dir, &config, Command::new(BIN).env("SHADOWCOPY_LOG", "trace").stderr(file))
    }

    fn spawn(dir: &Path, config: &Path, command: &mut Command) -> Served {
        let socket = dir.join("data/api.sock");
        let child = command
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut s = Served { child, socket, config: config.to_path_buf() };
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("the node exited while starting: {status}");
            }
            if std::os::unix::net::UnixStream::connect(&s.socket).is_ok() {
                return s;
            }
            assert!(Instant::now() < until, "the node's socket never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `shadowcopy ARGS` against this node; panics unless it succeeds.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(
            out.status.success(),
            "shadowcopy {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn cli_output(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("SHADOWCOPY_NODE", &self.socket)
            .env_remove("SHADOWCOPY_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts `shadowcopy backup run --type full --sg SG1 --repo REPO` against this node
    /// without waiting for it; its output is captured when `capture`, discarded otherwise.
    pub fn spawn_full_backup(&self, repo: &str, capture: bool) -> Child {
        let out = || if capture { Stdio::piped() } else { Stdio::null() };
        Command::new(BIN)
            .args(["backup", "run", "--type", "full", "--sg", "SG1", "--repo", repo])
            .env("SHADOWCOPY_NODE", &self.socket)
            .stdout(out())
            .stderr(out())
            .spawn()
            .unwrap()
    }

    /// The job holding SG1, if a backup is in progress (`None` too while the node does not
    /// answer).
    pub fn backup_in_progress(&self) -> Option<String> {
        let s = std::os::unix::net::UnixStream::connect(&self.socket).ok()?;
        let (code, body) = raw_http(s, "GET", "/v1/store", "");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["storage_groups"][0]["backup_in_progress"].as_str().map(str::to_string)
    }

    /// `shadowcopy ARGS --json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.cli(&a)).unwrap()
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    /// SIGKILL: the node dies where it is.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::mem::forget(self);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP/1.1 exchange; returns the status and body.
pub fn raw_http(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    headers: &str,
) -> (u16, String) {
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n{headers}\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Whether something is mounted at `at` (the kernel's mount table).
pub fn mounted(at: &Path) -> bool {
    let at = at.canonicalize().unwrap_or_else(|_| at.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m) == at))
}

/// Detaches whatever is still mounted at its path when dropped (a shadow copy exposed by a
/// test), so that a failed test leaves no mount behind.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        while mounted(&self.0) {
            if rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH).is_err() {
                break;
            }
        }
    }
}

/// The TCP port a node started with `tcp = "127.0.0.1:0"` logged it listens on (it logs the
/// address before its socket answers; the deadline covers a slow log write).
pub fn logged_port(log: &Path) -> u16 {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let port = text.lines().filter(|l| l.contains("listening on")).find_map(|l| {
            let after = &l[l.find("127.0.0.1:")? + "127.0.0.1:".len()..];
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        });
        if let Some(port) = port {
            return port;
        }
        assert!(Instant::now() < until, "the node never logged its TCP address:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
