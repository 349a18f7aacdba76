//! Resumable uploads: an upload that arrives in many requests (tus) or
//! straight into object storage (presigned direct uploads), and becomes a
//! batch when its last byte is there.
//!
//! Why the state is a catalog row and not a gateway's memory: in the
//! cluster the next `PATCH` may reach any gateway replica, and a gateway may
//! die mid-part. Every step that moves an upload forward is a conditional
//! update of its row under a short lock (a token with a lapse time), so two
//! clients on one upload cannot both append, and a dead gateway's lock
//! lapses by itself. What the protocol answers is decided here, by pure
//! functions of the row, the request and the time ([`decide_append`]).

use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// How long an unfinished upload is kept (its parts, its quota place)
/// after it was created: `Upload-Expires`.
pub const UPLOAD_TTL_MS: Millis = 24 * 3600 * 1000;

/// How long one request holds an upload while it appends; renewed with
/// every save (each 32 MiB), let go at the request's end, so only a
/// gateway that died keeps it this long.
pub const LOCK_TTL_MS: Millis = 15 * 1000;

/// Bytes per stored part. Object storage wants every part but the last to
/// be at least 5 MiB; this is also what one appending request holds in
/// memory at most.
pub const PART_BYTES: u64 = 8 << 20;

/// Parts one upload may have (S3's limit), which with [`PART_BYTES`] caps a
/// tus upload at 80 GB.
pub const MAX_PARTS: u64 = 10_000;

/// How the bytes arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    /// Through the gateway, in tus `PATCH` requests.
    Tus,
    /// Straight to object storage, on presigned part URLs.
    Direct,
}

impl UploadKind {
    /// The name stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tus => "tus",
            Self::Direct => "direct",
        }
    }

    /// The kind a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tus" => Some(Self::Tus),
            "direct" => Some(Self::Direct),
            _ => None,
        }
    }
}

/// The batch options an upload carries from its creation to its batch (the
/// one-shot upload's query parameters).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadOptions {
    /// The policy to check the batch against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Webhook URL called when the batch finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// Refuse the whole upload when any entry is not an allowed image.
    #[serde(default)]
    pub strict: bool,
    /// Whether the upload holds a place in its tenant's quotas (a
    /// reservation under its id, settled when its size is known).
    #[serde(default)]
    pub reserved: bool,
}

/// How a finished upload ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Finished {
    /// Its batch exists (the batch id is the upload's id).
    Batch,
    /// The light check refused it: the problem it was answered with
    /// (RFC 9457 JSON), for a client that lost that answer.
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem document.
        problem: String,
    },
}

/// An upload in progress, as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRecord {
    /// The upload's id, which its batch will have.
    pub id: String,
    /// The tenant that created it: only it may continue or end it.
    pub owner: String,
    /// How the bytes arrive.
    pub kind: UploadKind,
    /// The declared length; `None` while deferred (tus `Upload-Defer-Length`).
    pub length: Option<u64>,
    /// Bytes received and kept: the parts plus the tail.
    pub offset: u64,
    /// The batch options.
    pub options: UploadOptions,
    /// The object storage's multipart upload id.
    pub multipart_id: String,
    /// ETags of the stored parts, part `i + 1` at index `i`.
    pub parts: Vec<String>,
    /// Bytes received after the last whole part, kept as an object of their
    /// own until they fill a part: its key ([`tail_key`]) and length.
    pub tail: Option<(String, u64)>,
    /// Creation time.
    pub created_at: Millis,
    /// When an unfinished upload is cleaned up.
    pub expires_at: Millis,
    /// Who appends now, and until when (a lapsed lock is free).
    pub lock: Option<(String, Millis)>,
    /// Set once the upload is complete and checked.
    pub finished: Option<Finished>,
}

impl UploadRecord {
    /// Whether every declared byte is there.
    pub fn complete(&self) -> bool {
        self.length == Some(self.offset)
    }
}

