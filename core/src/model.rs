//! The domain model: batches, entries, images, and what the API shows of them.

use crate::format::Format;
use crate::time::{Millis, rfc3339};
use crate::verdict::{DuplicateKind, Reason, Verdict, VerdictKind};
use serde::{Deserialize, Serialize};

/// Where a batch is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Uploaded and lightly verified; not planned yet.
    Received,
    /// Entries are being checked.
    Processing,
    /// Every entry has a verdict.
    Completed,
    /// The batch could not be processed at all (its archive is unreadable).
    Failed,
    /// Its deadline passed first: unchecked entries got `deadline_exceeded`.
    Expired,
}

impl Phase {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "received" => Self::Received,
            "processing" => Self::Processing,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            _ => return None,
        })
    }

    /// Whether nothing more will happen to the batch's entries.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Expired)
    }
}

/// Verdict counts of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Stored images.
    pub accepted: u64,
    /// Duplicates of stored images.
    pub duplicate: u64,
    /// Refused entries.
    pub rejected: u64,
    /// Entries that failed for reasons not their own.
    pub failed: u64,
    /// Entries without a verdict yet.
    pub pending: u64,
}

/// State of the completion webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyState {
    /// No callback was given.
    None,
    /// Waiting for the batch to finish, or retrying.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl NotifyState {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => Self::None,
        }
    }
}

/// A batch as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    /// The batch id (a UUIDv7).
    pub id: String,
    /// Life-cycle phase.
    pub phase: Phase,
    /// The tenant that uploaded it.
    pub owner: String,
    /// Blob key of the staged archive.
    pub staged_key: String,
    /// Size of the uploaded archive.
    pub upload_bytes: u64,
    /// Entries in the archive (known once the archive was checked).
    pub total_entries: u64,
    /// Why the batch failed as a whole.
    pub error: Option<String>,
    /// Webhook URL for completion.
    pub callback_url: Option<String>,
    /// Webhook delivery state.
    pub notify_state: NotifyState,
    /// Delivery attempts so far.
    pub notify_attempts: u32,
    /// Last delivery error.
    pub notify_last_error: Option<String>,
    /// Next delivery attempt.
    pub notify_next_at: Option<Millis>,
    /// When the receiver took it.
    pub notify_delivered_at: Option<Millis>,
    /// Upload time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
    /// When processing started.
    pub started_at: Option<Millis>,
    /// When the batch finished.
    pub completed_at: Option<Millis>,
}

/// The notification part of the batch status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationView {
    /// Callback URL.
    pub url: String,
    /// pending, delivered or failed.
    pub state: NotifyState,
    /// Attempts so far.
    pub attempts: u32,
    /// Last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<String>,
}

/// The batch status document of the API and the webhook; the client
/// reads it back with the same type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchView {
    /// The batch id.
    pub id: String,
    /// The tenant that uploaded it.
    pub owner: String,
    /// received, processing, completed or failed.
    pub phase: Phase,
    /// Verdict counts.
    pub counts: Counts,
    /// Entries in the archive.
    pub total_entries: u64,
    /// Uploaded bytes.
    pub upload_bytes: u64,
    /// Why the batch failed, when it did.
    pub error: Option<String>,
    /// Upload time (RFC 3339).
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Processing start.
    pub started_at: Option<String>,
    /// Completion.
    pub completed_at: Option<String>,
    /// Webhook delivery, when a callback was given.
    pub notification: Option<NotificationView>,
}

impl BatchView {
    /// The view of a record with its counts.
    pub fn new(b: &BatchRecord, mut counts: Counts) -> Self {
        // Entries not recorded yet (a batch just received, not yet
        // planned) are pending too: a status read then must not say that
        // nothing is left to decide.
        if matches!(b.phase, Phase::Received | Phase::Processing) {
            let recorded = counts.accepted
                + counts.duplicate
                + counts.rejected
                + counts.failed
                + counts.pending;
            counts.pending += b.total_entries.saturating_sub(recorded);
        }
        Self {
            id: b.id.clone(),
            owner: b.owner.clone(),
            phase: b.phase,
            counts,
            total_entries: b.total_entries,
            upload_bytes: b.upload_bytes,
            error: b.error.clone(),
            created_at: rfc3339(b.created_at),
            updated_at: rfc3339(b.updated_at),
            started_at: b.started_at.map(rfc3339),
            completed_at: b.completed_at.map(rfc3339),
            notification: b.callback_url.as_ref().map(|url| NotificationView {
                url: url.clone(),
                state: b.notify_state,
                attempts: b.notify_attempts,
                last_error: b.notify_last_error.clone(),
                delivered_at: b.notify_delivered_at.map(rfc3339),
            }),
        }
    }
}

