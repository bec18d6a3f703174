//! A real S3-protocol server for tests: `moto_server` (PyPI `moto[server]`, which `.ci/run`
//! installs) on a free loopback port, with one bucket made, killed by its pid when dropped (a
//! panicking test included: the drop runs while unwinding).
//!
//! Included by path from other crates' tests
//! (`#[path = "../../backup/tests/common/s3_server.rs"] mod s3_server;`), so it uses only std
//! and `tempfile`, and its lint allowances are on its items.
//!
//! Without `moto_server` on `PATH` a test is skipped, saying why, unless `CI` is set: there the
//! server is part of what the tests need, and its absence fails them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to serve its first request (Python starts slowly on a busy
/// machine).
#[allow(dead_code)]
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// The credentials the tests use (moto accepts any).
#[allow(dead_code)]
pub const ACCESS_KEY_ID: &str = "shadowcopy-test";
#[allow(dead_code)]
pub const SECRET_ACCESS_KEY: &str = "shadowcopy-test-secret";
#[allow(dead_code)]
pub const REGION: &str = "us-east-1";

/// A running `moto_server` with one bucket.
#[allow(dead_code)]
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub bucket: String,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

#[allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
impl S3Server {
    /// Starts the server and makes `bucket`; `None` (after saying why on stderr) when
    /// `moto_server` is not installed and `CI` is not set.
    pub fn start(bucket: &str) -> Option<S3Server> {
        let log = tempfile::NamedTempFile::new().expect("a log file for moto_server");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("moto_server's log"))
            .stderr(log.reopen().expect("moto_server's log"))
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let why = "moto_server is not installed (pip install 'moto[server]'; .ci/run does)";
                if std::env::var_os("CI").is_some() {
                    panic!("{why}: the S3 tests need it on CI");
                }
                eprintln!("SKIPPED: {why}");
                return None;
            }
            Err(e) => panic!("cannot run moto_server: {e}"),
        };
        let mut server = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
            child: Some(child),
            log,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(why) = server.make_bucket(addr) {
            panic!(
                "moto_server did not start: {why}\n--- its log (tail) ---\n{}",
                server.log_tail()
            );
        }
        Some(server)
    }

    /// The process id of the server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The `AWS_*` variables that reach this server, for a child process (a node).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// The last 30 lines of the server's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends `PUT /<bucket>` until the server answers 200, the process exits, or
    /// [`START_DEADLINE`] passes. moto checks no signature, so a bare request will do.
    fn make_bucket(&mut self, addr: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let mut last: String;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("moto_server exited ({status}) before serving"));
            }
            match put_bucket(addr, &self.bucket) {
                Ok(answer)
                    if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") =>
                {
                    return Ok(());
                }
                Ok(answer) => last = answer.lines().next().unwrap_or("").to_string(),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no bucket made at {} within {START_DEADLINE:?} (last: {last})",
                    self.endpoint
                ));
            }
            // Polling a process that is starting: nothing to wait on but its port.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for S3Server {
    /// Kills the server by its pid (SIGKILL) and reaps it.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `PUT /<bucket>` over HTTP/1.0; the response.
#[allow(dead_code)]
fn put_bucket(addr: SocketAddr, bucket: &str) -> std::io::Result<String> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let req = format!("PUT /{bucket} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
