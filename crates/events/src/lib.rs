//! The event catalog and the per-node event log.
//!
//! Every user-visible step of a backup is an event with a source (coordinator, store writer,
//! engine, replication service, provider, requester), a numeric ID taken from the reference
//! system where it has one, a level and a message. This crate will own the catalog, the
//! append-only checksummed log that persists them per node, and queries by job (the writer
//! instance GUID), source, ID, level and time range, plus a live subscription.
