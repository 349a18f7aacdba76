//! Presigned direct uploads (cluster mode): the client sends the zip
//! straight to the object store, so the gateway never carries its bytes.
//! `POST /v1/uploads` (JSON: `size` and the batch options) answers with
//! presigned part URLs (one presigned PUT for a zip that fits one part);
//! `POST /v1/uploads/{id}/complete` with the parts' ETags puts them
//! together and turns the archive into a batch with the same light check
//! as any upload (read by range from the store). The upload's state is the
//! same catalog row a tus upload has, so it expires and is cleaned up the
//! same way.

use crate::tus::append::Held;
use crate::upload::{accepted, precheck};
use crate::{AppState, Problem};
use axum::Json;
use axum::body::to_bytes;
use axum::extract::{Extension, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use picsift_core::auth::Caller;
use picsift_core::model::staging_key;
use picsift_core::resumable::{
    Finished, LOCK_TTL_MS, UploadKind, UploadOptions, UploadRecord, check_length, direct_parts,
};
use picsift_core::time::now_ms;
use serde::Deserialize;
use std::time::Duration;

/// A direct upload's request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    /// The zip's size in bytes.
    size: u64,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    callback: Option<String>,
    #[serde(default)]
    strict: bool,
}

/// The ETags the client got for its parts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    #[serde(default)]
    parts: Vec<PartTag>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartTag {
    number: u32,
    etag: String,
}

const BODY_LIMIT: usize = 4 << 20;

async fn json_body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, Problem> {
    let bytes = to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| Problem::bad_request(format!("the request body cannot be read: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Problem::bad_request(format!(
            "the request body is not what this endpoint takes: {e}"
        ))
    })
}

fn not_offered() -> Problem {
    Problem::new(
        StatusCode::NOT_IMPLEMENTED,
        "direct-upload-unavailable",
        "Direct uploads not offered",
        "this server's storage offers no presigned URLs (direct uploads need S3); upload with tus (POST /v1/uploads with Tus-Resumable: 1.0.0) or POST /v1/batches",
    )
}

