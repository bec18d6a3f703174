//! The passive copy runner ([`PassiveCopy`]) against a real engine instance served by the
//! replication listener over TLS on loopback: it seeds, copies, inspects and replays to the
//! active's content; a generation damaged in transit is fetched again; a generation of another
//! log stream fails the copy naming the file; a full disk fails the copy while the active goes
//! on; a restarted copy resumes from its checkpoint without seeding again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Active, PREFIX};
use events::EventSink;
use parking_lot::Mutex;
use replication::client::PeerClient;
use replication::cluster::CopyStatus;
use replication::copy::{CopyConfig, CopyReport, Desired, PassiveCopy};
use replication::protocol::{self, SeedManifest, StreamInfo};
use replication::source::{ActiveSource, SeedReader, SourceError};
use replication::tls::DagTls;
use uuid::Uuid;
use volume::FsRef;
use volume::fault::{FaultInjector, FaultKind};
use volume::mem::MemFs;

/// What the fake active serves in place of a generation.
#[derive(Clone)]
enum Tamper {
    /// One byte flipped, the first `times` it is asked for.
    Flip { times: u32 },
    /// These bytes instead (another stream's generation).
    Replace(Vec<u8>),
}

struct Source {
    active: Mutex<Active>,
    seed_fs: FsRef,
    tamper: Mutex<HashMap<u32, Tamper>>,
    seeds: Mutex<u32>,
}

impl ActiveSource for Source {
    fn stream(&self, sg: &str) -> Result<StreamInfo, SourceError> {
        let a = self.active.lock();
        let closed = a.closed();
        Ok(StreamInfo {
            sg: sg.into(),
            prefix: PREFIX.into(),
            signature: protocol::hex(&a.inst.signature()),
            produced: closed.last().copied().unwrap_or(0),
            oldest: closed.first().copied().unwrap_or(1),
            node: "a".into(),
            epoch: 0,
        })
    }

    fn log_file(&self, _sg: &str, generation: u32) -> Result<Vec<u8>, SourceError> {
        let a = self.active.lock();
        let mut bytes = volume::fs::read_all(a.fs.as_ref(), &Active::log_path(generation))
            .map_err(|e| SourceError::NotFound(e.to_string()))?;
        let mut tamper = self.tamper.lock();
        match tamper.get_mut(&generation) {
            Some(Tamper::Flip { times }) if *times > 0 => {
                *times -= 1;
                // Inside the first record (the tail past the end-of-generation record is unused).
                let at = ese::logfmt::LOG_HEADER_SIZE as usize + 20;
                bytes[at] ^= 0x40;
            }
            Some(Tamper::Replace(other)) => bytes = other.clone(),
            _ => {}
        }
        Ok(bytes)
    }