/// One entry of the archive, planned for checking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPlan {
    /// Index in the central directory.
    pub index: u32,
    /// Name as stored (for the report only).
    pub name: String,
    /// Compressed bytes (for chunk sizing).
    pub compressed_size: u64,
}

/// One report line, as the API writes it and the client reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportEntry {
    /// Index in the archive.
    pub index: u32,
    /// Entry name.
    pub entry: String,
    /// accepted, duplicate, rejected, failed; `pending` while undecided.
    pub verdict: String,
    /// Reason code for rejected and failed entries.
    pub reason: Option<Reason>,
    /// Human-readable detail.
    pub detail: Option<String>,
    /// Stored image id (accepted).
    pub image_id: Option<String>,
    /// Original image id (duplicate).
    pub duplicate_of: Option<String>,
    /// exact or near.
    pub duplicate_kind: Option<DuplicateKind>,
    /// PDQ distance to the original (near duplicates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<u32>,
    /// Quality measurements and every model's scores, when checks ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<crate::verdict::Checks>,
}

impl ReportEntry {
    /// A report line from an entry and its verdict, if decided.
    pub fn new(index: u32, name: String, verdict: Option<Verdict>) -> Self {
        match verdict {
            None => Self {
                index,
                entry: name,
                verdict: "pending".into(),
                reason: None,
                detail: None,
                image_id: None,
                duplicate_of: None,
                duplicate_kind: None,
                distance: None,
                checks: None,
            },
            Some(v) => Self {
                index,
                entry: name,
                verdict: v.kind.as_str().into(),
                reason: v.reason,
                detail: v.detail,
                image_id: v.image_id,
                duplicate_of: v.duplicate_of,
                duplicate_kind: v.duplicate_kind,
                distance: v.distance,
                checks: v.checks,
            },
        }
    }

    /// The final verdict of this line; `None` while it is `pending`.
    pub fn verdict_kind(&self) -> Option<VerdictKind> {
        VerdictKind::parse(&self.verdict)
    }

    /// Whether this line has a final verdict.
    pub fn is_decided(&self) -> bool {
        self.verdict_kind().is_some()
    }
}

/// A stored image's place in the dedup index: its id, the entry that
/// stored it (`batch:index`, the claim's owner) and the tenants that own it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredClaims {
    /// The image (its SHA-256).
    pub image_id: String,
    /// `batch_id:entry_index` of the entry that stored it.
    pub owner: String,
    /// Every tenant that stored it, in order.
    pub tenants: Vec<String>,
}

/// A stored image as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageRecord {
    /// SHA-256 of the stored bytes.
    pub id: String,
    /// True format.
    pub format: Format,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Stored bytes.
    pub size: u64,
    /// EXIF orientation found in the upload (1–8), recorded since the stored bytes no longer carry it.
    pub orientation: Option<u16>,
    /// The tenant that first stored it (others may have stored it too,
    /// under per-tenant dedup).
    #[serde(skip)]
    pub owner: String,
    /// The batch that first stored it.
    pub batch_id: String,
    /// Its entry index in that batch.
    pub entry_index: u32,
    /// Its entry name in that batch.
    pub entry_name: String,
    /// PDQ perceptual hash of the upright image (64 hex digits).
    pub pdq: Option<String>,
    /// PDQ quality, 0–100 (hashes of quality 49 or less should not be matched).
    pub pdq_quality: Option<u8>,
    /// When it was stored.
    #[serde(skip)]
    pub created_ms: Millis,
}

/// Blob key of a stored image: content-addressed, fanned out by prefix.
pub fn image_key(id: &str) -> String {
    format!(
        "images/{}/{}/{}",
        &id[..2.min(id.len())],
        &id[2.min(id.len())..4.min(id.len())],
        id
    )
}

/// Blob key of a staged upload.
pub fn staging_key(batch_id: &str) -> String {
    format!("{STAGING_PREFIX}{batch_id}.zip")
}

