//! An ESE-style transactional storage engine.
//!
//! Instances (storage groups) with one transaction log stream and checkpoint, database files of
//! checksummed fixed-size pages holding B+trees, write-ahead logging with group commit, soft and
//! hard recovery, the snapshot-backup hooks (prepare, freeze, thaw, truncate, end, abort) and the
//! inspection tools. All file I/O goes through [`volume::FileSystem`], so the copy-on-write
//! filter and the fault-injecting file system sit beneath it.
