//! Block mode and synchronous copies, end to end over the replication listener on loopback
//! TLS: a caught-up copy holds the active's current generation byte for byte before any roll
//! and moves on to the next generation when it closes; with a synchronous gate of one copy, a
//! durable commit returns only once the copy's tail file holds it, across rolls; `Strict` with no copy
//! blocks a commit until a copy follows; `Available` with no copy lets it through, degraded
//! (event 4118), healthy again once a copy follows (4119).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{DB, DB_PATH, PREFIX, T};
use ese::{BackupKind, Durability, Instance, Lsn};
use events::EventSink;
use parking_lot::Mutex;
use replication::client::PeerClient;
use replication::copy::{CopyConfig, CopyReport, Desired, PassiveCopy};
use replication::protocol::{self, SeedManifest, StreamInfo, TailChunk};
use replication::source::{ActiveSource, SeedReader, SourceError};
use replication::sync::{SyncGate, SyncMode};
use replication::tls::DagTls;
use uuid::Uuid;
use volume::FsRef;
use volume::mem::MemFs;

const DEADLINE: Duration = Duration::from_secs(60);

/// An active instance served as it runs: closed generations, seeds, and its current
/// generation through [`replication::tail::serve_tail`] with the gate installed.
struct Source {
    fs: FsRef,
    inst: Arc<Instance>,
    seed_fs: FsRef,
    gate: Mutex<Option<Arc<SyncGate>>>,
    /// The epoch the active answers with.
    epoch: AtomicU64,
}

impl ActiveSource for Source {
    fn stream(&self, sg: &str) -> Result<StreamInfo, SourceError> {
        let log = self.inst.log_state().unwrap();
        Ok(StreamInfo {
            sg: sg.into(),
            prefix: PREFIX.into(),
            signature: protocol::hex(&self.inst.signature()),
            produced: log.current_generation.saturating_sub(1),
            oldest: log.generations.first().copied().unwrap_or(log.current_generation),
            node: "a".into(),
            epoch: self.epoch.load(Ordering::SeqCst),
        })
    }

    fn log_file(&self, _sg: &str, generation: u32) -> Result<Vec<u8>, SourceError> {
        let p = Path::new("logs").join(ese::logfmt::generation_name(PREFIX, generation));
        volume::fs::read_all(self.fs.as_ref(), &p).map_err(|e| SourceError::NotFound(e.to_string()))
    }

    fn log_tail(
        &self,
        _sg: &str,
        peer: &str,
        generation: u32,
        from: u64,
        wait: Duration,
    ) -> Result<TailChunk, SourceError> {
        let gate = self.gate.lock().clone();
        replication::tail::serve_tail(&self.inst, gate.as_deref(), peer, generation, from, wait)
    }

    fn start_seed(&self, sg: &str, _peer: &str) -> Result<SeedManifest, SourceError> {
        let mut b = self.inst.backup_session(BackupKind::Copy).unwrap();
        b.prepare().unwrap();
        let generation = b.freeze().unwrap();
        common::copy(&self.fs, Path::new(DB_PATH), &self.seed_fs, Path::new(DB_PATH));
        b.thaw().unwrap();
        b.end().unwrap();
        Ok(common::seed_manifest(sg, &self.seed_fs, &self.inst.signature(), generation))
    }

    fn seed_file(&self, _id: Uuid, _index: usize) -> Result<SeedReader, SourceError> {
        Ok(common::seed_reader(&self.seed_fs))
    }

    fn end_seed(&self, _id: Uuid) -> Result<(), SourceError> {
        Ok(())
    }

