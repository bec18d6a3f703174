//! Writers, providers, shadow copies and shadow storage (`shadowcopy admin`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::MaxSize;

/// `GET /v1/writers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WriterList {
    pub writers: Vec<Writer>,
}

/// A registered writer, its state and its last error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Writer {
    pub writer_name: String,
    pub writer_id: Uuid,
    pub instance_name: String,
    /// The reference system's state number.
    pub state: u8,
    pub state_name: String,
    /// The last failure's name, if the writer failed.
    pub failure: Option<String>,
    pub message: Option<String>,
}

/// `GET /v1/providers`: the snapshot providers and the volumes they serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderList {
    pub providers: Vec<Provider>,
    pub volumes: Vec<VolumeInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Provider {
    pub provider_id: Uuid,
    pub name: String,
    /// `software` (copy-on-write filter) or `btrfs` (btrfs read-only snapshots).
    #[serde(rename = "type")]
    pub provider_type: String,
}

/// A volume the provider serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VolumeInfo {
    pub guid: Uuid,
    pub label: String,
    /// Its directory on the node.
    pub root: String,
    pub block_size: u64,
    pub snapshots: u64,
}

/// `GET /v1/shadows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShadowList {
    pub shadows: Vec<Shadow>,
}

/// A shadow copy (one volume's snapshot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Shadow {
    pub id: Uuid,
    pub set_id: Uuid,
    pub volume: Uuid,
    pub volume_label: String,
    /// Creation order within the volume (higher is newer).
    pub seq: u64,
    pub created_unix_ms: u64,
    /// Kept until deleted (`create shadow`), or released with its backup job.
    pub persistent: bool,
    /// Bytes its diff area occupies in shadow storage.
    pub diff_area_bytes: u64,
    pub files: u64,
    /// Where the node has it mounted read-only (`admin expose`), if anywhere.
    #[serde(default)]
    pub exposed_at: Option<String>,
}

/// `POST /v1/shadows`: a persistent shadow copy of one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateShadow {
    /// The volume (label or GUID).
    #[serde(rename = "for")]
    pub for_volume: String,
}

/// The answer to [`CreateShadow`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedShadow {
    pub set_id: Uuid,
    pub shadows: Vec<Shadow>,
    /// How long writes were held.
    pub hold_ms: f64,
    pub commit_ms: f64,
}

/// `POST /v1/shadows/delete`: exactly one of `for` with `oldest`, `shadow`, `for` with `all`,
/// or `all`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeleteShadows {
    #[serde(rename = "for")]
    pub for_volume: Option<String>,
    #[serde(default)]
    pub oldest: bool,
    pub shadow: Option<Uuid>,
    #[serde(default)]
    pub all: bool,
}

/// The answer to [`DeleteShadows`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeletedShadows {
    pub deleted: Vec<Uuid>,
}

/// `GET /v1/shadowstorage`, and the answer to adding or resizing one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShadowStorageList {
    pub shadow_storage: Vec<ShadowStorage>,
}

/// Where a volume's snapshots keep preserved blocks, how much they use, and the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShadowStorage {
    pub for_volume: Uuid,
    pub for_label: String,
    pub on_volume: Uuid,
    pub on_root: String,
    pub used_bytes: u64,
    /// Absent (null) when unbounded.
    pub max_bytes: Option<u64>,
}

/// `POST /v1/shadowstorage`: put a volume's shadow storage on a volume, with a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddShadowStorage {
    #[serde(rename = "for")]
    pub for_volume: String,
    /// The volume that holds the storage (required).
    pub on: Option<String>,
    pub max_size: MaxSize,
}

/// `POST /v1/shadowstorage/resize`: change the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResizeShadowStorage {
    #[serde(rename = "for")]
    pub for_volume: String,
    pub max_size: MaxSize,
}

/// `POST /v1/shadows/expose`: mount a shadow copy read-only at a directory of the node, for
/// any tool to read (FUSE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExposeShadow {
    pub shadow: Uuid,
    /// An absolute path on the node: an existing empty directory, or one that is created.
    pub at: String,
}

/// `POST /v1/shadows/unexpose`: exactly one of `shadow` or `at`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnexposeShadow {
    pub shadow: Option<Uuid>,
    pub at: Option<String>,
}

/// One exposed shadow copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Exposure {
    pub shadow: Uuid,
    pub at: String,
    /// Exposed again after a restart of the node (the shadow copy is persistent).
    pub persistent: bool,
}

/// The answer to [`ExposeShadow`] and [`UnexposeShadow`]: what the request exposed or
/// unexposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Exposures {
    pub exposures: Vec<Exposure>,
}
