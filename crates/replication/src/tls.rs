//! TLS for replication traffic (stub: being written).
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
}

/// This node's TLS identity in its DAG.
#[derive(Clone)]
pub struct DagTls {
    node: String,
}

impl std::fmt::Debug for DagTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DagTls").field("node", &self.node).finish_non_exhaustive()
    }
}

impl DagTls {
    pub fn load(_ca: &Path, _cert: &Path, _key: &Path) -> Result<DagTls, TlsError> {
        unimplemented!()
    }
    pub fn node_name(&self) -> &str {
        &self.node
    }
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        unimplemented!()
    }
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        unimplemented!()
    }
}

pub fn peer_node(_certs: &[rustls::pki_types::CertificateDer<'_>]) -> Option<String> {
    unimplemented!()
}
