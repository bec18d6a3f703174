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

mod call;
pub mod coordinator;
pub mod document;
pub mod error;
mod freeze;
mod gate;
pub mod metadata;
pub mod provider;
pub mod restore;
pub mod session;
pub mod testing;
pub mod writer;

pub use coordinator::{Coordinator, CoordinatorConfig, WriterListing};
pub use document::{
    BackupComponentsDocument, ComponentEntry, DocumentError, SnapshotRecord, WriterEntry,
};
pub use error::{SessionPhase, VssError};
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
pub use writer::{
    ComponentResult, Phase, Writer, WriterContext, WriterError, WriterFailure, WriterIdentity,
    WriterState, WriterStatus,
};
