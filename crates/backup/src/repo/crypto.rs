//! What the repository does to every object before storing it and after reading it, and how it
//! names chunks.
//!
//! One seam, used in exactly three places (chunks in packs, pack indexes, manifests) and for
//! chunk ids, so that an encrypted repository and a clear one run the same code.

use super::error::{RepoError, Result};

/// How a repository's objects are protected.
#[derive(Clone, Default)]
pub enum Crypto {
    /// Stored as they are; chunk ids are plain BLAKE3 (repositories of format 1, and new
    /// ones made with `--insecure-no-encryption`).
    #[default]
    Plain,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints key material.
        f.write_str(self.name())
    }
}

impl Crypto {
    /// The name shown in `backup list` and stored in `repository.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Crypto::Plain => "none",
        }
    }

    /// The id of a chunk with content `data`.
    pub fn chunk_id(&self, data: &[u8]) -> blake3::Hash {
        match self {
            Crypto::Plain => blake3::hash(data),
        }
    }

    /// A new hasher of chunk ids, for callers that feed content in pieces.
    pub fn id_hasher(&self) -> blake3::Hasher {
        match self {
            Crypto::Plain => blake3::Hasher::new(),
        }
    }

    /// Protects an object's bytes for storage.
    pub fn seal(&self, plain: Vec<u8>) -> Vec<u8> {
        match self {
            Crypto::Plain => plain,
        }
    }

    /// Checks and opens stored bytes; `object` names the object for the error.
    pub fn open(&self, object: &str, stored: Vec<u8>) -> Result<Vec<u8>> {
        let _ = object;
        match self {
            Crypto::Plain => Ok(stored),
        }
    }

    /// How many bytes [`Crypto::seal`] adds to an object.
    pub fn overhead(&self) -> usize {
        match self {
            Crypto::Plain => 0,
        }
    }
}

#[allow(dead_code)] // Used by the keyed variant.
fn authentication_failed(object: &str) -> RepoError {
    RepoError::Authentication { object: object.into() }
}