    fn refused(&self, addr: &str, reason: &str) {
        panic!("{addr} refused: {reason}");
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<u32>>);

impl EventSink for Events {
    fn emit(&self, def: &events::EventDef, _job: Option<Uuid>, _fields: serde_json::Value) {
        self.0.lock().push(def.id);
    }
}

impl Events {
    fn count(&self, id: u32) -> usize {
        self.0.lock().iter().filter(|i| **i == id).count()
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    source: Arc<Source>,
    client: Arc<PeerClient>,
    events: Arc<Events>,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec!["a".to_string(), "b".to_string()];
        let certs = replication::pki::write_dag_pki(dir.path(), "DAG1", &nodes).unwrap();
        let load = |c: &replication::pki::NodeCerts| DagTls::load(&c.ca, &c.cert, &c.key).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fs: FsRef = Arc::new(MemFs::new());
        let inst = Instance::create(common::config(&fs)).unwrap();
        inst.create_database(DB, fs.clone(), DB_PATH).unwrap();
        let mut t = inst.begin_write().unwrap();
        t.create_table(DB, T).unwrap();
        t.commit(Durability::Durable).unwrap();
        let source = Arc::new(Source {
            fs,
            inst: Arc::new(inst),
            seed_fs: Arc::new(MemFs::new()),
            gate: Mutex::new(None),
            epoch: AtomicU64::new(0),
        });
        let (stop, rx) = tokio::sync::watch::channel(false);
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        rt.spawn(replication::server::serve(
            listener,
            load(&certs[0]),
            source.clone(),
            replication::server::Router::new(),
            rx,
        ));
        let client = Arc::new(PeerClient::new(load(&certs[1]), "a", addr));
        Rig { _dir: dir, rt, source, client, events: Arc::default(), _stop: stop }
    }

    /// Installs a synchronous gate on the active (and its tail answers).
    fn gate(&self, required: u32, mode: SyncMode) -> Arc<SyncGate> {
        let gate = Arc::new(SyncGate::new("SG1", self.events.clone()));
        gate.set(required, mode, DEADLINE);
        *self.source.gate.lock() = Some(gate.clone());
        self.source.inst.set_commit_gate(Some(gate.clone()));
        gate
    }

    fn start(&self, fs: &FsRef) -> PassiveCopy {
        self.start_at(fs, 0)
    }

