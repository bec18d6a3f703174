//! The DAG's certificate authority (stub: being written).
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone)]
pub struct NodeCerts {
    pub node: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn write_dag_pki(
    _dir: &Path,
    _dag: &str,
    _nodes: &[String],
) -> Result<Vec<NodeCerts>, PkiError> {
    unimplemented!()
}
