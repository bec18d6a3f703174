//! The schedules' states across restarts: `<data_dir>/schedules.toml`, one table per schedule
//! (`[schedule.nightly]`), written through [`crate::state_file`] at each start and end of a run.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::core::RunState;

/// The file in the node's data directory.
pub const FILE: &str = "schedules.toml";

const HEADER: &str = "# The node's schedules: when each last ran and how it ended. Written by the node;\n\
                      # `anchor_ms` is the time up to which a schedule's runs are dealt with.";

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    #[serde(default)]
    schedule: BTreeMap<String, RunState>,
}

/// The states kept, by schedule name (none when the file does not exist).
pub fn load(data_dir: &Path) -> Result<BTreeMap<String, RunState>, String> {
    let file: Option<StateFile> = crate::state_file::load(data_dir, FILE)?;
    Ok(file.unwrap_or_default().schedule)
}

/// Writes `states` atomically.
pub fn save(data_dir: &Path, states: &BTreeMap<String, RunState>) -> io::Result<()> {
    crate::state_file::save(data_dir, FILE, HEADER, &StateFile { schedule: states.clone() })
}
