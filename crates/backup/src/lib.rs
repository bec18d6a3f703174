//! The backup application (the requester).
//!
//! Gathers writer metadata, selects components, drives the coordinator through a snapshot set,
//! copies files from the snapshot views into a content-addressed repository ([`repo`]),
//! verifies physical consistency before reporting success, and restores with hard recovery.

pub mod repo;
