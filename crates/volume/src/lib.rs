//! Shadow volumes for Shadowcopy.
//!
//! This crate owns everything below the engine: the [`fs::FileSystem`] seam that all file I/O
//! of the system goes through, its implementations (a plain host directory, an in-memory file
//! system that simulates power loss, a fault injector), and — the product itself — the shadow
//! volume: a copy-on-write filter over a host directory that takes point-in-time snapshots in
//! O(metadata), preserves old block contents into shadow storage (diff areas) before they are
//! overwritten, and serves snapshot views. The software provider that the coordinator drives is
//! built on it.

pub mod fault;
pub mod fs;
pub mod host;
pub mod mem;

pub use fs::{DirEntry, File, FileKind, FileRef, FileSystem, FsRef, Metadata, OpenMode};
pub use host::HostFs;
pub use mem::MemFs;
