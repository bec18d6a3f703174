//! The Shadowcopy node (service process).
//!
//! Reads the TOML configuration ([`config`]) and wires volumes, the coordinator, the store, the
//! event log and the requester together ([`node`]), with the storage groups created at
//! runtime ([`layout`]); [`service`] runs a node with its HTTP API ([`api`]) until it is told
//! to stop, and its [`schedule`]s.

pub mod api;
pub mod config;
pub mod console;
pub mod dag;
pub mod expose;
pub mod layout;
pub mod node;
pub mod sample;
pub mod schedule;
pub mod service;
pub mod shadow_storage;
pub mod state_file;

pub use config::Config;
pub use node::{Node, NodeError};