/// What an append moved forward, saved under the appender's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The new offset.
    pub offset: u64,
    /// Every stored part's ETag.
    pub parts: Vec<String>,
    /// The tail object and its length.
    pub tail: Option<(String, u64)>,
    /// The length, once declared.
    pub length: Option<u64>,
}

/// The object key of a tail (bytes that do not fill a part yet) written by
/// the request holding `token`: never the key the catalog points at, so a
/// request that lost its lock cannot change the bytes another one saved.
pub fn tail_key(id: &str, token: &str) -> String {
    format!("{}{token}", tail_prefix(id))
}

/// The prefix of every tail object of upload `id` (for the clean-up).
pub fn tail_prefix(id: &str) -> String {
    format!("staging/tails/{id}-")
}

/// What a request that wants to append at an offset gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Append {
    /// It may go ahead (once it holds the lock).
    Go,
    /// Nothing to append: the upload is complete; answer with its batch.
    AlreadyFinished,
    /// The offset is not the upload's (tus: 409 Conflict).
    WrongOffset {
        /// Where the upload is.
        at: u64,
    },
    /// Another request is appending (tus: 423 Locked, which clients retry).
    Busy,
    /// Expired, or not the caller's to see (404; never 403: another
    /// tenant's upload is not confirmed to exist).
    Gone,
}

/// Decides an append at `offset` by `tenant` (or an admin) at `now`.
pub fn decide_append(
    r: &UploadRecord,
    tenant: &str,
    admin: bool,
    offset: u64,
    now: Millis,
) -> Append {
    if !admin && r.owner != tenant {
        return Append::Gone;
    }
    if r.finished.is_some() {
        return if Some(offset) == r.length {
            Append::AlreadyFinished
        } else {
            Append::WrongOffset { at: r.offset }
        };
    }
    if now >= r.expires_at {
        return Append::Gone;
    }
    if offset != r.offset {
        return Append::WrongOffset { at: r.offset };
    }
    if r.lock.as_ref().is_some_and(|(_, until)| *until > now) {
        return Append::Busy;
    }
    Append::Go
}

/// Why a declared or grown length is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LengthProblem {
    /// Over the upload limit (413).
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Below what was already received (400).
    BelowOffset,
    /// Declared once and declared again differently (400).
    Changed,
}

/// Checks a length declared for `r` (at creation, or later when deferred)
/// against `limit`.
pub fn check_length(
    declared: u64,
    known: Option<u64>,
    offset: u64,
    limit: u64,
) -> Result<(), LengthProblem> {
    let limit = limit.min(PART_BYTES * MAX_PARTS);
    if declared > limit {
        return Err(LengthProblem::TooLarge { limit });
    }
    if known.is_some_and(|k| k != declared) {
        return Err(LengthProblem::Changed);
    }
    if declared < offset {
        return Err(LengthProblem::BelowOffset);
    }
    Ok(())
}

