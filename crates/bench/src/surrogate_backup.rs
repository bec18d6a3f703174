//! `surrogate-backup`: a full backup taken from a passive copy vs from the active, while mail
//! arrives on the active at a fixed rate.
//!
//! The point of backing up a passive copy is that the active carries no backup load: it is
//! never frozen, and its disk and cores are not busy reading the database. This measures what
//! the active's mail delivery sees. The setup is the real thing: Debian's `etcd`, and two
//! `shadowcopy serve` processes (`a` holds SG1 active, `b` its passive copy) made by
//! `shadowcopy dag init` in a scratch directory. SG1's database is filled to `--size-gib` with
//! `mail load` *before* the copy is added (seeding copies the database), then the copy is
//! added and waited for until Healthy.
//!
//! A first full backup, not measured, truncates the fill's logs, so that every measured backup
//! reads the database and the few logs since the previous one. Then, each phase starting with
//! the copy Healthy and drained: `--seconds` of mail with no backup; and `--runs` times (the
//! order alternating) a full backup with `--from active` (on a, through its own snapshot and
//! freeze) and one with `--from passive` (on b, the surrogate backup; the active only holds
//! backup in progress and stamps its header). Each backup goes into a fresh repository,
//! removed after it, so no backup deduplicates against another.
//!
//! What is measured as commit latency: the node's API has no per-message latency, so the bench
//! delivers `--rate` messages per second one at a time (`POST /v1/mail/load` with
//! `messages: 1` on a's Unix socket, each a durable transaction) and times each request, from
//! its *scheduled* send time to the answer (a stalled delivery also delays the ones scheduled
//! after it, and they count that wait: no coordinated omission). The request includes the
//! node's handling of a load job, which polls for the end of its load every 20 ms: latencies
//! are therefore about 20 ms at best and move in 20 ms steps; a stall (a freeze, a busy disk)
//! shows as a higher p99. The figure that matters is `p99_ratio_passive_vs_active` (target
//! ≤ 1.0), and both against no backup.
//!
//! On one machine all nodes share the disk and the cores, so the passive's backup still
//! competes with the active for them: the ratio is a pessimistic figure for real deployments.
//! To tell that contention from work the active itself does, each phase also reports the CPU
//! seconds each node's process used (`cpu_s`, from `/proc`).
//! Every process started here is killed (by its handle) when the scenario ends, also on error;
//! the scratch directory is removed.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::args::{SurrogateArgs, latency_summary, median, quantile};
use crate::dag_procs::{Procs, free_ports, post, shadowcopy_bin, start_etcd, wait_until};

const GIB: f64 = (1u64 << 30) as f64;
/// Messages per `mail load` request while filling the database.
const FILL_CHUNK: u64 = 2000;
/// Concurrent `mail load` requests while filling (their commits share log flushes).
const FILL_WORKERS: usize = 2;
/// How long a node or etcd may take to answer after it is started.
const START_DEADLINE: Duration = Duration::from_secs(90);
/// How long one probe delivery may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// A node of the DAG: its directory, API socket and process id.
struct Node {
    home: PathBuf,
    socket: PathBuf,
    pid: u32,
}

/// CPU seconds (user and system, all threads) the process `pid` used so far, from
/// `/proc/PID/stat` (in USER_HZ ticks, 100 per second on Linux); NaN if unreadable.
fn cpu_s(pid: u32) -> f64 {
    let ticks = || -> Option<f64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name (in parentheses, which may hold spaces): field 3 onwards.
        let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    };
    ticks().map_or(f64::NAN, |t| t / 100.0)
}

/// The CPU seconds of each node so far.
fn cpu_of(nodes: &[&Node]) -> Vec<f64> {
    nodes.iter().map(|n| cpu_s(n.pid)).collect()
}

