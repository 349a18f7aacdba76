//! Resumable uploads with the tus 1.0 protocol: `POST /v1/uploads` creates
//! one, `HEAD`/`PATCH`/`DELETE /v1/uploads/{id}` ask its offset, append to
//! it and end it. When its last byte arrives it becomes a batch exactly as
//! a one-shot `POST /v1/batches` does (the same checks, the same id), and
//! the answer names the batch (`Picsift-Batch-Id`).
//!
//! No Rust crate implements the tus server side well enough to build on
//! (the few there are keep uploads in one process's memory or files), and
//! the state must be shared by every gateway replica: so the protocol is
//! here ([`protocol`]), its decisions are `picsift_core::resumable`'s, the
//! state is a catalog row and the bytes go to the blob store's multipart
//! uploads ([`append`]).

pub(crate) mod append;
pub(crate) mod protocol;

use crate::{AppState, Problem};
use append::{Held, Outcome};
use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use picsift_core::auth::Caller;
use picsift_core::model::staging_key;
use picsift_core::resumable::{
    Append, Finished, LOCK_TTL_MS, LengthProblem, UploadKind, UploadRecord, check_length,
    decide_append,
};
use picsift_core::time::now_ms;
use protocol::State as TusState;

/// A tus answer: `status` with the protocol's headers for `st`.
fn answer(status: StatusCode, st: &TusState) -> Response {
    let mut resp = status.into_response();
    protocol::write_headers(resp.headers_mut(), st);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A problem, with `Tus-Resumable` (every tus answer carries it).
fn refuse(p: Problem) -> Response {
    let mut resp = p.into_response();
    resp.headers_mut().insert(
        HeaderName::from_static("tus-resumable"),
        HeaderValue::from_static(protocol::VERSION),
    );
    resp
}

fn tus_problem((status, detail): protocol::Refusal) -> Problem {
    let (slug, title) = match status {
        StatusCode::PRECONDITION_FAILED => ("tus-version", "Unsupported tus version"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        _ => ("bad-request", "Bad request"),
    };
    Problem::new(status, slug, title, detail)
}

fn length_problem(p: LengthProblem) -> Problem {
    match p {
        LengthProblem::TooLarge { limit } => crate::upload::too_large(format!(
            "the upload declares more than the limit of {limit} bytes (--max-upload-bytes, policy.max_upload_bytes)"
        )),
        LengthProblem::BelowOffset => {
            Problem::bad_request("Upload-Length is below the bytes already received")
        }
        LengthProblem::Changed => {
            Problem::bad_request("Upload-Length was declared before, differently")
        }
    }
}

/// 423: another request holds the upload (clients retry it).
fn busy() -> Problem {
    Problem::new(
        StatusCode::LOCKED,
        "upload-locked",
        "Upload busy",
        "another request is appending to this upload; retry when it is done",
    )
}

fn gone(id: &str) -> Problem {
    Problem::not_found(&format!("upload {id}"))
}

/// The headers of an upload's state.
fn state_of(r: &UploadRecord) -> TusState {
    TusState {
        offset: Some(r.offset),
        length: r.length,
        deferred: r.length.is_none(),
        expires: Some(r.expires_at),
        batch: matches!(r.finished, Some(Finished::Batch)).then(|| r.id.clone()),
    }
}

/// The answer for a finished upload: its batch, or its refusal again.
fn finished_answer(r: &UploadRecord, status: StatusCode) -> Response {
    match &r.finished {
        Some(Finished::Refused { status, problem }) => Problem::replay(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            problem.clone(),
        ),
        _ => answer(status, &state_of(r)),
    }
}

/// Records a new upload (tus or direct) made ready by `made`; when that or
/// the record fails, the quota place it took is given back.
pub(crate) async fn record(
    s: &AppState,
    id: &str,
    reserved: bool,
    made: picsift_core::Result<UploadRecord>,
) -> Result<UploadRecord, Problem> {
    let stored = match made {
        Ok(rec) => s.uploads.create_upload(&rec).await.map(|()| rec),
        Err(e) => Err(e),
    };
    match stored {
        Ok(rec) => {
            s.metrics.uploads_created.inc();
            Ok(rec)
        }
        Err(e) => {
            if reserved {
                let _ = s.catalog.release_upload(id).await;
            }
            Err(e.into())
        }
    }
}

/// `OPTIONS /v1/uploads`: what this server speaks.
pub async fn discover(State(s): State<AppState>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    let mut set = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("tus-resumable", protocol::VERSION.into());
    set("tus-version", protocol::VERSION.into());
    set("tus-extension", protocol::EXTENSIONS.into());
    set("tus-checksum-algorithm", protocol::CHECKSUMS.into());
    set("tus-max-size", s.policy.max_upload_bytes.to_string());
    resp
}

/// `POST /v1/uploads` with `Tus-Resumable`: a tus creation (the router
/// hands the request without it to the direct uploads).
pub async fn create(s: AppState, caller: Caller, req: Request) -> Response {
    match create_tus(&s, &caller, req).await {
        Ok(r) => r,
        Err(p) => refuse(p),
    }
}

async fn create_tus(s: &AppState, caller: &Caller, req: Request) -> Result<Response, Problem> {
    let h = req.headers();
    protocol::check_version(h).map_err(tus_problem)?;
    let length = protocol::creation_length(h).map_err(tus_problem)?;
    let mut options = protocol::options(h).map_err(tus_problem)?;
    let with_body = protocol::has_body(h);
    let checksum = protocol::checksum(h).map_err(tus_problem)?;
    let (_, limit) = crate::upload::precheck(s, &options).await?;
    if let Some(n) = length {
        check_length(n, None, 0, limit).map_err(length_problem)?;
        if n == 0 {
            return Err(crate::upload::not_zip("the upload is empty"));
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    let expires_at = now + s.limits.upload_ttl_ms;
    options.reserved =
        crate::auth::reserve_quota(s, caller, &id, length, s.limits.upload_ttl_ms).await?;
    let created = async {
        let multipart_id = s.blobs.start_parts(&staging_key(&id)).await?;
        let rec = UploadRecord {
            id: id.clone(),
            owner: caller.tenant.clone(),
            kind: UploadKind::Tus,
            length,
            offset: 0,
            options: options.clone(),
            multipart_id,
            parts: vec![],
            tail: None,
            created_at: now,
            expires_at,
            lock: None,
            finished: None,
        };
        Ok::<_, picsift_core::Error>(rec)
    }
    .await;
    let rec = record(s, &id, options.reserved, created).await?;
    tracing::info!(upload = id, length, "tus upload created");
    let location = format!("/v1/uploads/{id}");
    let mut resp = if with_body {
        match append_at(s, caller, rec, 0, None, checksum, req.into_body()).await {
            Ok(resp) => resp,
            // The upload exists; the client may go on from its offset.
            Err(p) => refuse(p),
        }
    } else {
        answer(StatusCode::CREATED, &state_of(&rec))
    };
    if resp.status().is_success() {
        *resp.status_mut() = StatusCode::CREATED;
    }
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// The upload `id` as `caller` may see it, or 404.
async fn visible(s: &AppState, caller: &Caller, id: &str) -> Result<UploadRecord, Problem> {
    match s.uploads.upload(id).await? {
        Some(r) if r.kind == UploadKind::Tus && caller.may_see(&r.owner) => Ok(r),
        _ => Err(gone(id)),
    }
}

/// `HEAD /v1/uploads/{id}`: its offset. A complete upload whose batch a
/// failure kept from being made is finished here (a client resuming one
/// asks this first, and would see nothing left to send).
pub async fn head(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        protocol::check_version(&headers).map_err(tus_problem)?;
        let r = visible(&s, &caller, &id).await?;
        if r.finished.is_some() {
            return Ok(finished_answer(&r, StatusCode::OK));
        }
        if now_ms() >= r.expires_at {
            return Err(gone(&id));
        }
        if r.complete() {
            return append_at(&s, &caller, r.clone(), r.offset, None, None, Body::empty())
                .await
                .map(|resp| {
                    let mut resp = resp;
                    if resp.status() == StatusCode::NO_CONTENT {
                        *resp.status_mut() = StatusCode::OK;
                    }
                    resp
                });
        }
        Ok(answer(StatusCode::OK, &state_of(&r)))
    };
    run.await.unwrap_or_else(refuse)
}

/// `PATCH /v1/uploads/{id}`: appends the body at `Upload-Offset`.
pub async fn patch(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let run = async {
        let h = req.headers();
        protocol::check_version(h).map_err(tus_problem)?;
        protocol::check_content_type(h).map_err(tus_problem)?;
        let (offset, length) = protocol::patch_offset(h).map_err(tus_problem)?;
        let checksum = protocol::checksum(h).map_err(tus_problem)?;
        let r = visible(&s, &caller, &id).await?;
        append_at(&s, &caller, r, offset, length, checksum, req.into_body()).await
    };
    run.await.unwrap_or_else(refuse)
}

/// Takes the upload's lock at `offset` and appends `body`, in a task of
/// its own: a client that goes away drops its request's handler, and what
/// it sent must still be saved (and the lock let go) rather than the work
/// stopping at whatever step it was in.
async fn append_at(
    s: &AppState,
    caller: &Caller,
    r: UploadRecord,
    offset: u64,
    declared: Option<u64>,
    checksum: Option<[u8; 32]>,
    body: Body,
) -> Result<Response, Problem> {
    let (s, caller) = (s.clone(), caller.clone());
    tokio::spawn(
        async move { append_locked(&s, &caller, r, offset, declared, checksum, body).await },
    )
    .await
    .map_err(|e| Problem::unavailable(format!("appending to an upload failed: {e}")))?
}

async fn append_locked(
    s: &AppState,
    caller: &Caller,
    r: UploadRecord,
    offset: u64,
    declared: Option<u64>,
    checksum: Option<[u8; 32]>,
    body: Body,
) -> Result<Response, Problem> {
    let (_, limit) = crate::upload::upload_limit(s, r.options.policy.as_deref()).await?;
    let length = match declared {
        Some(n) => {
            check_length(n, r.length, r.offset, limit).map_err(length_problem)?;
            Some(n)
        }
        None => r.length,
    };
    let token = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    let locked = decide_append(&r, &caller.tenant, caller.admin, offset, now) == Append::Go
        && s.uploads
            .lock_upload(&r.id, &token, offset, now, now + LOCK_TTL_MS)
            .await?;
    if !locked {
        // Decided again on what is there now (another request may have
        // moved it between the read and the lock).
        let now_r = s.uploads.upload(&r.id).await?.ok_or_else(|| gone(&r.id))?;
        return Err(
            match decide_append(&now_r, &caller.tenant, caller.admin, offset, now_ms()) {
                Append::AlreadyFinished => {
                    return Ok(finished_answer(&now_r, StatusCode::NO_CONTENT));
                }
                Append::WrongOffset { at } => Problem::new(
                    StatusCode::CONFLICT,
                    "upload-offset-mismatch",
                    "Upload offset mismatch",
                    format!("the upload is at offset {at}, not {offset}; send from {at}"),
                ),
                Append::Gone => gone(&r.id),
                Append::Busy | Append::Go => busy(),
            },
        );
    }
    let held = Held {
        s,
        rec: UploadRecord {
            lock: Some((token.clone(), now + LOCK_TTL_MS)),
            ..r
        },
        token,
    };
    let result = held
        .append(body.into_data_stream(), length, limit, checksum)
        .await;
    match result {
        Ok(Outcome::Saved(p)) => Ok(answer(
            StatusCode::NO_CONTENT,
            &TusState {
                offset: Some(p.offset),
                length: p.length,
                deferred: p.length.is_none(),
                expires: Some(held.rec.expires_at),
                batch: None,
            },
        )),
        Ok(Outcome::Finished(Ok(_))) => {
            s.metrics.uploads_completed.inc();
            let done = UploadRecord {
                offset: length.unwrap_or_default(),
                length,
                finished: Some(Finished::Batch),
                ..held.rec.clone()
            };
            Ok(answer(StatusCode::NO_CONTENT, &state_of(&done)))
        }
        Ok(Outcome::Finished(Err(p))) => Err(p),
        Err(p) => {
            let _ = s.uploads.unlock_upload(&held.rec.id, &held.token).await;
            Err(p)
        }
    }
}

/// `DELETE /v1/uploads/{id}` (termination): its parts and state are
/// dropped; a batch it became stays.
pub async fn terminate(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        protocol::check_version(&headers).map_err(tus_problem)?;
        let r = visible(&s, &caller, &id).await?;
        if r.finished.is_none() && now_ms() < r.expires_at {
            let token = uuid::Uuid::now_v7().to_string();
            let now = now_ms();
            if !s
                .uploads
                .lock_upload(&r.id, &token, r.offset, now, now + LOCK_TTL_MS)
                .await?
            {
                return Err(busy());
            }
        }
        crate::sweep::forget(&s, &r).await?;
        Ok(answer(
            StatusCode::NO_CONTENT,
            &TusState {
                offset: None,
                length: None,
                deferred: false,
                expires: None,
                batch: None,
            },
        ))
    };
    run.await.unwrap_or_else(refuse)
}
