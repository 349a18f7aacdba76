//! `POST /v1/batches`: the upload streams to staging storage while its
//! first bytes are checked, then the staged archive gets the light check
//! and the batch is created. A refused upload leaves nothing behind.

use crate::{AppState, Problem};
use axum::Json;
use axum::extract::{Extension, FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, pin_mut, stream};
use picsift_core::archive::{self, ArchiveProblem};
use picsift_core::auth::Caller;
use picsift_core::backend::NewBatch;
use picsift_core::blob_reader::BlobReader;
use picsift_core::model::staging_key;
use picsift_core::policy::Policy;
use picsift_core::resumable::UploadOptions;
use picsift_core::time::now_ms;
use serde::Deserialize;
use std::fmt::Display;
use tokio::sync::mpsc;

/// Upload options.
#[derive(Deserialize)]
pub struct UploadQuery {
    /// Webhook URL called when the batch finishes.
    callback: Option<String>,
    /// Refuse the whole upload when any entry is not an allowed image
    /// (by default such entries get their own rejected verdicts).
    #[serde(default)]
    strict: bool,
    /// The policy to check the upload against (a ValidationPolicy in the
    /// cluster); the installation's default when absent.
    policy: Option<String>,
}

pub(crate) fn too_large(detail: String) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload-too-large",
        "Upload too large",
        detail,
    )
}

pub(crate) fn not_zip(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "not-a-zip",
        "Not a zip archive",
        detail,
    )
}

pub(crate) fn check_callback(url: &str) -> Result<(), Problem> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host_ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
    if !host_ok || url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-callback",
            "Invalid callback URL",
            format!("callback {url:?} is not an absolute http(s) URL"),
        ));
    }
    Ok(())
}

/// Handles a raw zip body or a multipart form with one file field.
pub async fn create_batch(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> Result<Response, Problem> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let id = uuid::Uuid::now_v7().to_string();
    // The upload's place in its tenant's quotas, taken atomically with the
    // check (concurrent uploads cannot all pass it), held while it streams
    // and dropped once the batch exists (it counts itself then) or failed.
    let reserved =
        crate::auth::reserve_quota(&s, &caller, &id, declared, crate::auth::RESERVATION_TTL_MS)
            .await?;
    let result = receive(s.clone(), caller, q, req, id.clone(), reserved).await;
    if reserved && let Err(e) = s.catalog.release_upload(&id).await {
        tracing::warn!(batch = id, error = %e, "could not release a quota reservation; it lapses by itself");
    }
    result
}

/// An upload whose quota place is held: checked, staged, recorded and
/// scheduled, or refused whole.
async fn receive(
    s: AppState,
    caller: Caller,
    q: UploadQuery,
    req: Request,
    id: String,
    reserved: bool,
) -> Result<Response, Problem> {
    let (policy, limit) = precheck(
        &s,
        &UploadOptions {
            policy: q.policy.clone(),
            callback: q.callback.clone(),
            ..Default::default()
        },
    )
    .await?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limit) {
        return Err(too_large(format!(
            "the upload declares {n} bytes; the limit is {limit} (--max-upload-bytes, policy.max_upload_bytes)"
        )));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let key = staging_key(&id);
    let staged = if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, &s)
            .await
            .map_err(|e| Problem::bad_request(format!("malformed multipart body: {e}")))?;
        let mut staged = None;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| Problem::bad_request(format!("malformed multipart body: {e}")))?
        {
            if field.file_name().is_some() || field.name() == Some("file") {
                staged = Some(stage(&s, &key, field, limit).await?);
                break;
            }
        }
        staged.ok_or_else(|| Problem::bad_request("the multipart form has no file field"))?
    } else if content_type.is_empty()
        || [
            "application/zip",
            "application/x-zip-compressed",
            "application/octet-stream",
        ]
        .iter()
        .any(|t| content_type.starts_with(t))
    {
        stage(&s, &key, req.into_body().into_data_stream(), limit).await?
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!(
                "send the zip as application/zip or as a multipart/form-data file field, not {content_type}"
            ),
        ));
    };
    let (size, head) = staged;
    let options = UploadOptions {
        policy: q.policy,
        callback: q.callback,
        strict: q.strict,
        reserved,
    };
    match admit(&s, &caller, &options, &policy, &id, size, head).await {
        Ok(summary) => Ok(accepted(&id, &summary)),
        Err(p) => {
            let _ = s.blobs.delete(&key).await;
            Err(p)
        }
    }
}

