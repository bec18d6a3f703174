//! The Shadowcopy node (service process).
//!
//! Reads the TOML configuration ([`config`]), wires volumes, the coordinator, the store, the
//! event log and the requester together, and serves the HTTP API (a Unix socket by default)
//! that the CLI and the web page use.

pub mod config;
