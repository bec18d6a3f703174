//! The node's own state files in its data directory (what was created or changed at runtime):
//! TOML, read whole, written atomically and durably.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads `<data_dir>/<file>`; `Ok(None)` when it does not exist. The error says what is
/// wrong with the file (the caller names it).
pub fn load<T: DeserializeOwned>(data_dir: &Path, file: &str) -> Result<Option<T>, String> {
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map(Some).map_err(|e| e.to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `value` under a comment `header` to `<data_dir>/<file>`: a temporary file, synced,
/// renamed over the old one, and the directory synced, so that a crash leaves the old or the
/// new content, never a mix.
pub fn save<T: Serialize>(data_dir: &Path, file: &str, header: &str, value: &T) -> io::Result<()> {
    let text = format!("{header}\n{}", toml::to_string(value).map_err(io::Error::other)?);
    let tmp = data_dir.join(format!("{file}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(file))?;
    std::fs::File::open(data_dir)?.sync_all()
}