/// The parts of a direct upload of `size` bytes: the part size (at least
/// [`PART_BYTES`], grown so no upload needs more than [`MAX_PARTS`]) and
/// how many parts; one part means a single presigned PUT.
pub fn direct_parts(size: u64) -> (u64, u64) {
    let part = PART_BYTES.max(size.div_ceil(MAX_PARTS));
    (part, size.div_ceil(part).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> UploadRecord {
        UploadRecord {
            id: "u".into(),
            owner: "acme".into(),
            kind: UploadKind::Tus,
            length: Some(100),
            offset: 40,
            options: UploadOptions::default(),
            multipart_id: "m".into(),
            parts: vec![],
            tail: Some(("t".into(), 40)),
            created_at: 0,
            expires_at: 1_000,
            lock: None,
            finished: None,
        }
    }

    #[test]
    fn decide_append_table() {
        let base = record();
        let locked = |until| UploadRecord {
            lock: Some(("other".into(), until)),
            ..record()
        };
        let finished = UploadRecord {
            offset: 100,
            finished: Some(Finished::Batch),
            ..record()
        };
        let cases: Vec<(&str, UploadRecord, &str, bool, u64, Millis, Append)> = vec![
            (
                "the owner at the offset goes",
                base.clone(),
                "acme",
                false,
                40,
                10,
                Append::Go,
            ),
            (
                "another tenant sees nothing",
                base.clone(),
                "evil",
                false,
                40,
                10,
                Append::Gone,
            ),
            (
                "an admin may go on",
                base.clone(),
                "ops",
                true,
                40,
                10,
                Append::Go,
            ),
            (
                "a wrong offset is a conflict naming the right one",
                base.clone(),
                "acme",
                false,
                0,
                10,
                Append::WrongOffset { at: 40 },
            ),
            (
                "an expired upload is gone",
                base.clone(),
                "acme",
                false,
                40,
                1_000,
                Append::Gone,
            ),
            (
                "a live lock is busy",
                locked(11),
                "acme",
                false,
                40,
                10,
                Append::Busy,
            ),
            (
                "a lapsed lock is free",
                locked(10),
                "acme",
                false,
                40,
                10,
                Append::Go,
            ),
            (
                "a finished upload at its end answers with its batch, even expired",
                finished.clone(),
                "acme",
                false,
                100,
                5_000,
                Append::AlreadyFinished,
            ),
            (
                "a finished upload elsewhere is a conflict",
                finished.clone(),
                "acme",
                false,
                40,
                10,
                Append::WrongOffset { at: 100 },
            ),
            (
                "a finished upload of another tenant is gone",
                finished,
                "evil",
                false,
                100,
                10,
                Append::Gone,
            ),
        ];
        for (name, r, tenant, admin, offset, now, want) in cases {
            assert_eq!(
                decide_append(&r, tenant, admin, offset, now),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn check_length_table() {
        let cases = [
            ("fits", 100, None, 0, 1_000, Ok(())),
            ("at the limit", 1_000, None, 0, 1_000, Ok(())),
            (
                "over the limit",
                1_001,
                None,
                0,
                1_000,
                Err(LengthProblem::TooLarge { limit: 1_000 }),
            ),
            (
                "over what parts can hold",
                PART_BYTES * MAX_PARTS + 1,
                None,
                0,
                u64::MAX,
                Err(LengthProblem::TooLarge {
                    limit: PART_BYTES * MAX_PARTS,
                }),
            ),
            (
                "deferred, declared at the offset",
                50,
                None,
                50,
                1_000,
                Ok(()),
            ),
            (
                "deferred, declared below the offset",
                49,
                None,
                50,
                1_000,
                Err(LengthProblem::BelowOffset),
            ),
            ("declared again the same", 100, Some(100), 50, 1_000, Ok(())),
            (
                "declared again differently",
                101,
                Some(100),
                50,
                1_000,
                Err(LengthProblem::Changed),
            ),
        ];
        for (name, declared, known, offset, limit, want) in cases {
            assert_eq!(check_length(declared, known, offset, limit), want, "{name}");
        }
    }

    #[test]
    fn direct_parts_table() {
        let mib = 1u64 << 20;
        let cases = [
            ("an empty upload is one part", 0, (PART_BYTES, 1)),
            ("a small zip is one PUT", 3 * mib, (PART_BYTES, 1)),
            ("exactly one part", PART_BYTES, (PART_BYTES, 1)),
            ("one byte more is two", PART_BYTES + 1, (PART_BYTES, 2)),
            ("2 GiB in 8 MiB parts", 2048 * mib, (PART_BYTES, 256)),
            (
                "beyond 10,000 parts the parts grow",
                PART_BYTES * MAX_PARTS * 2,
                (PART_BYTES * 2, MAX_PARTS),
            ),
        ];
        for (name, size, want) in cases {
            assert_eq!(direct_parts(size), want, "{name}");
        }
    }
}
