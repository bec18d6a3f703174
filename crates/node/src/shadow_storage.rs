//! Shadow storage changed at runtime (`admin add|resize shadowstorage`), and the rule between
//! those changes and the configuration file's `[[shadow_storage]]`.
//!
//! The configuration file is the administrator's and the node never rewrites it, so a change
//! made through the API is recorded in `<data_dir>/shadow_storage.toml`, together with the
//! configuration entry it was made over. At start, for each volume:
//!
//! - a recorded change whose configuration entry is still the same wins (the administrator
//!   changed it at runtime, after writing the configuration);
//! - otherwise the configuration entry wins (it was edited since, or there is no recorded
//!   change), and a stale record is forgotten.
//!
//! What wins is then applied; when it cannot be — shadow storage cannot move while the volume
//! has shadow copies — the conflict is reported (event 8106, the log) and the node starts with
//! the shadow storage that exists on disk. Nothing here keeps a node from starting.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use events::EventSink;
use events::catalog as cat;
use serde::{Deserialize, Serialize};
use serde_json::json;
use volume::{BtrfsProvider, SoftwareProvider};

use crate::config::{Config, MaxSize, ShadowStorageConfig, parse_max_size};
use crate::node::Node;

/// The file in the node's data directory.
pub const FILE: &str = "shadow_storage.toml";

/// The shadow-storage changes made at runtime, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeShadowStorage {
    #[serde(default, rename = "shadow_storage", skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<Changed>,
}

/// `[[shadow_storage]]` of the node's state: one volume's shadow storage as last set at
/// runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changed {
    #[serde(rename = "for")]
    pub for_volume: String,
    pub on: String,
    /// Bytes; no limit when absent.
    pub max_bytes: Option<u64>,
    /// The configuration entry for the volume when the change was made (none when the
    /// configuration had none): the change stands while the configuration still says this.
    pub over: Option<ShadowStorageConfig>,
}

