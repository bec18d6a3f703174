//! `failover-time`: how long mail stops when the node holding the active copy dies.
//!
//! The figure a mail client sees after a crash of the active is the time from the crash to
//! its first acknowledged delivery on the new active: the member lease of the dead node has
//! to lapse (`MEMBER_TTL`, 5 s, in `node::dag`), the primary active manager has to notice and
//! move `active/SG1` to the best healthy copy under the next epoch, that node has to activate
//! its copy and mount it, and the client has to find it. Everything but the lease is the
//! active manager's own cost, so the target is TTL + 2 s, and the figure is also given as a
//! ratio to the TTL. For scale, the anchor is Patroni's defaults (ttl 30 s + loop_wait 10 s =
//! 40 s before a replica is promoted).
//!
//! The setup is the real thing: Debian's `etcd` and three `shadowcopy serve` processes
//! (a, b, c) made by `shadowcopy dag init` in a scratch directory, SG1 active on a, some mail,
//! then copies on b and c waited for until Healthy. A client thread delivers one message at a
//! time (`POST /v1/mail/deliver`, answered once durable) to the node it believes active, and
//! on a connection error or an HTTP 503 (`not_active`) tries the next node round robin, as a
//! mail client following the active would, pausing [`RETRY_PAUSE`] only after every node
//! failed in a row (a fixed pause, so the figure's resolution is known).
//!
//! Each run waits for the passives to be Healthy and for some deliveries on the active, then
//! kills the active with SIGKILL and measures from the kill to the first acknowledgement by
//! another node. The DAG is reused: the killed node is started again, finds itself replaced,
//! sets its files aside and reseeds as a passive, and the next run kills whichever node is
//! active then (the manager picks the best healthy copy, which may be the node restarted
//! last, so the runs need not visit every node).
//!
//! A figure below the TTL is no error: the lease lapses TTL after the node's last keep-alive,
//! which came some time before the kill.
//!
//! Every process started here is killed (SIGKILL, by its handle, i.e. its PID) when the
//! scenario ends, also on error; the scratch directory is removed.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::args::{FailoverArgs, median};
use crate::dag_procs::{Procs, cli, free_ports, post, shadowcopy_bin, start_etcd, wait_until};

/// The member lease's time to live in seconds: `MEMBER_TTL` in `crates/node/src/dag/mod.rs`
/// (private there; keep the two equal).
const MEMBER_TTL_S: f64 = 5.0;
/// What the active manager may add to the lease before mail flows again.
const TARGET_SLACK_S: f64 = 2.0;
/// Patroni's defaults, the comparison anchor: `ttl` and `loop_wait`.
const PATRONI_TTL_S: f64 = 30.0;
const PATRONI_LOOP_WAIT_S: f64 = 10.0;
/// The client's pause once every node failed in a row: short and fixed, so that it adds at
/// most this much to a measured failover.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long one delivery may take before the client gives up on that node.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node or etcd may take to answer after it is started.
const START_DEADLINE: Duration = Duration::from_secs(90);
/// How long a copy may take to become Healthy (seeding included).
const HEALTHY_DEADLINE: Duration = Duration::from_secs(180);
/// How long mail may stay stopped after the kill before the run counts as failed.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(120);
/// Deliveries acknowledged by the active in a run before it is killed.
const ACKS_BEFORE_KILL: usize = 20;
/// Messages delivered before the copies are added.
const FIRST_MAIL: u64 = 200;
const NODES: [&str; 3] = ["a", "b", "c"];

/// The node `name` of the DAG in `dag`: its directory and API socket.
fn home(dag: &Path, name: &str) -> PathBuf {
    dag.join(name)
}

fn socket(dag: &Path, name: &str) -> PathBuf {
    home(dag, name).join("data/api.sock")
}