    fn start_seed(&self, sg: &str, _peer: &str) -> Result<SeedManifest, SourceError> {
        *self.seeds.lock() += 1;
        let mut a = self.active.lock();
        let generation = a.seed(&self.seed_fs);
        Ok(common::seed_manifest(sg, &self.seed_fs, &a.inst.signature(), generation))
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

/// Events, kept for the assertions.
#[derive(Default)]
struct Events(Mutex<Vec<(u32, String)>>);

impl EventSink for Events {
    fn emit(&self, def: &events::EventDef, _job: Option<Uuid>, fields: serde_json::Value) {
        let text = def.render(fields.as_object().unwrap_or(&Default::default()));
        self.0.lock().push((def.id, text));
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
        let mut active = Active::new();
        active.write(40);
        let source = Arc::new(Source {
            active: Mutex::new(active),
            seed_fs: Arc::new(MemFs::new()),
            tamper: Mutex::new(HashMap::new()),
            seeds: Mutex::new(0),
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

    fn start(&self, fs: &FsRef) -> PassiveCopy {
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
            epoch: 0,
        };
        PassiveCopy::start(cfg, desired).unwrap()
    }

    /// The active writes `n` transactions and closes its generation.
    fn write(&self, n: usize) -> u32 {
        let mut a = self.source.active.lock();
        a.write(n);
        a.roll()
    }

    fn events_with(&self, id: u32) -> Vec<String> {
        self.events.0.lock().iter().filter(|(i, _)| *i == id).map(|(_, t)| t.clone()).collect()
    }
}

fn wait_for(copy: &PassiveCopy, what: &str, ok: impl Fn(&CopyReport) -> bool) -> CopyReport {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = copy.report();
        if ok(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last report {r:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn caught_up(copy: &PassiveCopy, to: u32) -> CopyReport {
    wait_for(copy, &format!("the copy to replay generation {to:#X}"), |r| {
        r.status == CopyStatus::Healthy && r.last_replayed_generation >= to
    })
}

#[test]
fn a_copy_seeds_copies_and_replays_to_the_actives_content_and_resumes_after_a_restart() {
    let rig = Rig::new();
    let fs: FsRef = Arc::new(MemFs::new());
    let copy = rig.start(&fs);
    let g = rig.write(30);
    caught_up(&copy, g);
    let want = rig.source.active.lock().rows.clone();
    assert!(common::passive_rows(&fs) == want, "the copy's content differs from the active's");
    assert_eq!(rig.events_with(4102).len(), 1, "one seed");

    // Stopped and started again on the same files: no new seed; replay continues.
    copy.stop();
    let g = rig.write(25);
    let copy = rig.start(&fs);
    caught_up(&copy, g);
    assert_eq!(*rig.source.seeds.lock(), 1, "a restarted copy seeded again");
    let want = rig.source.active.lock().rows.clone();
    assert!(common::passive_rows(&fs) == want, "the copy's content differs after the restart");
    copy.stop();
}

#[test]
fn a_generation_damaged_once_is_fetched_again_and_one_of_another_stream_fails_the_copy() {
    let rig = Rig::new();
    let fs: FsRef = Arc::new(MemFs::new());
    let copy = rig.start(&fs);
    let g = rig.write(10);
    caught_up(&copy, g);

    // Damaged in transit once: inspection catches it, the second fetch is good. (The seed
    // rolled a generation of its own: the next is after the last closed one.)
    let next = rig.source.active.lock().closed().last().copied().unwrap_or(g) + 1;
    rig.source.tamper.lock().insert(next, Tamper::Flip { times: 1 });
    let g = rig.write(10);
    caught_up(&copy, g);
    let failed = rig.events_with(4105);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains(&ese::logfmt::generation_name(PREFIX, next)), "{failed:?}");
    assert!(failed[0].contains("attempt 1"), "{failed:?}");

    // A generation of another log stream (another storage group's, same number): twice
    // refused, the copy fails and says which file and why; the active is untouched.
    let other = {
        let mut o = Active::new();
        o.write(5);
        while o.closed().last().copied().unwrap_or(0) < g + 1 {
            o.write(3);
            o.roll();
        }
        volume::fs::read_all(o.fs.as_ref(), &Active::log_path(g + 1)).unwrap()
    };
    rig.source.tamper.lock().insert(g + 1, Tamper::Replace(other));
    rig.write(10);
    let r = wait_for(&copy, "the copy to fail", |r| r.status == CopyStatus::FailedAndSuspended);
    let name = ese::logfmt::generation_name(PREFIX, g + 1);
    let why = r.last_error.unwrap_or_default();
    assert!(why.contains(&name) && why.contains("another log stream"), "{why}");
    let failed = rig.events_with(4106);
    assert!(failed.iter().any(|t| t.contains(&name)), "{failed:?}");
    assert_eq!(r.last_replayed_generation, g, "nothing past the bad generation was replayed");
    // The copy stays failed (it does not retry on its own)...
    assert_eq!(copy.report().status, CopyStatus::FailedAndSuspended);
    // ...until it is resumed, with a good generation served again.
    rig.source.tamper.lock().clear();
    let mut d = copy.desired();
    d.resumes += 1;
    copy.set_desired(d);
    let g = rig.write(5);
    caught_up(&copy, g);
    let want = rig.source.active.lock().rows.clone();
    assert!(common::passive_rows(&fs) == want, "the resumed copy's content differs");
    copy.stop();
}

#[test]
fn a_full_disk_fails_the_copy_and_the_active_goes_on() {
    let rig = Rig::new();
    let fault = FaultInjector::new(Arc::new(MemFs::new()));
    let fs = fault.as_ref();
    let copy = rig.start(&fs);
    let g = rig.write(10);
    caught_up(&copy, g);
    fault.fail_after(1, FaultKind::NoSpace);
    rig.write(10);
    let r = wait_for(&copy, "the copy to fail on the full disk", |r| {
        r.status == CopyStatus::FailedAndSuspended
    });
    let why = r.last_error.unwrap_or_default();
    assert!(why.contains("No space left") || why.contains("injected fault"), "{why}");
    // The active keeps committing and closing generations.
    let before = rig.source.active.lock().closed().last().copied().unwrap_or(0);
    let after = rig.write(10);
    assert!(after > before);
    copy.stop();
}