/// Why a runtime shadow-storage change failed.
#[derive(Debug, thiserror::Error)]
pub enum ShadowStorageError {
    #[error(transparent)]
    Volume(#[from] volume::VolumeError),
    #[error(
        "the shadow storage of volume {volume} was changed, but saving {path} failed ({source}): \
         the change is undone at the next start"
    )]
    Persist {
        volume: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RuntimeShadowStorage {
    /// Reads `<data_dir>/shadow_storage.toml`; nothing was changed when it does not exist. A
    /// file that cannot be read or parsed is reported and ignored: the configuration applies.
    pub fn load(data_dir: &Path) -> Result<RuntimeShadowStorage, String> {
        crate::state_file::load(data_dir, FILE)
            .map(Option::unwrap_or_default)
            .map_err(|e| format!("{}: {e}", data_dir.join(FILE).display()))
    }

    /// Writes the file atomically and durably (temporary file, sync, rename, directory sync).
    pub fn save(&self, data_dir: &Path) -> io::Result<()> {
        let header = "# Shadow storage changed with `shadowcopy admin add|resize shadowstorage`.\n\
             # Written by the node; wins over the configuration entry named in `over` while that\n\
             # entry is unchanged.\n";
        crate::state_file::save(data_dir, FILE, header, self)
    }
}

/// Bytes of the host file system holding `path` (for percentage shadow-storage limits).
fn host_fs_size(path: &Path) -> Option<u64> {
    crate::api::host_fs_size(path).ok()
}

/// The limit a configuration entry asks for, in bytes (`None`: no limit).
fn configured_max(config: &Config, s: &ShadowStorageConfig) -> Option<u64> {
    match parse_max_size(&s.max_size) {
        Some(MaxSize::Bytes(b)) => Some(b),
        Some(MaxSize::Percent(p)) => {
            let root = &config.volume(&s.on)?.path;
            host_fs_size(root).map(|total| total / 100 * p as u64)
        }
        _ => None,
    }
}

/// Sets volume `for_volume`'s shadow storage to be on `on` with limit `max`: moved when it is
/// elsewhere, resized otherwise.
fn apply(
    provider: &SoftwareProvider,
    btrfs: &BtrfsProvider,
    for_volume: &str,
    on: &str,
    max: Option<u64>,
) -> Result<(), volume::VolumeError> {
    if btrfs.is_supported(for_volume) {
        return apply_btrfs(btrfs, for_volume, on, max);
    }
    let vol = provider.volume(for_volume)?;
    let target = provider.volume(on)?;
    if vol.shadow_storage().on_volume != target.guid() {
        provider.add_shadow_storage(for_volume, on, max)
    } else {
        provider.resize_shadow_storage(for_volume, max)
    }
}

/// A btrfs volume's snapshots live on the volume itself: only its limit can change.
fn apply_btrfs(
    btrfs: &BtrfsProvider,
    for_volume: &str,
    on: &str,
    max: Option<u64>,
) -> Result<(), volume::VolumeError> {
    let vol = btrfs.volume(for_volume)?;
    if on != vol.label() && on != vol.guid().to_string() {
        return Err(volume::VolumeError::ShadowStorage {
            volume: vol.label().to_string(),
            why: format!(
                "its btrfs snapshots live on the volume itself; shadow storage cannot be on {on}"
            ),
        });
    }
    btrfs.set_shadow_storage_max(for_volume, max)
}

/// Applies, at start, the configuration's shadow storage and the changes made at runtime
/// (module documentation), and returns the runtime changes that still stand. Reports and
/// skips what cannot be applied.
pub(crate) fn apply_at_start(
    config: &Config,
    provider: &SoftwareProvider,
    btrfs: &BtrfsProvider,
    sink: &Arc<dyn EventSink>,
) -> RuntimeShadowStorage {
    let data_dir = &config.node.data_dir;
    let report = |volume: &str, wanted: String, error: String| {
        tracing::warn!(volume, "shadow storage {wanted} not applied: {error}");
        sink.emit(
            &cat::PROVIDER_SHADOW_STORAGE_CONFLICT,
            None,
            json!({"volume": volume, "wanted": wanted, "error": error}),
        );
    };
    let recorded = RuntimeShadowStorage::load(data_dir).unwrap_or_else(|e| {
        report("(all)", "changed at runtime".into(), format!("{e}; the configuration applies"));
        RuntimeShadowStorage::default()
    });
    let mut wanted: BTreeMap<String, (String, Option<u64>, String)> = BTreeMap::new();
    for s in &config.shadow_storage {
        let what = format!("on {} (max {}) from the configuration", s.on, s.max_size);
        wanted.insert(s.for_volume.clone(), (s.on.clone(), configured_max(config, s), what));
    }
    let mut standing = RuntimeShadowStorage::default();
    for c in &recorded.entries {
        let current = config.shadow_storage.iter().find(|s| s.for_volume == c.for_volume);
        if current != c.over.as_ref() {
            // The configuration entry was edited since the change: it wins.
            continue;
        }
        let max = c.max_bytes.map_or("UNBOUNDED".to_string(), |b| format!("{b} bytes"));
        let what = format!("on {} (max {max}) set at runtime", c.on);
        wanted.insert(c.for_volume.clone(), (c.on.clone(), c.max_bytes, what));
        standing.entries.push(c.clone());
    }
    for (volume, (on, max, what)) in &wanted {
        if let Err(e) = apply(provider, btrfs, volume, on, *max) {
            report(volume, what.clone(), format!("{e}; the shadow storage on disk is kept"));
        }
    }
    if standing != recorded
        && let Err(e) = standing.save(data_dir)
    {
        tracing::warn!("forgetting superseded shadow-storage changes in {FILE}: {e}");
    }
    standing
}

impl Node {
    /// The label of the registered volume with this GUID.
    fn label_of(&self, guid: uuid::Uuid) -> Option<String> {
        self.volume_map().iter().find(|(_, v)| v.guid() == guid).map(|(l, _)| l.clone())
    }

    /// Records the change of `for_volume`'s shadow storage to `on`/`max`, so that it is
    /// applied again at every start.
    fn record(
        &self,
        for_volume: &str,
        on: String,
        max: Option<u64>,
    ) -> Result<(), ShadowStorageError> {
        let data_dir = &self.config().node.data_dir;
        let mut state = self.shadow_state.lock();
        let mut next = state.clone();
        next.entries.retain(|c| c.for_volume != for_volume);
        let over =
            self.config().shadow_storage.iter().find(|s| s.for_volume == for_volume).cloned();
        next.entries.push(Changed { for_volume: for_volume.into(), on, max_bytes: max, over });
        next.save(data_dir).map_err(|source| ShadowStorageError::Persist {
            volume: for_volume.into(),
            path: data_dir.join(FILE),
            source,
        })?;
        *state = next;
        Ok(())
    }

    /// `admin add shadowstorage`: puts `for_volume`'s shadow storage on `on` with limit `max`,
    /// and keeps the change across restarts.
    pub fn add_shadow_storage(
        &self,
        for_volume: &str,
        on: &str,
        max: Option<u64>,
    ) -> Result<(), ShadowStorageError> {
        if self.btrfs_provider().is_supported(for_volume) {
            apply_btrfs(self.btrfs_provider(), for_volume, on, max)?;
        } else {
            self.provider().add_shadow_storage(for_volume, on, max)?;
        }
        self.record(for_volume, on.into(), max)
    }

    /// `admin resize shadowstorage`: changes `for_volume`'s shadow-storage limit, and keeps the
    /// change across restarts.
    pub fn resize_shadow_storage(
        &self,
        for_volume: &str,
        max: Option<u64>,
    ) -> Result<(), ShadowStorageError> {
        if self.btrfs_provider().is_supported(for_volume) {
            let label = self.btrfs_provider().volume(for_volume)?.label().to_string();
            self.btrfs_provider().set_shadow_storage_max(for_volume, max)?;
            return self.record(for_volume, label, max);
        }
        self.provider().resize_shadow_storage(for_volume, max)?;
        let on_guid = self.provider().volume(for_volume)?.shadow_storage().on_volume;
        let on = self.label_of(on_guid).unwrap_or_else(|| for_volume.to_string());
        self.record(for_volume, on, max)
    }
}
