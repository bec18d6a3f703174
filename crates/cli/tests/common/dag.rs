//! A database availability group for the multi-process tests: a real etcd and N
//! `shadowcopy serve` processes on loopback, set up by `shadowcopy dag init` in a temporary
//! directory, with the waits and comparisons the DAG tests share.
//!
//! Every process started here (etcd, the nodes, background `mail load`s) is killed by its pid
//! when its handle is dropped, so a failing test leaves nothing running. Every wait has a
//! deadline and, when it passes, panics saying what it waited for, with the last `copy status`
//! and the tail of each node's log.

#![allow(dead_code)]

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{BIN, Served};
use crate::etcd::Etcd;

/// How long a DAG test waits for any one thing (the machine is slow and shared).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// A DAG: etcd, and per node its directory and (while it runs) its process.
pub struct Dag {
    /// The nodes, in `dag init` order (the first holds SG1 active).
    pub names: Vec<String>,
    nodes: Vec<Option<Served>>,
    pub etcd: Etcd,
    /// Where `dag init` wrote the CA and the nodes' directories.
    pub dir: tempfile::TempDir,
    pub base_port: u16,
}

impl Drop for Dag {
    /// With `SHADOWCOPY_TEST_KEEP` set, a failed test leaves its DAG's directory (every
    /// node's data, logs and `node.log`) for a post-mortem, and says where.
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("SHADOWCOPY_TEST_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "SHADOWCOPY_TEST_KEEP: the DAG's files are kept in {}",
                self.dir.path().display()
            );
        }
    }
}

/// A child process killed (by its pid) when dropped: a background load.
pub struct Bg(pub Child);

