//! `POST /v1/search/similar`: stored images that are the same picture as
//! a stored image or an uploaded one, by PDQ perceptual hash.

use crate::{AppState, Problem};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, header};
use picsift_core::auth::Caller;
use picsift_core::pdq::{Hash, MATCH_DISTANCE};
use picsift_core::pdq_index::MAX_SEARCH_DISTANCE;
use serde::Deserialize;

/// Search options, in the query string (for an image body) or the JSON body.
#[derive(Deserialize, Default)]
pub struct SimilarQuery {
    /// A stored image to search from (JSON body).
    image_id: Option<String>,
    /// Most bits apart (default 31, at most 31).
    max_distance: Option<u32>,
    /// Most matches (default 20, at most 1000).
    limit: Option<u32>,
}

/// Image searches decoding at once in this process.
static DECODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Either `{"image_id": "..."}` as JSON, or the image itself as the body
/// (any `image/*` or `application/octet-stream` type).
pub async fn similar(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SimilarQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (q, query_hash, exclude) = if content_type.starts_with("application/json") {
        let json: SimilarQuery = serde_json::from_slice(&body)
            .map_err(|e| Problem::bad_request(format!("the JSON body is not a search: {e}")))?;
        // The JSON's options win over the query string's.
        let q = SimilarQuery {
            image_id: json.image_id,
            max_distance: json.max_distance.or(q.max_distance),
            limit: json.limit.or(q.limit),
        };
        let id = q
            .image_id
            .clone()
            .ok_or_else(|| Problem::bad_request("give image_id, or send an image as the body"))?;
        let image = crate::images::stored_image(&s, &caller, &id).await?;
        let hash = image.pdq.as_deref().and_then(|h| h.parse::<Hash>().ok());
        let quality = image.pdq_quality.unwrap_or(0);
        (q, hash.map(|h| (h, quality)), Some(id))
    } else {
        if body.is_empty() {
            return Err(Problem::bad_request(
                "send an image as the body, or {\"image_id\": ...} as JSON",
            ));
        }
        // Each image search decodes a whole image in the gateway: a few at
        // a time, the rest are told to come back.
        let _permit = DECODES
            .try_acquire()
            .map_err(|_| Problem::busy("too many image searches at once; retry in a moment"))?;
        let policy = s.policy.clone();
        let prepared =
            tokio::task::spawn_blocking(move || picsift_core::pipeline::prepare(&body, &policy))
                .await
                .map_err(|e| Problem::bad_request(format!("the image could not be checked: {e}")))?
                .map_err(|r| {
                    Problem::bad_request(format!(
                        "the image was refused ({}): {}",
                        r.reason.code(),
                        r.detail
                    ))
                })?;
        (q, prepared.pdq.map(|p| (p.hash, p.quality)), None)
    };
    let max = q
        .max_distance
        .unwrap_or(MATCH_DISTANCE)
        .min(MAX_SEARCH_DISTANCE);
    let limit = q.limit.unwrap_or(20).clamp(1, 1000);
    let Some((hash, quality)) = query_hash else {
        return Ok(Json(
            serde_json::json!({"pdq": null, "quality": null, "matches": []}),
        ));
    };
    let mut found = s
        .catalog
        .similar(&hash, max, limit + 1, s.image_scope(&caller))
        .await?;
    found.retain(|m| Some(&m.image_id) != exclude.as_ref());
    found.truncate(limit as usize);
    Ok(Json(serde_json::json!({
        "pdq": hash.to_string(),
        "quality": quality,
        "max_distance": max,
        "matches": found,
    })))
}

/// `POST /v1/images/lookup` body: SHA-256 values of files as uploaded.
#[derive(Deserialize)]
pub struct LookupRequest {
    sha256: Vec<String>,
}

/// Most hashes one lookup may ask about.
const MAX_LOOKUP: usize = 10_000;

/// `POST /v1/images/lookup`: which of these files (by the SHA-256 of the
/// file as the client has it) picsift already stored or found duplicate,
/// so a client can leave them out of its next zip.
pub async fn lookup(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<LookupRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, Problem> {
    let Json(req) = body.map_err(|e| {
        Problem::bad_request(format!("send {{\"sha256\": [hex, ...]}} as JSON: {e}"))
    })?;
    if req.sha256.len() > MAX_LOOKUP {
        return Err(Problem::bad_request(format!(
            "{} hashes; ask about at most {MAX_LOOKUP} at a time",
            req.sha256.len()
        )));
    }
    let mut hashes = Vec::with_capacity(req.sha256.len());
    for h in req.sha256 {
        let h = h.to_ascii_lowercase();
        if !picsift_core::model::is_image_id(&h) {
            return Err(Problem::bad_request(format!(
                "{h:?} is not a SHA-256 in hex (64 characters)"
            )));
        }
        hashes.push(h);
    }
    let known = s
        .catalog
        .known_originals(&hashes, s.image_scope(&caller))
        .await?;
    let known: Vec<_> = known
        .into_iter()
        .map(|(sha256, image_id)| serde_json::json!({"sha256": sha256, "image_id": image_id}))
        .collect();
    Ok(Json(serde_json::json!({ "known": known })))
}
