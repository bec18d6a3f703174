//! The backup repository: a directory of deduplicated, compressed, verifiable backup sets.
//!
//! Layout under the repository root (any [`volume::FileSystem`]; a host directory in
//! production, an in-memory power-loss file system in crash tests):
//!
//! ```text
//! repository.json          format, id, chunk size, compression
//! packs/<uuid>.pack        chunks (compressed unless that does not pay), back to back
//! packs/<uuid>.idx         the pack's index, written after the pack is synced
//! index/chunks             every pack index in one object, sorted (a cache: see below)
//! sets/<uuid>.manifest     one backup set: JSON line + BLAKE3 line, published atomically
//! keys/<uuid>              the master key wrapped under one password (encrypted repositories)
//! ```
//!
//! Format 2 adds encryption: `repository.json` says `"encryption": "xchacha20-poly1305"` (or
//! `"none"`), and then packs' chunks, indexes and manifests are sealed (see [`crypto`]) and
//! chunk ids are keyed hashes. Format 1 repositories (no such field) are read as unencrypted.
//!
//! Format 3 adds the `compression` setting (see [`codec`]): a chunk's index entry names its
//! codec (zstd, lz4 or none; formats 1 and 2 knew zstd and none, with the same bytes), and a
//! file's identity in a manifest is a hash over its chunk list ([`FileEntry::chunks_blake3`])
//! rather than a second hash of every byte. Formats 1 and 2 (zstd at `zstd_level`, whole-file
//! hashes) open and read as they are.
//!
//! `index/chunks` ([`chunk_index`]) holds the entries of many packs' indexes at once, with the
//! list of packs it covers, so that opening a repository of many packs reads one object rather
//! than one `.idx` per pack. The per-pack indexes stay the truth: the file is trusted only for
//! packs whose `.idx` is still listed (a prune removes a pack's index before the pack, and pack
//! ids are never reused, so a listed index means the pack and the entries the file holds for
//! it are there), packs it does not cover are read from their `.idx`, and a file that is
//! missing, damaged or of another repository is ignored with a warning. Builds that do not
//! know it open the repository as before, so the format number did not change.
//!
//! Content is addressed by the BLAKE3 hash of fixed-size chunks (1 MiB by default). Fixed
//! chunks suit what is backed up here: database files change page by page in place, and logs
//! are append-only files of fixed size, so an unchanged region always falls in the same
//! chunk. A chunk already in the repository is never stored twice, which is what makes a
//! repeated full backup of a mostly unchanged database cheap.
//!
//! A set appears only when it is complete: its chunks are synced and indexed first, then its
//! manifest is renamed into `sets/`. An interrupted backup leaves at most an unindexed pack,
//! which is never read and never mistaken for a set.

pub mod backend;
pub mod chunk_index;
pub mod codec;
pub mod crypto;
mod error;
pub mod keys;
pub mod location;
pub mod lock;
mod manifest;
mod pack;
pub mod prune;
pub mod s3;
mod stored;
pub mod transfer;
mod writer;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use volume::HostFs;
use volume::fs::FsRef;

pub use backend::{Backend, LocalBackend, ObjectInfo};
pub use chunk_index::{ChunkIndex, ChunkIndexBuilder};
pub use codec::{BadCompression, Codec, Compression};
pub use crypto::Crypto;
pub use error::{RepoError, Result};
pub use keys::{KdfParams, KeyInfo, Password};
pub use location::RepoLocation;
pub use lock::{LockInfo, RepoLock};
pub use manifest::{
    BackupSet, ChunkListHasher, ChunkRef, FileEntry, FileRole, LogRange, MANIFEST_FORMAT,
};
pub use pack::{ChunkLoc, encode_index as encode_pack_index, load_index as load_pack_index};
pub use s3::{S3Backend, S3Settings};
pub use stored::{StoredFiles, open_stored};
pub use writer::{ChunkCheck, SetMeta, SetWriter};

use error::IoContext;

/// The repository format this build writes (it reads this and every older one).
pub const REPO_FORMAT: u32 = 3;
const CONFIG_FILE: &str = "repository.json";
/// Every pack index in one object (see the module's documentation).
pub const INDEX_FILE: &str = "index/chunks";
/// An open that reads at least this many pack indexes the index file does not cover (and at
/// least a 32nd of those it covers) rewrites the file: below that, reading the few `.idx`
/// costs less than rewriting an index of every chunk.
const CONSOLIDATE_AT: usize = 64;

