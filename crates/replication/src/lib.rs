//! Replication of database copies.
//!
//! The active copy's closed log generations are shipped to passive nodes, inspected and replayed;
//! the replication writer backs up a passive copy (the surrogate backup) in coordination with the
//! active node. This crate will own the log copier, inspector, replayer, queues, switchover and
//! the replication writer.
//!
//! Today: the [`inspector`] (checks one shipped generation before use) and the [`replayer`]
//! (applies inspected generations from an inbox to a passive copy, see
//! [`ese::PassiveReplay`]).

pub mod client;
pub mod cluster;
pub mod copy;
pub mod inspector;
pub mod pki;
pub mod protocol;
pub mod replayer;
pub mod server;
pub mod source;
pub mod tls;

pub use inspector::{InspectError, Inspected, Inspector};
pub use replayer::{ReplayError, Replayer, ReplayerConfig, ReplayerHandle};
