#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The DAG's PKI and the mutual TLS of replication traffic, over real TCP on 127.0.0.1.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use replication::pki::{NodeCerts, PkiError, add_node, write_dag_pki};
use replication::tls::{DagTls, TlsError, peer_node};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test with `what` if it takes longer than [`DEADLINE`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn names(nodes: &[&str]) -> Vec<String> {
    nodes.iter().map(|n| (*n).to_owned()).collect()
}

fn load(c: &NodeCerts) -> DagTls {
    DagTls::load(&c.ca, &c.cert, &c.key).unwrap()
}

/// What the server side of one connection saw.
#[derive(Debug)]
struct Served {
    /// The caller's node name, from its certificate.
    peer: Option<String>,
    /// The bytes the caller sent (read up to "\n").
    got: Vec<u8>,
}

/// Accepts one TLS connection with `server`; on success reads one line, answers
/// "hello from <server node>\n" and reports what it saw; otherwise the handshake error.
async fn serve_one(server: DagTls) -> (std::net::SocketAddr, JoinHandle<std::io::Result<Served>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = server.acceptor().accept(tcp).await?;
        let peer = peer_node(tls.get_ref().1.peer_certificates().unwrap_or_default());
        let mut got = Vec::new();
        loop {
            let b = tls.read_u8().await?;
            if b == b'\n' {
                break;
            }
            got.push(b);
        }
        let answer = format!("hello from {}\n", server.node_name());
        tls.write_all(answer.as_bytes()).await?;
        tls.flush().await?;
        tls.shutdown().await?;
        Ok(Served { peer, got })
    });
    (addr, task)
}

/// Connects to `addr` as `connector` dialling node `name`, sends `line` and reads the answer to
/// the end of the stream.
async fn call(
    connector: tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    name: &str,
    line: &str,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = connector.connect(server_name, tcp).await?;
    tls.write_all(format!("{line}\n").as_bytes()).await?;
    tls.flush().await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok(answer)
}

/// The rustls error inside a tokio-rustls I/O error, if it is one.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

fn is_unknown_issuer(e: &std::io::Error) -> bool {
    matches!(
        rustls_error(e),
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
    )
}

#[tokio::test]
async fn two_nodes_of_one_dag_talk_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let certs = write_dag_pki(dir.path(), "dag1", &names(&["a", "node-b"])).unwrap();
    assert_eq!(certs.len(), 2);
    let a = load(&certs[0]);
    let b = load(&certs[1]);
    assert_eq!(a.node_name(), "a");
    assert_eq!(b.node_name(), "node-b");
    // Debug never shows key material.
    assert!(format!("{a:?}").contains("\"a\""));

    for (server, client) in [(&a, &b), (&b, &a)] {
        let (addr, task) = serve_one(server.clone()).await;
        let answer = within(
            "the client's exchange",
            call(client.connector(), addr, server.node_name(), "ping"),
        )
        .await
        .unwrap();
        assert_eq!(answer, format!("hello from {}\n", server.node_name()));
        let served = within("the server's exchange", task).await.unwrap().unwrap();
        assert_eq!(served.peer.as_deref(), Some(client.node_name()));
        assert_eq!(served.got, b"ping");
    }
}

#[tokio::test]
async fn a_client_of_another_dag_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = write_dag_pki(&dir.path().join("ours"), "ours", &names(&["a"])).unwrap();
    let theirs = write_dag_pki(&dir.path().join("theirs"), "theirs", &names(&["b"])).unwrap();
    let server = load(&ours[0]);
    // The intruder trusts our CA (so it would accept our server) but its own certificate comes
    // from another CA.
    let intruder = DagTls::load(&ours[0].ca, &theirs[0].cert, &theirs[0].key);
    assert!(matches!(intruder, Err(TlsError::NotSignedByCa { .. })), "{intruder:?}");
    let ca = CertificateDer::from_pem_file(&ours[0].ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let chain = vec![CertificateDer::from_pem_file(&theirs[0].cert).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&theirs[0].key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();

    let (addr, task) = serve_one(server).await;
    let answer =
        within("the intruder's exchange", call(Arc::new(config).into(), addr, "a", "ping")).await;
    assert!(answer.is_err(), "the intruder got an answer: {answer:?}");
    let err = within("the server to refuse the intruder", task).await.unwrap().unwrap_err();
    assert!(is_unknown_issuer(&err), "server error: {err}");
}

#[tokio::test]
async fn a_server_of_another_dag_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = write_dag_pki(&dir.path().join("ours"), "ours", &names(&["a"])).unwrap();
    let theirs = write_dag_pki(&dir.path().join("theirs"), "theirs", &names(&["b"])).unwrap();
    let client = load(&ours[0]);
    let server = load(&theirs[0]);

    let (addr, task) = serve_one(server).await;
    let err =
        within("the client to refuse the server", call(client.connector(), addr, "b", "ping"))
            .await
            .unwrap_err();
    assert!(is_unknown_issuer(&err), "client error: {err}");
    let served = within("the server to see the refusal", task).await.unwrap();
    assert!(served.is_err(), "the server served: {served:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = write_dag_pki(dir.path(), "dag", &names(&["a"])).unwrap();
    let server = load(&certs[0]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&certs[0].ca).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();

    let (addr, task) = serve_one(server).await;
    let answer =
        within("the anonymous exchange", call(Arc::new(config).into(), addr, "a", "ping")).await;
    assert!(answer.is_err(), "the anonymous client got an answer: {answer:?}");
    let err = within("the server to refuse the anonymous client", task).await.unwrap().unwrap_err();
    assert!(
        matches!(rustls_error(&err), Some(rustls::Error::NoCertificatesPresented)),
        "server error: {err}"
    );
}

#[tokio::test]
async fn a_node_added_later_is_accepted_by_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let certs = write_dag_pki(dir.path(), "dag", &names(&["a", "b"])).unwrap();
    let c = add_node(dir.path(), "c").unwrap();
    assert_eq!(c.node, "c");
    assert_eq!(c.cert, dir.path().join("c/tls/node.pem"));
    let c = load(&c);
    assert_eq!(c.node_name(), "c");
    let a = load(&certs[0]);

    for (server, client) in [(&a, &c), (&c, &a)] {
        let (addr, task) = serve_one(server.clone()).await;
        let answer = within(
            "the exchange with the added node",
            call(client.connector(), addr, server.node_name(), "hi"),
        )
        .await
        .unwrap();
        assert_eq!(answer, format!("hello from {}\n", server.node_name()));
        let served = within("the server's exchange", task).await.unwrap().unwrap();
        assert_eq!(served.peer.as_deref(), Some(client.node_name()));
    }

    // A node's certificate is never replaced.
    let again = add_node(dir.path(), "a");
    assert!(
        matches!(&again, Err(PkiError::Exists { path }) if path.ends_with("a/tls/node.pem")),
        "{again:?}"
    );
}

