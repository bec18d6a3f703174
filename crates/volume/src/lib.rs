//! Shadow volumes for Shadowcopy.
//!
//! This crate owns everything below the engine: the [`fs::FileSystem`] seam that all file I/O
//! of the system goes through, its implementations (a plain host directory, an in-memory file
//! system that simulates power loss, a fault injector), and — the product itself — the shadow
//! volume: a copy-on-write filter over a host directory that takes point-in-time snapshots in
//! O(metadata), preserves old block contents into shadow storage (diff areas) before they are
//! overwritten, and serves snapshot views. The software provider that the coordinator drives is
//! built on it.
//!
//! Entry points: [`Volume`] (create/open, the live [`FileSystem`], snapshots, shadow storage,
//! events), [`SnapshotView`] (a snapshot as a read-only [`FileSystem`]), [`hold::commit_set`]
//! (flush-and-hold of several volumes) and [`provider::SoftwareProvider`] (what the
//! coordinator drives); [`btrfs::BtrfsProvider`] snapshots volumes that are btrfs subvolumes
//! with the file system's own read-only snapshots instead.

pub mod btrfs;
pub mod cow;
pub mod diff;
pub mod error;
pub mod events;
pub mod extents;
pub mod fault;
pub mod file_id;
pub mod fs;
pub mod hold;
pub mod host;
pub mod mem;
pub mod provider;
pub mod snapshot;
pub mod table;
pub mod view;
pub mod volume;

pub use btrfs::{BtrfsProvider, BtrfsView};
pub use error::{BlockSizeChanged, VolumeError};
pub use events::{DeleteReason, VolumeEvent};
pub use fs::{
    Attributes, DirEntry, File, FileKind, FileRef, FileSystem, FsRef, Metadata, OpenMode,
};
pub use hold::{
    CommitOptions, CommitReport, HoldParts, WithinError, commit_set, commit_set_within,
};
pub use host::HostFs;
pub use mem::MemFs;
pub use provider::{CommittedSet, ShadowCopy, SoftwareProvider, VolumeInfo};
pub use snapshot::ShadowCopyInfo;
pub use view::SnapshotView;
pub use volume::{ShadowStorageInfo, StorageConfig, Volume, VolumeOptions};
