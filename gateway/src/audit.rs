//! The audit sample: a fraction of each batch's entries (the policy's
//! `audit.sampleRate`), copied with their verdicts and every score so
//! quality engineers can review the checks' decisions.

use crate::{AppState, Problem};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use picsift_core::auth::Caller;
use picsift_core::model::{audit_key, audit_prefix};
use serde::Deserialize;

/// `?batch=ID`.
#[derive(Deserialize)]
pub struct AuditQuery {
    batch: Option<String>,
}

/// The audit sample is for quality engineers: admins only.
async fn known_batch(s: &AppState, caller: &Caller, id: &str) -> Result<(), Problem> {
    if !caller.admin {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "the audit sample is for admins",
        ));
    }
    s.visible_batch(caller, id).await.map(drop)
}

/// `GET /v1/audit?batch=ID`: the batch's audit records, each with a link
/// to the entry's bytes as uploaded.
pub async fn list(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    let Some(batch) = q.batch.filter(|b| !b.is_empty()) else {
        return Err(Problem::bad_request("give the batch: /v1/audit?batch=ID"));
    };
    known_batch(&s, &caller, &batch).await?;
    let keys = s.blobs.list(&audit_prefix(&batch)).await?;
    let mut records = Vec::new();
    for key in keys.iter().filter(|k| k.ends_with(".json")) {
        let Some(size) = s.blobs.size(key).await? else {
            continue;
        };
        let bytes = s.blobs.get_range(key, 0..size).await?;
        let mut record: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| picsift_core::Error::Corrupt(format!("audit record {key}: {e}")))?;
        let data = key.replace(".json", ".data");
        if keys.contains(&data)
            && let Some(index) = record["index"].as_u64()
        {
            record["content"] = format!("/v1/audit/{batch}/{index}/content").into();
        }
        records.push(record);
    }
    Ok(Json(
        serde_json::json!({ "batch": batch, "entries": records }),
    ))
}

/// `GET /v1/audit/{batch}/{index}/content`: the sampled entry's bytes as
/// uploaded (accepted or not: reviewers need to see what was refused).
pub async fn content(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((batch, index)): Path<(String, u32)>,
) -> Result<Response, Problem> {
    known_batch(&s, &caller, &batch).await?;
    let key = audit_key(&batch, index, "data");
    let missing = || Problem::not_found(&format!("audit copy of entry {index} of batch {batch}"));
    let size = s.blobs.size(&key).await?.ok_or_else(missing)?;
    let stream = s.blobs.get_stream(&key, None).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{batch}-{index}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
