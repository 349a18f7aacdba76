//! `GET /v1/policy`: what an upload must be, for clients that check files
//! before sending them (the web frontend), and what each reason code means.

use crate::{AppState, Problem};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use picsift_core::verdict::Reason;
use serde::Deserialize;

/// Which policy.
#[derive(Deserialize, Default)]
pub struct PolicyQuery {
    /// A ValidationPolicy's name on Kubernetes (default `default`).
    policy: Option<String>,
}

/// The formats, limits and reason codes of the policy an upload naming
/// `policy` is checked against.
pub async fn show(
    State(s): State<AppState>,
    Query(q): Query<PolicyQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    let policy = s
        .named_policy(q.policy.as_deref(), StatusCode::NOT_FOUND)
        .await?;
    let reasons: Vec<_> = Reason::ALL
        .iter()
        .map(|r| {
            serde_json::json!({
                "code": r.code(), "verdict": r.kind().as_str(), "remedy": r.remedy(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "formats": policy.allowed_formats,
        // The gateway's own limit applies too (as for uploads).
        "max_upload_bytes": policy.max_upload_bytes.min(s.policy.max_upload_bytes),
        "max_entries": policy.max_entries,
        "max_entry_bytes": policy.max_entry_bytes,
        "reasons": reasons,
    })))
}