/// Starts (or starts again) `shadowcopy serve` for node `name`, its log appended to
/// `<home>/node.log`, and waits until its socket answers.
fn start_node(bin: &Path, dag: &Path, name: &str, procs: &mut Procs) -> anyhow::Result<()> {
    let home = home(dag, name);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(home.join("node.log"))?;
    let sock = socket(dag, name);
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(home.join("node.toml"))
        .env("SHADOWCOPY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let child = procs.push(name, child);
    wait_until(
        &format!("node {name}'s API socket"),
        START_DEADLINE,
        Duration::from_millis(50),
        || {
            if let Some(s) = child.try_wait()? {
                bail!(
                    "node {name} exited while starting ({s}); see {}",
                    home.join("node.log").display()
                );
            }
            Ok(UnixStream::connect(&sock).is_ok().then_some(()))
        },
    )
}

/// `copy status --json` asked of the node at `socket`.
fn copy_status(bin: &Path, socket: &Path) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&cli(bin, socket, &["copy", "status", "--json"])?)?)
}

/// SG1's active node and epoch, as `copy status` gives them.
fn group(bin: &Path, socket: &Path) -> anyhow::Result<(String, u64)> {
    let v = copy_status(bin, socket)?;
    let g = v["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["sg"] == "SG1"))
        .with_context(|| format!("no group SG1 in the copy status {v}"))?;
    let active = g["active"].as_str().with_context(|| format!("no active in {g}"))?;
    let epoch = g["epoch"].as_u64().with_context(|| format!("no epoch in {g}"))?;
    Ok((active.to_string(), epoch))
}

/// Waits until the copy of SG1 on `node` is Healthy, asking the node at `via`.
fn wait_healthy(bin: &Path, via: &Path, node: &str) -> anyhow::Result<()> {
    wait_until(
        &format!("the copy of SG1 on {node} to be Healthy"),
        HEALTHY_DEADLINE,
        Duration::from_millis(250),
        || {
            let v = copy_status(bin, via)?;
            let healthy = v["copies"].as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|r| r["sg"] == "SG1" && r["node"] == node && r["status"] == "Healthy")
            });
            Ok(healthy.then_some(()))
        },
    )
}