impl Bg {
    /// Waits for the child to exit (its own duration bounds it) within `deadline`.
    pub fn wait(mut self, deadline: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + deadline;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < until,
                "the background command did not end within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `n` consecutive free loopback ports (the replication listeners of `dag init`).
fn free_ports(n: u16) -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap().port();
        if base.checked_add(n).is_none() {
            continue;
        }
        let rest: Vec<_> = (1..n).map(|i| TcpListener::bind(("127.0.0.1", base + i))).collect();
        if rest.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no {n} consecutive free loopback ports");
}

/// `shadowcopy dag init` of a DAG named `name` with `nodes` into `dir`; panics unless it
/// succeeds.
pub fn dag_init(name: &str, nodes: &[&str], dir: &Path, etcd: &str, base_port: u16) {
    let out = Command::new(BIN)
        .args(["dag", "init", "--name", name, "--nodes", &nodes.join(","), "--dir"])
        .arg(dir)
        .args(["--etcd", etcd, "--base-port", &base_port.to_string(), "--storage-group", "SG1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dag init failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

impl Dag {
    /// etcd, `dag init` of DAG1 with `nodes` (SG1 active on the first), and every node
    /// started.
    pub fn start(nodes: &[&str]) -> Dag {
        Self::start_edited(nodes, |_, text| text)
    }

    /// Like [`Dag::start`], each node's configuration first rewritten by `edit(node, text)`.
    pub fn start_edited(nodes: &[&str], mut edit: impl FnMut(&str, String) -> String) -> Dag {
        let etcd = Etcd::start();
        let dir = tempfile::tempdir().unwrap();
        let base_port = free_ports(nodes.len() as u16);
        dag_init("DAG1", nodes, dir.path(), &etcd.endpoint, base_port);
        for n in nodes {
            let p = dir.path().join(n).join("node.toml");
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, edit(n, text)).unwrap();
        }
        let mut dag = Dag {
            names: nodes.iter().map(|s| s.to_string()).collect(),
            nodes: nodes.iter().map(|_| None).collect(),
            etcd,
            dir,
            base_port,
        };
        for n in nodes {
            dag.start_node(n);
        }
        dag.wait_mounted(nodes[0]);
        dag
    }

    /// Waits until SG1 is mounted on `node` (a member mounts a storage group once the
    /// cluster database names it active, a tick or two after it starts).
    pub fn wait_mounted(&self, node: &str) {
        self.wait_for(DEADLINE, &format!("SG1 to be mounted on {node}"), || {
            self.node(node)
                .cli_output(&["mail", "count", "--sg", "SG1", "--db", "DB1", "--json"])
                .status
                .success()
                .then_some(())
        });
    }

    fn index(&self, node: &str) -> usize {
        self.names.iter().position(|n| n == node).unwrap_or_else(|| panic!("no node {node}"))
    }

    /// The node's directory (`node.toml`, `data/`, `volumes/data/`, `node.log`).
    pub fn home(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }

    /// The node's data volume.
    pub fn volume(&self, node: &str) -> PathBuf {
        self.home(node).join("volumes/data")
    }

    /// The active's closed generation `g` of SG1 (on node `active`).
    pub fn active_log(&self, active: &str, g: u32) -> PathBuf {
        self.volume(active).join(format!("logs/SG1/E00{g:08X}.log"))
    }

    /// The passive copy's directory of SG1 on `node`.
    pub fn copy_dir(&self, node: &str) -> PathBuf {
        self.volume(node).join("copies/SG1")
    }

    /// The running node `node`.
    pub fn node(&self, node: &str) -> &Served {
        self.nodes[self.index(node)]
            .as_ref()
            .unwrap_or_else(|| panic!("node {node} is not running"))
    }

    /// Starts node `node` from its configuration (again, after a kill), its log appended to
    /// `<home>/node.log`, and waits until its API socket answers.
    pub fn start_node(&mut self, node: &str) {
        let i = self.index(node);
        assert!(self.nodes[i].is_none(), "node {node} is already running");
        let home = self.home(node);
        let config = home.join("node.toml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("node.log"))
            .unwrap();
        let socket = home.join("data/api.sock");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("SHADOWCOPY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut served = Served { child, socket, config };
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = served.child.try_wait().unwrap() {
                panic!("node {node} exited while starting: {status}\n{}", self.log_tail(node));
            }
            if std::os::unix::net::UnixStream::connect(&served.socket).is_ok() {
                break;
            }
            assert!(
                Instant::now() < until,
                "node {node}'s socket never answered\n{}",
                self.log_tail(node)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.nodes[i] = Some(served);
    }

    /// SIGKILL of node `node`.
    pub fn kill9(&mut self, node: &str) {
        let i = self.index(node);
        self.nodes[i].take().unwrap_or_else(|| panic!("node {node} is not running")).kill9();
    }

    /// The last 30 lines of the node's log.
    pub fn log_tail(&self, node: &str) -> String {
        let text = std::fs::read_to_string(self.home(node).join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `shadowcopy copy status --json` asked of any running node (the rows come from etcd).
    pub fn copy_status(&self) -> Vec<Value> {
        let Some(node) = self.nodes.iter().flatten().next() else { return Vec::new() };
        let out = node.cli_output(&["copy", "status", "--json"]);
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["copies"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The copy status row of SG1 on `node`.
    pub fn row(&self, node: &str) -> Option<Value> {
        self.copy_status().into_iter().find(|r| r["sg"] == "SG1" && r["node"] == node)
    }

    /// What a failed wait prints: the copy status and every node's log tail.
    pub fn diagnosis(&self) -> String {
        let mut s = format!(
            "--- copy status ---\n{}",
            serde_json::to_string_pretty(&self.copy_status()).unwrap_or_default()
        );
        for n in &self.names {
            s.push_str(&format!("\n--- node {n} log (tail) ---\n{}", self.log_tail(n)));
        }
        s
    }

    /// Polls `f` until it returns `Some`, or panics after `deadline` saying `what` it waited
    /// for, with the diagnosis.
    pub fn wait_for<T>(
        &self,
        deadline: Duration,
        what: &str,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let until = Instant::now() + deadline;
        loop {
            if let Some(t) = f() {
                return t;
            }
            if Instant::now() >= until {
                panic!("waited {deadline:?} for {what}, in vain\n{}", self.diagnosis());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the copy of SG1 on `node` has status `status`; returns its row.
    pub fn wait_status(&self, node: &str, status: &str) -> Value {
        self.wait_for(DEADLINE, &format!("the copy of SG1 on {node} to be {status}"), || {
            self.row(node).filter(|r| r["status"] == status)
        })
    }

    /// `copy add --sg SG1 --on node`, asked of `via`.
    pub fn add_copy(&self, via: &str, node: &str) {
        self.node(via).cli(&["copy", "add", "--sg", "SG1", "--on", node]);
    }

    /// The active's `mail count --json` of SG1/DB1: (messages, digest).
    pub fn count(&self, active: &str) -> (u64, String) {
        let v = self.node(active).json(&["mail", "count", "--sg", "SG1", "--db", "DB1"]);
        (v["messages"].as_u64().unwrap(), v["digest"].as_str().unwrap().to_string())
    }

    /// The passive copy's `mail count --copy --json` on `node`, `None` when it cannot be
    /// counted now (not seeded yet).
    pub fn count_copy(&self, node: &str) -> Option<(u64, String)> {
        let out = self
            .node(node)
            .cli_output(&["mail", "count", "--sg", "SG1", "--db", "DB1", "--copy", "--json"]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some((v["messages"].as_u64()?, v["digest"].as_str()?.to_string()))
    }

    /// Waits until every copy on `passives` is Healthy with empty queues and holds exactly
    /// the active's content (count and digest); the active must be idle (no load running).
    pub fn wait_converged(&self, active: &str, passives: &[&str]) {
        let want = self.count(active);
        for p in passives {
            self.wait_for(
                DEADLINE,
                &format!("the copy on {p} to be Healthy, drained and equal to {active}'s {want:?}"),
                || {
                    let r = self.row(p)?;
                    let drained = r["status"] == "Healthy"
                        && r["copy_queue_length"] == 0
                        && r["replay_queue_length"] == 0;
                    (drained && self.count_copy(p).as_ref() == Some(&want)).then_some(())
                },
            );
        }
    }

    /// `mail load --messages n` into SG1/DB1 on `active`, waited for.
    pub fn load(&self, active: &str, n: u64) {
        self.node(active).cli(&[
            "mail",
            "load",
            "--sg",
            "SG1",
            "--db",
            "DB1",
            "--messages",
            &n.to_string(),
        ]);
    }

    /// `mail load --seconds s` into SG1/DB1 on `active`, in the background.
    pub fn load_in_background(&self, active: &str, seconds: u64) -> Bg {
        let child = Command::new(BIN)
            .args(["mail", "load", "--sg", "SG1", "--db", "DB1", "--seconds", &seconds.to_string()])
            .env("SHADOWCOPY_NODE", &self.node(active).socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Bg(child)
    }

    /// The events of `node` with `args` (`--source`, `--id`, `--since`), parsed.
    pub fn events(&self, node: &str, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["events"];
        a.extend_from_slice(args);
        a.push("--json");
        self.node(node).cli(&a).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The replication events with id `id` on `node` at or after `since_ms`.
    pub fn repl_events(&self, node: &str, id: u32, since_ms: u64) -> Vec<Value> {
        self.events(
            node,
            &["--source", "replication", "--id", &id.to_string(), "--since", &since_ms.to_string()],
        )
    }
}

/// Milliseconds since the Unix epoch (for `events --since`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A TCP proxy on a loopback port of its own, which the test can cut (every connection
/// through it closed, new ones closed at once) and restore: a network partition.
pub struct Proxy {
    pub port: u16,
    shared: Arc<ProxyShared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct ProxyShared {
    target: Mutex<Option<SocketAddr>>,
    cut: AtomicBool,
    stop: AtomicBool,
    /// Both ends of every connection made, to close them when cut.
    conns: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    /// Listens; connections are closed until [`Proxy::set_target`].
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(ProxyShared::default());
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let target = *s.target.lock().unwrap();
                let Some(target) = target.filter(|_| !s.cut.load(Ordering::SeqCst)) else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(target) else { continue };
                let mut conns = s.conns.lock().unwrap();
                conns.push(client.try_clone().unwrap());
                conns.push(server.try_clone().unwrap());
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(client, server));
                std::thread::spawn(move || pump(s2, c2));
            }
        });
        Proxy { port, shared, accept: Some(accept) }
    }

    /// Where connections go: 127.0.0.1:`port`.
    pub fn set_target(&self, port: u16) {
        *self.shared.target.lock().unwrap() = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies one direction until it ends, then half-closes the other side.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A tmpfs of a given size mounted on a temporary directory (the test runs as root), unmounted
/// when dropped: a small disk that fills.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
