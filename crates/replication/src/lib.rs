//! Replication of database copies: the database availability group.
//!
//! - [`cluster`]: the DAG's facts in etcd (members, copies, the active copy and its epoch, each
//!   copy's state);
//! - [`pki`], [`tls`]: the DAG's own CA and mutual TLS between members;
//! - [`protocol`], [`server`], [`client`], [`source`]: what the active offers its copies over
//!   HTTP (log shipping, seeding, the surrogate backup's claim and stamp);
//! - [`copy`]: a passive copy on this node — the log copier, the [`inspector`] and the
//!   [`replayer`], with the copy and replay queues;
//! - [`sync`], [`tail`]: block mode (copies following the current generation) and
//!   synchronous copies (commits acknowledged once copies hold them);
//! - [`writer`]: the replication writer, which backs up a passive copy (the surrogate backup).

pub mod client;
pub mod cluster;
pub mod copy;
pub mod inspector;
pub mod pki;
pub mod protocol;
pub mod replayer;
pub mod server;
pub mod source;
pub mod sync;
pub mod tail;
pub mod tls;
pub mod writer;

pub use inspector::{InspectError, Inspected, Inspector};
pub use replayer::{ReplayError, Replayer, ReplayerConfig, ReplayerHandle};
pub use writer::{Replica, ReplicaHost, ReplicationWriter};
