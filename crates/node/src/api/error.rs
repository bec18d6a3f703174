//! API errors: a stable snake_case code, a message naming what is wrong, and an HTTP status.
//!
//! Clients (the `shadowcopy` command, scripts) branch on `code`; the message is for people.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered as `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this listener needs `Authorization: Bearer <token>` with the node's API token",
        )
    }
}

/// Turns the framework's own plain-text rejections (a malformed JSON body, a wrong method, a
/// missing query parameter) into the API's JSON errors, so that every error has a code.
pub async fn json_rejections(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    // A body that is JSON but not the request's type (a missing field, an unknown backup
    // type, a max size that is not one) is the caller's mistake like any malformed request:
    // 400, as when the handlers checked the fields themselves, not the framework's 422.
    let status =
        if status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let text = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = api::ErrorBody {
            error: api::ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                status: None,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Status and code of a store error (they depend on the variant only).
fn store_kind(e: &store::StoreError) -> (StatusCode, &'static str) {
    use store::StoreError as E;
    match e {
        E::NoSuchStorageGroup(_) => (StatusCode::NOT_FOUND, "no_such_storage_group"),
        E::NoSuchDatabase { .. } => (StatusCode::NOT_FOUND, "no_such_database"),
        E::NotMounted(_) => (StatusCode::CONFLICT, "not_mounted"),
        E::AlreadyMounted(_) => (StatusCode::CONFLICT, "already_mounted"),
        E::BackupInProgress { .. } => (StatusCode::CONFLICT, "backup_in_progress"),
        E::NoSuchMailbox(_) | E::NoSuchFolder { .. } | E::NoSuchMessage { .. } => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        E::BadName(_) => (StatusCode::BAD_REQUEST, "bad_name"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
    }
}

fn vss_kind(e: &vss::VssError) -> (StatusCode, &'static str) {
    use vss::VssError as E;
    match e {
        E::SnapshotSetInProgress { .. } | E::TooManySessions { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        }
        E::UnknownSnapshot { .. } => (StatusCode::NOT_FOUND, "no_such_shadow"),
        _ if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "retryable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "coordinator_error"),
    }
}

fn repo_kind(e: &backup::repo::RepoError) -> (StatusCode, &'static str) {
    use backup::repo::RepoError as E;
    match e {
        E::NotARepository { .. } => (StatusCode::NOT_FOUND, "not_a_repository"),
        E::SetNotFound(_) => (StatusCode::NOT_FOUND, "no_such_set"),
        E::BadSetId(_) => (StatusCode::BAD_REQUEST, "bad_set_id"),
        E::Locked { .. } => (StatusCode::CONFLICT, "repository_locked"),
        E::PasswordRequired { .. } => (StatusCode::UNAUTHORIZED, "repository_password_required"),
        E::WrongPassword { .. } => (StatusCode::FORBIDDEN, "repository_wrong_password"),
        E::Authentication { .. } | E::CorruptKey { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "repository_corrupt")
        }
        E::BadLocation { .. } => (StatusCode::BAD_REQUEST, "bad_repository_location"),
        E::MissingChunk { .. }
        | E::CorruptChunk { .. }
        | E::FileHashMismatch { .. }
        | E::FileSizeMismatch { .. }
        | E::CorruptIndex { .. }
        | E::CorruptManifest { .. }
        | E::CorruptConfig { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "repository_corrupt"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "repository_error"),
    }
}

fn requester_kind(e: &backup::RequesterError) -> (StatusCode, &'static str) {
    use backup::RequesterError as E;
    match e {
        E::Coordinator(v) => vss_kind(v),
        E::Store(s) => store_kind(s),
        E::Repo(r) => repo_kind(r),
        E::NoStoreWriter => (StatusCode::SERVICE_UNAVAILABLE, "no_store_writer"),
        E::NoSuchStorageGroup(_) => (StatusCode::NOT_FOUND, "no_such_storage_group"),
        E::NoSuchDatabase { .. } => (StatusCode::NOT_FOUND, "no_such_database"),
        E::NoView(_) => (StatusCode::INTERNAL_SERVER_ERROR, "no_view"),
        E::List { .. } | E::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io_error"),
        E::Verify(_) => (StatusCode::UNPROCESSABLE_ENTITY, "verification_failed"),
        E::NoBase { .. } => (StatusCode::CONFLICT, "no_base_backup"),
        E::Refused(_) => (StatusCode::CONFLICT, "backup_refused"),
        E::CompleteFailed { .. } => (StatusCode::BAD_GATEWAY, "backup_complete_failed"),
        E::RestoreRefused(_) => (StatusCode::CONFLICT, "restore_refused"),
        E::RestoreFailed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "restore_failed"),
    }
}

/// Status and code of a volume error. What a request can cause — naming something that is
/// not there, asking for what the volume's state forbids, giving a bad value — is the
/// client's to fix and gets a 4xx with its own code; only failures of the node itself (I/O,
/// corrupt metadata, a volume locked by another process) are 500s.
fn volume_kind(e: &volume::VolumeError) -> (StatusCode, &'static str) {
    use volume::VolumeError as E;
    match e {
        E::UnknownVolume(_) => (StatusCode::NOT_FOUND, "no_such_volume"),
        E::SnapshotNotFound(_) | E::SnapshotDeleted(_) => (StatusCode::NOT_FOUND, "no_such_shadow"),
        E::UnknownSet(_) => (StatusCode::NOT_FOUND, "no_such_snapshot_set"),
        E::VolumeAlreadyInSet { .. } => (StatusCode::CONFLICT, "volume_already_in_set"),
        E::EmptySet(_) => (StatusCode::BAD_REQUEST, "empty_snapshot_set"),
        E::BadBlockSize(_) => (StatusCode::BAD_REQUEST, "bad_block_size"),
        E::TooManySnapshots { .. } => (StatusCode::CONFLICT, "too_many_shadows"),
        E::HoldTimeout { .. } => (StatusCode::SERVICE_UNAVAILABLE, "retryable"),
        // The volume crate has one variant for the two refusals of shadow storage; only its
        // reason tells them apart (a unit test pins the wording).
        E::ShadowStorage { why, .. } if why.contains("snapshots exist") => {
            (StatusCode::CONFLICT, "shadow_storage_in_use")
        }
        E::ShadowStorage { .. } => (StatusCode::BAD_REQUEST, "bad_shadow_storage"),
        E::NotBtrfsSubvolume { .. } => (StatusCode::BAD_REQUEST, "not_a_btrfs_subvolume"),
        E::Io { .. } | E::Locked { .. } | E::CorruptMetadata { .. } | E::Btrfs { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "volume_error")
        }
    }
}

