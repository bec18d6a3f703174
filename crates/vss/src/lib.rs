//! The coordinator (the VSS role).
//!
//! Writers (the applications that own data), providers (the components that take snapshots)
//! and requesters (backup applications) meet here:
//!
//! - [`Writer`] and its [`WriterMetadata`], states ([`WriterState`], with the reference's
//!   numeric values) and failure codes ([`WriterFailure`]);
//! - [`Provider`], which begins, commits (under a bounded flush-and-hold) and aborts snapshot
//!   sets and hands out read-only views;
//! - [`Coordinator`], the per-node registry, with [`BackupSession`] and [`RestoreSession`]
//!   driving the phases (identify → prepare backup → prepare snapshot → freeze → commit → thaw
//!   → post snapshot → backup complete → shutdown) with a deadline on every writer call, a
//!   watchdog on the freeze window, snapshot-set creation serialized per node, and an event for
//!   every transition;
//! - [`BackupComponentsDocument`], the stable JSON record of a job.

pub mod btrfs;
mod call;
pub mod coordinator;
pub mod document;
pub mod error;
mod freeze;
mod gate;
pub mod journal;
pub mod metadata;
mod participant;
pub mod provider;
pub mod restore;
pub mod session;
pub mod software;
pub mod testing;
pub mod writer;

pub use btrfs::{BTRFS_PROVIDER_ID, BtrfsProviderAdapter};
pub use coordinator::{Coordinator, CoordinatorConfig, WriterListing};
pub use document::{
    BackupComponentsDocument, ComponentEntry, DocumentError, SnapshotRecord, WriterEntry,
};
pub use error::{SessionPhase, VssError};
pub use journal::{JobJournal, JobRecord};
pub use metadata::{
    BackupSchema, BackupType, Component, ComponentKey, ComponentType, FileDescriptor,
    RestoreMethod, SchemaFeature, WriterKey, WriterMetadata,
};
pub use provider::{
    CommittedSnapshot, Provider, ProviderError, ReadOnlyFs, SnapshotContext, SnapshotInfo,
};
pub use restore::RestoreSession;
pub use session::{
    BackupSession, BackupState, BackupTypeChoice, SetSnapshot, SnapshotSet, WriterDescription,
};
pub use software::{SOFTWARE_PROVIDER_ID, SoftwareProviderAdapter, forward_volume_events};
pub use writer::{
    ComponentResult, Phase, Writer, WriterContext, WriterError, WriterFailure, WriterIdentity,
    WriterState, WriterStatus,
};

#[cfg(test)]
mod tests {
    /// Sessions move to requester threads; the coordinator is shared between them.
    #[test]
    fn thread_safety_of_the_public_handles() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<super::BackupSession>();
        send::<super::RestoreSession>();
        send_sync::<super::Coordinator>();
        send_sync::<super::SoftwareProviderAdapter>();
        send_sync::<super::BtrfsProviderAdapter>();
    }
}
