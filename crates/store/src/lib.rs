//! The information store.
//!
//! Mailbox databases (mailboxes, folders, messages) on the `ese` engine ([`mailbox`]),
//! storage groups with mount and dismount and the *backup in progress* state
//! ([`storage_group`]), the node's set of storage groups ([`information_store`]), the store
//! writer that the coordinator drives during a backup ([`writer`]), the active node's side of a
//! backup taken of a passive copy on another node ([`surrogate`]), and a mail load generator
//! ([`load`]).

pub mod error;
pub mod information_store;
pub mod load;
pub mod mailbox;
pub mod message;
pub mod storage_group;
pub mod surrogate;
pub mod writer;

pub use error::{Result, StoreError};
pub use information_store::InformationStore;
pub use mailbox::{ContentDigest, MailDb, MessageId, MessageSummary};
pub use message::{Headers, Message};
pub use storage_group::{DatabaseDef, EngineTuning, StorageGroup, StorageGroupDef, VolumeRef};
pub use surrogate::SurrogateStamped;
pub use writer::StoreWriter;
