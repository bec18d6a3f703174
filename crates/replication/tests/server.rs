//! The replication listener and client over real TCP and TLS on loopback, against a fake
//! active: every request of the protocol, error answers, streaming, and a stranger refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use replication::client::{ClientError, PeerClient};
use replication::pki::write_dag_pki;
use replication::protocol::{self, SeedFile, SeedManifest, StreamInfo};
use replication::source::{ActiveSource, SeedReader, SourceError};
use replication::tls::DagTls;
use uuid::Uuid;
use volume::mem::MemFs;
use volume::{FileSystem, OpenMode};

/// An active with one storage group `SG1` whose closed generations are 3..=5, and one seed
/// file of 3 MiB + 17 bytes (several chunks).
struct Fake {
    fs: Arc<MemFs>,
    refused: Mutex<Vec<(String, String)>>,
    seeds_ended: Mutex<Vec<Uuid>>,
    seed_id: Uuid,
}

const SEED_LEN: usize = 3 * 1024 * 1024 + 17;

fn seed_bytes() -> Vec<u8> {
    (0..SEED_LEN).map(|i| (i * 31 % 251) as u8).collect()
}

impl Fake {
    fn new() -> Fake {
        let fs = Arc::new(MemFs::new());
        let f = fs.open(std::path::Path::new("seed.edb"), OpenMode::Create).unwrap();
        f.write_at(&seed_bytes(), 0).unwrap();
        Fake {
            fs,
            refused: Mutex::new(Vec::new()),
            seeds_ended: Mutex::new(Vec::new()),
            seed_id: Uuid::new_v4(),
        }
    }
}

impl ActiveSource for Fake {
    fn stream(&self, sg: &str) -> Result<StreamInfo, SourceError> {
        if sg != "SG1" {
            return Err(SourceError::NotFound(format!("no storage group {sg}")));
        }
        Ok(StreamInfo {
            sg: sg.into(),
            prefix: "E00".into(),
            signature: protocol::hex(&[7; 16]),
            produced: 5,
            oldest: 3,
            node: "a".into(),
            epoch: 0,
        })
    }

    fn log_file(&self, _sg: &str, generation: u32) -> Result<Vec<u8>, SourceError> {
        match generation {
            3..=5 => Ok(vec![generation as u8; 1000 + generation as usize]),
            6 => Err(SourceError::NotActive("dismounted".into())),
            _ => Err(SourceError::NotFound(format!("no generation {generation}"))),
        }
    }

    fn start_seed(&self, sg: &str, peer: &str) -> Result<SeedManifest, SourceError> {
        assert_eq!(peer, "b", "the server names the calling member from its certificate");
        Ok(SeedManifest {
            id: self.seed_id,
            sg: sg.into(),
            prefix: "E00".into(),
            signature: protocol::hex(&[7; 16]),
            generation: 5,
            log_file_size: 1 << 20,
            page_size: 4096,
            databases: vec![SeedFile { name: "DB1".into(), size: SEED_LEN as u64 }],
            snapshot_set: Uuid::new_v4(),
        })
    }

    fn seed_file(&self, id: Uuid, index: usize) -> Result<SeedReader, SourceError> {
        if id != self.seed_id || index != 0 {
            return Err(SourceError::NotFound("no such seed file".into()));
        }
        let file = self.fs.open(std::path::Path::new("seed.edb"), OpenMode::Read).unwrap();
        Ok(SeedReader { file, len: SEED_LEN as u64 })
    }

    fn end_seed(&self, id: Uuid) -> Result<(), SourceError> {
        self.seeds_ended.lock().push(id);
        Ok(())
    }

