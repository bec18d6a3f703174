//! A mail load generator.
//!
//! Delivers, reads and deletes messages in a background thread, and keeps a ledger of every
//! operation the store *acknowledged*: the proof, after a crash or a restore, that nothing
//! acknowledged was lost. Each ledger entry carries a sequence number so that a test can ask
//! "what had been acknowledged before this backup's freeze".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ese::Durability;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Result, StoreError};
use crate::mailbox::{MailDb, MessageId};
use crate::message::Headers;

/// What the load does.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Mailboxes to spread deliveries over (created if missing: `user0001`, …).
    pub mailboxes: usize,
    /// Operations per second; `None` runs as fast as the store allows.
    pub rate: Option<f64>,
    /// Body sizes are drawn uniformly from this range (bytes).
    pub body_min: usize,
    pub body_max: usize,
    /// Fraction of operations that read a delivered message back and check it.
    pub read_ratio: f64,
    /// Fraction of operations that delete a delivered message.
    pub delete_ratio: f64,
    pub seed: u64,
    /// Stop after this many deliveries (`None`: until stopped).
    pub max_deliveries: Option<u64>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            mailboxes: 8,
            rate: None,
            body_min: 200,
            body_max: 16 << 10,
            read_ratio: 0.2,
            delete_ratio: 0.05,
            seed: 1,
            max_deliveries: None,
        }
    }
}

/// One acknowledged delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Order of acknowledgement across all operations of the load.
    pub seq: u64,
    pub body_hash: blake3::Hash,
    pub size: usize,
}

/// Everything the store acknowledged to the load.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// (mailbox, id) → delivery.
    pub delivered: BTreeMap<(String, MessageId), Delivery>,
    /// (mailbox, id) → sequence number of the acknowledged deletion.
    pub deleted: BTreeMap<(String, MessageId), u64>,
    pub reads_checked: u64,
    /// Operations that failed (for instance while the store was dismounted), not retried.
    pub errors: u64,
    pub last_error: Option<String>,
}

impl Ledger {
    /// Messages that must exist in a store holding every operation acknowledged up to and
    /// including sequence number `upto` (`u64::MAX`: everything).
    pub fn expected(&self, upto: u64) -> BTreeMap<(String, MessageId), &Delivery> {
        self.delivered
            .iter()
            .filter(|(k, d)| d.seq <= upto && self.deleted.get(*k).is_none_or(|s| *s > upto))
            .map(|(k, d)| (k.clone(), d))
            .collect()
    }

    /// Checks `db` against the operations acknowledged up to `upto`: every expected message
    /// present with its exact body, and none of the deleted ones. Returns how many were
    /// checked, or the first discrepancy.
    pub fn verify(&self, db: &MailDb, upto: u64) -> Result<u64, String> {
        let expected = self.expected(upto);
        for ((mb, id), d) in &expected {
            match db.contains(mb, *id, &d.body_hash) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "message {id} of {mb} (ack #{}) is missing or differs",
                        d.seq
                    ));
                }
                Err(e) => return Err(format!("reading message {id} of {mb}: {e}")),
            }
        }
        for ((mb, id), seq) in &self.deleted {
            if *seq <= upto && db.read(mb, *id).is_ok() {
                return Err(format!(
                    "message {id} of {mb} was deleted (ack #{seq}) but is present"
                ));
            }
        }
        Ok(expected.len() as u64)
    }
}

/// A running load.
pub struct LoadGenerator {
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    ledger: Arc<Mutex<Ledger>>,
    thread: Option<JoinHandle<()>>,
}

