//! Appending one request's bytes to a resumable upload, and turning a
//! complete upload into a batch.
//!
//! Bytes are cut into parts of [`PART_BYTES`] as they arrive, each stored
//! in the object store's multipart upload and saved in the catalog at once
//! (so a gateway that dies mid-request loses at most one part's worth);
//! what is left at the end of a request that does not complete the upload
//! is kept as a tail object, read back into the next part by whichever
//! gateway takes the next request. With `Upload-Checksum` nothing of the
//! request is saved until the whole body matched.

use crate::upload::{admit, precheck, too_large};
use crate::{AppState, Problem};
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, pin_mut};
use picsift_core::archive::Summary;
use picsift_core::auth::Caller;
use picsift_core::model::staging_key;
use picsift_core::resumable::{
    Finished, LOCK_TTL_MS, PART_BYTES, Progress, UploadKind, UploadRecord, tail_key, tail_prefix,
};
use picsift_core::time::now_ms;

/// Bytes between saves within one request: a gateway that dies mid-request
/// loses at most this much (plus a part), and a request of 16 MiB (what
/// the clients send) saves once, at its end.
const SAVE_EVERY: u64 = 4 * PART_BYTES;
use sha2::{Digest, Sha256};
use std::fmt::Display;

/// The ETag of a part stored by a task of its own.
async fn joined(
    task: tokio::task::JoinHandle<picsift_core::Result<String>>,
) -> Result<String, Problem> {
    task.await
        .map_err(|e| Problem::unavailable(format!("storing a part stopped: {e}")))?
        .map_err(Problem::from)
}

/// What a request ended with.
pub(crate) enum Outcome {
    /// Its bytes are kept: the upload is at this offset.
    Saved(Progress),
    /// Its bytes completed the upload, which is now a batch (or refused).
    Finished(Result<Option<Summary>, Problem>),
}

/// A request holding the upload's lock.
pub(crate) struct Held<'a> {
    pub s: &'a AppState,
    pub rec: UploadRecord,
    pub token: String,
}

