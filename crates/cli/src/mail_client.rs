//! `shadowcopy mail send` and `shadowcopy mail check`: a mail client that proves, from
//! outside the nodes, that no acknowledged message is lost across a switchover or a failover.
//!
//! `send` delivers unique messages one at a time per thread to the node it currently uses and
//! follows the active copy: a node that answers "not active here", cannot be reached or does
//! not answer in time is left for the next `--node`. Every acknowledgement is appended to the
//! acknowledgements file as soon as it arrives (a test kills nodes, not the client, and reads
//! the file afterwards); a delivery whose answer never came is not written, as the client was
//! never told it is stored. The gaps between acknowledgements are how long a switchover or
//! a failover kept clients waiting. `check` asks a node which of the acknowledged messages
//! are not stored byte for byte.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::client::{ApiError, Endpoint};

/// A gap between two acknowledgements longer than this is reported as a pause.
const PAUSE: Duration = Duration::from_millis(500);
/// The first wait after every node failed once; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Short, so that the client's own waiting adds little to a measured pause.
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Errors kept for the summary.
const KEEP_ERRORS: usize = 8;
/// Missing messages named in the error of `check`.
const NAME_MISSING: usize = 10;

#[derive(Debug, clap::Args)]
// One of the two, so that a missing choice names both.
#[command(group = clap::ArgGroup::new("amount").args(["messages", "seconds"]).required(true))]
pub struct SendArgs {
    /// The storage group that holds the database.
    #[arg(long, value_name = "STORAGE_GROUP")]
    pub sg: String,
    /// The database to deliver to.
    #[arg(long, value_name = "DATABASE")]
    pub db: String,
    /// Deliver this many messages, each until a node acknowledges it (or --retry-for runs out
    /// for it), then stop.
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,
    /// Deliver for this many seconds, never giving up on the nodes before the end; a message
    /// still unacknowledged at the end is left unacknowledged.
    #[arg(long, value_name = "S")]
    pub seconds: Option<u64>,
    /// The acknowledgements file: one line `mailbox message_id body_hash node` is appended per
    /// acknowledged message as soon as its answer comes (created if needed).
    #[arg(long, value_name = "FILE")]
    pub acks: PathBuf,
    /// Deliveries in flight at once, one per thread.
    #[arg(long, value_name = "T", default_value_t = 1)]
    pub threads: usize,
    /// Mailboxes to spread the messages over.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub mailboxes: u64,
    /// Seed of the generated bodies (the time when absent); the same seed and sequence number
    /// give the same message.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// How long one delivery may wait for its answer before the node is left for the next
    /// one (the delivery is then not acknowledged).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// With --messages: how long one message is retried on every node before the run fails.
    #[arg(long, value_name = "S", default_value_t = 120)]
    pub retry_for: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The storage group that holds the database.
    #[arg(long, value_name = "STORAGE_GROUP")]
    pub sg: String,
    /// The database the messages were delivered to.
    #[arg(long, value_name = "DATABASE")]
    pub db: String,
    /// The acknowledgements file `mail send` wrote.
    #[arg(long, value_name = "FILE")]
    pub acks: PathBuf,
    /// Messages asked about per request.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch: usize,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How one failed attempt is handled.
enum Failure {
    /// The node answered; another node may take it (not active here, or failing).
    MoveOn(String),
    /// The node could not be reached or did not answer in time.
    Unreachable(String),
    /// Asking again cannot help (a bad request, an unknown database).
    Fatal(String),
}

fn classify(e: &anyhow::Error, nodes: usize) -> Failure {
    let text = format!("{e:#}");
    let Some(api) = e.downcast_ref::<ApiError>() else {
        return Failure::Unreachable(text);
    };
    match api.code.as_str() {
        api::NOT_ACTIVE => Failure::MoveOn(text),
        "bad_request" | "bad_name" | "no_such_database" | "no_such_endpoint"
        | "method_not_allowed" | "unauthorized" => Failure::Fatal(text),
        // In a DAG another node may know the storage group; alone, this node is the answer.
        "no_such_storage_group" if nodes == 1 => Failure::Fatal(text),
        _ => Failure::MoveOn(text),
    }
}

/// A run of consecutive acknowledgements from one node.
#[derive(Debug, Clone, Serialize)]
struct NodeUse {
    /// The node's name, from its answers.
    node: String,
    /// The `--node` it was reached at.
    endpoint: String,
    acknowledged: u64,
}

/// A gap between two consecutive acknowledgements longer than [`PAUSE`].
#[derive(Debug, Clone, Serialize)]
struct Pause {
    /// When the acknowledgement before the gap came, since the start.
    after_ms: f64,
    gap_ms: f64,
    node_before: String,
    node_after: String,
}

#[derive(Debug, Serialize)]
struct Summary {
    storage_group: String,
    database: String,
    acks_file: String,
    seed: u64,
    threads: usize,
    /// Messages whose delivery was tried at least once.
    sent: u64,
    acknowledged: u64,
    /// Tried, never acknowledged (they may or may not be stored).
    unacknowledged: u64,
    failed_attempts: u64,
    nodes_used: Vec<NodeUse>,
    longest_gap_ms: f64,
    pauses: Vec<Pause>,
    elapsed_ms: f64,
    /// The last few errors of failed attempts.
    errors: Vec<String>,
    /// Why the run stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
}

/// What the threads share; the acknowledgements file and the figures under one lock, so
/// that the file's order is the order the gaps are measured in.
struct Shared<'a> {
    nodes: &'a [Endpoint],
    args: &'a SendArgs,
    seed: u64,
    start: Instant,
    end: Option<Instant>,
    current: AtomicUsize,
    next_seq: AtomicU64,
    stop: AtomicBool,
    log: Mutex<Log>,
}