#[tokio::test]
async fn write_dag_pki_refuses_an_existing_ca_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_dag_pki(dir.path(), "dag", &names(&["a"])).unwrap();
    let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();

    let again = write_dag_pki(dir.path(), "dag", &names(&["x"])).unwrap_err();
    assert!(
        matches!(&again, PkiError::Exists { path } if path == &dir.path().join("ca.pem")),
        "{again:?}"
    );
    assert!(again.to_string().contains("ca.pem"), "{again}");
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);
    assert!(!dir.path().join("x").exists());

    // Key files are private.
    use std::os::unix::fs::PermissionsExt;
    for key in [dir.path().join("ca.key"), first[0].key.clone()] {
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }

    let fresh = tempfile::tempdir().unwrap();
    let long = "a".repeat(64);
    for bad in ["", "A", "node_b", "a.b", "-a", "../a", "123", long.as_str()] {
        let err = write_dag_pki(fresh.path(), "dag", &names(&["ok", bad])).unwrap_err();
        assert!(
            matches!(&err, PkiError::BadNodeName { name, .. } if name == bad),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains("bad node name"), "{err}");
    }
    let err = write_dag_pki(fresh.path(), "dag", &names(&["a", "b", "a"])).unwrap_err();
    assert!(matches!(&err, PkiError::DuplicateNode { name } if name == "a"), "{err:?}");
    // Nothing was written for refused names.
    assert_eq!(std::fs::read_dir(fresh.path()).unwrap().count(), 0);
    let ok = "a".repeat(63);
    write_dag_pki(fresh.path(), "dag", &names(&[ok.as_str(), "node-7"])).unwrap();
}

#[test]
fn load_names_the_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let certs = write_dag_pki(dir.path(), "dag", &names(&["a"])).unwrap();
    let c = &certs[0];
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();

    let shown = |e: TlsError, path: &Path, what: &str| {
        let s = e.to_string();
        assert!(s.contains(&path.display().to_string()), "{s}");
        assert!(s.contains(what), "{s}");
    };

    let e = DagTls::load(&c.ca, &junk, &c.key).unwrap_err();
    assert!(matches!(e, TlsError::NotPem { .. }), "{e:?}");
    shown(e, &junk, "not a PEM certificate");

    let e = DagTls::load(&junk, &c.cert, &c.key).unwrap_err();
    shown(e, &junk, "not a PEM certificate");

    let e = DagTls::load(&c.ca, &c.cert, &junk).unwrap_err();
    assert!(matches!(e, TlsError::NoKey { .. }), "{e:?}");
    shown(e, &junk, "no private key");

    // A certificate file holds no key.
    let e = DagTls::load(&c.ca, &c.cert, &c.cert).unwrap_err();
    shown(e, &c.cert, "no private key");

    let missing = dir.path().join("missing.key");
    let e = DagTls::load(&c.ca, &c.cert, &missing).unwrap_err();
    assert!(matches!(e, TlsError::File { .. }), "{e:?}");
    shown(e, &missing, "cannot read");

    // The CA's key is not the node certificate's key.
    let e = DagTls::load(&c.ca, &c.cert, &dir.path().join("ca.key")).unwrap_err();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
    shown(e, &c.cert, "ca.key");

    // The CA certificate is not a node certificate: it names no node.
    let e = DagTls::load(&c.ca, &c.ca, &dir.path().join("ca.key")).unwrap_err();
    assert!(matches!(e, TlsError::NoDnsName { .. } | TlsError::NotSignedByCa { .. }), "{e:?}");

    let other = tempfile::tempdir().unwrap();
    let theirs = write_dag_pki(other.path(), "other", &names(&["a"])).unwrap();
    let e = DagTls::load(&c.ca, &theirs[0].cert, &theirs[0].key).unwrap_err();
    assert!(matches!(e, TlsError::NotSignedByCa { .. }), "{e:?}");
    shown(e, &theirs[0].cert, "not signed by the DAG's CA");

    assert_eq!(peer_node(&[]), None);
}