/// Where the gateway stages uploads.
pub const STAGING_PREFIX: &str = "staging/";

/// Whether picsift owns a batch's source and deletes it when the batch
/// ends: only what the gateway staged. A zip or prefix that an UploadBatch
/// applied by hand points at belongs to its user and is never deleted.
pub fn owns_source(key: &str) -> bool {
    key.starts_with(STAGING_PREFIX) && !key.ends_with('/')
}

/// Whether a batch's source is every object under a prefix (an UploadBatch
/// applied by hand may point at one) rather than a zip.
pub fn is_prefix(source: &str) -> bool {
    source.ends_with('/')
}

/// Where a batch's audit sample is kept: `{index:08}.json` (the report
/// line, with every score) and `{index:08}.data` (the entry as uploaded).
/// Apart from `images/`: audit copies are never stored images.
pub fn audit_prefix(batch_id: &str) -> String {
    format!("audit/{batch_id}/")
}

/// Key of one audit record (`ext` = `json`) or its entry's bytes (`data`).
pub fn audit_key(batch_id: &str, index: u32, ext: &str) -> String {
    format!("{}{index:08}.{ext}", audit_prefix(batch_id))
}

/// Whether `s` looks like an image id (64 lower-case hex digits).
pub fn is_image_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Filters of an image search (`GET /v1/images`); unset fields match all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageFilter {
    /// Stored by this tenant (every tenant's images when unset).
    pub owner: Option<String>,
    /// A model scored this label above a value (checked in the catalog's
    /// `image_scores`, so [`Self::matches`] ignores it).
    pub min_score: Option<ScoreFilter>,
    /// Stored by this batch.
    pub batch: Option<String>,
    /// Of this format.
    pub format: Option<Format>,
    /// Stored at or after (ms).
    pub created_from: Option<Millis>,
    /// Stored before (ms).
    pub created_to: Option<Millis>,
    /// At least this wide.
    pub min_width: Option<u32>,
    /// At most this wide.
    pub max_width: Option<u32>,
    /// At least this tall.
    pub min_height: Option<u32>,
    /// At most this tall.
    pub max_height: Option<u32>,
}

/// "Model `model` scored `label` above `above`."
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreFilter {
    /// The model's name in the policy.
    pub model: String,
    /// One of its labels.
    pub label: String,
    /// Exclusive lower bound.
    pub above: f64,
}

impl std::str::FromStr for ScoreFilter {
    type Err = String;

    /// `MODEL:LABEL:VALUE`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("score={s:?}: give MODEL:LABEL:VALUE, for example nudenet:FACE_MALE:0.5");
        let (rest, value) = s.rsplit_once(':').ok_or_else(bad)?;
        let (model, label) = rest.split_once(':').ok_or_else(bad)?;
        let above: f64 = value.parse().map_err(|_| bad())?;
        if model.is_empty() || label.is_empty() || !above.is_finite() {
            return Err(bad());
        }
        Ok(Self {
            model: model.into(),
            label: label.into(),
            above,
        })
    }
}

impl ImageFilter {
    /// Whether `i` passes (the catalogs answer the same in SQL).
    pub fn matches(&self, i: &ImageRecord) -> bool {
        let within = |v: u32, lo: Option<u32>, hi: Option<u32>| {
            lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v <= hi)
        };
        self.batch.as_ref().is_none_or(|b| &i.batch_id == b)
            && self.owner.as_ref().is_none_or(|o| &i.owner == o)
            && self.format.is_none_or(|f| i.format == f)
            && self.created_from.is_none_or(|t| i.created_ms >= t)
            && self.created_to.is_none_or(|t| i.created_ms < t)
            && within(i.width, self.min_width, self.max_width)
            && within(i.height, self.min_height, self.max_height)
    }
}

/// The order of an image search; ties go by id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageSort {
    /// Most recently stored first.
    #[default]
    NewestFirst,
    /// Oldest first.
    OldestFirst,
    /// Most bytes first.
    LargestFirst,
    /// Fewest bytes first.
    SmallestFirst,
}