struct Log {
    file: File,
    sent: u64,
    acknowledged: u64,
    failed_attempts: u64,
    timeline: Timeline,
    errors: Vec<String>,
    failed: Option<String>,
}

/// The acknowledgements in the order they came: which node gave them, and the gaps between
/// them.
#[derive(Debug, Default)]
struct Timeline {
    last: Option<(Duration, String)>,
    longest_gap: Duration,
    pauses: Vec<Pause>,
    nodes_used: Vec<NodeUse>,
}

impl Timeline {
    /// An acknowledgement from `node` (reached at `endpoint`) at `at` since the start.
    fn acknowledged(&mut self, at: Duration, node: &str, endpoint: String) {
        if let Some((before, node_before)) = self.last.take() {
            let gap = at.saturating_sub(before);
            self.longest_gap = self.longest_gap.max(gap);
            if gap > PAUSE {
                self.pauses.push(Pause {
                    after_ms: ms(before),
                    gap_ms: ms(gap),
                    node_before,
                    node_after: node.to_string(),
                });
            }
        }
        self.last = Some((at, node.to_string()));
        match self.nodes_used.last_mut() {
            Some(u) if u.node == node && u.endpoint == endpoint => u.acknowledged += 1,
            _ => {
                self.nodes_used.push(NodeUse { node: node.to_string(), endpoint, acknowledged: 1 })
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Message `seq` of the run seeded `seed`: its mailbox, and a body of 300 B to 4 KiB that no
/// other seed or sequence number gives.
fn message(args: &SendArgs, seed: u64, seq: u64) -> api::MailDeliver {
    let mut h = blake3::Hasher::new();
    h.update(b"shadowcopy mail send");
    h.update(&seed.to_le_bytes());
    h.update(&seq.to_le_bytes());
    let mut xof = h.finalize_xof();
    let mut len = [0u8; 8];
    xof.fill(&mut len);
    let len = 300 + (u64::from_le_bytes(len) % 3797) as usize;
    let mut raw = vec![0u8; len];
    xof.fill(&mut raw);
    let mut body = format!("seed {seed} message {seq}\n");
    for (i, b) in raw.iter().enumerate() {
        body.push(char::from(ALPHABET[usize::from(b & 63)]));
        if i % 72 == 71 {
            body.push('\n');
        }
    }
    api::MailDeliver {
        sg: args.sg.clone(),
        db: args.db.clone(),
        mailbox: format!("client{:03}", seq % args.mailboxes.max(1)),
        from: None,
        subject: format!("mail send seed {seed} message {seq}"),
        body,
    }
}

impl Shared<'_> {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, why: String) {
        let mut log = self.log();
        log.failed.get_or_insert(why);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Writes the acknowledgement's line and measures the gap since the previous one.
    fn acknowledged(&self, ack: &api::MailDelivered, endpoint: usize) {
        let mut log = self.log();
        let line = format!("{} {} {} {}\n", ack.mailbox, ack.message_id, ack.body_hash, ack.node);
        if let Err(e) = log.file.write_all(line.as_bytes()) {
            drop(log);
            self.fail(format!("writing to {}: {e}", self.args.acks.display()));
            return;
        }
        let now = self.start.elapsed();
        log.acknowledged += 1;
        let endpoint = self.nodes[endpoint].describe();
        log.timeline.acknowledged(now, &ack.node, endpoint);
    }

    fn attempt_failed(&self, endpoint: usize, text: &str) {
        let mut log = self.log();
        log.failed_attempts += 1;
        let text = format!("{}: {text}", self.nodes[endpoint].describe());
        if log.errors.last() != Some(&text) {
            if log.errors.len() == KEEP_ERRORS {
                log.errors.remove(0);
            }
            log.errors.push(text);
        }
    }

    /// The next message's sequence number, or `None` when the run is over.
    fn next(&self) -> Option<u64> {
        if self.stop.load(Ordering::SeqCst) || self.end.is_some_and(|e| Instant::now() >= e) {
            return None;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        if self.args.messages.is_some_and(|n| seq >= n) {
            return None;
        }
        self.log().sent += 1;
        Some(seq)
    }

    /// One thread: delivers messages one at a time until the run is over.
    fn worker(&self) {
        let timeout = Duration::from_millis(self.args.timeout_ms.max(1));
        let retry_for = Duration::from_secs(self.args.retry_for);
        while let Some(seq) = self.next() {
            let msg = message(self.args, self.seed, seq);
            let hash = blake3::hash(msg.body.as_bytes()).to_hex().to_string();
            let first = Instant::now();
            let mut backoff = BACKOFF_MIN;
            let mut attempts = 0usize;
            loop {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                let at = self.current.load(Ordering::SeqCst);
                let outcome = self.nodes[at].post_within::<_, api::MailDelivered>(
                    "/v1/mail/deliver",
                    &msg,
                    timeout,
                );
                let text = match outcome {
                    Ok(ack) if ack.body_hash == hash => {
                        self.acknowledged(&ack, at);
                        break;
                    }
                    Ok(ack) => {
                        return self.fail(format!(
                            "node {} acknowledged message {} of {} with body hash {}, not {hash} \
                             (the body sent)",
                            ack.node, ack.message_id, ack.mailbox, ack.body_hash
                        ));
                    }
                    Err(e) => match classify(&e, self.nodes.len()) {
                        Failure::Fatal(text) => {
                            self.attempt_failed(at, &text);
                            return self.fail(format!(
                                "{} refused message {seq}: {text}",
                                self.nodes[at].describe()
                            ));
                        }
                        Failure::MoveOn(text) | Failure::Unreachable(text) => text,
                    },
                };
                self.attempt_failed(at, &text);
                // Another thread may have moved on from this node already.
                let _ = self.current.compare_exchange(
                    at,
                    (at + 1) % self.nodes.len(),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                let now = Instant::now();
                if self.end.is_some_and(|e| now >= e) {
                    return;
                }
                if self.end.is_none() && now.duration_since(first) >= retry_for {
                    return self.fail(format!(
                        "no node acknowledged message {seq} (to {}) within {} s of trying \
                         (nodes: {}); the last error: {text}",
                        msg.mailbox,
                        retry_for.as_secs(),
                        self.nodes.iter().map(Endpoint::describe).collect::<Vec<_>>().join(", ")
                    ));
                }
                attempts += 1;
                // Straight to the next node; a wait only once every node failed in a row.
                if attempts.is_multiple_of(self.nodes.len()) {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// `shadowcopy mail send`.
pub fn send(nodes: &[Endpoint], args: &SendArgs) -> Result<()> {
    if nodes.is_empty() {
        bail!("give at least one --node");
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let file =
        OpenOptions::new().create(true).append(true).open(&args.acks).with_context(|| {
            format!("opening the acknowledgements file {}", args.acks.display())
        })?;
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    });
    let start = Instant::now();
    let shared = Shared {
        nodes,
        args,
        seed,
        start,
        end: args.seconds.map(|s| start + Duration::from_secs(s)),
        current: AtomicUsize::new(0),
        next_seq: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        log: Mutex::new(Log {
            file,
            sent: 0,
            acknowledged: 0,
            failed_attempts: 0,
            timeline: Timeline::default(),
            errors: Vec::new(),
            failed: None,
        }),
    };
    std::thread::scope(|s| {
        for _ in 0..args.threads {
            s.spawn(|| shared.worker());
        }
    });
    let elapsed = start.elapsed();
    let log = shared.log.into_inner().unwrap_or_else(PoisonError::into_inner);
    let synced = log.file.sync_all();
    let summary = Summary {
        storage_group: args.sg.clone(),
        database: args.db.clone(),
        acks_file: args.acks.display().to_string(),
        seed,
        threads: args.threads,
        sent: log.sent,
        acknowledged: log.acknowledged,
        unacknowledged: log.sent - log.acknowledged,
        failed_attempts: log.failed_attempts,
        nodes_used: log.timeline.nodes_used,
        longest_gap_ms: ms(log.timeline.longest_gap),
        pauses: log.timeline.pauses,
        elapsed_ms: ms(elapsed),
        errors: log.errors,
        failed: log.failed,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    synced.with_context(|| format!("syncing {}", args.acks.display()))?;
    if let Some(why) = summary.failed {
        bail!("{why}");
    }
    Ok(())
}

fn print_summary(s: &Summary) {
    println!(
        "Sent {} messages to {}/{} in {:.1} s: {} acknowledged (in {}), {} unacknowledged, {} \
         failed attempts.",
        s.sent,
        s.storage_group,
        s.database,
        s.elapsed_ms / 1e3,
        s.acknowledged,
        s.acks_file,
        s.unacknowledged,
        s.failed_attempts
    );
    let used: Vec<String> = s
        .nodes_used
        .iter()
        .map(|u| format!("{} ({}): {}", u.node, u.endpoint, u.acknowledged))
        .collect();
    println!(
        "Nodes used, in order: {}",
        if used.is_empty() { "none".into() } else { used.join(" -> ") }
    );
    println!("Longest gap between two acknowledgements: {:.0} ms", s.longest_gap_ms);
    if s.pauses.is_empty() {
        println!("Pauses over {} ms: none", PAUSE.as_millis());
    } else {
        println!("Pauses over {} ms:", PAUSE.as_millis());
        for p in &s.pauses {
            println!(
                "  at {:.2} s: {:.0} ms, {} -> {}",
                p.after_ms / 1e3,
                p.gap_ms,
                p.node_before,
                p.node_after
            );
        }
    }
    if !s.errors.is_empty() {
        println!("Last errors of failed attempts:");
        for e in &s.errors {
            println!("  {e}");
        }
    }
}

/// One line of the acknowledgements file.
struct Acked {
    line: usize,
    message: api::MailRef,
    node: String,
}

fn read_acks(args: &CheckArgs) -> Result<Vec<Acked>> {
    let file = File::open(&args.acks)
        .with_context(|| format!("opening the acknowledgements file {}", args.acks.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", args.acks.display()))?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let bad = || {
            format!(
                "{} line {}: {line:?} is not `mailbox message_id body_hash node`",
                args.acks.display(),
                i + 1
            )
        };
        let (mailbox, id, hash) = match fields.as_slice() {
            [m, id, h] | [m, id, h, _] => (*m, *id, *h),
            _ => bail!(bad()),
        };
        let message_id = id.parse().with_context(bad)?;
        out.push(Acked {
            line: i + 1,
            message: api::MailRef { mailbox: mailbox.into(), message_id, body_hash: hash.into() },
            node: fields.get(3).copied().unwrap_or("?").to_string(),
        });
    }
    Ok(out)
}

/// Asks the nodes in turn until one where the storage group is active answers.
fn ask(nodes: &[Endpoint], req: &api::MailCheck) -> Result<api::MailChecked> {
    let mut errors = Vec::new();
    for node in nodes {
        match node.post::<_, api::MailChecked>("/v1/mail/check", req) {
            Ok(v) => return Ok(v),
            Err(e) => match classify(&e, nodes.len()) {
                Failure::Fatal(text) => bail!("{}: {text}", node.describe()),
                Failure::MoveOn(text) | Failure::Unreachable(text) => {
                    errors.push(format!("{}: {text}", node.describe()))
                }
            },
        }
    }
    bail!("no node could check the messages: {}", errors.join("; "))
}

#[derive(Debug, Serialize)]
struct CheckSummary {
    storage_group: String,
    database: String,
    acks_file: String,
    checked: u64,
    missing: Vec<MissingMessage>,
    /// The nodes that answered.
    nodes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct MissingMessage {
    line: usize,
    mailbox: String,
    message_id: u64,
    body_hash: String,
    /// The node that acknowledged it.
    acknowledged_by: String,
}

/// `shadowcopy mail check`.
pub fn check(nodes: &[Endpoint], args: &CheckArgs) -> Result<()> {
    let acked = read_acks(args)?;
    let mut by_ref: HashMap<(&str, u64, &str), &Acked> = HashMap::new();
    for a in &acked {
        by_ref.insert(
            (a.message.mailbox.as_str(), a.message.message_id, a.message.body_hash.as_str()),
            a,
        );
    }
    let mut summary = CheckSummary {
        storage_group: args.sg.clone(),
        database: args.db.clone(),
        acks_file: args.acks.display().to_string(),
        checked: 0,
        missing: Vec::new(),
        nodes: Vec::new(),
    };
    for batch in acked.chunks(args.batch.max(1)) {
        let req = api::MailCheck {
            sg: args.sg.clone(),
            db: args.db.clone(),
            messages: batch.iter().map(|a| a.message.clone()).collect(),
        };
        let answer = ask(nodes, &req)?;
        summary.checked += answer.checked;
        if !summary.nodes.contains(&answer.node) {
            summary.nodes.push(answer.node);
        }
        for m in answer.missing {
            let (line, by) = by_ref
                .get(&(m.mailbox.as_str(), m.message_id, m.body_hash.as_str()))
                .map_or((0, "?".to_string()), |a| (a.line, a.node.clone()));
            summary.missing.push(MissingMessage {
                line,
                mailbox: m.mailbox,
                message_id: m.message_id,
                body_hash: m.body_hash,
                acknowledged_by: by,
            });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "Checked {} acknowledged messages of {} in {}/{} on {}: {} missing.",
            summary.checked,
            summary.acks_file,
            summary.storage_group,
            summary.database,
            if summary.nodes.is_empty() { "no node".into() } else { summary.nodes.join(", ") },
            summary.missing.len()
        );
    }
    if !summary.missing.is_empty() {
        let named: Vec<String> = summary
            .missing
            .iter()
            .take(NAME_MISSING)
            .map(|m| {
                format!(
                    "line {}: message {} of {} (body {}, acknowledged by {})",
                    m.line, m.message_id, m.mailbox, m.body_hash, m.acknowledged_by
                )
            })
            .collect();
        bail!(
            "{} of {} acknowledged messages are not stored byte for byte: {}{}",
            summary.missing.len(),
            summary.checked,
            named.join("; "),
            if summary.missing.len() > NAME_MISSING { "; …" } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SendArgs {
        SendArgs {
            sg: "SG1".into(),
            db: "DB1".into(),
            messages: Some(1),
            seconds: None,
            acks: PathBuf::from("acks"),
            threads: 1,
            mailboxes: 8,
            seed: None,
            timeout_ms: 1,
            retry_for: 1,
            json: false,
        }
    }

    #[test]
    fn gaps_over_half_a_second_are_pauses_and_runs_of_one_node_are_counted() {
        let mut t = Timeline::default();
        let at = Duration::from_millis;
        t.acknowledged(at(100), "a", "/a.sock".into());
        t.acknowledged(at(150), "a", "/a.sock".into());
        t.acknowledged(at(650), "a", "/a.sock".into()); // 500 ms: not over
        t.acknowledged(at(2650), "b", "/b.sock".into()); // the switchover
        t.acknowledged(at(2660), "b", "/b.sock".into());
        assert_eq!(t.longest_gap, at(2000));
        let pauses: Vec<_> = t
            .pauses
            .iter()
            .map(|p| {
                (
                    p.after_ms.round(),
                    p.gap_ms.round(),
                    p.node_before.as_str(),
                    p.node_after.as_str(),
                )
            })
            .collect();
        assert_eq!(pauses, vec![(650.0, 2000.0, "a", "b")]);
        let used: Vec<_> = t.nodes_used.iter().map(|u| (u.node.as_str(), u.acknowledged)).collect();
        assert_eq!(used, vec![("a", 3), ("b", 2)]);
    }

    #[test]
    fn messages_are_deterministic_unique_and_sized() {
        let a = args();
        assert_eq!(message(&a, 7, 3), message(&a, 7, 3));
        assert_ne!(message(&a, 7, 3).body, message(&a, 7, 4).body);
        assert_ne!(message(&a, 7, 3).body, message(&a, 8, 3).body);
        for seq in 0..200 {
            let len = message(&a, 1, seq).body.len();
            assert!((300..=4096 + 128).contains(&len), "message {seq}: {len} bytes");
        }
        assert_eq!(message(&a, 1, 9).mailbox, "client001");
    }
}