/// `POST /v1/uploads` without `Tus-Resumable`: a direct upload's start.
pub async fn start(s: AppState, caller: Caller, req: Request) -> Response {
    match start_direct(&s, &caller, req).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn start_direct(s: &AppState, caller: &Caller, req: Request) -> Result<Response, Problem> {
    let r: StartRequest = json_body(req).await?;
    let mut options = UploadOptions {
        policy: r.policy,
        callback: r.callback,
        strict: r.strict,
        reserved: false,
    };
    let (_, limit) = precheck(s, &options).await?;
    check_length(r.size, None, 0, limit).map_err(|_| {
        crate::upload::too_large(format!(
            "the upload declares {} bytes; the limit is {limit} (--max-upload-bytes, policy.max_upload_bytes)",
            r.size
        ))
    })?;
    if r.size == 0 {
        return Err(crate::upload::not_zip("the upload is empty"));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let key = staging_key(&id);
    let ttl = Duration::from_millis(s.limits.upload_ttl_ms.max(1_000) as u64);
    // Whether the store presigns at all, before anything is reserved.
    if s.blobs.presigned_part(&key, "", 0, ttl).await?.is_none() {
        return Err(not_offered());
    }
    options.reserved =
        crate::auth::reserve_quota(s, caller, &id, Some(r.size), s.limits.upload_ttl_ms).await?;
    let made = async {
        let (part_size, count) = direct_parts(r.size);
        let multipart_id = if count == 1 {
            String::new()
        } else {
            s.blobs.start_parts(&key).await?
        };
        let mut urls = Vec::with_capacity(count as usize);
        if count == 1 {
            urls.push((0, s.blobs.presigned_part(&key, "", 0, ttl).await?));
        } else {
            for n in 1..=count as u32 {
                urls.push((
                    n,
                    s.blobs.presigned_part(&key, &multipart_id, n, ttl).await?,
                ));
            }
        }
        let now = now_ms();
        let rec = UploadRecord {
            id: id.clone(),
            owner: caller.tenant.clone(),
            kind: UploadKind::Direct,
            length: Some(r.size),
            offset: 0,
            options: options.clone(),
            multipart_id,
            parts: vec![],
            tail: None,
            created_at: now,
            expires_at: now + s.limits.upload_ttl_ms,
            lock: None,
            finished: None,
        };
        Ok::<_, picsift_core::Error>((rec, part_size, urls))
    }
    .await;
    let (made, urls) = match made {
        Ok((rec, part_size, urls)) => (Ok(rec), Some((part_size, urls))),
        Err(e) => (Err(e), None),
    };
    let rec = crate::tus::record(s, &id, options.reserved, made).await?;
    let (part_size, urls) = urls.unwrap_or_default();
    tracing::info!(
        upload = id,
        size = r.size,
        parts = urls.len(),
        "direct upload started"
    );
    let parts: Vec<_> = urls
        .into_iter()
        .map(|(n, url)| serde_json::json!({"number": n, "url": url, "method": "PUT"}))
        .collect();
    let body = serde_json::json!({
        "id": id,
        "part_size": part_size,
        "parts": parts,
        "complete_url": format!("/v1/uploads/{id}/complete"),
        "expires_at_ms": rec.expires_at,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST /v1/uploads/{id}/complete`: the parts put together and checked;
/// 202 with the batch, as `POST /v1/batches` answers.
pub async fn complete(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let run = async {
        let body: CompleteRequest = json_body(req).await?;
        let r = match s.uploads.upload(&id).await? {
            Some(r) if r.kind == UploadKind::Direct && caller.may_see(&r.owner) => r,
            _ => return Err(Problem::not_found(&format!("upload {id}"))),
        };
        match &r.finished {
            Some(Finished::Batch) => {
                return Ok((
                    StatusCode::ACCEPTED,
                    Json(serde_json::json!({"id": id, "status_url": format!("/v1/batches/{id}")})),
                )
                    .into_response());
            }
            Some(Finished::Refused { status, problem }) => {
                return Ok(Problem::replay(
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                    problem.clone(),
                ));
            }
            None => {}
        }
        let etags = etags_in_order(&r, body.parts)?;
        let token = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        if !s
            .uploads
            .lock_upload(&id, &token, 0, now, now + LOCK_TTL_MS)
            .await?
        {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "upload-busy",
                "Upload busy or expired",
                "this upload is being completed by another request, or has expired",
            ));
        }
        let held = Held {
            s: &s,
            rec: r.clone(),
            token,
        };
        let rec = UploadRecord {
            parts: etags,
            offset: r.length.unwrap_or_default(),
            ..r
        };
        let summary = held.finish(rec).await?;
        s.metrics.uploads_completed.inc();
        Ok(match summary {
            Some(summary) => accepted(&id, &summary),
            None => (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"id": id, "status_url": format!("/v1/batches/{id}")})),
            )
                .into_response(),
        })
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// The ETags of parts `1..=n`, each named once, in order; none for a
/// single PUT.
fn etags_in_order(r: &UploadRecord, mut parts: Vec<PartTag>) -> Result<Vec<String>, Problem> {
    if r.multipart_id.is_empty() {
        return Ok(vec![]);
    }
    let (_, count) = direct_parts(r.length.unwrap_or_default());
    parts.sort_by_key(|p| p.number);
    let numbered = parts
        .iter()
        .enumerate()
        .all(|(i, p)| p.number as usize == i + 1);
    if parts.len() as u64 != count || !numbered {
        return Err(Problem::bad_request(format!(
            "send the ETag of every part, numbers 1 to {count}, each once"
        )));
    }
    Ok(parts.into_iter().map(|p| p.etag).collect())
}
