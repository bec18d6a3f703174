//! The node's domain values as the API contract's types ([`api`]).
//!
//! Plain functions rather than `From` impls: neither side is this crate's. Where the domain
//! type already serialises in the wire format (a database header with its hex signature, a
//! storage group as the node records it), it is carried over through serde so that the two
//! cannot drift; a mismatch is an internal error, never a silent change of the answer.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Carries a value that serialises in the wire format over into its contract type.
pub fn via_serde<T: Serialize, U: DeserializeOwned>(what: &str, v: &T) -> Result<U, ApiError> {
    serde_json::to_value(v)
        .and_then(serde_json::from_value)
        .map_err(|e| ApiError::internal(format!("{what} does not fit the API contract: {e}")))
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}

pub fn volume_info(v: volume::VolumeInfo) -> api::VolumeInfo {
    api::VolumeInfo {
        guid: v.guid,
        label: v.label,
        root: path(&v.root),
        block_size: v.block_size,
        snapshots: v.snapshots as u64,
    }
}

pub fn shadow(s: volume::ShadowCopyInfo) -> api::Shadow {
    api::Shadow {
        id: s.id,
        set_id: s.set_id,
        volume: s.volume,
        volume_label: s.volume_label,
        seq: s.seq,
        created_unix_ms: s.created_unix_ms,
        persistent: s.persistent,
        diff_area_bytes: s.diff_area_bytes,
        files: s.files as u64,
        exposed_at: None,
    }
}

pub fn shadow_storage(list: Vec<volume::ShadowStorageInfo>) -> api::ShadowStorageList {
    api::ShadowStorageList {
        shadow_storage: list
            .into_iter()
            .map(|s| api::ShadowStorage {
                for_volume: s.for_volume,
                for_label: s.for_label,
                on_volume: s.on_volume,
                on_root: path(&s.on_root),
                used_bytes: s.used_bytes,
                max_bytes: s.max_bytes,
            })
            .collect(),
    }
}

pub fn slot(s: Option<ese::BackupSlot>) -> Option<api::BackupSlot> {
    s.map(|s| api::BackupSlot {
        time: s.time,
        gen_low: s.gen_low,
        gen_high: s.gen_high,
        kind: match s.kind {
            ese::SlotKind::Normal => api::SlotKind::Normal,
            ese::SlotKind::Snapshot => api::SlotKind::Snapshot,
            ese::SlotKind::Surrogate => api::SlotKind::Surrogate,
        },
    })
}

pub fn set_summary(s: &backup::repo::BackupSet) -> api::SetSummary {
    api::SetSummary {
        id: s.id,
        created_unix_ms: s.created_unix_ms,
        node: s.node.clone(),
        backup_type: s.backup_type.as_str().to_string(),
        storage_group: s.storage_group.clone(),
        job: s.job_id,
        base_set: s.base_set,
        log_range: s.log_range.as_ref().map(|r| api::LogRange { low: r.low, high: r.high }),
        files: s.files.len() as u64,
        bytes: s.data_bytes(),
    }
}

pub fn event(e: events::Event) -> api::Event {
    api::Event {
        time_ms: e.time_ms,
        node: e.node,
        source: e.source.to_string(),
        id: e.id,
        level: e.level.to_string(),
        job: e.job,
        message: e.message,
        fields: e.fields,
    }
}

pub fn backup_type(t: api::BackupType) -> vss::BackupType {
    match t {
        api::BackupType::Full => vss::BackupType::Full,
        api::BackupType::Incremental => vss::BackupType::Incremental,
        api::BackupType::Differential => vss::BackupType::Differential,
        api::BackupType::Copy => vss::BackupType::Copy,
    }
}

/// Bytes of the host file system holding `path` (for percentage shadow-storage limits).
pub fn host_fs_size(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize))
}

/// A database's status from its header, or the error reading it.
pub fn database_status(name: &str, header: Result<ese::DbHeader, String>) -> api::DatabaseStatus {
    match header {
        Ok(h) => api::DatabaseStatus {
            state: Some(format!("{:?}", h.state)),
            previous_full: slot(h.previous_full),
            previous_incremental: slot(h.previous_incremental),
            previous_differential: slot(h.previous_differential),
            previous_copy: slot(h.previous_copy),
            ..api::DatabaseStatus::named(name)
        },
        Err(e) => api::DatabaseStatus { error: Some(e), ..api::DatabaseStatus::named(name) },
    }
}
