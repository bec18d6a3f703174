//! `shadowcopy demo --dag`: the surrogate backup at work in a throw-away database availability
//! group, as a short narrative.
//!
//! etcd and three nodes (a, b, c) made by `dag init` run as real processes, as in production; the
//! demo drives them exactly as an administrator would, by running this same binary's verbs
//! against each node's API socket. SG1 is active on a and copied to b and c; a full backup is
//! taken of b's copy and an incremental of c's while a keeps taking mail, so the active carries
//! no backup load. Then a's database is lost and restored from those two sets, and the proof
//! compares its content with what it held before. Every process the demo starts is killed when
//! it ends, however it ends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The members of the demo's DAG; the first holds SG1 active.
const NODES: [&str; 3] = ["a", "b", "c"];

/// How long the demo waits for any one thing (a copy to be seeded, a node to answer).
const DEADLINE: Duration = Duration::from_secs(90);

/// How long etcd may take to report itself healthy.
const ETCD_DEADLINE: Duration = Duration::from_secs(20);

/// Every process the demo started, killed (by its pid) and reaped when dropped, so that an
/// error or a panic half-way leaves nothing running.
#[derive(Default)]
struct Processes {
    children: Vec<(String, Child)>,
}

impl Processes {
    fn push(&mut self, what: &str, child: Child) {
        self.children.push((what.to_string(), child));
    }

    /// Whether the process named `what` has exited (then with its status).
    fn exited(&mut self, what: &str) -> Result<Option<std::process::ExitStatus>> {
        let (_, c) = self
            .children
            .iter_mut()
            .find(|(w, _)| w == what)
            .with_context(|| format!("the demo started no process named {what}"))?;
        Ok(c.try_wait()?)
    }