/// What a failed wait adds to its error: the copy status asked of `via`, and the tail of
/// every node's log (the manager's refusals and the activation are logged there).
fn diagnosis(bin: &Path, dag: &Path, via: &str) -> String {
    let status = match copy_status(bin, &socket(dag, via)) {
        Ok(v) => format!("{v}"),
        Err(e) => format!("(copy status via {via} failed: {e:#})"),
    };
    let mut s = format!("copy status via {via}: {status}");
    for n in NODES {
        let text = std::fs::read_to_string(home(dag, n).join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        s.push_str(&format!("\n--- node {n} log (tail) ---\n{tail}"));
    }
    s
}

/// What one delivery attempt came to.
#[derive(Debug, PartialEq)]
enum Attempt {
    /// Committed durably by this node.
    Acked(String),
    /// Not here (503, `not_active`) or the node is unreachable: try the next one.
    MoveOn(String),
    /// Any other answer: the client stops, and the run fails naming it.
    Refused(String),
}

/// Classifies a node's answer to `POST /v1/mail/deliver`.
fn classify(answer: anyhow::Result<(u16, String)>) -> Attempt {
    match answer {
        Err(e) => Attempt::MoveOn(format!("{e:#}")),
        Ok((200, body)) => match serde_json::from_str::<Value>(&body) {
            Ok(v) => match v["node"].as_str() {
                Some(n) => Attempt::Acked(n.to_string()),
                None => Attempt::Refused(format!("an acknowledgement without a node: {body}")),
            },
            Err(e) => {
                Attempt::Refused(format!("an acknowledgement that is not JSON ({e}): {body}"))
            }
        },
        Ok((503, body)) => Attempt::MoveOn(format!("HTTP 503: {body}")),
        Ok((status, body)) => Attempt::Refused(format!("HTTP {status}: {body}")),
    }
}

/// Delivers message `seq` (about 1 KiB) to the node at `socket`.
fn deliver(socket: &Path, seq: u64) -> Attempt {
    let body = format!("failover-time message {seq}\n{}\n", "x".repeat(1000));
    let req = json!({
        "sg": "SG1",
        "db": "DB1",
        "mailbox": format!("user{:02}", seq % 8),
        "subject": format!("failover-time {seq}"),
        "body": body,
    });
    classify(post(socket, "/v1/mail/deliver", &req.to_string(), DELIVER_TIMEOUT))
}

/// One acknowledged delivery: when the answer was read, and the node that committed it.
#[derive(Debug, Clone)]
struct Ack {
    at: Instant,
    node: String,
}

/// What the client thread saw.
#[derive(Default)]
struct ClientLog {
    acks: Vec<Ack>,
    /// Attempts that moved on to another node, with their time (to count them per run).
    moved_on: Vec<Instant>,
    last_error: Option<String>,
    /// Why the client stopped on its own (an answer it cannot follow).
    refused: Option<String>,
}

/// The first acknowledgement after `since` by another node than `dead`: the node and the
/// seconds from `since` to it.
fn first_ack_elsewhere(acks: &[Ack], since: Instant, dead: &str) -> Option<(String, f64)> {
    acks.iter()
        .find(|a| a.at > since && a.node != dead)
        .map(|a| (a.node.clone(), (a.at - since).as_secs_f64()))
}

/// A mail client on a thread of its own, following the active round robin; stopped when
/// dropped.
struct Client {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<ClientLog>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(sockets: Vec<(String, PathBuf)>) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(ClientLog::default()));
        let (st, lg) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut at = 0usize;
            let mut failed_in_a_row = 0usize;
            let mut seq = 0u64;
            while !st.load(Ordering::Relaxed) {
                let (name, socket) = &sockets[at];
                match deliver(socket, seq) {
                    Attempt::Acked(node) => {
                        lg.lock().acks.push(Ack { at: Instant::now(), node });
                        failed_in_a_row = 0;
                        seq += 1;
                    }
                    Attempt::MoveOn(why) => {
                        let mut l = lg.lock();
                        l.moved_on.push(Instant::now());
                        l.last_error = Some(format!("{name}: {why}"));
                        drop(l);
                        at = (at + 1) % sockets.len();
                        failed_in_a_row += 1;
                        if failed_in_a_row.is_multiple_of(sockets.len()) {
                            std::thread::sleep(RETRY_PAUSE);
                        }
                    }
                    Attempt::Refused(why) => {
                        lg.lock().refused =
                            Some(format!("node {name} refused message {seq}: {why}"));
                        return;
                    }
                }
            }
        });
        Client { stop, log, thread: Some(thread) }
    }

    /// Fails if the client stopped on an answer it could not follow.
    fn check(&self) -> anyhow::Result<()> {
        match &self.log.lock().refused {
            Some(why) => bail!("the mail client stopped: {why}"),
            None => Ok(()),
        }
    }

    /// The client's last error, for a failed wait's message.
    fn last_error(&self) -> String {
        self.log.lock().last_error.clone().unwrap_or_else(|| "none".into())
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("the mail client thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One failover measured.
struct Run {
    killed: String,
    new_active: String,
    epoch: u64,
    seconds: f64,
    /// Attempts that found no active between the kill and the first acknowledgement.
    moved_on: usize,
}

/// The scenario's figures over its runs.
fn summary(runs: &[Run]) -> Value {
    let secs: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    let max = secs.iter().copied().fold(f64::NAN, f64::max);
    let target = MEMBER_TTL_S + TARGET_SLACK_S;
    let patroni = PATRONI_TTL_S + PATRONI_LOOP_WAIT_S;
    json!({
        "runs": runs.iter().map(|r| json!({
            "killed": r.killed,
            "new_active": r.new_active,
            "epoch": r.epoch,
            "seconds": r.seconds,
            "attempts_moved_on": r.moved_on,
        })).collect::<Vec<_>>(),
        "seconds": secs,
        "p50_s": median(secs.clone()),
        "max_s": max,
        "ttl_s": MEMBER_TTL_S,
        "max_over_ttl": max / MEMBER_TTL_S,
        "target_s": target,
        "target_met": max <= target,
        "patroni_anchor": {
            "ttl_s": PATRONI_TTL_S,
            "loop_wait_s": PATRONI_LOOP_WAIT_S,
            "seconds": patroni,
            "max_over_anchor": max / patroni,
        },
    })
}

/// Runs the scenario.
pub fn run(opts: &FailoverArgs) -> anyhow::Result<()> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let bin = shadowcopy_bin(opts.shadowcopy.as_ref())?;
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let mut procs = Procs::default();
    let etcd = start_etcd(dir, &mut procs)?;
    let base_port = free_ports(NODES.len() as u16)?;
    let dag = dir.join("dag");
    let out = Command::new(&bin)
        .args(["dag", "init", "--name", "DAG1", "--nodes", &NODES.join(","), "--dir"])
        .arg(&dag)
        .args(["--etcd", &etcd, "--base-port", &base_port.to_string(), "--storage-group", "SG1"])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("dag init failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    for n in NODES {
        start_node(&bin, &dag, n, &mut procs)?;
    }
    let sock = |n: &str| socket(&dag, n);

    // a mounts SG1 once etcd names it active, a tick or two after it starts.
    wait_until(
        "SG1 to be mounted on a (a delivery acknowledged)",
        START_DEADLINE,
        Duration::from_millis(100),
        || match deliver(&sock("a"), u64::MAX) {
            Attempt::Acked(_) => Ok(Some(())),
            Attempt::MoveOn(why) => bail!("{why}"),
            Attempt::Refused(why) => bail!("{why}"),
        },
    )?;
    let load = json!({"sg": "SG1", "db": "DB1", "messages": FIRST_MAIL, "mailboxes": 8, "seed": 1});
    let (status, body) = post(&sock("a"), "/v1/mail/load", &load.to_string(), START_DEADLINE)?;
    if status != 200 {
        bail!("mail load of {FIRST_MAIL} messages on a answered HTTP {status}: {body}");
    }
    for n in ["b", "c"] {
        cli(&bin, &sock("a"), &["copy", "add", "--sg", "SG1", "--on", n])?;
    }

    let mut client = Client::start(NODES.iter().map(|n| (n.to_string(), sock(n))).collect());
    let mut active = "a".to_string();
    let mut runs = Vec::new();
    for _ in 0..opts.runs {
        for p in NODES.iter().filter(|n| **n != active) {
            wait_healthy(&bin, &sock(&active), p)
                .with_context(|| diagnosis(&bin, &dag, &active))?;
        }
        let (named, epoch) = group(&bin, &sock(&active))?;
        if named != active {
            bail!("copy status names {named} active, the bench expected {active}");
        }
        let from = client.log.lock().acks.len();
        wait_until(
            &format!("{ACKS_BEFORE_KILL} acknowledged deliveries on {active} before the kill"),
            START_DEADLINE,
            Duration::from_millis(20),
            || {
                client.check()?;
                let l = client.log.lock();
                let n = l.acks[from..].iter().filter(|a| a.node == active).count();
                Ok((n >= ACKS_BEFORE_KILL).then_some(()))
            },
        )
        .with_context(|| format!("the client's last error: {}", client.last_error()))?;

        let killed_at = Instant::now();
        procs.kill(&active)?;
        let (new_active, seconds) = wait_until(
            &format!("an acknowledged delivery by another node after the kill of {active}"),
            FAILOVER_DEADLINE,
            Duration::from_millis(20),
            || {
                client.check()?;
                Ok(first_ack_elsewhere(&client.log.lock().acks, killed_at, &active))
            },
        )
        .with_context(|| {
            let via = NODES.iter().find(|n| **n != active).copied().unwrap_or("b");
            format!(
                "the client's last error: {}\n{}",
                client.last_error(),
                diagnosis(&bin, &dag, via)
            )
        })?;
        let moved_on = {
            let l = client.log.lock();
            let until = killed_at + Duration::from_secs_f64(seconds);
            l.moved_on.iter().filter(|t| **t > killed_at && **t <= until).count()
        };
        let (named, new_epoch) = group(&bin, &sock(&new_active))?;
        if named != new_active || new_epoch <= epoch {
            bail!(
                "{new_active} acknowledged mail after the kill of {active}, but copy status names \
                 {named} active under epoch {new_epoch} (was {epoch})"
            );
        }
        runs.push(Run {
            killed: active.clone(),
            new_active: new_active.clone(),
            epoch: new_epoch,
            seconds,
            moved_on,
        });
        // The killed node comes back as a passive of the new active (it reseeds).
        start_node(&bin, &dag, &active, &mut procs)?;
        active = new_active;
    }
    client.stop()?;
    drop(procs);

    let mut out = summary(&runs);
    out["scenario"] = json!("failover-time");
    out["bench_build"] = json!(if cfg!(debug_assertions) { "debug" } else { "release" });
    out["shadowcopy"] = json!(bin.display().to_string());
    out["measured"] = json!(
        "seconds: from the SIGKILL of the active to the first delivery acknowledged by another \
         node, as a client delivering one message at a time and moving round robin on \
         not_active or a connection error sees it (it pauses 20 ms after every node failed in \
         a row); the DAG is reused, the killed node restarted as a passive before the next \
         run kills the active of the moment"
    );
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failover_ends_at_the_first_ack_by_another_node_after_the_kill() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let ack = |ms, node: &str| Ack { at: at(ms), node: node.into() };
        let acks = [ack(0, "a"), ack(100, "a"), ack(150, "a"), ack(6100, "b"), ack(6200, "b")];
        // An answer of the killed node read after the kill does not count.
        let (node, s) = first_ack_elsewhere(&acks, at(120), "a").unwrap();
        assert_eq!(node, "b");
        assert!((s - 5.98).abs() < 1e-9, "{s}");
        assert!(first_ack_elsewhere(&acks[..3], at(120), "a").is_none(), "no new active yet");
    }

    #[test]
    fn answers_are_classified_as_a_following_client_would() {
        let ok = r#"{"node":"b","message_id":1}"#.to_string();
        assert_eq!(classify(Ok((200, ok))), Attempt::Acked("b".into()));
        let na = r#"{"error":{"code":"not_active","message":"no"}}"#.to_string();
        assert!(matches!(classify(Ok((503, na))), Attempt::MoveOn(_)));
        assert!(matches!(classify(Err(anyhow::anyhow!("refused"))), Attempt::MoveOn(_)));
        assert!(matches!(classify(Ok((400, "{}".into()))), Attempt::Refused(_)));
        assert!(matches!(classify(Ok((200, "{}".into()))), Attempt::Refused(_)));
    }

    #[test]
    fn the_summary_compares_the_worst_run_with_the_ttl_and_the_target() {
        let run = |s| Run {
            killed: "a".into(),
            new_active: "b".into(),
            epoch: 2,
            seconds: s,
            moved_on: 0,
        };
        let v = summary(&[run(6.0), run(5.5), run(6.5)]);
        assert_eq!(v["p50_s"], 6.0);
        assert_eq!(v["max_s"], 6.5);
        assert_eq!(v["max_over_ttl"], 1.3);
        assert_eq!(v["target_s"], 7.0);
        assert_eq!(v["target_met"], true);
        assert_eq!(v["patroni_anchor"]["seconds"], 40.0);
        assert_eq!(summary(&[run(7.5)])["target_met"], false);
    }
}