impl Held<'_> {
    /// Saves `p` once its parts are durable; `keep` holds the lock on (for
    /// more of this request), else lets go of it in the same statement.
    async fn save(&self, p: &Progress, keep: bool) -> Result<(), Problem> {
        self.s
            .blobs
            .flush_parts(&staging_key(&self.rec.id), &self.rec.multipart_id)
            .await?;
        let until = if keep { now_ms() + LOCK_TTL_MS } else { 0 };
        match self
            .s
            .uploads
            .save_upload(&self.rec.id, &self.token, p, until)
            .await?
        {
            true => Ok(()),
            false => Err(Problem::new(
                StatusCode::CONFLICT,
                "upload-lock-lost",
                "Upload taken over",
                "another request took this upload over while this one was slow; ask its offset (HEAD) and go on from there",
            )),
        }
    }

    /// The progress the catalog holds now (before this request).
    fn recorded(&self) -> Progress {
        Progress {
            offset: self.rec.offset,
            parts: self.rec.parts.clone(),
            tail: self.rec.tail.clone(),
            length: self.rec.length,
        }
    }

    /// Appends `body` at the upload's offset. `length` is the upload's
    /// length, when known (declared before or by this request); `limit`
    /// caps a deferred one.
    pub async fn append<S, E>(
        &self,
        body: S,
        length: Option<u64>,
        limit: u64,
        checksum: Option<[u8; 32]>,
    ) -> Result<Outcome, Problem>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Display,
    {
        let (s, rec) = (self.s, &self.rec);
        if rec.complete() {
            // Every byte is there; only its batch is missing (a request
            // that failed or died while making it): no more bytes, finish.
            pin_mut!(body);
            while let Some(chunk) = body.next().await {
                if chunk.is_ok_and(|c| !c.is_empty()) {
                    return Err(too_large(
                        "the upload has all its bytes; send none".to_string(),
                    ));
                }
            }
            return Ok(Outcome::Finished(self.finish(rec.clone()).await));
        }
        let key = staging_key(&rec.id);
        let mut parts = rec.parts.clone();
        // Bytes in the stored parts: every part but a last one is whole.
        let mut stored = rec.offset - rec.tail.as_ref().map_or(0, |(_, n)| *n);
        let mut saved_at = stored;
        let mut writing: Option<tokio::task::JoinHandle<picsift_core::Result<String>>> = None;
        let mut buf = BytesMut::with_capacity(PART_BYTES as usize);
        if let Some((k, n)) = &rec.tail {
            let tail = s.blobs.get_range(k, 0..*n).await?;
            if tail.len() as u64 != *n {
                return Err(Problem::unavailable(format!(
                    "upload {}: the tail {k} holds {} bytes, not {n}",
                    rec.id,
                    tail.len()
                )));
            }
            buf.extend_from_slice(&tail);
        }
        let mut hasher = checksum.map(|_| Sha256::new());
        let mut cut = None;
        pin_mut!(body);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    cut = Some(Problem::bad_request(format!(
                        "the request was cut off: {e}"
                    )));
                    break;
                }
            };
            let offset = stored + (buf.len() + chunk.len()) as u64;
            if length.is_some_and(|n| offset > n) {
                return Err(too_large(format!(
                    "the request carries more bytes than the upload's length, {}",
                    length.unwrap_or_default()
                )));
            }
            if offset > limit {
                return Err(too_large(format!(
                    "the upload exceeds the limit of {limit} bytes (--max-upload-bytes, policy.max_upload_bytes)"
                )));
            }
            if let Some(h) = &mut hasher {
                h.update(&chunk);
            }
            // Each part fills an allocation of exactly its size, handed
            // over whole (no buffer that doubles, no remnant that pins a
            // part's memory while it is stored).
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let room = PART_BYTES as usize - buf.len();
                let (now, later) = rest.split_at(room.min(rest.len()));
                buf.extend_from_slice(now);
                rest = later;
                if buf.len() as u64 != PART_BYTES {
                    continue;
                }
                let part =
                    std::mem::replace(&mut buf, BytesMut::with_capacity(PART_BYTES as usize))
                        .freeze();
                // One part is stored while the next one arrives.
                if let Some(p) = writing.take() {
                    parts.push(joined(p).await?);
                }
                let (blobs, key, upload) = (s.blobs.clone(), key.clone(), rec.multipart_id.clone());
                let number = (parts.len() + 1) as u32;
                let at = stored;
                writing = Some(tokio::spawn(async move {
                    blobs.put_part(&key, &upload, number, at, part).await
                }));
                stored += PART_BYTES;
                // Saved every few parts (what a gateway that dies loses),
                // unless the whole body must match a checksum first (then
                // this only renews the lock).
                if stored - saved_at >= SAVE_EVERY {
                    if let Some(p) = writing.take() {
                        parts.push(joined(p).await?);
                    }
                    let saved = match checksum {
                        None => Progress {
                            offset: stored,
                            parts: parts.clone(),
                            tail: None,
                            length,
                        },
                        Some(_) => self.recorded(),
                    };
                    self.save(&saved, true).await?;
                    saved_at = stored;
                }
            }
        }
        if let Some(p) = writing.take() {
            parts.push(joined(p).await?);
        }
        if let (Some(want), Some(h)) = (checksum, hasher) {
            if let Some(p) = cut {
                return Err(p);
            }
            if h.finalize().as_slice() != want {
                return Err(Problem::new(
                    StatusCode::from_u16(super::protocol::CHECKSUM_MISMATCH)
                        .unwrap_or(StatusCode::BAD_REQUEST),
                    "checksum-mismatch",
                    "Checksum mismatch",
                    "the request's bytes do not have the SHA-256 its Upload-Checksum names; none of them were kept",
                ));
            }
        }
        let offset = stored + buf.len() as u64;
        let complete = length == Some(offset);
        let tail = if complete {
            if !buf.is_empty() || parts.is_empty() {
                let number = parts.len() as u32 + 1;
                parts.push(
                    s.blobs
                        .put_part(
                            &key,
                            &rec.multipart_id,
                            number,
                            stored,
                            buf.split().freeze(),
                        )
                        .await?,
                );
            }
            None
        } else if buf.is_empty() {
            None
        } else {
            let k = tail_key(&rec.id, &self.token);
            let n = buf.len() as u64;
            s.blobs.put(&k, buf.split().freeze()).await?;
            Some((k, n))
        };
        let progress = Progress {
            offset,
            parts,
            tail,
            length,
        };
        // Let go of the lock unless the batch is made under it next.
        self.save(&progress, complete && cut.is_none()).await?;
        if let Some((old, _)) = &rec.tail
            && progress.tail.as_ref().is_none_or(|(k, _)| k != old)
        {
            let _ = s.blobs.delete(old).await;
        }
        if let Some(p) = cut {
            // The client is gone; what it sent is kept for its next request.
            return Err(p);
        }
        if complete {
            let rec = UploadRecord {
                offset,
                parts: progress.parts,
                tail: None,
                length,
                ..rec.clone()
            };
            return Ok(Outcome::Finished(self.finish(rec).await));
        }
        Ok(Outcome::Saved(progress))
    }

    /// Turns the complete upload `rec` into a batch: the parts put
    /// together, then the one-shot upload's checks. A refusal is final
    /// (kept, and the staged archive deleted); a failure of a backend
    /// leaves the upload complete but open, for a retry (`HEAD` or the last
    /// `PATCH` again).
    pub async fn finish(&self, rec: UploadRecord) -> Result<Option<Summary>, Problem> {
        let s = self.s;
        let key = staging_key(&rec.id);
        let result = self.admit_complete(&rec, &key).await;
        let how = match &result {
            Ok(_) => Finished::Batch,
            Err(p) if p.status.is_client_error() => {
                let _ = s.blobs.delete(&key).await;
                Finished::Refused {
                    status: p.status.as_u16(),
                    problem: p.document().to_string(),
                }
            }
            Err(_) => {
                let _ = s.uploads.unlock_upload(&rec.id, &self.token).await;
                return result;
            }
        };
        s.uploads.finish_upload(&rec.id, &self.token, &how).await?;
        if rec.options.reserved
            && let Err(e) = s.catalog.release_upload(&rec.id).await
        {
            tracing::warn!(upload = rec.id, error = %e, "could not release a quota reservation; it lapses by itself");
        }
        for k in s
            .blobs
            .list(&tail_prefix(&rec.id))
            .await
            .unwrap_or_default()
        {
            let _ = s.blobs.delete(&k).await;
        }
        result
    }

    async fn admit_complete(
        &self,
        rec: &UploadRecord,
        key: &str,
    ) -> Result<Option<Summary>, Problem> {
        let s = self.s;
        if s.catalog.batch(&rec.id).await?.is_some() {
            return Ok(None); // A request that died after creating it.
        }
        let length = rec.length.unwrap_or(rec.offset);
        let assembled = if rec.multipart_id.is_empty() {
            // A direct upload in one presigned PUT.
            s.blobs.size(key).await?.ok_or_else(|| {
                picsift_core::Error::NotFound(format!("{key}: nothing was uploaded"))
            })
        } else {
            s.blobs
                .finish_parts(key, &rec.multipart_id, &rec.parts)
                .await
        };
        let size = match assembled {
            Ok(n) => n,
            // Put together by a request that died before the batch existed.
            Err(picsift_core::Error::NotFound(_)) if s.blobs.size(key).await? == Some(length) => {
                length
            }
            Err(picsift_core::Error::NotFound(what) | picsift_core::Error::Invalid(what))
                if rec.kind == UploadKind::Direct =>
            {
                return Err(Problem::bad_request(format!(
                    "the uploaded parts cannot be put together: {what}"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if size != length {
            let detail =
                format!("the parts put together hold {size} bytes, not the {length} declared");
            return Err(match rec.kind {
                // The client's doing: it sent other bytes than it declared.
                UploadKind::Direct => Problem::bad_request(detail),
                UploadKind::Tus => Problem::unavailable(format!("upload {}: {detail}", rec.id)),
            });
        }
        let head = s.blobs.get_range(key, 0..4).await?.to_vec();
        let (policy, _) = precheck(s, &rec.options).await?;
        let owner = Caller {
            tenant: rec.owner.clone(),
            admin: false,
            key_id: String::new(),
        };
        admit(s, &owner, &rec.options, &policy, &rec.id, size, head)
            .await
            .map(Some)
    }
}
