//! TLS for replication traffic.
//!
//! Every member of a DAG holds the DAG's CA certificate and its own node certificate and key
//! (written by [`crate::pki::write_dag_pki`]). Replication connections are mutual TLS: the
//! server requires a client certificate, and both sides accept only certificates chaining to the
//! DAG's CA — never the system roots — so a node of another DAG (or anyone else) is refused.
//!
//! A node's name is the first DNS subject-alternative name of its certificate: pki writes the
//! node name there (and as the CN), the client verifies the server against the name it dialled
//! (`ServerName::try_from(peer_node_name)`), and the server learns who called with
//! [`peer_node`]. The name is read with rustls-webpki (already rustls' certificate parser), so
//! no other X.509 parser is needed.
//!
//! The builders take the `ring` provider explicitly: no process-wide default provider has to be
//! installed, and nothing pulls in aws-lc.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why a node's TLS identity cannot be loaded. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read (missing, permissions, …).
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    /// The file holds no PEM block of the expected kind.
    #[error("{path}: not a PEM {what} ({why})")]
    NotPem { path: PathBuf, what: &'static str, why: String },
    /// The key file holds no private key.
    #[error("{path}: no private key (expected a PEM \"PRIVATE KEY\" block)")]
    NoKey { path: PathBuf },
    /// The certificate is PEM but not a parsable X.509 certificate.
    #[error("{path}: not a valid certificate ({why})")]
    BadCertificate { path: PathBuf, why: String },
    /// The node certificate does not chain to the DAG's CA (another DAG's, expired, wrong usage).
    #[error("{cert}: certificate not signed by the DAG's CA {ca} ({why})")]
    NotSignedByCa { cert: PathBuf, ca: PathBuf, why: String },
    /// The node certificate carries no DNS subject-alternative name, so it names no node.
    #[error(
        "{path}: the certificate has no DNS name (the node name is its first DNS subject-alternative name)"
    )]
    NoDnsName { path: PathBuf },
    /// rustls refuses the certificate/key pair (e.g. the key is not the certificate's).
    #[error("{cert} with key {key}: unusable pair, is the key this certificate's? ({why})")]
    KeyMismatch { cert: PathBuf, key: PathBuf, why: String },
}

/// This node's TLS identity in its DAG: ready-built server and client configurations.
///
/// Cloning is cheap (the configurations are shared). `Debug` shows the node name only, never
/// key material.
#[derive(Clone)]
pub struct DagTls {
    node: String,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for DagTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DagTls").field("node", &self.node).finish_non_exhaustive()
    }
}

/// The crypto provider of every DAG connection (`ring`; passed explicitly to each builder).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Maps a PEM read error of `path` (which should hold a `what`) to the error naming it.
fn read_error(path: &Path, e: pem::Error, what: &'static str) -> TlsError {
    match e {
        pem::Error::Io(io) => TlsError::File {
            path: path.to_path_buf(),
            why: format!("cannot read the {what}: {io}"),
        },
        other => TlsError::NotPem { path: path.to_path_buf(), what, why: other.to_string() },
    }
}

/// The first certificate of a PEM file.
fn load_cert(path: &Path, what: &'static str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_file(path).map_err(|e| read_error(path, e, what))
}

/// The first DNS name of a certificate's subject-alternative-name extension.
fn first_dns_name(cert: &CertificateDer<'_>) -> Result<Option<String>, webpki::Error> {
    let ee = webpki::EndEntityCert::try_from(cert)?;
    let first = ee.valid_dns_names().next().map(str::to_owned);
    Ok(first)
}

impl DagTls {
    /// Loads the DAG's CA certificate and this node's certificate and key (PEM files, as pki
    /// writes them under `<node>/tls/`), checks that the certificate chains to the CA for both
    /// server and client use, and builds the TLS configurations.
    ///
    /// Checking the chain here (and not only at the first handshake) turns a misconfigured node
    /// into a clear startup error naming the file, instead of refused connections later.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<DagTls, TlsError> {
        let ca_der = load_cert(ca, "certificate")?;
        let cert_der = load_cert(cert, "certificate")?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::NoKey { path: key.to_path_buf() },
            other => read_error(key, other, "private key"),
        })?;
        let provider = provider();

        let anchor = webpki::anchor_from_trusted_cert(&ca_der)
            .map_err(|e| TlsError::BadCertificate { path: ca.to_path_buf(), why: e.to_string() })?;
        let node = first_dns_name(&cert_der)
            .map_err(|e| TlsError::BadCertificate { path: cert.to_path_buf(), why: e.to_string() })?
            .ok_or_else(|| TlsError::NoDnsName { path: cert.to_path_buf() })?;
        let ee = webpki::EndEntityCert::try_from(&cert_der).map_err(|e| {
            TlsError::BadCertificate { path: cert.to_path_buf(), why: e.to_string() }
        })?;
        let anchors = [anchor];
        for usage in [webpki::KeyUsage::server_auth(), webpki::KeyUsage::client_auth()] {
            ee.verify_for_usage(
                provider.signature_verification_algorithms.all,
                &anchors,
                &[],
                UnixTime::now(),
                usage,
                None,
                None,
            )
            .map_err(|e| TlsError::NotSignedByCa {
                cert: cert.to_path_buf(),
                ca: ca.to_path_buf(),
                why: e.to_string(),
            })?;
        }

        let mut roots = RootCertStore::empty();
        roots
            .add(ca_der)
            .map_err(|e| TlsError::BadCertificate { path: ca.to_path_buf(), why: e.to_string() })?;
        let roots = Arc::new(roots);
        let mismatch = |e: String| TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            why: e,
        };

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::BadCertificate { path: ca.to_path_buf(), why: e.to_string() })?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| mismatch(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert_der.clone()], key_der.clone_key())
            .map_err(|e| mismatch(e.to_string()))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| mismatch(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert_der], key_der)
            .map_err(|e| mismatch(e.to_string()))?;

        Ok(DagTls { node, server: Arc::new(server), client: Arc::new(client) })
    }

    /// This node's name in the DAG (the first DNS name of its certificate).
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// Server side: presents this node's certificate and requires a client certificate chaining
    /// to the DAG's CA.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    /// Client side: presents this node's certificate and accepts only a server certificate
    /// chaining to the DAG's CA and naming the dialled node.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }
}

/// The DAG node named by a peer's end-entity certificate (the first of `certs`, as rustls'
/// `peer_certificates()` returns them), or `None` if there is none or it names no node.
///
/// Only meaningful after the handshake verified the chain: the server uses it to know which
/// member called.
pub fn peer_node(certs: &[CertificateDer<'_>]) -> Option<String> {
    first_dns_name(certs.first()?).ok().flatten()
}
