//! What the repository does to every object before storing it and after reading it, and how it
//! names chunks.
//!
//! One seam, used in exactly three places (chunks in packs, pack indexes, manifests) and for
//! chunk ids, so that an encrypted repository and a clear one run the same code.
//!
//! An encrypted object is `nonce (24 random bytes) ‖ XChaCha20-Poly1305 ciphertext ‖ tag`.
//! Random 24-byte nonces never repeat in practice, so no nonce state has to be kept (several
//! backups write at once, from several machines). Chunk ids are BLAKE3 keyed with a second
//! secret key: plain hashes would let anyone holding a file test whether the repository holds
//! it, and would give the same ids in every repository.

use std::sync::Arc;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, Zeroizing};

use super::error::{RepoError, Result};

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The secret of an encrypted repository: the key that seals objects and the key of chunk ids.
/// Stored only wrapped (see [`super::keys`]); wiped from memory when dropped; never printed.
pub struct MasterKey {
    aead: [u8; 32],
    id: [u8; 32],
}

impl MasterKey {
    /// A new random master key, for a new repository.
    pub fn generate() -> Self {
        Self { aead: rand::random(), id: rand::random() }
    }

    /// The key from its 64 stored bytes (AEAD key, then chunk-id key).
    pub(crate) fn from_bytes(b: &[u8; 64]) -> Self {
        let mut k = Self { aead: [0; 32], id: [0; 32] };
        k.aead.copy_from_slice(&b[..32]);
        k.id.copy_from_slice(&b[32..]);
        k
    }

    /// The key's 64 bytes, for wrapping; wiped when dropped.
    pub(crate) fn to_bytes(&self) -> Zeroizing<[u8; 64]> {
        let mut b = Zeroizing::new([0u8; 64]);
        b[..32].copy_from_slice(&self.aead);
        b[32..].copy_from_slice(&self.id);
        b
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.aead.zeroize();
        self.id.zeroize();
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// How a repository's objects are protected.
#[derive(Clone, Default)]
pub enum Crypto {
    /// Stored as they are; chunk ids are plain BLAKE3 (repositories of format 1, and new
    /// ones made with `--insecure-no-encryption`).
    #[default]
    Plain,
    /// Sealed with XChaCha20-Poly1305; chunk ids are keyed BLAKE3. Shared, not copied, by
    /// the threads of a backup, so that the key exists once in memory.
    Keyed(Arc<MasterKey>),
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
            Crypto::Keyed(_) => "xchacha20-poly1305",
        }
    }

    /// Whether objects are encrypted.
    pub fn is_encrypted(&self) -> bool {
        matches!(self, Crypto::Keyed(_))
    }

    /// The id of a chunk with content `data`.
    pub fn chunk_id(&self, data: &[u8]) -> blake3::Hash {
        match self {
            Crypto::Plain => blake3::hash(data),
            Crypto::Keyed(k) => blake3::keyed_hash(&k.id, data),
        }
    }

    /// A new hasher of chunk ids, for callers that feed content in pieces.
    pub fn id_hasher(&self) -> blake3::Hasher {
        match self {
            Crypto::Plain => blake3::Hasher::new(),
            Crypto::Keyed(k) => blake3::Hasher::new_keyed(&k.id),
        }
    }

    /// Protects an object's bytes for storage.
    pub fn seal(&self, plain: Vec<u8>) -> Vec<u8> {
        match self {
            Crypto::Plain => plain,
            Crypto::Keyed(k) => seal_with(&k.aead, b"", &plain),
        }
    }

    /// Checks and opens stored bytes; `object` names the object for the error.
    pub fn open(&self, object: &str, stored: Vec<u8>) -> Result<Vec<u8>> {
        match self {
            Crypto::Plain => Ok(stored),
            Crypto::Keyed(k) => {
                open_with(&k.aead, b"", stored).ok_or_else(|| authentication_failed(object))
            }
        }
    }

    /// How many bytes [`Crypto::seal`] adds to an object.
    pub fn overhead(&self) -> usize {
        match self {
            Crypto::Plain => 0,
            Crypto::Keyed(_) => NONCE_LEN + TAG_LEN,
        }
    }
}

/// Seals `plain` under `key` with a fresh random nonce: `nonce ‖ ciphertext ‖ tag`.
/// `aad` is authenticated but not stored.
pub(crate) fn seal_with(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let cipher = XChaCha20Poly1305::new(key.into());
    // Encryption fails only for messages longer than 256 GiB; objects are at most a pack.
    #[allow(clippy::expect_used)]
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..])
        .expect("object shorter than the AEAD's limit");
    out.extend_from_slice(&tag);
    out
}

/// Opens what [`seal_with`] made; `None` if it does not authenticate under `key`.
pub(crate) fn open_with(key: &[u8; 32], aad: &[u8], mut stored: Vec<u8>) -> Option<Vec<u8>> {
    if stored.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let body_end = stored.len() - TAG_LEN;
    let tag = Tag::clone_from_slice(&stored[body_end..]);
    let nonce = XNonce::clone_from_slice(&stored[..NONCE_LEN]);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher.decrypt_in_place_detached(&nonce, aad, &mut stored[NONCE_LEN..body_end], &tag).ok()?;
    stored.truncate(body_end);
    stored.drain(..NONCE_LEN);
    Some(stored)
}

fn authentication_failed(object: &str) -> RepoError {
    RepoError::Authentication { object: object.into() }
}
