//! The coordinator (the VSS role).
//!
//! Writers (the applications that own data), providers (the components that take snapshots) and
//! requesters (backup applications) meet here. This crate will own the writer and provider
//! models, writer metadata and the backup components document, snapshot sets, and the phase
//! state machine (identify → prepare backup → prepare snapshot → freeze → commit → thaw → post
//! snapshot → backup complete → shutdown) with its deadlines, serialization and abort rules.
