//! The DAG's certificate authority.
//!
//! `shadowcopy dag init` makes one CA per DAG and one certificate per member node; replication
//! traffic is mutual TLS against that CA only (see [`crate::tls`]), so a node of another DAG is
//! refused. Layout under the PKI directory:
//!
//! ```text
//! <dir>/ca.pem               the DAG's CA certificate
//! <dir>/ca.key               its private key (0600) — keep it to add members later
//! <dir>/<node>/tls/ca.pem    copy of the CA certificate, for the node
//! <dir>/<node>/tls/node.pem  the node's certificate: CN = node, DNS SAN = node
//! <dir>/<node>/tls/node.key  the node's private key (0600)
//! ```
//!
//! Files are created with `create_new`: a DAG's CA or a node's certificate is never
//! overwritten (re-keying a DAG would cut its members off each other).
//!
//! Keys are ECDSA P-256 (rcgen's default). Certificates are valid from the start of last year
//! (tolerates clocks somewhat behind) for ten years.
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, UnixTime};

/// Longest node name: one DNS label.
pub const MAX_NODE_NAME: usize = 63;

/// Why the DAG's PKI cannot be written. Variants name the path or the name at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Refusing to overwrite an existing CA or node certificate.
    #[error(
        "{path} already exists: refusing to overwrite it (a DAG's CA and its nodes' certificates are never replaced)"
    )]
    Exists { path: PathBuf },
    /// A node name that cannot name a node (and be a TLS server name).
    #[error("bad node name {name:?}: {why}")]
    BadNodeName { name: String, why: String },
    /// The same node twice in one DAG.
    #[error("node {name:?} is listed twice")]
    DuplicateNode { name: String },
    /// A DAG name that cannot go into the CA's name.
    #[error("bad DAG name {name:?}: {why}")]
    BadDagName { name: String, why: String },
    /// File system error on a path.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The existing CA files cannot be used to issue certificates.
    #[error("{path}: {why}")]
    BadCa { path: PathBuf, why: String },
    /// rcgen failed to make a key or certificate.
    #[error("cannot generate {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
}

/// The TLS files of one node, as written under `<dir>/<node>/tls/`.
#[derive(Debug, Clone)]
pub struct NodeCerts {
    pub node: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Checks that `name` can be a node name: a lowercase DNS label (it is the certificate's DNS
/// name and the TLS server name the other nodes dial), which also makes it a safe directory name.
pub fn validate_node_name(name: &str) -> Result<(), PkiError> {
    let bad = |why: &str| PkiError::BadNodeName { name: name.to_owned(), why: why.to_owned() };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_NODE_NAME {
        return Err(bad(&format!("longer than {MAX_NODE_NAME} characters")));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(bad("only a-z, 0-9 and '-' are allowed"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("must not start or end with '-'"));
    }
    if DnsName::try_from(name).is_err() {
        return Err(bad("not usable as a TLS server name (all digits?)"));
    }
    Ok(())
}

/// Writes a new DAG's CA and one certificate per node under `dir` (layout in the module doc).
///
/// Refuses if `<dir>/ca.pem` exists: a DAG's CA is never overwritten. All names are checked
/// before anything is written.
pub fn write_dag_pki(dir: &Path, dag: &str, nodes: &[String]) -> Result<Vec<NodeCerts>, PkiError> {
    let ca_pem = dir.join("ca.pem");
    if ca_pem.exists() {
        return Err(PkiError::Exists { path: ca_pem });
    }
    if dag.is_empty() || dag.chars().any(char::is_control) {
        return Err(PkiError::BadDagName {
            name: dag.to_owned(),
            why: "empty or with control characters".to_owned(),
        });
    }
    for (i, node) in nodes.iter().enumerate() {
        validate_node_name(node)?;
        if nodes[..i].contains(node) {
            return Err(PkiError::DuplicateNode { name: node.clone() });
        }
    }
    for node in nodes {
        let cert = node_dir(dir, node).join("node.pem");
        if cert.exists() {
            return Err(PkiError::Exists { path: cert });
        }
    }

    let ca_key = KeyPair::generate()
        .map_err(|source| PkiError::Generate { what: "the CA key".to_owned(), source })?;
    let ca_params = ca_params(ca_name(&format!("Shadowcopy DAG {dag} CA")));
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|source| PkiError::Generate { what: "the CA certificate".to_owned(), source })?;
    let ca_cert_pem = ca_cert.pem();
    create_dir(dir)?;
    write_new(&ca_pem, ca_cert_pem.as_bytes(), 0o644)?;
    write_new(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes(), 0o600)?;

    let issuer = Issuer::new(ca_params, ca_key);
    nodes.iter().map(|node| issue_node(dir, node, &issuer, &ca_cert_pem, ca_cert.der())).collect()
}

/// Issues one more node certificate from the DAG CA at `<dir>/ca.pem` + `<dir>/ca.key` (a member
/// added after `dag init`). Refuses if the node already has a certificate.
pub fn add_node(dir: &Path, node: &str) -> Result<NodeCerts, PkiError> {
    validate_node_name(node)?;
    let ca_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    let cert = node_dir(dir, node).join("node.pem");
    if cert.exists() {
        return Err(PkiError::Exists { path: cert });
    }
    let ca_cert_pem = fs::read_to_string(&ca_path)
        .map_err(|source| PkiError::Io { path: ca_path.clone(), source })?;
    let ca_der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes()).map_err(|e| {
        PkiError::BadCa { path: ca_path.clone(), why: format!("not a PEM certificate ({e})") }
    })?;
    let key_pem = fs::read_to_string(&key_path)
        .map_err(|source| PkiError::Io { path: key_path.clone(), source })?;
    let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadCa {
        path: key_path.clone(),
        why: format!("not a PEM private key ({e})"),
    })?;
    let subject =
        ca_subject(&ca_der).map_err(|why| PkiError::BadCa { path: ca_path.clone(), why })?;
    // The issuer is rebuilt from the CA certificate's subject and the CA key; issue_node checks
    // the new certificate against the CA, so a CA key that is not the certificate's is caught.
    let issuer = Issuer::new(ca_params(subject), ca_key);
    issue_node(dir, node, &issuer, &ca_cert_pem, &ca_der)
}