/// Starts `shadowcopy serve` for the node in `home` (its log in `home/node.log`) and waits
/// until its socket answers.
fn start_node(bin: &Path, home: &Path, procs: &mut Procs) -> anyhow::Result<Node> {
    let log = std::fs::File::create(home.join("node.log"))?;
    let socket = home.join("data/api.sock");
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(home.join("node.toml"))
        .env("SHADOWCOPY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id();
    let child = procs.push("node", child);
    wait_until("the node's API socket", START_DEADLINE, Duration::from_millis(50), || {
        if let Some(s) = child.try_wait()? {
            bail!("the node exited while starting ({s}); see {}", home.join("node.log").display());
        }
        Ok(UnixStream::connect(&socket).is_ok().then_some(()))
    })?;
    Ok(Node { home: home.to_path_buf(), socket, pid })
}

/// `shadowcopy ARGS` against `node`; its stdout, or an error with its stderr.
fn cli(bin: &Path, node: &Node, args: &[&str]) -> anyhow::Result<String> {
    crate::dag_procs::cli(bin, &node.socket, args)
}

/// `POST /v1/mail/load` of `messages` into SG1/DB1; fails unless all were delivered.
fn mail_load(socket: &Path, messages: u64, seed: u64, timeout: Duration) -> anyhow::Result<()> {
    let req = json!({"sg": "SG1", "db": "DB1", "messages": messages, "mailboxes": 8, "seed": seed});
    let (status, body) = post(socket, "/v1/mail/load", &req.to_string(), timeout)?;
    if status != 200 {
        bail!("mail load answered HTTP {status}: {body}");
    }
    let v: Value = serde_json::from_str(&body).with_context(|| format!("the answer {body:?}"))?;
    if v["delivered"].as_u64() != Some(messages) {
        bail!("mail load delivered {} of {messages}: {body}", v["delivered"]);
    }
    Ok(())
}

/// SG1's database file on the active (where `dag init` puts it).
fn db_file(a: &Node) -> PathBuf {
    a.home.join("volumes/data/db/SG1/DB1.edb")
}

fn db_bytes(a: &Node) -> u64 {
    std::fs::metadata(db_file(a)).map(|m| m.len()).unwrap_or(0)
}

/// Fills SG1/DB1 with generated mail until its file holds `target` bytes.
fn fill(a: &Node, target: u64, deadline: Duration) -> anyhow::Result<u64> {
    let failed = AtomicBool::new(false);
    let until = Instant::now() + deadline;
    let results: Vec<anyhow::Result<u64>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..FILL_WORKERS as u64)
            .map(|w| {
                let failed = &failed;
                s.spawn(move || -> anyhow::Result<u64> {
                    let mut sent = 0u64;
                    while db_bytes(a) < target && !failed.load(Ordering::Relaxed) {
                        if Instant::now() >= until {
                            bail!(
                                "the database reached only {} of {target} bytes in {deadline:?}",
                                db_bytes(a)
                            );
                        }
                        let r = mail_load(&a.socket, FILL_CHUNK, (w << 32) | sent, deadline);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        r?;
                        sent += FILL_CHUNK;
                    }
                    Ok(sent)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a fill worker panicked"))))
            .collect()
    });
    let mut total = 0;
    for r in results {
        total += r?;
    }
    Ok(total)
}

/// The copy status row of SG1 on `node`, as `copy status --json` gives it.
fn copy_row(bin: &Path, via: &Node, node: &str) -> anyhow::Result<Option<Value>> {
    let v: Value = serde_json::from_str(&cli(bin, via, &["copy", "status", "--json"])?)?;
    Ok(v["copies"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["sg"] == "SG1" && r["node"] == node))
        .cloned())
}

/// Waits until the copy of SG1 on `node` is Healthy with empty copy and replay queues.
fn wait_drained(bin: &Path, via: &Node, node: &str, deadline: Duration) -> anyhow::Result<()> {
    wait_until(
        &format!("the copy of SG1 on {node} to be Healthy and drained"),
        deadline,
        Duration::from_millis(250),
        || {
            Ok(copy_row(bin, via, node)?
                .filter(|r| {
                    r["status"] == "Healthy"
                        && r["copy_queue_length"] == 0
                        && r["replay_queue_length"] == 0
                })
                .map(|_| ()))
        },
    )
}

/// One probe delivery: when it was due, how long from then to its answer, and whether it
/// was delivered.
#[derive(Clone, Copy)]
struct Sample {
    due: Instant,
    ms: f64,
    ok: bool,
}

/// Single-message deliveries at a fixed rate on a thread of their own, until stopped.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl Probe {
    fn start(socket: &Path, rate: u64, seed: u64) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let (st, socket) = (stop.clone(), socket.to_path_buf());
        let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let start = Instant::now();
            for i in 0u64.. {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let due = start + interval.mul_f64(i as f64);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let ok = mail_load(&socket, 1, seed + i, PROBE_TIMEOUT).is_ok();
                samples.push(Sample { due, ms: due.elapsed().as_secs_f64() * 1e3, ok });
            }
            samples
        });
        Probe { stop, thread }
    }

    fn stop(self) -> anyhow::Result<Vec<Sample>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow::anyhow!("the probe thread panicked"))
    }
}