impl ImageSort {
    /// Parses `-created`, `created`, `-size`, `size`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "-created" => Self::NewestFirst,
            "created" => Self::OldestFirst,
            "-size" => Self::LargestFirst,
            "size" => Self::SmallestFirst,
            _ => return None,
        })
    }

    /// The column sorted on.
    pub fn column(self) -> &'static str {
        match self {
            Self::NewestFirst | Self::OldestFirst => "created_at",
            Self::LargestFirst | Self::SmallestFirst => "size",
        }
    }

    /// Whether larger values come first.
    pub fn descending(self) -> bool {
        matches!(self, Self::NewestFirst | Self::LargestFirst)
    }

    /// The sort key of an image.
    pub fn key(self, i: &ImageRecord) -> i64 {
        match self {
            Self::NewestFirst | Self::OldestFirst => i.created_ms,
            Self::LargestFirst | Self::SmallestFirst => i64::try_from(i.size).unwrap_or(i64::MAX),
        }
    }
}

/// Where a page of an image search ended: its last image's sort key and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageCursor {
    /// The sort key.
    pub key: i64,
    /// The id.
    pub id: String,
}

impl ImageCursor {
    /// The cursor after `i` under `sort`.
    pub fn after(sort: ImageSort, i: &ImageRecord) -> Self {
        Self {
            key: sort.key(i),
            id: i.id.clone(),
        }
    }

    /// `COLUMN.KEY.ID`, as the API hands it out for `sort`.
    pub fn encode(&self, sort: ImageSort) -> String {
        format!("{}.{}.{}", sort.column(), self.key, self.id)
    }

    /// Parses [`Self::encode`]; `None` for a cursor of another sort order.
    pub fn decode(s: &str, sort: ImageSort) -> Option<Self> {
        let (column, rest) = s.split_once('.')?;
        let (key, id) = rest.split_once('.')?;
        (column == sort.column()).then_some(())?;
        Some(Self {
            key: key.parse().ok()?,
            id: is_image_id(id).then(|| id.to_string())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Checks, Quality, Reason};

    /// What the gateway writes (`serde_json::to_string`) read back with
    /// the same type, as the client does.
    fn round_trip<T>(value: &T) -> T
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        let json = serde_json::to_string(value).unwrap();
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not read back: {e}"))
    }

    fn record(phase: Phase, callback: Option<&str>, notify_state: NotifyState) -> BatchRecord {
        BatchRecord {
            id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            phase,
            owner: "acme".into(),
            staged_key: staging_key("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
            upload_bytes: 123_456,
            total_entries: 7,
            error: (phase == Phase::Failed).then(|| "not a zip archive".into()),
            callback_url: callback.map(String::from),
            notify_state,
            notify_attempts: 2,
            notify_last_error: Some("connection refused".into()),
            notify_next_at: Some(1_800_000_000_500),
            notify_delivered_at: (notify_state == NotifyState::Delivered)
                .then_some(1_800_000_000_900),
            created_at: 1_800_000_000_000,
            updated_at: 1_800_000_000_250,
            started_at: Some(1_800_000_000_100),
            completed_at: phase.is_final().then_some(1_800_000_000_800),
        }
    }

    #[test]
    fn batch_view_reads_back_as_written_for_every_phase_and_notify_state() {
        let counts = Counts {
            accepted: 3,
            duplicate: 1,
            rejected: 2,
            failed: 0,
            pending: 1,
        };
        let phases = [
            Phase::Received,
            Phase::Processing,
            Phase::Completed,
            Phase::Failed,
            Phase::Expired,
        ];
        let states = [
            NotifyState::None,
            NotifyState::Pending,
            NotifyState::Delivered,
            NotifyState::Failed,
        ];
        for phase in phases {
            assert_eq!(round_trip(&phase), phase);
            let plain = BatchView::new(&record(phase, None, NotifyState::None), counts);
            assert_eq!(round_trip(&plain), plain);
            for state in states {
                assert_eq!(round_trip(&state), state);
                let view = BatchView::new(
                    &record(phase, Some("https://hooks.example/x"), state),
                    counts,
                );
                assert_eq!(round_trip(&view), view);
            }
        }
    }

    #[test]
    fn entries_not_yet_recorded_count_as_pending_until_the_batch_is_final() {
        let none = Counts::default();
        let some = Counts {
            accepted: 2,
            pending: 1,
            ..Counts::default()
        };
        // (phase, counts from the entries, pending shown) for 7 entries.
        let cases = [
            (Phase::Received, none, 7),
            (Phase::Processing, none, 7),
            (Phase::Processing, some, 5),
            (Phase::Completed, some, 1),
            (Phase::Failed, none, 0),
            (Phase::Expired, some, 1),
        ];
        for (phase, counts, pending) in cases {
            let view = BatchView::new(&record(phase, None, NotifyState::None), counts);
            assert_eq!(view.counts.pending, pending, "{phase:?} {counts:?}");
        }
    }

    #[test]
    fn enums_are_written_as_their_stable_names() {
        assert_eq!(
            serde_json::to_string(&Phase::Expired).unwrap(),
            "\"expired\""
        );
        assert_eq!(
            serde_json::to_string(&NotifyState::Delivered).unwrap(),
            "\"delivered\""
        );
        for phase in [Phase::Received, Phase::Processing, Phase::Completed] {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.as_str()));
        }
    }