macro_rules! from_error {
    ($t:ty, $kind:expr) => {
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                let (status, code) = $kind(&e);
                Self::new(status, code, e.to_string())
            }
        }
    };
}

from_error!(store::StoreError, store_kind);
from_error!(vss::VssError, vss_kind);
from_error!(backup::repo::RepoError, repo_kind);
from_error!(backup::RequesterError, requester_kind);
from_error!(volume::VolumeError, volume_kind);
from_error!(events::EventLogError, |_: &events::EventLogError| (
    StatusCode::INTERNAL_SERVER_ERROR,
    "event_log_error"
));

#[cfg(test)]
mod tests {
    use super::*;
    use volume::{CommitOptions, SoftwareProvider, Volume, VolumeOptions};

    /// Two volumes, `logs` and `db`, with a snapshot of `db` kept.
    fn provider(dir: &std::path::Path) -> SoftwareProvider {
        let p = SoftwareProvider::new();
        for label in ["logs", "db"] {
            p.register(Volume::open_or_create(dir.join(label), VolumeOptions::new(label)).unwrap());
        }
        let set = p.begin_set(CommitOptions { persistent: true, ..Default::default() });
        p.add_volume(set, "db").unwrap();
        p.commit(set).unwrap().keep();
        p
    }

    fn api(e: volume::VolumeError) -> (u16, &'static str) {
        let a = ApiError::from(e);
        (a.status.as_u16(), a.code)
    }

    #[test]
    fn user_caused_volume_errors_are_4xx_with_their_own_codes() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider(dir.path());
        // The errors the admin verbs really produce, from a real provider.
        let moving = p.add_shadow_storage("db", "logs", None).err().unwrap();
        assert!(moving.to_string().contains("snapshots exist"), "{moving}");
        assert_eq!(api(moving), (409, "shadow_storage_in_use"));
        assert_eq!(
            api(p.resize_shadow_storage("db", Some(1024)).err().unwrap()),
            (400, "bad_shadow_storage")
        );
        assert_eq!(
            api(p.resize_shadow_storage("nope", None).err().unwrap()),
            (404, "no_such_volume")
        );
        assert_eq!(
            api(p.delete_snapshot(uuid::Uuid::nil()).err().unwrap()),
            (404, "no_such_shadow")
        );
        let set = p.begin_set(CommitOptions::default());
        p.add_volume(set, "db").unwrap();
        assert_eq!(api(p.add_volume(set, "db").err().unwrap()), (409, "volume_already_in_set"));
        p.abort(set).unwrap();
        assert_eq!(api(p.commit(set).err().unwrap()), (404, "no_such_snapshot_set"));
        let empty = p.begin_set(CommitOptions::default());
        assert_eq!(api(p.commit(empty).err().unwrap()), (400, "empty_snapshot_set"));
    }

    #[test]
    fn failures_of_the_node_itself_stay_500() {
        let e = volume::VolumeError::CorruptMetadata { path: "x".into(), why: "bad".into() };
        assert_eq!(api(e), (500, "volume_error"));
    }
}