/// A deterministic body of `len` bytes: readable text, different per seed.
pub fn body(len: usize, seed: u64) -> Vec<u8> {
    let words = ["backup", "shadow", "copy", "log", "freeze", "thaw", "page", "store", "mail"];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(words[rng.random_range(0..words.len())].as_bytes());
        out.push(if rng.random_bool(0.1) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// A deterministic body of `len` pseudo-random bytes, different per seed: content that does
/// not compress, like an already compressed attachment. Cheap enough for multi-MiB bodies.
pub fn random_body(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The names of the load's mailboxes.
pub fn mailbox_names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("user{i:04}")).collect()
}

impl LoadGenerator {
    /// Creates the mailboxes if needed and starts the load on `db`.
    pub fn start(db: MailDb, cfg: LoadConfig) -> Result<Self> {
        let names = mailbox_names(cfg.mailboxes.max(1));
        let existing = db.mailboxes()?;
        for n in &names {
            if !existing.contains(n) {
                match db.create_mailbox(n) {
                    Ok(()) | Err(StoreError::MailboxExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let seq = Arc::new(AtomicU64::new(0));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let (s, q, l) = (stop.clone(), seq.clone(), ledger.clone());
        let thread = std::thread::Builder::new()
            .name("mail-load".into())
            .spawn(move || run(db, cfg, names, s, q, l))
            .map_err(|source| StoreError::Io {
                op: "start the load thread",
                path: "mail-load".into(),
                source,
            })?;
        Ok(Self { stop, seq, ledger, thread: Some(thread) })
    }

    /// The sequence number of the last acknowledged operation so far.
    pub fn acknowledged(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// A copy of the ledger so far.
    pub fn ledger(&self) -> Ledger {
        self.ledger.lock().clone()
    }

    /// Whether the load stopped by itself (reached `max_deliveries`).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the load and returns the final ledger.
    pub fn stop(mut self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.ledger.lock().clone()
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    db: MailDb,
    cfg: LoadConfig,
    names: Vec<String>,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let start = Instant::now();
    let mut ops = 0u64;
    let mut deliveries = 0u64;
    let mut live: Vec<(String, MessageId)> = Vec::new();
    let record_error = |e: StoreError| {
        let mut l = ledger.lock();
        l.errors += 1;
        l.last_error = Some(e.to_string());
    };
    while !stop.load(Ordering::SeqCst) {
        if cfg.max_deliveries.is_some_and(|m| deliveries >= m) {
            break;
        }
        if let Some(rate) = cfg.rate {
            let due = start + Duration::from_secs_f64(ops as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
                continue;
            }
        }
        ops += 1;
        let roll: f64 = rng.random();
        if roll < cfg.read_ratio && !live.is_empty() {
            let (mb, id) = live[rng.random_range(0..live.len())].clone();
            let want = ledger.lock().delivered.get(&(mb.clone(), id)).map(|d| d.body_hash);
            match (db.read(&mb, id), want) {
                (Ok((_, m)), Some(h)) if blake3::hash(&m.body) == h => {
                    ledger.lock().reads_checked += 1
                }
                (Ok(_), _) => record_error(StoreError::Corrupt {
                    what: format!("message {id} of {mb}"),
                    why: "read back differs from what was delivered".into(),
                }),
                (Err(e), _) => record_error(e),
            }
        } else if roll < cfg.read_ratio + cfg.delete_ratio && !live.is_empty() {
            let i = rng.random_range(0..live.len());
            let (mb, id) = live.swap_remove(i);
            match db.delete(&mb, id) {
                Ok(_) => {
                    let s = seq.fetch_add(1, Ordering::SeqCst) + 1;
                    ledger.lock().deleted.insert((mb, id), s);
                }
                Err(e) => record_error(e),
            }
        } else {
            let mb = names[rng.random_range(0..names.len())].clone();
            let len = rng.random_range(cfg.body_min..=cfg.body_max.max(cfg.body_min));
            let content = body(len, rng.random());
            let headers = Headers {
                from: format!("sender{}@example.net", rng.random_range(0..100)),
                to: vec![format!("{mb}@example.com")],
                subject: format!("load message {}", deliveries + 1),
                received_unix_ms: events::now_ms(),
            };
            match db.deliver(&mb, "Inbox", headers, &content, Durability::Durable) {
                Ok(id) => {
                    let s = seq.fetch_add(1, Ordering::SeqCst) + 1;
                    deliveries += 1;
                    ledger.lock().delivered.insert(
                        (mb.clone(), id),
                        Delivery { seq: s, body_hash: blake3::hash(&content), size: len },
                    );
                    live.push((mb, id));
                }
                Err(e) => record_error(e),
            }
        }
    }
}
