//! The Shadowcopy node (service process).
//!
//! Reads the TOML configuration ([`config`]) and wires volumes, the coordinator, the store, the
//! event log and the requester together ([`node`]).

pub mod config;
pub mod node;

pub use config::Config;
pub use node::{Node, NodeError};
