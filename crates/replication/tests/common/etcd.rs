//! A real `etcd` for tests: one member on loopback ports of its own, with a data directory of its
//! own, killed (by its pid) when dropped.
//!
//! Included by path from other crates' tests
//! (`#[path = "../../replication/tests/common/etcd.rs"] mod etcd;`), so it uses only std and
//! `tempfile`, and its lint allowances are on its items.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to answer `/health` after it is started.
#[allow(dead_code)]
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running (or, after [`Etcd::stop`], stopped) single-member etcd.
#[allow(dead_code)]
#[derive(Debug)]
pub struct Etcd {
    /// `http://127.0.0.1:<client port>`, for `etcd_client` and the nodes' configuration.
    pub endpoint: String,
    pub client_port: u16,
    pub peer_port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

#[allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
impl Etcd {
    /// Starts etcd on two free loopback ports and waits until it reports itself healthy. A port
    /// taken by someone else between choosing and binding makes etcd exit: it is then tried again
    /// on other ports, from an empty data directory.
    pub fn start() -> Etcd {
        let mut etcd = Etcd {
            endpoint: String::new(),
            client_port: 0,
            peer_port: 0,
            child: None,
            dir: tempfile::tempdir().expect("a temporary directory for etcd"),
        };
        let mut failures = Vec::new();
        for _attempt in 0..5 {
            let (client_port, peer_port) = two_free_ports();
            etcd.client_port = client_port;
            etcd.peer_port = peer_port;
            etcd.endpoint = format!("http://127.0.0.1:{client_port}");
            let _ = std::fs::remove_dir_all(etcd.data_dir());
            etcd.spawn();
            match etcd.wait_healthy() {
                Ok(()) => return etcd,
                Err(why) => {
                    etcd.kill();
                    failures.push(why);
                }
            }
        }
        panic!(
            "etcd did not start (5 attempts): {}\n--- etcd log (tail) ---\n{}",
            failures.join("; "),
            etcd.log_tail()
        );
    }

    /// Kills etcd (SIGKILL, as a crash) and keeps its data directory, for [`Etcd::restart`].
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts etcd again on the same ports with the same data directory (its data kept), and
    /// waits until it is healthy; panics with the log's tail if it is not within the deadline.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        if let Err(why) = self.wait_healthy() {
            panic!("etcd did not restart: {why}\n--- etcd log (tail) ---\n{}", self.log_tail());
        }
    }

    /// Whether the etcd process is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id of the running etcd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The last 40 lines of etcd's output (all its starts, appended).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd's log file");
        let log2 = log.try_clone().expect("etcd's log file, again");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg("t")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("t={peer}"))
            // etcd refuses to run on architectures it does not list unless told to: harmless on
            // the listed ones.
            .env("ETCD_UNSUPPORTED_ARCH", go_arch())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", etcd_binary().display()));
        self.child = Some(child);
    }

    /// Polls `GET /health` until it says `"health":"true"` (etcd has a leader and serves), the
    /// process exits, or [`START_DEADLINE`] passes.
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.client_port));
        let mut last: String;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("etcd exited ({status}) before it was healthy"));
            }
            match health(addr) {
                Ok(body) if body.contains("\"health\":\"true\"") => return Ok(()),
                Ok(body) => last = format!("unhealthy: {body}"),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "etcd at {} not healthy within {START_DEADLINE:?} (last: {last})",
                    self.endpoint
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the child by its pid (SIGKILL) and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `/usr/bin/etcd` (Debian's `etcd-server`), else `etcd` from `PATH`.
#[allow(dead_code)]
fn etcd_binary() -> PathBuf {
    let debian = Path::new("/usr/bin/etcd");
    if debian.exists() { debian.to_path_buf() } else { PathBuf::from("etcd") }
}

/// Go's name for this architecture, as `ETCD_UNSUPPORTED_ARCH` wants it.
#[allow(dead_code)]
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Two distinct free loopback ports (both listeners held until both are chosen).
#[allow(dead_code, clippy::expect_used)]
fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let b = TcpListener::bind("127.0.0.1:0").expect("another free loopback port");
    let pa = a.local_addr().expect("its address").port();
    let pb = b.local_addr().expect("its address").port();
    (pa, pb)
}

/// One `GET /health` over HTTP/1.0; the response (headers and body).
#[allow(dead_code)]
fn health(addr: SocketAddr) -> std::io::Result<String> {
    let timeout = Duration::from_secs(1);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
