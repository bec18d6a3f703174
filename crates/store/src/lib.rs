//! The information store.
//!
//! Mailbox databases (mailboxes, folders, messages) on the `ese` engine, mount and dismount,
//! a mail load generator, and the store writer that the coordinator drives during a backup:
//! metadata, backup-in-progress, freeze and thaw through the engine, header stamps and log
//! truncation after a successful backup.