/// The active's delivery latencies of one or more windows: the delivered ones (ms) and how
/// many failed.
#[derive(Default)]
struct Latencies {
    ms: Vec<f64>,
    failed: usize,
}

impl Latencies {
    /// Adds the samples due in `[from, to]`.
    fn add(&mut self, samples: &[Sample], from: Instant, to: Instant) {
        for s in samples.iter().filter(|s| s.due >= from && s.due <= to) {
            if s.ok {
                self.ms.push(s.ms);
            } else {
                self.failed += 1;
            }
        }
    }

    fn sorted(&self) -> Vec<f64> {
        let mut xs = self.ms.clone();
        xs.sort_by(|a, b| a.total_cmp(b));
        xs
    }

    fn p(&self, p: f64) -> f64 {
        quantile(&self.sorted(), p)
    }

    fn json(&self) -> Value {
        let mut v = latency_summary(self.sorted());
        v["failed"] = json!(self.failed);
        v
    }
}

/// What every backup uses.
struct Ctx<'a> {
    bin: &'a Path,
    /// The active, which the backups are asked of and the probe delivers to.
    active: &'a Node,
    /// The node with the passive copy.
    passive: &'a Node,
    rate: u64,
    deadline: Duration,
}

/// One measured full backup.
struct BackupRun {
    wall_s: f64,
    report: Value,
    /// CPU seconds the active and the passive node used during it.
    cpu: Vec<f64>,
}