/// Settings fixed when a repository is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: u32,
    pub id: Uuid,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// zstd level of new chunks given to zstd (all of them in format 1 and 2 repositories).
    pub zstd_level: i32,
    pub created_unix_ms: u64,
    /// How objects are protected; absent (format 1) means not at all.
    #[serde(default)]
    pub encryption: Encryption,
    /// How new chunks are compressed; absent (format 1 and 2) means zstd at `zstd_level`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
}

impl RepoConfig {
    /// How new chunks are compressed: the setting, or what repositories without one did.
    pub fn compression_setting(&self) -> Compression {
        self.compression.unwrap_or(Compression::Zstd(self.zstd_level))
    }
}

/// How a repository's objects are protected, as `repository.json` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    #[default]
    #[serde(rename = "none")]
    None,
    #[serde(rename = "xchacha20-poly1305")]
    XChaCha20Poly1305,
}

/// Options for [`Repository::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunk_size: u32,
    /// The zstd level of chunks `auto` gives to zstd (a `zstd:LEVEL` setting has its own).
    pub zstd_level: i32,
    /// How new chunks are compressed (see [`Compression`] for the default and why).
    pub compression: Compression,
    /// The first key's password: `Some` makes an encrypted repository, `None` a clear one
    /// (callers that create repositories for people decide which is the default).
    pub password: Option<Password>,
    /// Argon2id cost of the first key.
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunk_size: 1 << 20,
            zstd_level: codec::DEFAULT_ZSTD_LEVEL,
            compression: Compression::default(),
            password: None,
            kdf: KdfParams::default(),
        }
    }
}

/// Counts of what a repository holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RepoStats {
    pub sets: usize,
    pub chunks: usize,
    /// Bytes of chunk data as stored (after compression).
    pub stored_bytes: u64,
    /// Bytes of chunk data before compression.
    pub raw_bytes: u64,
}

/// An open repository. Shareable across threads: several backups may write sets at once.
pub struct Repository {
    backend: Arc<dyn Backend>,
    crypto: Crypto,
    /// The key file that opened the repository (encrypted repositories).
    key_id: Option<Uuid>,
    config: RepoConfig,
    index: RwLock<ChunkIndex>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("at", &self.backend.locate(""))
            .field("id", &self.config.id)
            .field("crypto", &self.crypto)
            .finish()
    }
}

impl Repository {
    /// Creates a new repository at `root` of `fs` (which may exist but must not hold one).
    pub fn init(fs: FsRef, root: impl Into<PathBuf>, opts: InitOptions) -> Result<Self> {
        let root = root.into();
        // Refused before anything is created: a failed init leaves nothing behind.
        validate_init(&opts, &root.join(CONFIG_FILE))?;
        if fs.exists(&root.join(CONFIG_FILE)).ctx("checking", root.join(CONFIG_FILE))? {
            return Err(RepoError::AlreadyExists { path: root });
        }
        for dir in ["packs", "sets"] {
            fs.create_dir_all(&root.join(dir)).ctx("creating", root.join(dir))?;
            fs.sync_dir(&root.join(dir)).ctx("syncing", root.join(dir))?;
        }
        fs.sync_dir(&root).ctx("syncing", &root)?;
        // The root's own name must survive a power loss too.
        let parent = root.parent().map(Path::to_path_buf).unwrap_or_default();
        fs.sync_dir(&parent).ctx("syncing", &parent)?;
        Self::init_in(Arc::new(LocalBackend::new(fs, root)), opts)
    }