/// The checks every upload passes before its bytes are taken: a valid
/// callback, a queue that can take the work, the dedup index ready, and
/// the policy it names. Returns the policy and the upload size limit.
pub(crate) async fn precheck(s: &AppState, o: &UploadOptions) -> Result<(Policy, u64), Problem> {
    if let Some(cb) = &o.callback {
        check_callback(cb)?;
    }
    // Refuse before reading the body when the queue cannot take the work:
    // a batch is created whole or not at all.
    if let Some(q) = &s.queue {
        q.backlog()
            .await
            .map_err(|e| Problem::unavailable(format!("the work queue is unavailable: {e}")))?;
    }
    crate::dedup_gate::check(s).await?;
    upload_limit(s, o.policy.as_deref()).await
}

/// The policy an upload names and its size limit (the policy's, within the
/// installation's).
pub(crate) async fn upload_limit(
    s: &AppState,
    policy: Option<&str>,
) -> Result<(Policy, u64), Problem> {
    let policy = s.named_policy(policy, StatusCode::BAD_REQUEST).await?;
    let limit = policy.max_upload_bytes.min(s.policy.max_upload_bytes);
    Ok((policy, limit))
}

/// Turns the archive staged under `staging_key(id)` (`size` bytes, starting
/// with `head`) into a batch of `caller`'s: its quota place settled, the
/// light check, the batch recorded and scheduled. The caller deletes the
/// staged archive when this fails (or keeps it for a retry).
pub(crate) async fn admit(
    s: &AppState,
    caller: &Caller,
    o: &UploadOptions,
    policy: &Policy,
    id: &str,
    size: u64,
    head: Vec<u8>,
) -> Result<archive::Summary, Problem> {
    let key = staging_key(id);
    if o.reserved {
        crate::auth::settle_quota(s, caller, id, size).await?;
    }
    let summary = light_check(s, policy, &key, size, head, o.strict).await?;
    let batch = NewBatch {
        id: id.to_string(),
        owner: caller.tenant.clone(),
        staged_key: key.clone(),
        upload_bytes: size,
        total_entries: summary.entries,
        callback_url: o.callback.clone(),
        now: now_ms(),
    };
    s.catalog.create_batch(&batch).await?;
    if let Err(e) = s.scheduler.submit(&batch, o.policy.as_deref()).await {
        // Nobody would process it: the upload fails whole.
        tracing::error!(batch = id, error = %e, "could not submit the batch");
        let _ = s
            .catalog
            .fail_batch(
                id,
                "the batch could not be scheduled; upload it again",
                now_ms(),
            )
            .await;
        let _ = s.blobs.delete(&key).await;
        return Err(Problem::unavailable(format!(
            "the batch could not be scheduled; try again: {e}"
        )));
    }
    tracing::info!(
        batch = id,
        bytes = size,
        entries = summary.entries,
        "batch received"
    );
    Ok(summary)
}