fn node_dir(dir: &Path, node: &str) -> PathBuf {
    dir.join(node).join("tls")
}

fn ca_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// The CA's parameters: also what an [`Issuer`] needs (its name, key usages, key-id method).
fn ca_params(dn: DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    // Path length 0: the CA signs node certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    params
}

fn set_validity(params: &mut CertificateParams) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Mean Gregorian year; being off by a day near New Year does not matter with these margins.
    let year = 1970 + i32::try_from(secs / 31_556_952).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
}

fn issue_node(
    dir: &Path,
    node: &str,
    issuer: &Issuer<'_, KeyPair>,
    ca_cert_pem: &str,
    ca_der: &CertificateDer<'_>,
) -> Result<NodeCerts, PkiError> {
    let generate =
        |what: &str, source| PkiError::Generate { what: format!("{what} of node {node}"), source };
    let key = KeyPair::generate().map_err(|e| generate("the key", e))?;
    let mut params =
        CertificateParams::new(vec![node.to_owned()]).map_err(|e| generate("the name", e))?;
    params.distinguished_name = ca_name(node);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    let cert = params.signed_by(&key, issuer).map_err(|e| generate("the certificate", e))?;

    let tls = node_dir(dir, node);
    let paths = NodeCerts {
        node: node.to_owned(),
        ca: tls.join("ca.pem"),
        cert: tls.join("node.pem"),
        key: tls.join("node.key"),
    };
    verify_issued(cert.der(), ca_der).map_err(|why| PkiError::BadCa {
        path: dir.join("ca.pem"),
        why: format!("the certificate issued for node {node} does not verify against it: {why}"),
    })?;
    create_dir(&tls)?;
    write_new(&paths.cert, cert.pem().as_bytes(), 0o644)?;
    write_new(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
    // The node's copy of the CA certificate is the last file: a node directory with it is
    // complete.
    write_new(&paths.ca, ca_cert_pem.as_bytes(), 0o644)?;
    Ok(paths)
}

/// Checks a freshly issued node certificate against the CA exactly as a TLS peer will.
fn verify_issued(cert: &CertificateDer<'_>, ca: &CertificateDer<'_>) -> Result<(), String> {
    let anchors = [webpki::anchor_from_trusted_cert(ca).map_err(|e| e.to_string())?];
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    for usage in [webpki::KeyUsage::server_auth(), webpki::KeyUsage::client_auth()] {
        ee.verify_for_usage(algs.all, &anchors, &[], UnixTime::now(), usage, None, None)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The subject of a CA certificate made by [`write_dag_pki`], as an rcgen name.
///
/// rcgen can only parse certificates with its (heavy) x509-parser feature, so this reads the
/// raw subject that rustls-webpki exposes: a sequence of single-attribute sets, of which pki
/// writes exactly one, the UTF-8 common name.
fn ca_subject(ca: &CertificateDer<'_>) -> Result<DistinguishedName, String> {
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const UTF8_STRING: u8 = 0x0c;
    let not_ours = || "the CA's subject is not the single common name shadowcopy writes".to_owned();

    let cert =
        webpki::EndEntityCert::try_from(ca).map_err(|e| format!("not a certificate: {e}"))?;
    let mut subject = cert.subject();
    let mut dn = DistinguishedName::new();
    while !subject.is_empty() {
        let (set, rest) = der_tlv(subject, SET).ok_or_else(not_ours)?;
        subject = rest;
        let (attr, rest) = der_tlv(set, SEQUENCE).ok_or_else(not_ours)?;
        if !rest.is_empty() {
            return Err(not_ours());
        }
        let (oid, rest) = der_tlv(attr, OID).ok_or_else(not_ours)?;
        let (value, rest) = der_tlv(rest, UTF8_STRING).ok_or_else(not_ours)?;
        if oid != CN_OID || !rest.is_empty() || dn.get(&DnType::CommonName).is_some() {
            return Err(not_ours());
        }
        let cn = std::str::from_utf8(value).map_err(|_| not_ours())?;
        dn.push(DnType::CommonName, DnValue::Utf8String(cn.to_owned()));
    }
    if dn.get(&DnType::CommonName).is_none() {
        return Err(not_ours());
    }
    Ok(dn)
}

/// One DER element of tag `tag` at the start of `input`: (its content, what follows).
fn der_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn create_dir(path: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(path).map_err(|source| PkiError::Io { path: path.to_path_buf(), source })
}

/// Creates `path` (never overwriting) with `mode`, writes `bytes` and syncs.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::Exists { path: path.to_path_buf() }
        } else {
            PkiError::Io { path: path.to_path_buf(), source }
        }
    };
    let mut file =
        fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}