    /// Creates a new repository in `backend`, which must not hold one.
    pub fn init_in(backend: Arc<dyn Backend>, opts: InitOptions) -> Result<Self> {
        if backend.exists(CONFIG_FILE).ctx("checking", backend.locate(CONFIG_FILE))? {
            return Err(RepoError::AlreadyExists { path: backend.locate("") });
        }
        validate_init(&opts, &backend.locate(CONFIG_FILE))?;
        let mut config = RepoConfig {
            format: REPO_FORMAT,
            id: Uuid::new_v4(),
            chunk_size: opts.chunk_size,
            zstd_level: match opts.compression {
                Compression::Zstd(level) => level,
                _ => opts.zstd_level,
            },
            created_unix_ms: events::now_ms(),
            encryption: Encryption::None,
            compression: Some(opts.compression),
        };
        let (mut crypto, mut key_id) = (Crypto::Plain, None);
        if let Some(password) = &opts.password {
            // The key before the configuration: a crash between them leaves no repository,
            // and the stray key (bound to this repository's id) opens no other.
            let master = Arc::new(crypto::MasterKey::generate());
            let id = keys::write_key(
                backend.as_ref(),
                &config.id,
                &master,
                password.as_str(),
                opts.kdf,
            )?;
            config.encryption = Encryption::XChaCha20Poly1305;
            (crypto, key_id) = (Crypto::Keyed(master), Some(id));
        }
        #[allow(clippy::expect_used)] // Plain fields: serialising cannot fail.
        let bytes = serde_json::to_vec_pretty(&config).expect("config serialises");
        backend.put(CONFIG_FILE, &bytes).ctx("writing", backend.locate(CONFIG_FILE))?;
        Ok(Self { backend, crypto, key_id, config, index: RwLock::default() })
    }

    /// Opens an existing repository and loads its chunk index.
    pub fn open(fs: FsRef, root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_in(Arc::new(LocalBackend::new(fs, root)))
    }

    /// Opens the unencrypted repository in `backend` and loads its chunk index.
    pub fn open_in(backend: Arc<dyn Backend>) -> Result<Self> {
        Self::open_in_with(backend, None)
    }

