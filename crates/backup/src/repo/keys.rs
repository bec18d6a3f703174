//! Key files: the repository's master key, wrapped under passwords.
//!
//! Each `keys/<uuid>` is one password's way in: a JSON object with who made it and when, the
//! Argon2id parameters and salt (stored with the key, so that they can be raised for new keys
//! without breaking old ones), and the 64-byte master key sealed with XChaCha20-Poly1305 under
//! the key Argon2id derives from the password. Several key files wrap the same master key, so
//! that a password can be added or retired without re-encrypting a byte of data. The wrap
//! authenticates the repository's id too: a key file belongs to one repository, and a stray one
//! left by an interrupted `init` opens nothing.
//!
//! A key file also carries a BLAKE3 of its other fields: a damaged file must be told apart
//! from a wrong password (the wrapped key alone cannot tell them apart).

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::backend::Backend;
use super::crypto::{MasterKey, open_with, seal_with};
use super::error::{IoContext, RepoError, Result};

/// The directory of key files.
pub const KEYS_DIR: &str = "keys";

/// A password; wiped from memory when dropped and never printed.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(p: impl Into<String>) -> Self {
        Self(Zeroizing::new(p.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The password a password file holds: its one line, without the line end (`\n` or
    /// `\r\n`). One rule for the command line and the node alike.
    pub fn read_file(file: &std::path::Path) -> std::io::Result<Self> {
        let text = Zeroizing::new(std::fs::read_to_string(file)?);
        let p = text.strip_suffix('\n').unwrap_or(&text);
        Ok(Self::new(p.strip_suffix('\r').unwrap_or(p)))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Argon2id cost parameters of a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a quarter of a second per attempt on a server, paid
    /// once per command, and expensive for anyone guessing passwords on stolen key files.
    fn default() -> Self {
        Self { m_kib: 64 * 1024, t: 3, p: 1 }
    }
}

impl KdfParams {
    /// The cheapest parameters Argon2 accepts: for tests only, where each open derives a key.
    pub fn insecure_fast() -> Self {
        Self { m_kib: 8, t: 1, p: 1 }
    }
}

/// What a key file says about itself (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub id: Uuid,
    pub created_unix_ms: u64,
    pub host: String,
    pub user: String,
    /// Whether this key opened the repository now.
    pub current: bool,
}

#[derive(Serialize, Deserialize)]
struct KeyBody {
    created_unix_ms: u64,
    host: String,
    user: String,
    kdf: String,
    #[serde(flatten)]
    params: KdfParams,
    /// Hex.
    salt: String,
    /// Hex of nonce ‖ sealed master key ‖ tag.
    wrapped: String,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    #[serde(flatten)]
    body: KeyBody,
    /// Hex BLAKE3 of the body's JSON.
    blake3: String,
}

fn key_name(id: &Uuid) -> String {
    format!("{KEYS_DIR}/{id}")
}

fn derive(password: &str, salt: &[u8], p: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params =
        Params::new(p.m_kib, p.t, p.p, Some(32)).map_err(|e| RepoError::BadKdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password.as_bytes(), salt, out.as_mut())
        .map_err(|e| RepoError::BadKdf(e.to_string()))?;
    Ok(out)
}

/// Writes a new key file wrapping `master` under `password`; returns its id.
pub(crate) fn write_key(
    backend: &dyn Backend,
    repo_id: &Uuid,
    master: &MasterKey,
    password: &str,
    kdf: KdfParams,
) -> Result<Uuid> {
    let salt: [u8; 16] = rand::random();
    let kek = derive(password, &salt, kdf)?;
    let wrapped = seal_with(&kek, repo_id.as_bytes(), master.to_bytes().as_ref());
    let body = KeyBody {
        created_unix_ms: events::now_ms(),
        host: host_name(),
        user: std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        kdf: "argon2id".into(),
        params: kdf,
        salt: hex(&salt),
        wrapped: hex(&wrapped),
    };
    #[allow(clippy::expect_used)] // Plain fields: serialising cannot fail.
    let sum = blake3::hash(&serde_json::to_vec(&body).expect("key body serialises"));
    let file = KeyFile { body, blake3: sum.to_hex().to_string() };
    #[allow(clippy::expect_used)]
    let bytes = serde_json::to_vec_pretty(&file).expect("key file serialises");
    let id = Uuid::new_v4();
    let key = key_name(&id);
    backend.put(&key, &bytes).ctx("writing key file", backend.locate(&key))?;
    Ok(id)
}

/// Reads key file `id` and checks its integrity (not the password).
fn read_key(backend: &dyn Backend, id: &Uuid) -> Result<KeyBody> {
    let key = key_name(id);
    let path = backend.locate(&key);
    let bytes = backend.get(&key).ctx("reading key file", &path)?;
    let corrupt = |why: String| RepoError::CorruptKey { path: path.clone(), why };
    let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    #[allow(clippy::expect_used)]
    let sum = blake3::hash(&serde_json::to_vec(&file.body).expect("key body serialises"));
    if sum.to_hex().as_str() != file.blake3 {
        return Err(corrupt("its checksum does not match its content".into()));
    }
    if file.body.kdf != "argon2id" {
        return Err(corrupt(format!("unknown key derivation {:?}", file.body.kdf)));
    }
    // A key file is not trusted to make every opening allocate or compute without bound.
    let p = file.body.params;
    if p.m_kib > 4 << 20 || p.t > 64 || p.p > 64 {
        return Err(corrupt(format!("implausible Argon2id parameters {p:?}")));
    }
    Ok(file.body)
}

/// The ids of the key files.
pub(crate) fn key_ids(backend: &dyn Backend) -> Result<Vec<Uuid>> {
    let mut ids: Vec<Uuid> = backend
        .list(KEYS_DIR)
        .ctx("listing", backend.locate(KEYS_DIR))?
        .into_iter()
        .filter_map(|o| Uuid::parse_str(&o.name).ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Tries every key file with `password`; returns the master key and the id of the key file
/// that opened it. A damaged key file is skipped while another opens; if none opens, the
/// damage is the error (it names the file), else [`RepoError::WrongPassword`].
pub(crate) fn unlock(
    backend: &dyn Backend,
    repo_id: &Uuid,
    password: &str,
) -> Result<(Arc<MasterKey>, Uuid)> {
    let mut damage = None;
    for id in key_ids(backend)? {
        let body = match read_key(backend, &id) {
            Ok(b) => b,
            Err(e @ RepoError::CorruptKey { .. }) => {
                tracing::warn!(error = %e, "skipping a damaged key file");
                damage.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let path = backend.locate(&key_name(&id));
        let corrupt = |why: &str| RepoError::CorruptKey { path: path.clone(), why: why.into() };
        let salt = unhex(&body.salt).ok_or_else(|| corrupt("salt is not hex"))?;
        let wrapped = unhex(&body.wrapped).ok_or_else(|| corrupt("wrapped key is not hex"))?;
        let kek = derive(password, &salt, body.params)?;
        let Some(plain) = open_with(&kek, repo_id.as_bytes(), wrapped).map(Zeroizing::new) else {
            continue;
        };
        let Ok(bytes) = <&[u8; 64]>::try_from(plain.as_slice()) else {
            damage.get_or_insert(corrupt("the wrapped key is not 64 bytes"));
            continue;
        };
        return Ok((Arc::new(MasterKey::from_bytes(bytes)), id));
    }
    Err(damage.unwrap_or_else(|| RepoError::WrongPassword { path: backend.locate("") }))
}

/// Describes every key file; `current` marks the one in use.
pub(crate) fn list_keys(backend: &dyn Backend, current: Option<Uuid>) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    for id in key_ids(backend)? {
        let b = read_key(backend, &id)?;
        out.push(KeyInfo {
            id,
            created_unix_ms: b.created_unix_ms,
            host: b.host,
            user: b.user,
            current: Some(id) == current,
        });
    }
    out.sort_by_key(|k| (k.created_unix_ms, k.id));
    Ok(out)
}

/// Removes key file `id_or_prefix`, refusing the key in use and the last key.
pub(crate) fn remove_key(
    backend: &dyn Backend,
    current: Option<Uuid>,
    id_or_prefix: &str,
) -> Result<Uuid> {
    let want = id_or_prefix.trim().to_ascii_lowercase();
    let ids = key_ids(backend)?;
    let matches: Vec<Uuid> = ids
        .iter()
        .copied()
        .filter(|id| !want.is_empty() && id.to_string().starts_with(&want))
        .collect();
    let [id] = matches.as_slice() else {
        return Err(RepoError::KeyNotFound(id_or_prefix.into()));
    };
    if Some(*id) == current {
        return Err(RepoError::KeyKept {
            id: id.to_string(),
            why: "it is the key this command opened the repository with; open with another",
        });
    }
    if ids.len() <= 1 {
        return Err(RepoError::KeyKept {
            id: id.to_string(),
            why: "it is the last key: without it the repository cannot be opened",
        });
    }
    let key = key_name(id);
    backend.delete(&key).ctx("removing key file", backend.locate(&key))?;
    backend.sync_dir(KEYS_DIR).ctx("syncing", backend.locate(KEYS_DIR))?;
    Ok(*id)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}
