//! What the multi-process scenarios share: the processes they start (killed by PID when
//! dropped, also on error), etcd on free loopback ports, the `shadowcopy` binary, waits with a
//! deadline, and one HTTP request over a node's Unix socket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long etcd may take to answer after it is started.
const ETCD_DEADLINE: Duration = Duration::from_secs(90);

/// The processes the scenario started, by name; each is killed (SIGKILL to its PID, then
/// reaped) on [`Procs::kill`] or when dropped, also on error.
#[derive(Default)]
pub struct Procs(pub Vec<(String, Child)>);

impl Procs {
    pub fn push(&mut self, what: &str, child: Child) -> &mut Child {
        self.0.push((what.to_string(), child));
        let last = self.0.len() - 1;
        &mut self.0[last].1
    }

    /// SIGKILL of the process named `what`, reaped.
    pub fn kill(&mut self, what: &str) -> anyhow::Result<()> {
        let i = self
            .0
            .iter()
            .position(|(w, _)| w == what)
            .with_context(|| format!("no running process {what}"))?;
        let (_, mut child) = self.0.remove(i);
        child.kill().with_context(|| format!("kill -9 of {what} (pid {})", child.id()))?;
        child.wait()?;
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `shadowcopy` binary: `--shadowcopy`, else next to this bench binary.
pub fn shadowcopy_bin(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = match given {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has no directory")?
            .join("shadowcopy"),
    };
    if !bin.is_file() {
        bail!(
            "no shadowcopy binary at {}: build it first (`cargo build --release -p cli -p bench`) \
             or give --shadowcopy PATH",
            bin.display()
        );
    }
    Ok(bin)
}

/// `/usr/bin/etcd` (Debian's `etcd-server`), else `etcd` from the PATH.
pub fn etcd_bin() -> PathBuf {
    let debian = Path::new("/usr/bin/etcd");
    if debian.exists() { debian.to_path_buf() } else { PathBuf::from("etcd") }
}

/// Go's name for this architecture, as `ETCD_UNSUPPORTED_ARCH` wants it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `n` consecutive free loopback ports (the replication listeners of `dag init`).
pub fn free_ports(n: u16) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0")?;
        let base = first.local_addr()?.port();
        if base.checked_add(n).is_none() {
            continue;
        }
        let rest: Vec<_> = (1..n).map(|i| TcpListener::bind(("127.0.0.1", base + i))).collect();
        if rest.iter().all(Result::is_ok) {
            return Ok(base);
        }
    }
    bail!("no {n} consecutive free loopback ports")
}

/// Polls `f` every `every` until it returns `Some`, failing after `deadline` saying what it
/// waited for (with `f`'s last error, if any).
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let until = Instant::now() + deadline;
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(t)) => return Ok(t),
            Ok(None) => {}
            Err(e) => last = format!(" (last error: {e:#})"),
        }
        if Instant::now() >= until {
            bail!("waited {deadline:?} for {what}, in vain{last}");
        }
        std::thread::sleep(every);
    }
}

/// Starts a single-member etcd on free loopback ports; returns its client URL.
pub fn start_etcd(dir: &Path, procs: &mut Procs) -> anyhow::Result<String> {
    let (c, p) = (TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?);
    let (client, peer) = (c.local_addr()?.port(), p.local_addr()?.port());
    drop((c, p));
    let log = std::fs::File::create(dir.join("etcd.log"))?;
    let (curl, purl) = (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
    let child = Command::new(etcd_bin())
        .args(["--name", "t", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &curl, "--advertise-client-urls", &curl])
        .args(["--listen-peer-urls", &purl, "--initial-advertise-peer-urls", &purl])
        .args(["--initial-cluster", &format!("t={purl}")])
        .env("ETCD_UNSUPPORTED_ARCH", go_arch())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!("cannot run {} (Debian package `etcd-server`)", etcd_bin().display())
        })?;
    let child = procs.push("etcd", child);
    wait_until("etcd to be healthy", ETCD_DEADLINE, Duration::from_millis(100), || {
        if let Some(s) = child.try_wait()? {
            bail!("etcd exited ({s}); see {}", dir.join("etcd.log").display());
        }
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", client)) else { return Ok(None) };
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out.contains("\"health\":\"true\"").then_some(()))
    })?;
    Ok(curl)
}

/// One `POST path` with a JSON body over a node's Unix socket; the status and the body.
pub fn post(
    socket: &Path,
    path: &str,
    body: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// `shadowcopy ARGS` against the node at `socket`; its stdout, or an error with its stderr.
pub fn cli(bin: &Path, socket: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .env("SHADOWCOPY_NODE", socket)
        .env_remove("SHADOWCOPY_TOKEN")
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "shadowcopy {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