/// The 202 that says a batch was received, with its Location.
pub(crate) fn accepted(id: &str, summary: &archive::Summary) -> Response {
    let location = format!("/v1/batches/{id}");
    let body = serde_json::json!({
        "id": id,
        "status_url": location,
        "entries": summary.entries,
        "refused_before_processing": summary.refused,
    });
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Streams `body` into the blob store under `key`, at most `limit` bytes,
/// refusing it as soon as its first bytes show it is not a zip. Returns the
/// size and the first bytes.
async fn stage<S, E>(
    s: &AppState,
    key: &str,
    body: S,
    limit: u64,
) -> Result<(u64, Vec<u8>), Problem>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Display,
{
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    let sink = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed();
    let store = s.blobs.put_stream(key, sink);
    let pump = async move {
        pin_mut!(body);
        let mut n = 0u64;
        let mut head = Vec::with_capacity(8);
        // On a refusal the store must see an error, never a clean end:
        // that is what keeps a partial upload from being committed.
        let refuse = |p: Problem| async {
            let _ = tx.send(Err(std::io::Error::other(p.detail.clone()))).await;
            Err(p)
        };
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // The server's body idle timeout (see `server.rs`).
                Err(e) if e.to_string().contains("designated timeout") => {
                    return refuse(Problem::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "body-timeout",
                        "Request body too slow",
                        "the upload stalled: no data arrived within the server's body idle timeout",
                    ))
                    .await;
                }
                Err(e) => {
                    return refuse(Problem::bad_request(format!("the upload was cut off: {e}")))
                        .await;
                }
            };
            n += chunk.len() as u64;
            if n > limit {
                return refuse(too_large(format!("the upload exceeds the limit of {limit} bytes (--max-upload-bytes, policy.max_upload_bytes)"))).await;
            }
            if head.len() < 4 {
                head.extend_from_slice(&chunk[..chunk.len().min(4 - head.len())]);
                if head.len() == 4
                    && !(head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06"))
                {
                    return refuse(not_zip(
                        "the upload is not a zip archive (its first bytes are not a zip header)",
                    ))
                    .await;
                }
            }
            if tx.send(Ok(chunk)).await.is_err() {
                break; // The store failed; its error is reported below.
            }
        }
        Ok((n, head))
    };
    let (stored, pumped) = tokio::join!(store, pump);
    match (pumped, stored) {
        (Err(p), _) => {
            let _ = s.blobs.delete(key).await;
            Err(p)
        }
        (Ok(_), Err(e)) => {
            let _ = s.blobs.delete(key).await;
            Err(Problem::unavailable(format!(
                "staging the upload failed: {e}"
            )))
        }
        (Ok((n, head)), Ok(_)) => Ok((n, head)),
    }
}

pub(crate) async fn light_check(
    s: &AppState,
    policy: &Policy,
    key: &str,
    size: u64,
    head: Vec<u8>,
    strict: bool,
) -> Result<archive::Summary, Problem> {
    if size == 0 {
        return Err(not_zip("the upload is empty"));
    }
    let reader = BlobReader::new(
        s.blobs.clone(),
        key,
        size,
        tokio::runtime::Handle::current(),
    );
    let failure = reader.failure();
    let policy = policy.clone();
    let checked = tokio::task::spawn_blocking(move || archive::light_check(&head, reader, &policy))
        .await
        .map_err(|e| {
            // A panic in the zip reader is the upload's doing: retrying will not help.
            Problem::bad_request(format!("the archive could not be checked: {e}"))
        })?;
    if let Some(f) = failure.get() {
        return Err(Problem::unavailable(format!(
            "reading the staged upload failed: {f}"
        )));
    }
    let bad = |slug, title, p: ArchiveProblem| {
        Problem::new(StatusCode::BAD_REQUEST, slug, title, p.to_string())
    };
    let summary = checked.map_err(|p| match p {
        ArchiveProblem::NotZip(_) => bad("not-a-zip", "Not a zip archive", p),
        ArchiveProblem::DuplicateNames => bad("duplicate-names", "Duplicate entry names", p),
        ArchiveProblem::Prepended(_) => {
            bad("archive-offset", "Archive does not start at offset 0", p)
        }
        ArchiveProblem::Empty => bad("empty-archive", "Empty archive", p),
        ArchiveProblem::Overlapping => bad("overlapping-entries", "Overlapping entries", p),
        ArchiveProblem::TooManyEntries(..) | ArchiveProblem::TooLarge(..) => {
            too_large(p.to_string())
        }
        ArchiveProblem::NoImages(_) | ArchiveProblem::SomeNotImages(..) => {
            bad("no-images", "No allowed images", p)
        }
    })?;
    if strict && !summary.refused.is_empty() {
        let refused = summary.entries - summary.images;
        return Err(bad(
            "no-images",
            "No allowed images",
            ArchiveProblem::SomeNotImages(refused, summary.refused.join(", ")),
        ));
    }
    Ok(summary)
}