    /// Waits until the process named `what` exits, within `deadline`.
    fn wait(&mut self, what: &str, deadline: Duration) -> Result<std::process::ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(s) = self.exited(what)? {
                return Ok(s);
            }
            if Instant::now() >= until {
                bail!("{what} did not end within {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills (by its pid) and reaps the process named `what`, and forgets it.
    fn kill(&mut self, what: &str) {
        if let Some(i) = self.children.iter().position(|(w, _)| w == what) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        // The nodes and loads first, etcd (started first) last: a node that loses etcd before
        // it is killed would only log about it.
        for (_, c) in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The demo's DAG: where it lives, its processes, and how to reach each node.
struct Dag {
    dir: PathBuf,
    exe: PathBuf,
    procs: Processes,
    /// With `--serve`: the token of the nodes' consoles and each node's console port.
    console: Option<Console>,
}

/// The web console of the demo's nodes (`demo --dag --serve`): every node serves it on a
/// loopback port of its own, with one token made for this run.
struct Console {
    token: String,
    ports: Vec<(&'static str, u16)>,
}

impl Dag {
    /// The node's directory (`node.toml`, `data/`, `volumes/data/`, `node.log`).
    fn home(&self, node: &str) -> PathBuf {
        self.dir.join("dag").join(node)
    }

    fn socket(&self, node: &str) -> PathBuf {
        self.home(node).join("data/api.sock")
    }

    /// The node's data volume.
    fn volume(&self, node: &str) -> PathBuf {
        self.home(node).join("volumes/data")
    }

    /// The last lines of the node's log, for an error that needs them.
    fn log_tail(&self, node: &str) -> String {
        let text = std::fs::read_to_string(self.home(node).join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `shadowcopy ARGS` asked of `node` (through `SHADOWCOPY_NODE`); its stdout, or an error
    /// with its stderr.
    fn cli(&self, node: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.exe)
            .args(args)
            .env("SHADOWCOPY_NODE", self.socket(node))
            .env_remove("SHADOWCOPY_TOKEN")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running shadowcopy {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`shadowcopy {}` on node {node} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `shadowcopy ARGS --json` asked of `node`, parsed.
    fn json(&self, node: &str, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.cli(node, &a)?;
        serde_json::from_str(&text)
            .with_context(|| format!("the JSON of `shadowcopy {}`", a.join(" ")))
    }

    /// Starts `shadowcopy serve` for `node`, its log in `node.log`, and waits until its API
    /// socket answers.
    fn start_node(&mut self, node: &str) -> Result<()> {
        let home = self.home(node);
        let log = std::fs::File::create(home.join("node.log"))?;
        let child = Command::new(&self.exe)
            .arg("serve")
            .arg("--config")
            .arg(home.join("node.toml"))
            .env("SHADOWCOPY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {node}"))?;
        let what = format!("node {node}");
        self.procs.push(&what, child);
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.procs.exited(&what)? {
                bail!("node {node} exited while starting ({status}):\n{}", self.log_tail(node));
            }
            if std::os::unix::net::UnixStream::connect(self.socket(node)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!(
                    "node {node}'s API did not answer within {DEADLINE:?}:\n{}",
                    self.log_tail(node)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `f` until it returns `Some`, or fails after [`DEADLINE`] saying what it waited for.
    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
        self.wait_within(DEADLINE, what, f)
    }

    /// Polls `f` until it returns `Some`, or fails after `deadline` saying what it waited for.
    fn wait_within<T>(
        &self,
        deadline: Duration,
        what: &str,
        mut f: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(t) = f()? {
                return Ok(t);
            }
            if Instant::now() >= until {
                bail!("waited {deadline:?} for {what}, in vain");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The copy status row of SG1 on `node` (asked of the active: the rows come from etcd).
    fn row(&self, node: &str) -> Result<Option<Value>> {
        let v = self.json(NODES[0], &["copy", "status", "--sg", "SG1"])?;
        Ok(v["copies"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["sg"] == "SG1" && r["node"] == node))
            .cloned())
    }

    /// `mail count` of SG1/DB1 on the active (or of the passive copy on `node`, with `copy`):
    /// (messages, digest); `None` for a copy that cannot be counted yet.
    fn count(&self, node: &str, copy: bool) -> Result<Option<(u64, String)>> {
        let mut args = vec!["mail", "count", "--sg", "SG1", "--db", "DB1"];
        if copy {
            args.push("--copy");
        }
        let v = match self.json(node, &args) {
            Ok(v) => v,
            Err(_) if copy => return Ok(None),
            Err(e) => return Err(e),
        };
        let messages = v["messages"].as_u64().context("mail count without messages")?;
        let digest = v["digest"].as_str().context("mail count without a digest")?;
        Ok(Some((messages, digest.to_string())))
    }

    /// Waits until the copies on b and c are Healthy, drained and hold exactly the active's
    /// content: the incremental taken on c then covers every message delivered so far.
    fn wait_converged(&self) -> Result<(u64, String)> {
        let want = self.count(NODES[0], false)?.context("the active's count")?;
        for p in &NODES[1..] {
            self.wait_for(
                &format!("the copy on {p} to hold the active's {} messages", want.0),
                || {
                    let Some(r) = self.row(p)? else { return Ok(None) };
                    let drained = r["status"] == "Healthy"
                        && r["copy_queue_length"] == 0
                        && r["replay_queue_length"] == 0;
                    Ok((drained && self.count(p, true)?.as_ref() == Some(&want)).then_some(()))
                },
            )?;
        }
        Ok(want)
    }

    /// `mail load` of `messages` into SG1/DB1 on the active; how many it delivered.
    fn load(&self, messages: u64) -> Result<u64> {
        let out = self.cli(
            NODES[0],
            &["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", &messages.to_string()],
        )?;
        delivered(&out)
    }

    /// The trail of `job` gathered from every member (asked of the active), in time order.
    fn trail(&self, job: &str) -> Result<Vec<Value>> {
        self.cli(NODES[0], &["events", "--job", job, "--json"])?
            .lines()
            .map(|l| serde_json::from_str(l).context("an event of the trail"))
            .collect()
    }

    /// `backup run` of SG1 (`kind`) of the copy on `from`, asked of the active; the report.
    fn backup(&self, kind: &str, from: &str) -> Result<Value> {
        let repo = self.dir.join("repository");
        let repo = repo.to_str().context("the repository path is not UTF-8")?;
        self.json(
            NODES[0],
            &["backup", "run", "--type", kind, "--sg", "SG1", "--from", from, "--repo", repo],
        )
    }

    /// The log files of SG1 on disk on `node`: the active's log directory, or a passive's
    /// copy directory. (count, lowest, highest generation).
    fn logs(&self, node: &str) -> (usize, Option<u32>, Option<u32>) {
        let root = if node == NODES[0] {
            self.volume(node).join("logs/SG1")
        } else {
            self.volume(node).join("copies/SG1")
        };
        let mut gens = Vec::new();
        collect_generations(&root, &mut gens);
        gens.sort_unstable();
        (gens.len(), gens.first().copied(), gens.last().copied())
    }
}

/// The generations of the `E00XXXXXXXX.log` files under `dir`, recursively.
fn collect_generations(dir: &Path, out: &mut Vec<u32>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_generations(&p, out);
            continue;
        }
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_prefix("E00").and_then(|n| n.strip_suffix(".log"))
            && let Ok(g) = u32::from_str_radix(hex, 16)
        {
            out.push(g);
        }
    }
}

/// The number `mail load` says it delivered ("Delivered N messages …").
fn delivered(out: &str) -> Result<u64> {
    out.lines()
        .find_map(|l| l.strip_prefix("Delivered ")?.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("mail load did not say what it delivered: {out}"))
}

/// One event of a trail on one line: node, ID, source, level when not plain information, and
/// the message.
fn trail_line(e: &Value) -> String {
    let level = match e["level"].as_str() {
        Some("info") | Some("Info") | None => String::new(),
        Some(other) => format!("[{other}] "),
    };
    format!(
        "   {:<2} {:>5} {:<11} {level}{}",
        e["node"].as_str().unwrap_or("?"),
        e["id"].as_u64().unwrap_or(0),
        e["source"].as_str().unwrap_or("?"),
        e["message"].as_str().unwrap_or("")
    )
}

/// A node's log files in a few words.
fn log_files((files, low, high): (usize, Option<u32>, Option<u32>)) -> String {
    match (low, high) {
        (Some(l), Some(h)) => format!("{files} (generations {l:#X}..{h:#X})"),
        _ => "none".into(),
    }
}

/// The first 8 characters of an id (as `backup list` shows them).
fn short(id: &Value) -> &str {
    let id = id.as_str().unwrap_or("?");
    id.get(..8).unwrap_or(id)
}

/// A backup report in one line: its set, the node that took it, its files and logs.
fn set_line(report: &Value) -> String {
    let set = &report["set"];
    let logs = match (set["log_range"]["low"].as_u64(), set["log_range"]["high"].as_u64()) {
        (Some(l), Some(h)) => format!(", log generations {l:#X}..{h:#X}"),
        _ => String::new(),
    };
    format!(
        "{} set {} taken on node {}: {} files, {:.1} MiB{logs}",
        set["type"].as_str().unwrap_or("?"),
        short(&set["id"]),
        set["node"].as_str().unwrap_or("?"),
        set["files"].as_u64().unwrap_or(0),
        set["bytes"].as_u64().unwrap_or(0) as f64 / (1 << 20) as f64
    )
}

/// Whether `trail` holds event `id` of `node`.
fn has(trail: &[Value], node: &str, id: u64) -> bool {
    trail.iter().any(|e| e["node"] == node && e["id"] == id)
}

/// The first `etcd` on `PATH` (Debian's `etcd-server` installs `/usr/bin/etcd`).
fn etcd_binary() -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("etcd")).find(|p| p.is_file()))
        .context(
            "the DAG demo needs etcd (the DAG's cluster database), and no `etcd` is on PATH: \
             install it (on Debian and Ubuntu: `apt-get install etcd-server`)",
        )
}

/// A free loopback port (the listener is dropped: a small race, which [`start_etcd`] retries).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `n` consecutive free loopback ports (the replication listeners of `dag init`).
fn free_ports(n: u16) -> Result<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0")?;
        let base = first.local_addr()?.port();
        if base.checked_add(n).is_none() {
            continue;
        }
        let rest: Vec<_> = (1..n).map(|i| TcpListener::bind(("127.0.0.1", base + i))).collect();
        if rest.iter().all(std::result::Result::is_ok) {
            return Ok(base);
        }
    }
    bail!("no {n} consecutive free loopback ports")
}

/// One `GET /health` of etcd; whether it says it is healthy.
fn etcd_healthy(port: u16) -> bool {
    let ask = || -> std::io::Result<String> {
        let timeout = Duration::from_secs(1);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    ask().is_ok_and(|b| b.contains("\"health\":\"true\""))
}

/// Go's name for this architecture, as `ETCD_UNSUPPORTED_ARCH` wants it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Starts a single-member etcd on loopback with its data in `dir`; its client endpoint. A port
/// taken by someone else between choosing and binding makes etcd exit: it is then tried again
/// on other ports, from an empty data directory.
fn start_etcd(dag: &mut Dag) -> Result<String> {
    let bin = etcd_binary()?;
    let dir = dag.dir.join("etcd");
    std::fs::create_dir_all(&dir)?;
    let mut failures = Vec::new();
    for _attempt in 0..3 {
        let _ = std::fs::remove_dir_all(dir.join("data"));
        match try_etcd(dag, &bin, &dir) {
            Ok(endpoint) => return Ok(endpoint),
            Err(e) => {
                dag.procs.kill("etcd");
                failures.push(format!("{e:#}"));
            }
        }
    }
    bail!(
        "etcd did not start (3 attempts: {}); see {}",
        failures.join("; "),
        dir.join("etcd.log").display()
    )
}

/// One attempt of [`start_etcd`], its output appended to `dir/etcd.log`.
fn try_etcd(dag: &mut Dag, bin: &Path, dir: &Path) -> Result<String> {
    let (client, peer) = (free_port()?, free_port()?);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("etcd.log"))?;
    let (c, p) = (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
    let child = Command::new(bin)
        .arg("--name")
        .arg("demo")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
        .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
        .arg("--initial-cluster")
        .arg(format!("demo={p}"))
        // etcd refuses architectures it does not list unless told: harmless on listed ones.
        .env("ETCD_UNSUPPORTED_ARCH", go_arch())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    dag.procs.push("etcd", child);
    let until = Instant::now() + ETCD_DEADLINE;
    loop {
        if let Some(status) = dag.procs.exited("etcd")? {
            bail!("etcd exited ({status})");
        }
        if etcd_healthy(client) {
            return Ok(c);
        }
        if Instant::now() >= until {
            bail!("etcd was not healthy within {ETCD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the DAG demo in `dir` (which the caller created and removes).
pub fn run(dir: &Path, messages: u64, serve: bool) -> Result<()> {
    let mut dag = Dag {
        dir: dir.to_path_buf(),
        exe: std::env::current_exe().context("finding this program to run the nodes")?,
        procs: Processes::default(),
        console: serve.then(|| Console {
            token: uuid::Uuid::new_v4().simple().to_string(),
            ports: Vec::new(),
        }),
    };
    let mut outcome = demo(&mut dag, messages);
    if serve && outcome.is_ok() {
        outcome = serve_console(&mut dag);
    }
    if outcome.is_err() {
        for n in NODES.iter().filter(|n| dag.home(n).join("node.log").exists()) {
            println!("--- node {n}'s log (tail) ---\n{}", dag.log_tail(n));
        }
    }
    outcome
}

fn demo(dag: &mut Dag, messages: u64) -> Result<()> {
    println!("1. A database availability group of three nodes, and mail on the active");
    let etcd = start_etcd(dag)?;
    println!("   etcd (the cluster database) at {etcd}");
    let base_port = free_ports(NODES.len() as u16)?;
    let init_dir = dag.dir.join("dag");
    let out = Command::new(&dag.exe)
        .args(["dag", "init", "--name", "DAG1", "--nodes", &NODES.join(","), "--dir"])
        .arg(&init_dir)
        .args(["--etcd", &etcd, "--base-port", &base_port.to_string(), "--storage-group", "SG1"])
        .stdin(Stdio::null())
        .output()
        .context("running dag init")?;
    if !out.status.success() {
        bail!("dag init failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    add_console(dag)?;
    for n in NODES {
        dag.start_node(n)?;
        println!(
            "   node {n} up: API {}, replication on 127.0.0.1:{}",
            dag.socket(n).display(),
            base_port + NODES.iter().position(|m| *m == n).unwrap_or(0) as u16
        );
    }
    // A member mounts a storage group once the cluster database names it active.
    dag.wait_for("a to claim SG1 in the cluster database and mount it", || {
        Ok(dag.count("a", false).ok().flatten())
    })?;
    println!("   SG1 (database DB1) is active on a");
    let mut acknowledged = dag.load(messages)?;
    let (m, _) = dag.count("a", false)?.context("the active's count")?;
    println!("   {acknowledged} messages delivered to a and acknowledged; DB1 holds {m}\n");

    println!("2. Passive copies of SG1 on b and c: seeded from a snapshot of a, then fed its logs");
    for n in &NODES[1..] {
        dag.cli("a", &["copy", "add", "--sg", "SG1", "--on", n])?;
    }
    for n in &NODES[1..] {
        dag.wait_for(&format!("the copy of SG1 on {n} to be Healthy"), || {
            Ok(dag.row(n)?.filter(|r| r["status"] == "Healthy"))
        })?;
    }
    for l in dag.cli("a", &["copy", "status", "--sg", "SG1"])?.lines() {
        println!("   {l}");
    }
    println!();

    println!("3. A full backup of the passive copy on b, while mail keeps arriving on a");
    let load_out = dag.dir.join("load.out");
    let child = Command::new(&dag.exe)
        .args(["mail", "load", "--sg", "SG1", "--db", "DB1", "--seconds", "4"])
        .env("SHADOWCOPY_NODE", dag.socket("a"))
        .env_remove("SHADOWCOPY_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&load_out)?)
        .stderr(Stdio::null())
        .spawn()
        .context("starting the mail load")?;
    dag.procs.push("mail load", child);
    let full = dag.backup("full", "b")?;
    let status = dag.procs.wait("mail load", DEADLINE)?;
    if !status.success() {
        bail!("the mail load during the full backup failed ({status})");
    }
    let during = delivered(&std::fs::read_to_string(&load_out)?)?;
    acknowledged += during;
    println!("   {}", set_line(&full));
    println!("   {during} more messages were delivered to a and acknowledged meanwhile");
    let full_job = full["job"].as_str().context("the backup report names no job")?.to_string();
    // b's last two steps (2033, 2037) come once it has replayed a's header update.
    let trail = dag.wait_for("b to replay a's header update (event 2037)", || {
        let t = dag.trail(&full_job)?;
        Ok(has(&t, "b", 2037).then_some(t))
    })?;
    println!("   the job's trail on both nodes (events --job {full_job}), in time order:");
    println!("   the replication writer on b (2021…2037, 960 names the active) and the store on a");
    println!("   (910/210 hold SG1 for b's job, 913/213 record the backup, 224/225 truncate)");
    for e in &trail {
        println!("{}", trail_line(e));
    }
    println!();

    acknowledged += dag.load(messages)?;
    let (m, _) = dag.wait_converged()?;
    println!(
        "4. More mail ({acknowledged} messages acknowledged, DB1 holds {m}; b and c caught up),"
    );
    println!("   then an incremental backup of the copy on c, on top of b's full");
    let logs_before: Vec<_> = NODES.iter().map(|n| dag.logs(n)).collect();
    let inc = dag.backup("incremental", "c")?;
    println!("   {}", set_line(&inc));
    println!(
        "   based on set {} (the full taken on b: one chain across two copies)",
        short(&inc["set"]["base_set"])
    );
    if inc["set"]["base_set"] != full["set"]["id"] {
        bail!("the incremental taken on c is not based on the full taken on b: {inc}");
    }
    println!();

    println!("5. The logs the backups covered are truncated on all three nodes");
    let inc_job = inc["job"].as_str().context("the backup report names no job")?.to_string();
    for job in [&full_job, &inc_job] {
        for e in dag.trail(job)?.iter().filter(|e| e["id"] == 224 || e["id"] == 225) {
            println!("{}", trail_line(e));
        }
    }
    // The passives delete the shipped logs a truncated once their own checkpoint passed them.
    let active_low = dag.logs("a").1.unwrap_or(0);
    // Shown as it is if they take longer: the demo is about the backups, not this delay.
    let _ = dag.wait_within(Duration::from_secs(15), "the passives to delete old logs", || {
        Ok(NODES[1..].iter().all(|n| dag.logs(n).1.unwrap_or(u32::MAX) >= active_low).then_some(()))
    });
    println!("   log files of SG1 on disk, before the incremental → after:");
    for (n, before) in NODES.iter().zip(&logs_before) {
        let role = if *n == NODES[0] { "active " } else { "passive" };
        println!("   {n} ({role}): {} → {}", log_files(*before), log_files(dag.logs(n)));
    }
    println!();

    let before = dag.count("a", false)?.context("the active's count")?;
    println!("6. Disaster on a: DB1.edb is lost");
    println!(
        "   before: DB1 holds {} messages, digest {}",
        before.0,
        &before.1[..16.min(before.1.len())]
    );
    dag.cli("a", &["store", "dismount", "SG1"])?;
    std::fs::remove_file(dag.volume("a").join("db/SG1/DB1.edb")).context("deleting DB1.edb")?;
    if let Err(e) = dag.cli("a", &["store", "mount", "SG1"]) {
        // The command's last line is its error; the rest is its progress.
        let e = e.to_string();
        let why = e.lines().last().unwrap_or_default().trim_start_matches("Error: ");
        println!("   mounting SG1 now fails: {why}");
    } else {
        bail!("SG1 mounted without its database");
    }
    let inc_id = inc["set"]["id"].as_str().context("the incremental has no set id")?;
    let repo = dag.dir.join("repository");
    let restored = dag.json(
        "a",
        &[
            "restore",
            "--repo",
            repo.to_str().context("the repository path is not UTF-8")?,
            "--set",
            inc_id,
            "--original",
            // The copies on b and c replay a's log stream, which the restore changes: they
            // are suspended through it and seeded again from the restored database.
            "--reseed-copies",
        ],
    )?;
    let sets = restored["sets"].as_array().map_or(0, Vec::len);
    println!(
        "   restored on a from {sets} sets (the full taken on b, the incremental taken on c),"
    );
    println!("   rolling forward through a's logs; SG1 mounted again");
    println!("   (the copies on b and c were suspended through the restore and seed again)\n");

    println!("7. The proof");
    let after = dag.count("a", false)?.context("the active's count")?;
    println!(
        "   DB1 holds {} messages, digest {} — {}",
        after.0,
        &after.1[..16.min(after.1.len())],
        if after == before { "identical to before the disaster" } else { "DIFFERENT" }
    );
    if after != before {
        bail!("the restored database differs from the one that was lost");
    }
    // The load only delivers: every acknowledged delivery is one message in DB1.
    if after.0 < acknowledged {
        bail!("DB1 holds {} messages, fewer than the {acknowledged} acknowledged", after.0);
    }
    println!(
        "   every one of the {acknowledged} acknowledged deliveries is back: no message lost.\n"
    );
    switchover_and_failover(dag, after)
}

/// `--serve`: every node's API on a free loopback port too (the browser cannot use the Unix
/// socket), with the run's token.
fn add_console(dag: &mut Dag) -> Result<()> {
    let Some(token) = dag.console.as_ref().map(|c| c.token.clone()) else { return Ok(()) };
    let mut ports = Vec::new();
    for n in NODES {
        let port = free_port()?;
        let path = dag.home(n).join("node.toml");
        let mut text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.push_str(&format!("\n[api]\ntcp = \"127.0.0.1:{port}\"\ntoken = \"{token}\"\n"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        ports.push((n, port));
    }
    if let Some(c) = dag.console.as_mut() {
        c.ports = ports;
    }
    Ok(())
}

/// `--serve`, after the demo: b (killed in the failover) starts again and rejoins, and the
/// three nodes serve their consoles until Ctrl-C (or SIGTERM); then every process the demo
/// started ends (by its pid, [`Processes`]).
fn serve_console(dag: &mut Dag) -> Result<()> {
    println!("\n9. The web console: the three nodes keep running");
    if dag.procs.exited("node b").is_err() {
        dag.start_node("b")?;
        println!("   b started again: it rejoins the DAG (its copy of SG1 catches up)");
    }
    let Some(console) = dag.console.as_ref() else { return Ok(()) };
    let (first, port) = console.ports[0];
    println!("   open   http://127.0.0.1:{port}/ui/    (node {first})");
    println!("   token  {}", console.token);
    for (n, p) in &console.ports[1..] {
        println!("          node {n}'s console: http://127.0.0.1:{p}/ui/ (same token)");
    }
    println!("   the Overview shows the members and the copies (suspend, resume, switch over);");
    println!("   the Jobs page the demo's backups as timelines");
    println!("   Ctrl-C stops the nodes and etcd");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })
    .context("waiting for Ctrl-C")?;
    println!("   stopping the nodes and etcd");
    Ok(())
}

/// Step 8: the active copy moves to b on request (switchover), then b is killed and the
/// primary active manager mounts the best remaining copy by itself (failover).
fn switchover_and_failover(dag: &mut Dag, before: (u64, String)) -> Result<()> {
    println!("8. The active manager: a switchover to b, then b killed and a failover");
    for n in ["b", "c"] {
        dag.wait_for(&format!("the copy of SG1 on {n} to be Healthy again"), || {
            Ok(dag.row(n)?.filter(|r| r["status"] == "Healthy").map(|_| ()))
        })?;
    }
    let moved = dag.json("a", &["copy", "activate", "--sg", "SG1", "--on", "b"])?;
    println!(
        "   copy activate --on b: SG1 active on b (epoch {}), every generation up to {:#X} replayed first; commits paused {} ms",
        moved["epoch"],
        moved["generation"].as_u64().unwrap_or(0),
        moved["pause_ms"]
    );
    let on_b = dag.count("b", false)?.context("b's count")?;
    if on_b != before {
        bail!("after the switchover b holds {} messages, not the {} a had", on_b.0, before.0);
    }
    dag.wait_for("the copy of SG1 on c to follow b", || {
        Ok(dag
            .row("c")?
            .filter(|r| r["status"] == "Healthy" && r["copy_queue_length"] == 0)
            .map(|_| ()))
    })?;
    let killed = Instant::now();
    dag.procs.kill("node b");
    println!("   kill -9 of b (the active); its lease in etcd lapses within 5 s");
    let new_active = dag.wait_for("another copy to be made active", || {
        let v = dag.json("c", &["copy", "status", "--sg", "SG1"])?;
        Ok(v["groups"][0]["active"].as_str().filter(|n| *n != "b").map(str::to_string))
    })?;
    let count = dag.wait_for(&format!("{new_active} to mount SG1"), || {
        Ok(dag.count(&new_active, false).ok().flatten())
    })?;
    println!(
        "   the primary active manager mounted the copy on {new_active} {:.1} s after the kill: {} messages, {}",
        killed.elapsed().as_secs_f64(),
        count.0,
        if count == before { "every one of them" } else { "NOT the same" }
    );
    if count != before {
        bail!("after the failover {new_active} holds {} messages, not {}", count.0, before.0);
    }
    println!("   no message lost across the switchover and the failover.");
    Ok(())
}