    fn start_at(&self, fs: &FsRef, epoch: u64) -> PassiveCopy {
        let cfg = CopyConfig {
            sg: "SG1".into(),
            node: "b".into(),
            fs: fs.clone(),
            dir: "".into(),
            events: self.events.clone(),
            poll: Duration::from_millis(20),
            runtime: self.rt.handle().clone(),
        };
        let desired = Desired {
            active: Some(self.client.clone()),
            suspended: None,
            seed_serial: 1,
            resumes: 0,
            epoch,
        };
        PassiveCopy::start(cfg, desired).unwrap()
    }
}

/// Commits one row durably; returns the log end after it (the commit's end: one committer).
fn commit(inst: &Instance, i: u64) -> ese::Result<Lsn> {
    let mut t = inst.begin_write()?;
    t.put(DB, T, format!("k{i:05}").as_bytes(), &common::value(i, 100 + (i % 300) as usize))?;
    t.commit(Durability::Durable)?;
    Ok(inst.log_end())
}

fn wait_for(copy: &PassiveCopy, what: &str, ok: impl Fn(&CopyReport) -> bool) -> CopyReport {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = copy.report();
        if ok(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last report {r:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tail_file() -> PathBuf {
    replication::tail::tail_path(Path::new(""), PREFIX)
}

fn read(fs: &FsRef, p: &Path) -> Vec<u8> {
    volume::fs::read_all(fs.as_ref(), p).unwrap_or_default()
}

/// Asserts the copy's tail file starts with the active's current log up to `end`.
fn assert_holds(rig: &Rig, passive: &FsRef, end: Lsn) {
    let tail = read(passive, &tail_file());
    let active = read(&rig.source.fs, Path::new("logs/E00.log"));
    let n = end.offset() as usize;
    assert!(tail.len() >= n, "the tail holds {} bytes, the commit ends at {end}", tail.len());
    assert!(tail[..n] == active[..n], "the tail differs from the active's log before {end}");
}

#[test]
fn a_caught_up_copy_holds_the_current_generation_byte_for_byte_and_follows_a_roll() {
    let rig = Rig::new();
    let passive: FsRef = Arc::new(MemFs::new());
    let copy = rig.start(&passive);
    wait_for(&copy, "the copy to follow the current generation", |r| r.block_mode);
    let inst = &rig.source.inst;
    let mut end = Lsn(0);
    for i in 0..20 {
        end = commit(inst, i).unwrap();
    }
    let g = end.generation();
    wait_for(&copy, &format!("the copy to hold the log up to {end}"), |r| r.durable >= end);
    assert_holds(&rig, &passive, end);
    assert!(rig.source.fs.exists(Path::new("logs/E00.log")).unwrap());
    assert_eq!(inst.log_state().unwrap().current_generation, g, "no roll happened");

    // The generation closes: the copier fetches it, the follower starts the next at 0.
    inst.roll_log().unwrap();
    wait_for(&copy, "the closed generation in the inbox", |r| r.last_inspected_generation >= g);
    for i in 20..30 {
        end = commit(inst, i).unwrap();
    }
    assert_eq!(end.generation(), g + 1);
    wait_for(&copy, &format!("the copy to hold the log up to {end}"), |r| r.durable >= end);
    assert_holds(&rig, &passive, end);
    // The previous generation's tail went once the closed file was in the inbox.
    let closed = Path::new("tail").join(ese::logfmt::generation_name(PREFIX, g));
    let deadline = Instant::now() + DEADLINE;
    while passive.exists(&closed).unwrap() {
        assert!(Instant::now() < deadline, "{} was never removed", closed.display());
        std::thread::sleep(Duration::from_millis(5));
    }
    copy.stop();
}

#[test]
fn with_one_synchronous_copy_a_commit_returns_once_the_copy_holds_it() {
    let rig = Rig::new();
    let passive: FsRef = Arc::new(MemFs::new());
    let copy = rig.start(&passive);
    wait_for(&copy, "the copy to follow the current generation", |r| r.block_mode);
    let gate = rig.gate(1, SyncMode::Strict);
    let first = rig.source.inst.log_end().generation();
    // Enough to fill generations: commits right after a roll are held as well (the copy gets
    // all of the closed generation before it acknowledges the next).
    let mut end = Lsn(0);
    for i in 0..400 {
        end = commit(&rig.source.inst, i).unwrap();
        // No waiting: the commit returned, so the copy acknowledged holding it durably.
        assert_holds(&rig, &passive, end);
    }
    assert!(end.generation() >= first + 2, "no roll happened: {first} to {end}");
    let st = gate.status();
    assert!(!st.degraded);
    assert!(st.peers.get("b").is_some_and(|p| *p >= rig.source.inst.log_end()), "{st:?}");
    rig.source.inst.set_commit_gate(None);
    copy.stop();
}

#[test]
fn strict_with_no_copy_blocks_a_commit_until_a_copy_follows() {
    let rig = Rig::new();
    rig.gate(1, SyncMode::Strict);
    let (tx, rx) = mpsc::channel();
    let inst = rig.source.inst.clone();
    let committer = std::thread::spawn(move || {
        let r = commit(&inst, 1);
        tx.send(r.map_err(|e| e.to_string())).unwrap();
    });
    // Not having completed cannot be observed as an event: a short bounded wait that times
    // out is the assertion (a commit that wrongly passed the gate would answer at once).
    assert!(
        matches!(rx.recv_timeout(Duration::from_millis(300)), Err(mpsc::RecvTimeoutError::Timeout)),
        "the commit completed with no copy to acknowledge it"
    );
    let passive: FsRef = Arc::new(MemFs::new());
    let copy = rig.start(&passive);
    let done = rx.recv_timeout(DEADLINE).expect("the commit to complete once a copy follows");
    done.unwrap();
    committer.join().unwrap();
    // The acknowledgement reaches the gate before the follower records its answer.
    wait_for(&copy, "the copy to report block mode", |r| r.block_mode);
    rig.source.inst.set_commit_gate(None);
    copy.stop();
}

#[test]
fn available_with_no_copy_commits_degraded_and_is_healthy_again_once_a_copy_follows() {
    let rig = Rig::new();
    let gate = rig.gate(1, SyncMode::Available);
    commit(&rig.source.inst, 1).unwrap();
    commit(&rig.source.inst, 2).unwrap();
    assert!(gate.status().degraded);
    assert_eq!(rig.events.count(4118), 1, "one event per degradation");
    assert_eq!(rig.events.count(4119), 0);

    let passive: FsRef = Arc::new(MemFs::new());
    let copy = rig.start(&passive);
    let deadline = Instant::now() + DEADLINE;
    while rig.events.count(4119) == 0 {
        assert!(Instant::now() < deadline, "the gate never reported healthy: {:?}", gate.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!gate.status().degraded);
    let end = commit(&rig.source.inst, 3).unwrap();
    assert_holds(&rig, &passive, end);
    assert_eq!(rig.events.count(4118), 1);
    rig.source.inst.set_commit_gate(None);
    copy.stop();
}

#[test]
fn a_copy_fetches_nothing_from_an_active_of_an_older_epoch() {
    let rig = Rig::new();
    rig.source.epoch.store(3, Ordering::SeqCst);
    let passive: FsRef = Arc::new(MemFs::new());
    let copy = rig.start_at(&passive, 5);
    let r = wait_for(&copy, "the copy to refuse the deposed active", |r| {
        r.last_error.as_deref().is_some_and(|e| e.contains("epoch 3"))
    });
    assert_eq!(r.status, replication::cluster::CopyStatus::Disconnected, "{r:?}");
    assert!(!passive.exists(Path::new("seed.json")).unwrap(), "the copy seeded from it");
    assert!(!r.block_mode);
    // The active at the cluster's epoch (or a newer one) is followed.
    rig.source.epoch.store(5, Ordering::SeqCst);
    copy.wake();
    wait_for(&copy, "the copy to follow the active of the current epoch", |r| r.block_mode);
    copy.stop();
}

#[test]
fn a_closed_generation_is_served_to_its_end_before_it_is_reported_closed() {
    let rig = Rig::new();
    let inst = &rig.source.inst;
    let gate = SyncGate::new("SG1", rig.events.clone());
    let serve = |g: u32, from: u64| {
        replication::tail::serve_tail(inst, Some(&gate), "b", g, from, Duration::ZERO).unwrap()
    };
    let held = commit(inst, 1).unwrap();
    let g = held.generation();
    let first = serve(g, 0);
    assert!(!first.closed);
    assert_eq!(first.bytes.len() as u32, held.offset());
    // More commits, then the generation closes before the copy asked for them: it still gets
    // them (a copy that jumped to the next generation would acknowledge bytes it lacks).
    let end = commit(inst, 2).unwrap();
    inst.roll_log().unwrap();
    let file =
        read(&rig.source.fs, &Path::new("logs").join(ese::logfmt::generation_name(PREFIX, g)));
    let rest = serve(g, held.offset() as u64);
    assert!(
        !rest.closed,
        "reported closed with {} bytes of it unsent",
        file.len() - held.offset() as usize
    );
    assert!(rest.bytes.len() as u32 >= end.offset() - held.offset());
    assert_eq!(rest.bytes, file[held.offset() as usize..held.offset() as usize + rest.bytes.len()]);
    let mut from = held.offset() as u64 + rest.bytes.len() as u64;
    loop {
        let c = serve(g, from);
        if c.closed {
            break;
        }
        assert!(!c.bytes.is_empty(), "neither bytes nor closed at {from}");
        from += c.bytes.len() as u64;
    }
    assert_eq!(from, file.len() as u64, "closed before the end of the file");
    assert_eq!(gate.status().peers.get("b"), Some(&Lsn::new(g, from as u32)));
    // The next generation from 0: its header first.
    let next = serve(g + 1, 0);
    assert!(!next.closed && next.bytes.len() >= ese::logfmt::LOG_HEADER_SIZE as usize);
}
