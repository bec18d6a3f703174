//! The `shadowcopy` command's client of the node's API, as a library so that the end-to-end
//! tests drive the node through the very client the command uses.

pub mod client;
