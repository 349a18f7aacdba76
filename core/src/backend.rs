//! One trait per backend role. The embedded implementations live in
//! [`crate::embedded`]; the cluster ones (S3, PostgreSQL, Redis) implement
//! the same traits.

use crate::Result;
use crate::auth::ApiKey;
use crate::chunk::ChunkTask;
use crate::dedup::{ClaimOutcome, CommitOutcome};
use crate::model::{
    BatchRecord, Counts, EntryPlan, ImageCursor, ImageFilter, ImageRecord, ImageSort, Phase,
    ReportEntry,
};
use crate::pdq::Hash;
use crate::policy::Policy;
use crate::resumable::{Finished, Progress, UploadRecord};
use crate::time::Millis;
use crate::verdict::Verdict;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::ops::Range;
use std::sync::Arc;

/// A stream of bytes, as uploads arrive and downloads leave.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Object storage: staged uploads and content-addressed images.
/// The backends a process works with, whatever their implementation: the
/// embedded ones in `picsift serve`, the cluster ones elsewhere.
#[derive(Clone)]
pub struct Backends {
    /// Staged uploads and stored images.
    pub blobs: Arc<dyn BlobStore>,
    /// Batches, verdicts and images.
    pub catalog: Arc<dyn Catalog>,
    /// Exact-dedup claims.
    pub dedup: Arc<dyn DedupIndex>,
    /// Chunk tasks.
    pub queue: Arc<dyn WorkQueue>,
    /// Resumable uploads in progress (the gateway's).
    pub uploads: Arc<dyn UploadStore>,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` under `key`, replacing any object there; atomic.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<()>;
    /// Stores a stream under `key` with bounded memory; returns its size.
    /// Nothing is left under `key` when the stream fails.
    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<u64>;
    /// Reads `range` of the object (clamped to its end).
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// Streams the object, or a range of it.
    async fn get_stream(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream>;
    /// The object's size, or `None` when it does not exist.
    async fn size(&self, key: &str) -> Result<Option<u64>>;
    /// Deletes the object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Keys under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// A URL a client may GET the object from directly, when the store and
    /// its configuration offer one (S3 presigned URLs).
    async fn presigned_get(&self, _key: &str) -> Result<Option<String>> {
        Ok(None)
    }

    /// Starts an object assembled from parts (an S3 multipart upload), to
    /// appear under `key` when finished; returns its upload id.
    async fn start_parts(&self, key: &str) -> Result<String>;
    /// Stores part `number` (from 1) of an assembled object, which starts
    /// at byte `offset` of it, replacing one stored before under that
    /// number; returns its ETag. Every part but the last must be at least
    /// 5 MiB. (S3 needs only the number; the filesystem store writes the
    /// part in place, so putting the parts together copies nothing.)
    async fn put_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        offset: u64,
        bytes: Bytes,
    ) -> Result<String>;
    /// Puts the parts named by their ETags (part `i + 1` at index `i`)
    /// together under `key`; returns the object's size.
    async fn finish_parts(&self, key: &str, upload: &str, etags: &[String]) -> Result<u64>;
    /// Makes the parts put so far durable (a store that writes them
    /// lazily syncs them here; S3's are durable once put).
    async fn flush_parts(&self, _key: &str, _upload: &str) -> Result<()> {
        Ok(())
    }
    /// Drops an unfinished assembled object and its parts; dropping one
    /// already gone is not an error.
    async fn abort_parts(&self, key: &str, upload: &str) -> Result<()>;
    /// URLs a client may PUT part `number` to directly until `ttl` has
    /// passed, when the store offers them (S3 presigned URLs). Part 0 names
    /// a plain PUT of the whole object under `key` (no assembly).
    async fn presigned_part(
        &self,
        _key: &str,
        _upload: &str,
        _number: u32,
        _ttl: std::time::Duration,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    /// Readiness: writes and reads back a small object
    /// (`health/readiness-probe`), so a missing bucket, missing credentials
    /// or a read-only store fail it (a read alone takes a missing bucket's
    /// 404 for a missing object).
    async fn probe(&self) -> Result<()> {
        const KEY: &str = "health/readiness-probe";
        self.put(KEY, Bytes::from_static(b"ok")).await?;
        match self.size(KEY).await? {
            Some(2) => Ok(()),
            other => Err(crate::Error::Backend(format!(
                "the readiness probe object reads back as {other:?} bytes, not 2"
            ))),
        }
    }
}

/// Resumable uploads in progress, shared by every gateway
/// ([`crate::resumable`]): each step is a conditional update under the
/// appending request's lock.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Records a new upload.
    async fn create_upload(&self, u: &UploadRecord) -> Result<()>;
    /// The upload `id`.
    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>>;
    /// Takes upload `id` for appending at `offset` until `until`, if it is
    /// there, unfinished, unexpired at `now` and not held by a live lock.
    async fn lock_upload(
        &self,
        id: &str,
        token: &str,
        offset: u64,
        now: Millis,
        until: Millis,
    ) -> Result<bool>;
    /// Saves progress made under `token` and renews its lock to `until`;
    /// false when the lock was lost (nothing saved).
    async fn save_upload(&self, id: &str, token: &str, p: &Progress, until: Millis)
    -> Result<bool>;
    /// Lets go of the lock `token` holds, if it still does.
    async fn unlock_upload(&self, id: &str, token: &str) -> Result<()>;
    /// Marks the upload finished under `token` (and lets go of it); false
    /// when the lock was lost.
    async fn finish_upload(&self, id: &str, token: &str, how: &Finished) -> Result<bool>;
    /// Forgets the upload.
    async fn delete_upload(&self, id: &str) -> Result<()>;
    /// Uploads whose time ran out by `now` (unfinished, or finished and
    /// kept for a client that lost the answer), oldest first.
    async fn expired_uploads(&self, now: Millis, limit: u32) -> Result<Vec<UploadRecord>>;
}

/// A stored image near a PDQ hash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Similar {
    /// The image.
    pub image_id: String,
    /// Bits between its PDQ hash and the query's.
    pub distance: u32,
}

/// What [`Catalog::record_stored`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The image and the verdict are recorded.
    Recorded,
    /// Nothing recorded: this stored image is a near duplicate.
    Near(Similar),
    /// Nothing recorded: the entry already had a verdict.
    EntryDecided,
}

/// A new batch, as the gateway creates it.
#[derive(Clone, Debug)]
pub struct NewBatch {
    /// The batch id.
    pub id: String,
    /// The tenant that uploads it.
    pub owner: String,
    /// Blob key of the staged archive.
    pub staged_key: String,
    /// Size of the archive.
    pub upload_bytes: u64,
    /// Entries in the archive.
    pub total_entries: u64,
    /// Webhook URL.
    pub callback_url: Option<String>,
    /// Upload time.
    pub now: Millis,
}

/// An upload's place in its tenant's quotas, held while it streams
/// ([`Catalog::reserve_upload`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The batch id the upload will have.
    pub id: String,
    /// The tenant.
    pub owner: String,
    /// Bytes declared (0 when the body's length is unknown yet).
    pub bytes: u64,
    /// When it lapses if never released (a gateway that died).
    pub expires_at: Millis,
}

/// The limits a reservation is checked against, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaCheck {
    /// Now.
    pub now: Millis,
    /// The first instant of this calendar month (UTC).
    pub month_start: Millis,
    /// Batches in progress at once, reservations included (`None`: no limit).
    pub max_open_batches: Option<u64>,
    /// Bytes uploaded per month, reservations included (`None`: no limit).
    pub max_bytes_per_month: Option<u64>,
}

/// The outcome of one webhook delivery attempt.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// The receiver answered 2xx.
    Delivered {
        /// When.
        at: Millis,
    },
    /// Failed; try again at `next_at`, or give up when `None`.
    Failed {
        /// What went wrong.
        error: String,
        /// The next attempt.
        next_at: Option<Millis>,
    },
}

/// The catalog: batches, per-entry verdicts and stored images.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Records a new batch in phase received.
    async fn create_batch(&self, batch: &NewBatch) -> Result<()>;
    /// A batch, if it exists.
    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>>;
    /// Verdict counts of a batch.
    async fn counts(&self, id: &str) -> Result<Counts>;
    /// Records the planned entries (idempotent) and moves the batch to processing.
    async fn record_entries(&self, id: &str, entries: &[EntryPlan], now: Millis) -> Result<()>;
    /// Ends an unfinished batch in `phase` (failed or expired) with `error`;
    /// a batch that already ended is left as it is.
    async fn end_batch(&self, id: &str, phase: Phase, error: &str, now: Millis) -> Result<()>;
    /// Marks a batch failed as a whole.
    async fn fail_batch(&self, id: &str, error: &str, now: Millis) -> Result<()> {
        self.end_batch(id, Phase::Failed, error, now).await
    }
    /// Batches in phase received or processing (to resume after a restart).
    async fn unfinished_batches(&self) -> Result<Vec<BatchRecord>>;
    /// Undecided entries of a batch with their compressed sizes.
    async fn pending_entries(&self, id: &str) -> Result<Vec<(u32, u64)>>;
    /// Undecided entry indices of a batch between `first` and `last` inclusive.
    async fn undecided_between(&self, id: &str, first: u32, last: u32) -> Result<Vec<u32>>;
    /// Report lines with index greater than `after`, at most `limit`.
    async fn report(&self, id: &str, after: Option<u32>, limit: u32) -> Result<Vec<ReportEntry>>;
    /// Records an entry's verdict unless it already has one; returns whether it wrote.
    async fn record_verdict(
        &self,
        id: &str,
        index: u32,
        verdict: &Verdict,
        now: Millis,
    ) -> Result<bool>;
    /// Replaces an entry's `accepted` verdict for `accepted_image` (and no
    /// other verdict): a worker that recorded the image, then lost its
    /// exact-dedup claim to another owner (its lease ran out while it was
    /// paused), makes its entry the duplicate it would have been.
    async fn correct_verdict(
        &self,
        id: &str,
        index: u32,
        accepted_image: &str,
        verdict: &Verdict,
        now: Millis,
    ) -> Result<bool>;
    /// Records a stored image; a second insert of the same id changes nothing.
    async fn insert_image(&self, image: &ImageRecord) -> Result<()>;
    /// Records a stored image's model scores (model → label → score), for
    /// the search's score filter; scores already recorded stay.
    async fn record_scores(&self, image_id: &str, scores: &crate::verdict::Scores) -> Result<()>;
    /// Records `image` unless a stored image other than itself is within
    /// `max_distance` of its PDQ hash, which is returned instead. The check
    /// and the insert are one serialized step, so of two near duplicates
    /// inserted at once, one is recorded and the other told about it.
    /// With `scope`, only images that tenant stored count (per-tenant dedup).
    async fn insert_image_unless_near(
        &self,
        image: &ImageRecord,
        max_distance: u32,
        scope: Option<&str>,
    ) -> Result<Option<Similar>>;
    /// Records a stored image and its entry's verdict (`image.batch_id`,
    /// `image.entry_index`) in one step, and only while the entry is
    /// undecided: an entry an expired or cancelled batch decided first gets
    /// no image row, so the verdict and what is stored always agree. With
    /// `near` (most PDQ bits apart, per-tenant scope), nothing is recorded
    /// when a stored image is that near, as in
    /// [`Self::insert_image_unless_near`].
    async fn record_stored(
        &self,
        image: &ImageRecord,
        verdict: &Verdict,
        near: Option<(u32, Option<&str>)>,
        now: Millis,
    ) -> Result<Stored>;
    /// An image, if stored.
    async fn image(&self, id: &str) -> Result<Option<ImageRecord>>;
    /// Notes that `image_id`'s bytes were put but its record may never be
    /// inserted (a lost near-duplicate race); [`crate::blob_gc`] deletes
    /// them once, after its grace, no image row names the id.
    async fn note_orphan_blob(&self, image_id: &str, now: Millis) -> Result<()>;
    /// Before putting `image_id`'s bytes: forgets a note about them, and
    /// answers `false` while the sweep is deleting them (wait, then ask again).
    async fn claim_blob_for_put(&self, image_id: &str) -> Result<bool>;
    /// Marks for deletion, and returns, at most `limit` noted orphans from
    /// before `before` that no image row names (and those already marked by
    /// a sweep that stopped midway); forgets notes whose image is recorded.
    async fn orphan_blobs_to_delete(&self, before: Millis, limit: u32) -> Result<Vec<String>>;
    /// Forgets a note once its bytes are deleted.
    async fn forget_orphan_blob(&self, image_id: &str) -> Result<()>;
    /// Images accepted in a batch, by entry index, after `after`, at most `limit`.
    async fn batch_images(
        &self,
        batch: &str,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>>;
    /// Every image id (to rebuild indexes and check stores).
    async fn image_ids(&self) -> Result<Vec<String>>;
    /// Up to `limit` stored images with an id after `after`, in id order,
    /// each with the entry that stored it and every tenant that owns it:
    /// the committed dedup claims the catalog implies, a page at a time.
    async fn stored_claims(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<crate::model::StoredClaims>>;
    /// Records that the file with SHA-256 `sha256` (as uploaded) is stored
    /// as, or is a duplicate of, `image_id`; the first record stays.
    async fn record_original(&self, sha256: &str, image_id: &str) -> Result<()>;
    /// Of `sha256s` (files as uploaded), those already known, with their image.
    /// With `owner`, only those whose image that tenant stored.
    async fn known_originals(
        &self,
        sha256s: &[String],
        owner: Option<&str>,
    ) -> Result<Vec<(String, String)>>;
    /// Stored images passing `filter`, in `sort` order, after `after`, at most `limit`.
    async fn search_images(
        &self,
        filter: &ImageFilter,
        sort: ImageSort,
        after: Option<&ImageCursor>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>>;
    /// Stored images whose PDQ hash is within `max_distance` (at most
    /// [`crate::pdq_index::MAX_SEARCH_DISTANCE`]) of `hash`, nearest first,
    /// at most `limit`. Only hashes of quality 50 or more are indexed.
    /// With `owner`, only images that tenant stored.
    async fn similar(
        &self,
        hash: &Hash,
        max_distance: u32,
        limit: u32,
        owner: Option<&str>,
    ) -> Result<Vec<Similar>>;
    /// The tenants that stored image `id`, in name order.
    async fn image_owners(&self, id: &str) -> Result<Vec<String>>;
    /// Of `ids`, the images `owner` stored.
    async fn owned_images(&self, owner: &str, ids: &[String]) -> Result<Vec<String>>;
    /// Records an API key by the hash of its secret.
    async fn create_api_key(&self, key: &ApiKey, hash: &str) -> Result<()>;
    /// Every API key, revoked ones too, oldest first.
    async fn api_keys(&self) -> Result<Vec<ApiKey>>;
    /// The unrevoked key whose secret hashes to `hash`.
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>>;
    /// Revokes a key; false when there is no such unrevoked key.
    async fn revoke_api_key(&self, id: &str, now: Millis) -> Result<bool>;
    /// Batches, newest first (by upload time, then id descending), of
    /// `owner` or of every tenant, after `after` (the last one of the
    /// previous page: `(created_at, id)`), at most `limit`.
    async fn list_batches(
        &self,
        owner: Option<&str>,
        after: Option<(Millis, String)>,
        limit: u32,
    ) -> Result<Vec<BatchRecord>>;
    /// Reserves `r`'s place in its tenant's quotas if they allow it, in
    /// one atomic step with the check (`false`: they do not).
    async fn reserve_upload(&self, r: &Reservation, q: &QuotaCheck) -> Result<bool>;
    /// Sets a reservation's bytes to the size really uploaded, if the
    /// quotas allow it (`false`: they do not; the reservation stays as it was).
    async fn settle_upload(&self, r: &Reservation, q: &QuotaCheck) -> Result<bool>;
    /// Drops a reservation: its batch exists (and counts itself), or the upload failed.
    async fn release_upload(&self, id: &str) -> Result<()>;
    /// Batches of `owner` still received or processing.
    async fn open_batches(&self, owner: &str) -> Result<u64>;
    /// Bytes `owner` uploaded since `since` (ms).
    async fn uploaded_bytes_since(&self, owner: &str, since: Millis) -> Result<u64>;
    /// Counts one more start of an undecided entry's processing and
    /// returns the count (0 when the entry is decided or unknown).
    async fn begin_attempt(&self, batch: &str, index: u32) -> Result<u32>;
    /// Counts one start less (the processing ended, however).
    async fn end_attempt(&self, batch: &str, index: u32) -> Result<()>;
    /// Completes the batch if no entry is pending; true for the one caller that completed it.
    async fn try_complete(&self, id: &str, now: Millis) -> Result<bool>;
    /// Batches whose webhook is due at `now`.
    async fn due_notifications(&self, now: Millis) -> Result<Vec<BatchRecord>>;
    /// Records a delivery attempt.
    async fn record_delivery(&self, id: &str, delivery: &Delivery, now: Millis) -> Result<()>;
}

/// Exact-dedup claims (see [`crate::dedup`] for the protocol).
#[async_trait]
pub trait DedupIndex: Send + Sync {
    /// Claims `key` for `owner` with a lease of `lease_ms`.
    async fn claim(
        &self,
        key: &str,
        owner: &str,
        now: Millis,
        lease_ms: Millis,
    ) -> Result<ClaimOutcome>;
    /// Commits `owner`'s claim of `key` to `image_id`.
    async fn commit(&self, key: &str, owner: &str, image_id: &str) -> Result<CommitOutcome>;
    /// Drops `owner`'s pending claim of `key` (it stored nothing after
    /// all); a committed claim, or another owner's, stays.
    async fn release(&self, key: &str, owner: &str) -> Result<()>;
    /// Claims still pending (none should remain when all batches are done).
    async fn pending_claims(&self) -> Result<u64>;
    /// Writes a committed claim as found in the catalog (`picsift reindex`):
    /// the index can be rebuilt from the catalog and the object store.
    async fn restore_committed(&self, key: &str, owner: &str, image_id: &str) -> Result<()>;
    /// [`Self::restore_committed`] for each `(key, owner, image_id)`, in as
    /// few round trips as the index allows.
    async fn restore_committed_many(&self, claims: &[(String, String, String)]) -> Result<()> {
        for (key, owner, image_id) in claims {
            self.restore_committed(key, owner, image_id).await?;
        }
        Ok(())
    }
    /// Whether the index holds every committed claim: false once it lost
    /// its data (Redis restarted empty, was flushed), until a rebuild ends.
    /// An index kept with the catalog (SQLite) is always complete.
    async fn complete(&self) -> Result<bool> {
        Ok(true)
    }
    /// Takes the right to rebuild the index for `ttl_ms` (one rebuilder at
    /// a time); `false` while another process holds it.
    async fn begin_rebuild(&self, _who: &str, _ttl_ms: u64) -> Result<bool> {
        Ok(true)
    }
    /// Extends `who`'s right to rebuild by `ttl_ms` from now; `false` when
    /// `who` no longer holds it (its lease ran out and another took it).
    async fn renew_rebuild(&self, _who: &str, _ttl_ms: u64) -> Result<bool> {
        Ok(true)
    }
    /// Ends `who`'s rebuild: when `who` still holds the right to rebuild,
    /// the index is marked complete and the right given back (`true`);
    /// otherwise nothing changes (`false`): another process holds it now,
    /// or the index lost its data, the right with it, during the rebuild.
    async fn end_rebuild(&self, _who: &str) -> Result<bool> {
        Ok(true)
    }
}

/// A task taken from the queue, to ack when done.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The task.
    pub task: ChunkTask,
    /// The queue's handle for ack.
    pub receipt: String,
    /// How many times the task has been handed out, this time included.
    pub deliveries: u32,
}

/// The chunk work queue.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Adds a task.
    async fn enqueue(&self, task: ChunkTask) -> Result<()>;
    /// Takes the next task, waiting up to `wait_ms`. A task handed out
    /// earlier and neither acked nor released within the queue's
    /// visibility timeout (its worker died) is handed out again.
    async fn dequeue(&self, wait_ms: u64) -> Result<Option<Lease>>;
    /// Marks a task done.
    async fn ack(&self, lease: &Lease) -> Result<()>;
    /// Gives a task back after a failure, to be handed out again later.
    async fn release(&self, lease: &Lease) -> Result<()>;
    /// How long a lease lasts unless [`WorkQueue::extend`]ed; `None` when
    /// it does not run out (the embedded queue: its worker dies with it).
    fn lease_ttl(&self) -> Option<std::time::Duration> {
        None
    }
    /// Keeps a task its worker is still working on from being handed out
    /// again for another [`WorkQueue::lease_ttl`], keeping its delivery
    /// count; `false` when the lease was lost meanwhile (another worker
    /// took the task).
    async fn extend(&self, _lease: &Lease) -> Result<bool> {
        Ok(true)
    }
    /// Housekeeping a worker runs now and then (Redis: removes consumers
    /// of workers that are gone).
    async fn tidy(&self) -> Result<()> {
        Ok(())
    }
    /// Removes a task that keeps failing, keeping it where operators can see it.
    async fn dead_letter(&self, lease: &Lease, why: &str) -> Result<()>;
    /// Tasks waiting.
    async fn backlog(&self) -> Result<u64>;
    /// Tasks handed out again, by all workers together since the queue
    /// began, because their worker held them past the lease (it died or
    /// stalled). Always 0 for a queue whose leases do not run out.
    async fn reclaimed(&self) -> Result<u64> {
        Ok(0)
    }
}

/// Hands a received batch over for processing: in standalone, the
/// in-process planner; in the cluster, an `UploadBatch` for the operator.
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// The policy an upload naming policy `name` (or none) is checked
    /// against; `None` when there is no such policy.
    async fn policy(&self, name: Option<&str>) -> Result<Option<Policy>>;
    /// Starts processing of a batch the catalog already holds, under the
    /// policy the upload named. An error means nobody will process it.
    async fn submit(&self, batch: &NewBatch, policy: Option<&str>) -> Result<()>;
}

/// A batch's report as NDJSON, one verdict per line, after entry `after`.
/// Pages are read from the catalog as the stream is consumed, so memory
/// stays flat however large the batch: the gateway streams it to clients
/// and the operator into the bucket.
///
/// With `viewer` (a tenant that is not an admin), another tenant's image
/// ids are hidden ([`hide_foreign_images`]).
pub fn report_ndjson(
    catalog: Arc<dyn Catalog>,
    id: String,
    after: Option<u32>,
    viewer: Option<String>,
) -> ByteStream {
    const PAGE: u32 = 1000;
    Box::pin(futures_util::stream::unfold(Some(after), move |cursor| {
        let (catalog, id, viewer) = (catalog.clone(), id.clone(), viewer.clone());
        async move {
            let cursor = cursor?;
            let page = match catalog.report(&id, cursor, PAGE).await {
                Ok(mut page) => match &viewer {
                    Some(t) => hide_foreign_images(catalog.as_ref(), t, &mut page)
                        .await
                        .map(|()| page),
                    None => Ok(page),
                },
                Err(e) => Err(e),
            };
            match page {
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = (page.len() as u32 == PAGE).then(|| page.last().map(|e| e.index));
                    let mut buf = Vec::new();
                    for e in &page {
                        let _ = serde_json::to_writer(&mut buf, e);
                        buf.push(b'\n');
                    }
                    Some((Ok(Bytes::from(buf)), next))
                }
            }
        }
    }))
}

/// Hides from `tenant` the ids of images it did not store: a duplicate of
/// another tenant's image says so, without the id (global dedup tells an
/// uploader that someone has the image; which image, only admins learn).
pub async fn hide_foreign_images(
    catalog: &dyn Catalog,
    tenant: &str,
    entries: &mut [ReportEntry],
) -> Result<()> {
    let ids: Vec<String> = entries
        .iter()
        .filter_map(|e| e.duplicate_of.clone())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let own: std::collections::HashSet<String> = catalog
        .owned_images(tenant, &ids)
        .await?
        .into_iter()
        .collect();
    for e in entries.iter_mut() {
        if e.duplicate_of.as_ref().is_some_and(|id| !own.contains(id)) {
            e.duplicate_of = None;
            e.detail = Some("a duplicate of an image another tenant stored".into());
        }
    }
    Ok(())
}
