//! The error body every failed request answers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error": {"code": …, "message": …}}`: the body of every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong. Clients branch on `code` (stable, snake_case); `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// The HTTP status the error would have had: only in a progress stream's `error` line,
    /// whose response status is 200 because streaming had started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}
