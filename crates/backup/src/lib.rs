//! The backup application (the requester).
//!
//! Gathers writer metadata, selects components, drives the coordinator through a snapshot set,
//! copies files from the snapshot views into a content-addressed repository ([`repo`]),
//! verifies physical consistency before reporting success ([`requester`]), and restores with
//! hard recovery ([`restore`]).

pub mod error;
pub mod repo;
pub mod requester;
pub mod restore;
pub mod retention;
pub mod verify;

pub use error::{RequesterError, Result};
pub use requester::{
    BackupReport, BackupRequest, Progress, Quiet, Requester, ViewFilter, VolumeDir,
    refuse_repository_in_live_dirs, repository_for_backup, repository_for_backup_at,
    repository_for_backup_with,
};
pub use restore::{RestoreReport, RestoreRequest, RestoreTarget, Restorer};
pub use verify::{SetVerify, verify_set};
