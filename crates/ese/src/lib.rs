//! An ESE-style transactional storage engine.
//!
//! Instances (storage groups) with one transaction log stream and checkpoint, database files of
//! checksummed fixed-size pages holding B+trees, write-ahead logging with group commit, soft and
//! hard recovery, the snapshot-backup hooks (prepare, freeze, thaw, truncate, end, abort) and the
//! inspection tools. All file I/O goes through [`volume::FileSystem`], so the copy-on-write
//! filter and the fault-injecting file system sit beneath it; logs and databases may live on
//! different file systems.
//!
//! # Using it
//!
//! ```no_run
//! # fn main() -> ese::Result<()> {
//! use std::sync::Arc;
//! use ese::{Instance, InstanceConfig, Durability, BackupKind};
//! let fs: volume::FsRef = Arc::new(volume::mem::MemFs::new());
//! let inst = Instance::create(InstanceConfig::new(fs.clone(), "logs", fs.clone(), "sys"))?;
//! inst.create_database("mb1", fs.clone(), "db/mb1.edb")?;
//! let mut t = inst.begin_write()?;
//! t.create_table("mb1", "messages")?;
//! t.put("mb1", "messages", b"k1", b"hello")?;
//! t.commit(Durability::Durable)?;
//! let r = inst.begin_read()?;
//! assert_eq!(r.get("mb1", "messages", b"k1")?, Some(b"hello".to_vec()));
//! let mut b = inst.backup_session(BackupKind::Full)?;
//! b.prepare()?;
//! let rolled = b.freeze()?;      // the provider snapshots the volumes here
//! b.thaw()?;
//! b.truncate(b.snapshot_generations().to_vec().as_slice())?;
//! b.end()?;
//! inst.shutdown()?;
//! # let _ = rolled; Ok(()) }
//! ```
//!
//! - [`Instance::create`] / [`Instance::open`] (soft recovery) / [`Instance::shutdown`];
//!   [`Instance::create_database`], [`Instance::attach`], [`Instance::detach`].
//! - [`Instance::begin_write`] → [`WriteTxn`] (`create_table`, `put`, `get`, `delete`,
//!   `cursor`, `commit(Durability)`, `rollback`); [`Instance::begin_read`] → [`ReadTxn`].
//! - [`Instance::backup_session`] → [`EngineBackup`]; notices ([`EngineNotice`]) go to
//!   [`InstanceConfig::notice`].
//! - [`Instance::log_state`]; [`inspect`] (dumps and `verify`); [`recovery::hard_recover`].
//!
//! # Design
//!
//! No-steal, redo-only logging (see [`instance`]): nothing uncommitted is ever written to a
//! database file, so recovery only redoes, and a rollback is throwing private page copies
//! away. Pages carry their number, LSN and a checksum seeded with the page number; the first
//! change of a page after it was last written is logged as a full image, so a page torn by a
//! power loss is rebuilt from the log. Readers see a consistent snapshot through versioned
//! pages in the cache. Group commit: durable committers waiting at the same time share one
//! log write and fsync.
//!
//! On-disk files: database (`page`, `dbheader`: header + shadow header with state, log
//! signature, required log range, backup slots), logs (`logfmt`: `E00.log`,
//! `E00XXXXXXXX.log`, reserve logs `E00res0000{1,2}.jrs`), checkpoint (`checkpoint`:
//! `E00.chk`, two alternating checksummed slots written in place).
//!
//! Disk full: database files are grown ahead of the pages a commit logs, and log generations
//! are pre-allocated; when space runs out the commit needing it fails
//! ([`EngineError::StorageFull`]), a roll falls back on a reserve log, the instance refuses new
//! writes ([`EngineError::DiskFullState`]) and can still shut down cleanly, because writing
//! pages, headers and the checkpoint then needs no new space.
//!
//! Known simplifications: deletes do not merge underfull B+tree nodes (emptied leaves are
//! skipped by searches and reused by inserts); the table catalog lives in one page (hundreds
//! of tables); during a freeze the cache may grow past its size because no page may be
//! written; a reader's cache miss reads the page under the cache lock (simple and correct,
//! serializes misses); a write transaction lives in memory until commit.

pub mod activate;
pub mod backup;
pub(crate) mod btree;
pub(crate) mod cache;
pub mod checkpoint;
pub(crate) mod codec;
pub mod dbheader;
pub mod error;
pub mod gate;
pub mod inspect;
pub mod instance;
pub(crate) mod log;
pub mod logfmt;
pub mod lsn;
pub mod page;
pub mod recovery;
pub(crate) mod redo;
pub mod replay;
pub mod txn;

pub use activate::{Activation, PartialLog, activate};
pub use backup::{BackupKind, EngineBackup, EngineNotice, SessionState, Truncation};
pub use dbheader::{BackupSlot, DbHeader, DbState, SlotKind};
pub use error::{EngineError, Result};
pub use gate::{CommitGate, CurrentLogRead};
pub use instance::{
    DatabaseSpec, Instance, InstanceConfig, LogState, NoticeSink, RecoveryInfo, TruncationLimitFn,
};
pub use lsn::Lsn;
pub use recovery::{HardRecovery, HardRecoveryReport, hard_recover};
pub use replay::{ApplyReport, PassiveConfig, PassiveReplay, PassiveState};
pub use txn::{Cursor, Durability, ReadTxn, Row, WriteTxn};