/// A full backup of SG1 `--from from` into `repo`, asked of the active, with the probe's
/// samples during it added to `lat` (when measured). The repository is removed afterwards.
fn backup(
    ctx: &Ctx,
    from: &str,
    repo: &Path,
    seed: u64,
    lat: Option<&mut Latencies>,
) -> anyhow::Result<BackupRun> {
    let (bin, via) = (ctx.bin, ctx.active);
    let probe = lat.is_some().then(|| Probe::start(&via.socket, ctx.rate, seed));
    let log = via.home.join(format!("backup-{from}.log"));
    let cpu_before = cpu_of(&[ctx.active, ctx.passive]);
    let start = Instant::now();
    let mut procs = Procs::default();
    let child = Command::new(bin)
        .args(["backup", "run", "--type", "full", "--sg", "SG1", "--from", from, "--repo"])
        .arg(repo)
        .arg("--json")
        .env("SHADOWCOPY_NODE", &via.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let child = procs.push("backup", child);
    let status = wait_until(
        &format!("the full backup --from {from} to end"),
        ctx.deadline,
        Duration::from_millis(20),
        || Ok(child.try_wait()?),
    );
    let end = Instant::now();
    let cpu =
        cpu_of(&[ctx.active, ctx.passive]).iter().zip(&cpu_before).map(|(x, y)| x - y).collect();
    if let (Some(probe), Some(lat)) = (probe, lat) {
        lat.add(&probe.stop()?, start, end);
    }
    let status = status?;
    let mut out = String::new();
    if let Some(o) = child.stdout.as_mut() {
        o.read_to_string(&mut out)?;
    }
    if !status.success() {
        bail!("the full backup --from {from} failed ({status}); see {}", log.display());
    }
    let _ = std::fs::remove_dir_all(repo);
    let report: Value =
        serde_json::from_str(&out).with_context(|| format!("the backup's report {out:?}"))?;
    Ok(BackupRun { wall_s: (end - start).as_secs_f64(), report, cpu })
}

/// The figures of one kind of backup over its runs.
fn backup_json(from: &str, runs: &[BackupRun], lat: &Latencies) -> Value {
    let f = |k: &str| -> Vec<f64> {
        runs.iter().map(|r| r.report[k].as_f64().unwrap_or(f64::NAN)).collect()
    };
    let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
    let mib_s: Vec<f64> =
        f("throughput_bytes_per_second").iter().map(|t| t / (1u64 << 20) as f64).collect();
    json!({
        "from": from,
        "node": runs.first().map(|r| r.report["set"]["node"].clone()),
        "backup_s": median(walls.clone()),
        "backup_s_runs": walls,
        "hold_ms": median(f("hold_ms")),
        "bytes": runs.first().map(|r| r.report["bytes"].clone()),
        "stored_bytes": runs.first().map(|r| r.report["stored_bytes"].clone()),
        "throughput_mib_s": median(mib_s),
        "active_commit_ms": lat.json(),
        "cpu_s": {
            "a": median(runs.iter().map(|r| r.cpu[0]).collect()),
            "b": median(runs.iter().map(|r| r.cpu[1]).collect()),
        },
    })
}

/// Runs the scenario.
pub fn run(opts: &SurrogateArgs) -> anyhow::Result<()> {
    if !opts.size_gib.is_finite() || opts.size_gib <= 0.0 {
        bail!("--size-gib must be positive");
    }
    let bin = shadowcopy_bin(opts.shadowcopy.as_ref())?;
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let mut procs = Procs::default();
    let etcd = start_etcd(dir, &mut procs)?;
    let base_port = free_ports(2)?;
    let dag = dir.join("dag");
    let out = Command::new(&bin)
        .args(["dag", "init", "--name", "DAG1", "--nodes", "a,b", "--dir"])
        .arg(&dag)
        .args(["--etcd", &etcd, "--base-port", &base_port.to_string(), "--storage-group", "SG1"])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("dag init failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let a = start_node(&bin, &dag.join("a"), &mut procs)?;
    let b = start_node(&bin, &dag.join("b"), &mut procs)?;
    let per_gib = |s: f64| Duration::from_secs_f64(120.0 + s * opts.size_gib);

    // A member mounts SG1 once etcd names it active (a tick or two after it starts).
    wait_until("SG1 to be mounted on a", START_DEADLINE, Duration::from_millis(100), || {
        mail_load(&a.socket, 1, 0, PROBE_TIMEOUT).map(Some)
    })?;
    // The database, filled before the copy exists (seeding copies it).
    let target = (opts.size_gib * GIB) as u64;
    let t = Instant::now();
    let filled = fill(&a, target, per_gib(1800.0))?;
    let fill_s = t.elapsed().as_secs_f64();
    let db = db_bytes(&a);
    let t = Instant::now();
    cli(&bin, &a, &["copy", "add", "--sg", "SG1", "--on", "b"])?;
    wait_drained(&bin, &a, "b", per_gib(600.0))?;
    let seed_s = t.elapsed().as_secs_f64();
    let ctx =
        Ctx { bin: &bin, active: &a, passive: &b, rate: opts.rate, deadline: per_gib(1800.0) };
    // A first full, not measured, truncates the fill's logs: every measured backup then reads
    // the database and the few logs since the previous one.
    wait_drained(&bin, &a, "b", per_gib(600.0))?;
    let prime = backup(&ctx, "passive", &dir.join("repo-prime"), 0, None)?;

    // No backup.
    let probe = Probe::start(&a.socket, opts.rate, 1 << 40);
    let cpu_before = cpu_of(&[&a, &b]);
    let start = Instant::now();
    let baseline = wait_until(
        "the baseline's load to end",
        Duration::from_secs(opts.seconds + 60),
        Duration::from_millis(100),
        || Ok((start.elapsed() >= Duration::from_secs(opts.seconds)).then_some(())),
    );
    let end = Instant::now();
    let cpu: Vec<f64> = cpu_of(&[&a, &b]).iter().zip(&cpu_before).map(|(x, y)| x - y).collect();
    let samples = probe.stop()?;
    baseline?;
    let mut none = Latencies::default();
    none.add(&samples, start, end);

    // The backups, alternating which goes first, each from a drained copy.
    let (mut act, mut pas) = (Latencies::default(), Latencies::default());
    let (mut act_runs, mut pas_runs) = (Vec::new(), Vec::new());
    for run in 0..opts.runs.max(1) {
        let order = if run % 2 == 0 { ["active", "passive"] } else { ["passive", "active"] };
        for from in order {
            wait_drained(&bin, &a, "b", per_gib(600.0))?;
            let seed = ((2 + run) << 40) | (u64::from(from == "passive") << 39);
            let repo = dir.join(format!("repo-{from}-{run}"));
            if from == "active" {
                act_runs.push(backup(&ctx, from, &repo, seed, Some(&mut act))?);
            } else {
                let r = backup(&ctx, from, &repo, seed, Some(&mut pas))?;
                if r.report["set"]["node"] != "b" {
                    bail!(
                        "the backup --from passive ran on {} instead of b",
                        r.report["set"]["node"]
                    );
                }
                pas_runs.push(r);
            }
        }
    }
    drop(procs);

    let (none_p50, none_p99) = (none.p(0.5), none.p(0.99));
    let (act_p50, act_p99, pas_p50, pas_p99) = (act.p(0.5), act.p(0.99), pas.p(0.5), pas.p(0.99));
    println!(
        "{}",
        json!({
            "scenario": "surrogate-backup",
            "size_gib": opts.size_gib,
            "db_bytes": db,
            "fill_messages": filled,
            "fill_s": fill_s,
            "seed_s": seed_s,
            "prime_full_s": prime.wall_s,
            "rate_per_s": opts.rate,
            "runs": opts.runs.max(1),
            "no_backup": {
                "seconds": (end - start).as_secs_f64(),
                "active_commit_ms": none.json(),
                "cpu_s": { "a": cpu[0], "b": cpu[1] },
            },
            "active_backup": backup_json("active", &act_runs, &act),
            "passive_backup": backup_json("passive", &pas_runs, &pas),
            "p99_ratio_passive_vs_active": pas_p99 / act_p99,
            "p99_ratio_passive_vs_none": pas_p99 / none_p99,
            "p99_ratio_active_vs_none": act_p99 / none_p99,
            "p50_ratio_passive_vs_active": pas_p50 / act_p50,
            "p50_ratio_passive_vs_none": pas_p50 / none_p50,
            "p50_ratio_active_vs_none": act_p50 / none_p50,
            "measured": "active_commit_ms: one-message POST /v1/mail/load on the active's Unix socket \
                         (one durable delivery), from its scheduled send time to the answer; the node \
                         polls its load job every 20 ms, so figures are ~20 ms at best, in 20 ms steps; \
                         cpu_s: CPU seconds each node process used in the phase (median over runs)",
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_keep_only_the_window_and_count_failures_apart() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let samples = [
            Sample { due: at(0), ms: 500.0, ok: true },
            Sample { due: at(10), ms: 20.0, ok: true },
            Sample { due: at(20), ms: 40.0, ok: true },
            Sample { due: at(30), ms: 1.0, ok: false },
            Sample { due: at(40), ms: 900.0, ok: true },
        ];
        let mut l = Latencies::default();
        l.add(&samples, at(10), at(30));
        assert_eq!(l.ms, vec![20.0, 40.0], "only the delivered samples due in the window");
        assert_eq!(l.failed, 1);
        assert_eq!(l.p(0.0), 20.0);
        assert_eq!(l.p(1.0), 40.0);
        assert_eq!(l.json()["samples"], 2);
    }

    #[test]
    fn the_cpu_time_of_this_process_is_readable() {
        let s = cpu_s(std::process::id());
        assert!(s.is_finite() && s >= 0.0, "cpu_s of this process: {s}");
        assert!(cpu_s(u32::MAX).is_nan(), "no such process");
    }
}