    /// Opens the repository in `backend` with `password` (needed if it is encrypted) and
    /// loads its chunk index.
    pub fn open_in_with(backend: Arc<dyn Backend>, password: Option<&str>) -> Result<Self> {
        let cfg_path = backend.locate(CONFIG_FILE);
        let bytes = match backend.get(CONFIG_FILE) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RepoError::NotARepository { path: backend.locate("") });
            }
            Err(e) => return Err(RepoError::Io { op: "reading", path: cfg_path, source: e }),
        };
        let config: RepoConfig = serde_json::from_slice(&bytes)
            .map_err(|e| RepoError::CorruptConfig { path: cfg_path.clone(), why: e.to_string() })?;
        if config.format == 0 || config.format > REPO_FORMAT {
            return Err(RepoError::UnsupportedFormat {
                found: config.format,
                supported: REPO_FORMAT,
            });
        }
        let (crypto, key_id) = match (config.encryption, password) {
            (Encryption::None, _) => (Crypto::Plain, None),
            (Encryption::XChaCha20Poly1305, None) => {
                return Err(RepoError::PasswordRequired { path: backend.locate("") });
            }
            (Encryption::XChaCha20Poly1305, Some(p)) => {
                let (master, id) = keys::unlock(backend.as_ref(), &config.id, p)?;
                (Crypto::Keyed(master), Some(id))
            }
        };
        let repo = Self { backend, crypto, key_id, config, index: RwLock::default() };
        repo.load_index()?;
        Ok(repo)
    }

    /// Opens the repository at `root`, creating it with default options if there is none.
    pub fn open_or_init(fs: FsRef, root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        match Self::open(fs.clone(), root.clone()) {
            Err(RepoError::NotARepository { .. }) => Self::init(fs, root, InitOptions::default()),
            other => other,
        }
    }

    /// Opens the repository in host directory `path`, creating nothing: a path that does not
    /// exist, or holds no repository, is [`RepoError::NotARepository`] naming `path` itself
    /// (a read-only command must not leave a directory behind, and its error must say which
    /// path it looked at).
    pub fn open_host(path: &Path) -> Result<Self> {
        Self::open_host_with(path, None)
    }

    /// [`Repository::open_host`] with a password (needed if the repository is encrypted).
    pub fn open_host_with(path: &Path, password: Option<&str>) -> Result<Self> {
        if !path.is_dir() {
            return Err(RepoError::NotARepository { path: path.to_path_buf() });
        }
        let fs: FsRef = Arc::new(HostFs::new(path).ctx("opening", path)?);
        // Errors name the host path, not a path relative to the repository.
        let backend = Arc::new(LocalBackend::new(fs, "").shown_as(path));
        Self::open_in_with(backend, password).map_err(|e| match e {
            RepoError::NotARepository { .. } => {
                RepoError::NotARepository { path: path.to_path_buf() }
            }
            e => e,
        })
    }

    /// Opens the repository in host directory `path`, or creates one there (and the
    /// directory) with default options. Callers check their request first: this creates.
    pub fn open_or_init_host(path: &Path) -> Result<Self> {
        Self::open_or_init_host_with(path, None)
    }

    /// [`Repository::open_or_init_host`] with a password: an existing encrypted repository
    /// is opened with it, and a new repository is encrypted under it (clear without one).
    pub fn open_or_init_host_with(path: &Path, password: Option<&str>) -> Result<Self> {
        match Self::open_host_with(path, password) {
            Err(RepoError::NotARepository { .. }) => {
                let fs: FsRef = Arc::new(HostFs::new(path).ctx("creating", path)?);
                let opts =
                    InitOptions { password: password.map(Password::new), ..Default::default() };
                Self::init(fs, "", opts)
            }
            other => other,
        }
    }

    /// Whether the repository's objects are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.crypto.is_encrypted()
    }

    /// The key file this repository was opened (or created) with, if encrypted.
    pub fn key_id(&self) -> Option<Uuid> {
        self.key_id
    }

    /// Adds a key file wrapping this repository's master key under `password`.
    pub fn add_key(&self, password: &str, kdf: KdfParams) -> Result<Uuid> {
        let Crypto::Keyed(master) = &self.crypto else {
            return Err(RepoError::NotEncrypted { path: self.location() });
        };
        keys::write_key(self.backend.as_ref(), &self.config.id, master, password, kdf)
    }

    /// The key files, oldest first; the one in use is marked `current`.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        if !self.is_encrypted() {
            return Err(RepoError::NotEncrypted { path: self.location() });
        }
        keys::list_keys(self.backend.as_ref(), self.key_id)
    }

    /// Removes a key file by id or unambiguous prefix; never the one in use or the last one.
    pub fn remove_key(&self, id_or_prefix: &str) -> Result<Uuid> {
        if !self.is_encrypted() {
            return Err(RepoError::NotEncrypted { path: self.location() });
        }
        keys::remove_key(self.backend.as_ref(), self.key_id, id_or_prefix)
    }

    /// Opens the repository at `location` with `password` (for an encrypted one), creating
    /// nothing (see [`Self::open_host`]); an S3 location connects with `s3` (then the `AWS_*`
    /// variables).
    pub fn open_location(
        location: &RepoLocation,
        s3: &S3Settings,
        password: Option<&str>,
    ) -> Result<Self> {
        match location {
            RepoLocation::Local(path) => Self::open_host_with(path, password),
            RepoLocation::S3 { .. } => Self::open_in_with(s3_backend(location, s3)?, password),
        }
    }

    /// Creates a repository at `location` with `opts`.
    pub fn init_location(
        location: &RepoLocation,
        s3: &S3Settings,
        opts: InitOptions,
    ) -> Result<Self> {
        match location {
            RepoLocation::Local(path) => {
                let fs: FsRef = Arc::new(HostFs::new(path).ctx("creating", path)?);
                Self::init(fs, "", opts)
            }
            RepoLocation::S3 { .. } => Self::init_in(s3_backend(location, s3)?, opts),
        }
    }

    /// Opens the repository at `location`, or creates one there with default options,
    /// encrypted under `password` when one is given (see [`Self::open_or_init_host_with`]).
    pub fn open_or_init_location(
        location: &RepoLocation,
        s3: &S3Settings,
        password: Option<&str>,
    ) -> Result<Self> {
        match location {
            RepoLocation::Local(path) => Self::open_or_init_host_with(path, password),
            RepoLocation::S3 { .. } => {
                let backend = s3_backend(location, s3)?;
                match Self::open_in_with(backend.clone(), password) {
                    Err(RepoError::NotARepository { .. }) => {
                        let opts = InitOptions {
                            password: password.map(Password::new),
                            ..Default::default()
                        };
                        Self::init_in(backend, opts)
                    }
                    other => other,
                }
            }
        }
    }

    /// Brings the in-memory index up to date with the pack indexes listed. At open, from the
    /// index file and the pack indexes it does not cover; later (after taking a lock), by
    /// dropping the packs whose index is gone and reading those new since, since pack indexes
    /// never change once written. A chunk may be in two packs (two backups stored it at once,
    /// or a prune was interrupted after repacking, before removing the old pack's index):
    /// either copy is whole and checked, and both are kept, so that removing one pack leaves
    /// the other.
    fn load_index(&self) -> Result<()> {
        // Packs this process knew before listing: one of them not listed now is gone (its
        // index removed by a prune); one a backup of this process adds meanwhile is not.
        let known: HashSet<Uuid> = self.index.read().loaded_packs().collect();
        let cached = if known.is_empty() { self.read_index_file() } else { None };
        let covered = match &cached {
            Some(c) => c.loaded_packs().collect(),
            None => known,
        };
        // Names only: a stat per pack index (hundreds of thousands at 10 M chunks) was a good
        // part of an open that reads the index file, for sizes it needs only as a hint.
        let listing =
            self.backend.list_names("packs").ctx("listing", self.backend.locate("packs"))?;
        let mut listed = HashSet::with_capacity(listing.len());
        let mut to_read = Vec::new();
        for name in listing {
            let Some(stem) = name.strip_suffix(".idx") else { continue };
            if let Ok(id) = Uuid::parse_str(stem) {
                listed.insert(id);
                if covered.contains(&id) {
                    continue;
                }
            }
            to_read.push(name);
        }
        // Grown as the indexes come (amortised doubling, the slack given back at the end).
        let mut batch = ChunkIndexBuilder::default();
        for name in &to_read {
            let (pack, entries) = pack::load_index(self.backend.as_ref(), &self.crypto, name)?;
            batch.add_pack(pack, &entries);
        }
        let batch = batch.finish();
        let gone: Vec<Uuid> = covered.difference(&listed).copied().collect();
        {
            let mut index = self.index.write();
            if let Some(c) = cached {
                index.absorb(c);
            }
            index.remove_packs(&gone);
            index.absorb(batch);
        }
        if to_read.len() >= CONSOLIDATE_AT && to_read.len() * 32 >= covered.len() {
            // A cache: a repository this process cannot write still opens.
            if let Err(e) = self.consolidate_index() {
                tracing::warn!(error = %e, "the chunk index file was not rewritten");
            }
        }
        Ok(())
    }

    /// The index file, if there is a sound one; what is wrong with one that is not is logged
    /// (the pack indexes are read instead).
    fn read_index_file(&self) -> Option<ChunkIndex> {
        let path = self.backend.locate(INDEX_FILE);
        let read = match &self.crypto {
            // Clear: decoded as it is read (its checksum checked at the end), never held whole
            // beside the index it becomes.
            Crypto::Plain => self.backend.reader(INDEX_FILE).map(|(len, mut reader)| {
                ChunkIndex::read_from(&path, &self.config.id, len, &mut reader)
            }),
            // Sealed: authenticated whole before anything in it is decoded.
            crypto => self.backend.get(INDEX_FILE).map(|stored| {
                crypto
                    .open(INDEX_FILE, stored)
                    .and_then(|b| ChunkIndex::decode(&path, &self.config.id, &b))
            }),
        };
        let read = match read {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => Err(RepoError::Io { op: "reading", path: path.clone(), source: e }),
        };
        read.map_err(|e| tracing::warn!(error = %e, "reading every pack index instead")).ok()
    }

    /// Writes every pack index this process has loaded as one object, `index/chunks`
    /// (atomically: the backend's `put` writes a temporary, syncs it, renames it and syncs
    /// the directory), so that the next open reads it instead of one `.idx` per pack.
    pub fn consolidate_index(&self) -> Result<()> {
        let bytes = self.index.read().encode(&self.config.id);
        let bytes = self.crypto.seal(bytes);
        self.backend.put(INDEX_FILE, &bytes).ctx("writing", self.backend.locate(INDEX_FILE))
    }

    /// Whether an index file should be kept up to date after a prune: the repository has
    /// one, or enough packs to want one.
    pub(crate) fn wants_index_file(&self) -> Result<bool> {
        if self.index.read().loaded_packs().nth(CONSOLIDATE_AT - 1).is_some() {
            return Ok(true);
        }
        self.backend.exists(INDEX_FILE).ctx("checking", self.backend.locate(INDEX_FILE))
    }

    /// Takes a shared lock (what a backup holds from opening the repository to publishing):
    /// it waits for no one, and fails with [`RepoError::Locked`] while a prune or forget
    /// holds the exclusive one. The chunk index is re-read once the lock is held, since a
    /// prune that finished since the repository was opened may have removed chunks this
    /// process would otherwise reuse.
    pub fn lock_shared(&self, what: &str) -> Result<RepoLock> {
        let lock = lock::acquire(&self.backend, false, what)?;
        self.load_index()?;
        Ok(lock)
    }

    /// Takes the exclusive lock (prune, forget): fails with [`RepoError::Locked`] while any
    /// other live lock is held. The chunk index is re-read once the lock is held.
    pub fn lock_exclusive(&self, what: &str) -> Result<RepoLock> {
        let lock = lock::acquire(&self.backend, true, what)?;
        self.load_index()?;
        Ok(lock)
    }

    /// The repository's settings.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Where the repository's objects are stored.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// How the repository's objects are protected.
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    /// Where the repository is, for messages: its directory, or its URL.
    pub fn location(&self) -> PathBuf {
        self.backend.locate("")
    }

    /// Starts writing a new backup set.
    pub fn begin_set(&self) -> SetWriter<'_> {
        SetWriter::new(self)
    }

    /// Replaces a published set's manifest (atomically) with `set`, for a set whose meaning
    /// changed after it was published: a full backup that became a copy.
    pub fn rewrite_manifest(&self, set: &BackupSet) -> Result<()> {
        self.put_manifest(set, "rewriting")
    }

    /// Raises an older repository's format to this build's before a set of this build is
    /// published into it: a build that reads only the older format must then refuse the whole
    /// repository, saying so, rather than fail on the newer sets one file at a time. Nothing
    /// else changes (an absent `compression` still means zstd), so older sets read as before.
    pub(crate) fn upgrade_format(&self) -> Result<()> {
        if self.config.format >= REPO_FORMAT {
            return Ok(());
        }
        let config = RepoConfig { format: REPO_FORMAT, ..self.config.clone() };
        #[allow(clippy::expect_used)] // Plain fields: serialising cannot fail.
        let bytes = serde_json::to_vec_pretty(&config).expect("config serialises");
        self.backend.put(CONFIG_FILE, &bytes).ctx("upgrading", self.backend.locate(CONFIG_FILE))
    }

    /// Stores a set's manifest (sealed), atomically.
    pub(crate) fn put_manifest(&self, set: &BackupSet, op: &'static str) -> Result<()> {
        let key = manifest_key(&set.id);
        let bytes = self.crypto.seal(set.encode());
        self.backend.put(&key, &bytes).ctx(op, self.backend.locate(&key))
    }

    fn get_manifest(&self, id: &str) -> Result<BackupSet> {
        let key = format!("sets/{id}.manifest");
        let stored = self.backend.get(&key).ctx("reading", self.backend.locate(&key))?;
        let bytes = self.crypto.open(&format!("manifest of backup set {id}"), stored)?;
        BackupSet::decode(id, &bytes)
    }

    /// Removes a published set (its manifest); its chunks stay until a prune.
    pub fn remove_set(&self, id: &Uuid) -> Result<()> {
        let key = manifest_key(id);
        match self.backend.delete(&key) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RepoError::SetNotFound(id.to_string()));
            }
            Err(e) => {
                return Err(RepoError::Io {
                    op: "removing",
                    path: self.backend.locate(&key),
                    source: e,
                });
            }
        }
        self.backend.sync_dir("sets").ctx("syncing", self.backend.locate("sets"))
    }

    /// The ids of the published sets, in no particular order.
    pub fn set_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .backend
            .list("sets")
            .ctx("listing", self.backend.locate("sets"))?
            .into_iter()
            .filter_map(|o| o.name.strip_suffix(".manifest").map(str::to_string))
            .collect())
    }

    /// Every published set, oldest first.
    pub fn list_sets(&self) -> Result<Vec<BackupSet>> {
        let mut sets = Vec::new();
        for id in self.set_ids()? {
            sets.push(self.get_manifest(&id)?);
        }
        sets.sort_by_key(|s| (s.created_unix_ms, s.id));
        Ok(sets)
    }

    /// Loads a set by its id or an unambiguous prefix of it.
    pub fn load_set(&self, id_or_prefix: &str) -> Result<BackupSet> {
        let want = id_or_prefix.trim().to_ascii_lowercase();
        if want.is_empty() || !want.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(RepoError::BadSetId(id_or_prefix.into()));
        }
        let matches: Vec<String> =
            self.set_ids()?.into_iter().filter(|id| id.starts_with(&want)).collect();
        match matches.as_slice() {
            [] => Err(RepoError::SetNotFound(id_or_prefix.into())),
            [one] => self.get_manifest(one),
            _ => Err(RepoError::BadSetId(id_or_prefix.into())),
        }
    }

    /// Streams a backed-up file's content to `sink` in order (offset, bytes), checking the
    /// chunk list against the file's identity first, every chunk against its id as it comes,
    /// and at the end the file's size (and, for sets written before chunk-list identities,
    /// the whole content's hash). On any mismatch the error names the file and the chunk; the
    /// caller must treat what it received as untrusted.
    ///
    /// Chunks are read, decompressed and hash-checked a few ahead on their own threads while
    /// `sink` consumes the earlier ones in order, so that a restore keeps both cores busy
    /// (decompressing is the expensive part; the sink mostly writes).
    pub fn read_file(
        &self,
        entry: &FileEntry,
        sink: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> Result<()> {
        // Enough to keep the cores decompressing, or, on an object store, the requests
        // overlapping (`Backend::read_ahead`).
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
        let ahead = (cores + 1).max(self.backend.read_ahead());
        let whole = entry.check_chunk_list()?;
        let runs = self.plan_reads(entry)?;
        let mut hasher = whole.then(blake3::Hasher::new);
        let mut offset = 0u64;
        std::thread::scope(|s| -> Result<()> {
            let mut pending = std::collections::VecDeque::new();
            let mut next = runs.iter();
            let mut lens = entry.chunks.iter().map(|c| c.len);
            loop {
                while pending.len() < ahead {
                    let Some(run) = next.next() else { break };
                    let reader = std::thread::Builder::new().name("repo-read-chunk".into());
                    let h = reader
                        .spawn_scoped(s, move || {
                            pack::read_run(self.backend.as_ref(), &self.crypto, run, &entry.path)
                        })
                        .map_err(|source| RepoError::Io {
                            op: "starting a thread to read a chunk of",
                            path: PathBuf::from(&entry.path),
                            source,
                        })?;
                    pending.push_back(h);
                }
                let Some(h) = pending.pop_front() else { return Ok(()) };
                // A panic on the reading thread is a bug: carry it on here.
                let chunks = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
                for data in chunks {
                    if lens.next() != Some(data.len() as u32) {
                        return Err(RepoError::FileSizeMismatch {
                            file: entry.path.clone(),
                            expected: entry.size,
                            actual: offset + data.len() as u64,
                        });
                    }
                    if let Some(h) = hasher.as_mut() {
                        h.update(&data);
                    }
                    sink(offset, &data)
                        .map_err(|source| RepoError::Sink { file: entry.path.clone(), source })?;
                    offset += data.len() as u64;
                }
            }
        })?;
        if offset != entry.size {
            return Err(RepoError::FileSizeMismatch {
                file: entry.path.clone(),
                expected: entry.size,
                actual: offset,
            });
        }
        let Some(hasher) = hasher else { return Ok(()) };
        let actual = hasher.finalize().to_hex().to_string();
        if actual != entry.blake3 {
            return Err(RepoError::FileHashMismatch {
                file: entry.path.clone(),
                expected: entry.blake3.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// The reads of `entry`'s chunks in order: runs of chunks back to back in one pack, up to
    /// the backend's [`Backend::coalesce_bytes`] each (one chunk per read where it is `0`).
    fn plan_reads(&self, entry: &FileEntry) -> Result<Vec<Vec<(blake3::Hash, ChunkLoc)>>> {
        let limit = self.backend.coalesce_bytes();
        let index = self.index.read();
        let mut runs: Vec<Vec<(blake3::Hash, ChunkLoc)>> = Vec::new();
        let mut run_bytes = 0usize;
        for c in &entry.chunks {
            let hash = parse_hash(&c.hash).ok_or_else(|| RepoError::CorruptManifest {
                set: entry.path.clone(),
                why: format!("chunk hash {:?} is not a BLAKE3 hash", c.hash),
            })?;
            let loc = index.get(&hash).ok_or_else(|| RepoError::MissingChunk {
                hash: c.hash.clone(),
                file: entry.path.clone(),
            })?;
            let stored = loc.stored_len as usize;
            match runs.last_mut() {
                Some(run)
                    if run_bytes + stored <= limit
                        && run.last().is_some_and(|(_, prev)| pack::follows(prev, &loc)) =>
                {
                    run.push((hash, loc));
                    run_bytes += stored;
                }
                _ => {
                    runs.push(vec![(hash, loc)]);
                    run_bytes = stored;
                }
            }
        }
        Ok(runs)
    }

    /// Reads every chunk of every file of `set` and checks all hashes. `progress` receives
    /// the bytes checked so far.
    pub fn verify_set(&self, set: &BackupSet, progress: &dyn Fn(u64)) -> Result<()> {
        let mut done = 0u64;
        for f in &set.files {
            self.read_file(f, &mut |_, data| {
                done += data.len() as u64;
                progress(done);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// What the repository holds.
    pub fn stats(&self) -> Result<RepoStats> {
        // Listing may be slow (an object store): not under the index lock.
        let sets = self.set_ids()?.len();
        let mut stats = RepoStats { sets, ..RepoStats::default() };
        self.index.read().for_each_chunk(|_, l| {
            stats.chunks += 1;
            stats.stored_bytes += l.stored_len as u64;
            stats.raw_bytes += l.raw_len as u64;
        });
        Ok(stats)
    }

    /// Reads one chunk (decompressed and checked against its hash); `file` names the
    /// backed-up file it belongs to, for errors.
    pub fn read_chunk(&self, hash: &blake3::Hash, file: &str) -> Result<Vec<u8>> {
        let loc = self.index.read().get(hash).ok_or_else(|| RepoError::MissingChunk {
            hash: hash.to_hex().to_string(),
            file: file.into(),
        })?;
        pack::read_chunk(self.backend.as_ref(), &self.crypto, hash, &loc, file)
    }

    /// Where chunk `hash` is stored, if the repository has it.
    pub fn lookup(&self, hash: &blake3::Hash) -> Option<ChunkLoc> {
        self.index.read().get(hash)
    }

    /// Adds the entries of sealed packs (each pack's whole index) to the in-memory index.
    pub(crate) fn add_to_index(&self, entries: Vec<(blake3::Hash, ChunkLoc)>) {
        let mut index = self.index.write();
        let mut rest = entries.as_slice();
        while let Some((_, first)) = rest.first() {
            let n = rest.iter().position(|(_, l)| l.pack != first.pack).unwrap_or(rest.len());
            index.add_pack(first.pack, &rest[..n]);
            rest = &rest[n..];
        }
    }
}

/// Refuses options no repository can have.
fn validate_init(opts: &InitOptions, config: &Path) -> Result<()> {
    if !opts.chunk_size.is_power_of_two()
        || opts.chunk_size < 4096
        || opts.chunk_size > pack::MAX_CHUNK
    {
        return Err(RepoError::CorruptConfig {
            path: config.to_path_buf(),
            why: format!("chunk size {} must be a power of two ≥ 4096", opts.chunk_size),
        });
    }
    let levels = zstd::compression_level_range();
    let level = match opts.compression {
        Compression::Zstd(level) => level,
        _ => opts.zstd_level,
    };
    if !levels.contains(&level) {
        return Err(RepoError::CorruptConfig {
            path: config.to_path_buf(),
            why: format!("zstd level {level} is outside {}..={}", levels.start(), levels.end()),
        });
    }
    Ok(())
}

/// The backend of an S3 location.
fn s3_backend(location: &RepoLocation, s3: &S3Settings) -> Result<Arc<dyn Backend>> {
    let RepoLocation::S3 { bucket, prefix } = location else {
        return Err(RepoError::BadLocation {
            location: location.to_string(),
            why: "not an s3:// URL".into(),
        });
    };
    let backend = S3Backend::new(bucket, prefix, s3).ctx("connecting to", location.to_string())?;
    Ok(Arc::new(backend))
}

/// The key of a set's manifest.
fn manifest_key(id: &Uuid) -> String {
    format!("sets/{id}.manifest")
}

/// Parses a hex BLAKE3 hash.
pub fn parse_hash(hex: &str) -> Option<blake3::Hash> {
    blake3::Hash::from_hex(hex).ok()
}

#[cfg(test)]
mod tests;