    #[test]
    fn batch_status_document_as_the_api_shows_it_reads_into_batch_view() {
        // The shape of `GET /v1/batches/{id}` (gateway/src/openapi.json).
        let json = r#"{"id":"b1","owner":"acme","phase":"processing",
            "counts":{"accepted":1,"duplicate":0,"rejected":2,"failed":0,"pending":4},
            "total_entries":7,"upload_bytes":2048,"error":null,
            "created_at":"2026-12-01T10:00:00.000Z","updated_at":"2026-12-01T10:00:01.000Z",
            "started_at":"2026-12-01T10:00:00.500Z","completed_at":null,
            "notification":{"url":"https://hooks.example/x","state":"pending","attempts":0,
                "last_error":null,"delivered_at":null}}"#;
        let view: BatchView = serde_json::from_str(json).unwrap();
        assert_eq!(view.phase, Phase::Processing);
        assert_eq!(view.counts.pending, 4);
        assert_eq!(
            view.notification.as_ref().map(|n| n.state),
            Some(NotifyState::Pending)
        );
        let again: serde_json::Value = serde_json::to_value(&view).unwrap();
        let original: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(again, original, "reading and writing keep every field");
    }

    #[test]
    fn report_entries_read_back_as_written_for_every_kind_of_verdict() {
        let mut scores = crate::verdict::Scores::new();
        scores
            .entry("nudenet".into())
            .or_default()
            .insert("FACE_MALE".into(), 0.25);
        let checked = Verdict {
            checks: Some(Checks {
                quality: Some(Quality {
                    contrast: 41.5,
                    sharpness: 812.125,
                    overexposed: 0.0625,
                    underexposed: 0.5,
                }),
                scores,
            }),
            ..Verdict::refused(Reason::ModelRejected, "nudenet: FACE_MALE 0.25 >= 0.2")
        };
        let empty_checks = Verdict {
            checks: Some(Checks::default()),
            ..Verdict::accepted("a".repeat(64))
        };
        let verdicts = [
            None,
            Some(Verdict::accepted("a".repeat(64))),
            Some(Verdict::exact_duplicate("b".repeat(64))),
            Some(Verdict::near_duplicate("c".repeat(64), 12)),
            Some(Verdict::refused(Reason::Truncated, "file ends early")),
            Some(Verdict::refused(Reason::StorageError, "S3 unavailable")),
            Some(checked),
            Some(empty_checks),
        ];
        for (i, verdict) in verdicts.into_iter().enumerate() {
            let entry = ReportEntry::new(i as u32, format!("photos/{i}.jpg"), verdict);
            let back = round_trip(&entry);
            assert_eq!(back, entry);
            assert_eq!(back.verdict_kind(), entry.verdict_kind());
        }
    }

    #[test]
    fn report_entry_without_optional_fields_reads_as_pending() {
        // `distance` and `checks` are left out when unset; the rest is null.
        let json = r#"{"index":5,"entry":"a.jpg","verdict":"pending","reason":null,
            "detail":null,"image_id":null,"duplicate_of":null,"duplicate_kind":null}"#;
        let entry: ReportEntry = serde_json::from_str(json).unwrap();
        assert_eq!(entry, ReportEntry::new(5, "a.jpg".into(), None));
        assert_eq!(entry.verdict_kind(), None);
        assert!(!entry.is_decided());
    }
}