    fn refused(&self, addr: &str, reason: &str) {
        self.refused.lock().push((addr.into(), reason.into()));
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    addr: String,
    fake: Arc<Fake>,
    b: DagTls,
    foreign: DagTls,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nodes = vec!["a".to_string(), "b".to_string()];
    let certs = write_dag_pki(&dir.path().join("dag1"), "DAG1", &nodes).unwrap();
    let other = write_dag_pki(&dir.path().join("dag2"), "DAG2", &["b".to_string()]).unwrap();
    let load = |c: &replication::pki::NodeCerts| DagTls::load(&c.ca, &c.cert, &c.key).unwrap();
    let a = load(&certs[0]);
    let b = load(&certs[1]);
    let foreign = load(&other[0]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = Arc::new(Fake::new());
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(replication::server::serve(
        listener,
        a,
        fake.clone(),
        replication::server::Router::new(),
        rx,
    ));
    Setup { _dir: dir, addr, fake, b, foreign, _stop: stop }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after 30 s waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_the_protocol_over_mutual_tls() {
    let s = setup().await;
    let c = PeerClient::new(s.b.clone(), "a", s.addr.clone());
    let info: StreamInfo =
        within("stream info", c.get_json(&protocol::stream_path("SG1"))).await.unwrap();
    assert_eq!((info.produced, info.oldest, info.prefix.as_str()), (5, 3, "E00"));
    for g in 3..=5u32 {
        let bytes = within("a log", c.get_bytes(&protocol::log_path("SG1", g))).await.unwrap();
        assert_eq!(bytes.len(), 1000 + g as usize);
        assert!(bytes.iter().all(|b| *b == g as u8));
    }
    // Error answers keep their kind and message, and the connection stays usable.
    let e = within("a missing log", c.get_bytes(&protocol::log_path("SG1", 9))).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("no generation 9"), "{e}");
    let e =
        within("a dismounted log", c.get_bytes(&protocol::log_path("SG1", 6))).await.unwrap_err();
    assert!(matches!(e, ClientError::Status { status: 409, .. }), "{e}");
    let e = within("an unknown sg", c.get_json::<StreamInfo>(&protocol::stream_path("SG9")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no storage group SG9"), "{e}");

    // A seed: manifest, the file streamed in chunks, the end.
    let m: SeedManifest = within("a seed", c.post_json(&protocol::seed_path("SG1"))).await.unwrap();
    let mut got = Vec::new();
    let mut sink = |d: &[u8]| -> std::io::Result<()> {
        got.extend_from_slice(d);
        Ok(())
    };
    let n = within("the seed file", c.get_streamed(&protocol::seed_file_path(m.id, 0), &mut sink))
        .await
        .unwrap();
    assert_eq!(n, SEED_LEN as u64);
    assert!(got == seed_bytes(), "the seed file arrived changed");
    let e = within("a missing seed file", async {
        let mut ignore = |_: &[u8]| Ok(());
        c.get_streamed(&protocol::seed_file_path(m.id, 1), &mut ignore).await
    })
    .await
    .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    within("the seed's end", c.delete(&protocol::seed_end_path(m.id))).await.unwrap();
    assert_eq!(*s.fake.seeds_ended.lock(), vec![m.id]);
    assert!(s.fake.refused.lock().is_empty(), "{:?}", s.fake.refused.lock());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_dag_and_a_plain_tcp_client_are_refused() {
    let s = setup().await;
    let c = PeerClient::new(s.foreign.clone(), "a", s.addr.clone());
    let e = within("the foreign client", c.get_json::<StreamInfo>(&protocol::stream_path("SG1")))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
    // Not TLS at all: a stranger speaking plain HTTP.
    let mut tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET /repl/v1/stream/SG1 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = within("the server to close", tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut buf))
        .await;
    assert!(!String::from_utf8_lossy(&buf).contains("E00"), "a stranger got an answer");
    within("both refusals reported", async {
        loop {
            if s.fake.refused.lock().len() >= 2 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let refused = s.fake.refused.lock().clone();
    assert!(refused.iter().all(|(_, why)| why.contains("TLS handshake failed")), "{refused:?}");
}
