//! Processing chunk tasks: one entry at a time through the pipeline, then
//! claim, store, commit and record the verdict.

use crate::{Result, WorkerConfig, checks};
use picsift_core::archive::{self, EntryMeta};
use picsift_core::backend::{Backends, Stored};
use picsift_core::blob_gc;
use picsift_core::blob_reader::BlobReader;
use picsift_core::chunk::ChunkTask;
use picsift_core::dedup::{ClaimOutcome, CommitOutcome};
use picsift_core::model::{ImageRecord, image_key, owns_source};
use picsift_core::pdq::MIN_MATCH_QUALITY;
use picsift_core::pipeline::{self, Prepared};
use picsift_core::policy::DedupScope;
use picsift_core::time::now_ms;
use picsift_core::verdict::{DuplicateKind, Reason, Rejection, Verdict};
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use zip::ZipArchive;

/// One entry after the pure pipeline.
struct Checked {
    index: u32,
    name: String,
    outcome: Result<Prepared, Rejection>,
    /// The quality and ML checks under way, when the policy has any.
    pending: Option<picsift_ml::Pending>,
    /// The entry's bytes as uploaded, kept only for the audit sample.
    audit: Option<Vec<u8>>,
}

impl Checked {
    fn refused(index: u32, name: String, rejection: Rejection) -> Self {
        Self {
            index,
            name,
            outcome: Err(rejection),
            pending: None,
            audit: None,
        }
    }
}

/// What the pipeline's producers need besides the entries.
#[derive(Clone)]
struct Checking {
    policy: Arc<picsift_core::policy::Policy>,
    checker: Option<picsift_ml::Checker>,
    batch_id: Arc<str>,
    /// On a redelivered task: the catalog, to count each entry's decodes.
    guard: Option<(
        Arc<dyn picsift_core::backend::Catalog>,
        tokio::runtime::Handle,
    )>,
    /// Child processes to decode in, if isolated ([`crate::isolated`]).
    decoders: Option<Arc<crate::isolated::DecoderPool>>,
}

/// Decodes of one entry that may end with its worker gone (killed by an
/// abort or out of memory inside a decoder) before it is refused as
/// `decoder_crash`.
const MAX_DECODER_CRASHES: u32 = 1;

impl Checking {
    fn audited(&self, index: u32) -> bool {
        checks::audited(&self.batch_id, index, self.policy.audit.sample_rate)
    }

    /// [`Self::run_unguarded`], counted on a redelivered task: the count
    /// goes up before the decode and down after it, so an entry whose count
    /// is up when its task comes again is one whose decode took its worker
    /// down. The first such crash of a task is not attributed (nothing is
    /// counted on a first delivery, to keep the common path free); the next
    /// is, and the delivery after that refuses the entry.
    fn run(&self, index: u32, name: String, bytes: Vec<u8>) -> Checked {
        let Some((catalog, rt)) = &self.guard else {
            return self.run_unguarded(index, name, bytes);
        };
        match rt.block_on(catalog.begin_attempt(&self.batch_id, index)) {
            Ok(n) if n > MAX_DECODER_CRASHES => {
                tracing::error!(batch = %self.batch_id, index, "entry killed its worker while decoding; refused");
                return Checked::refused(
                    index,
                    name,
                    Rejection::new(
                        Reason::DecoderCrash,
                        "decoding this entry killed its worker (an abort or running out of memory) on two deliveries; it is not tried again",
                    ),
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not count the decode attempt"),
        }
        let checked = self.run_unguarded(index, name, bytes);
        if let Err(e) = rt.block_on(catalog.end_attempt(&self.batch_id, index)) {
            tracing::warn!(error = %e, "could not count the decode attempt's end");
        }
        checked
    }

    /// The pure pipeline on one entry's bytes, then its checks queued.
    fn run_unguarded(&self, index: u32, name: String, bytes: Vec<u8>) -> Checked {
        let audit = self.audited(index).then(|| bytes.clone());
        let prepared = match &self.decoders {
            None => pipeline::prepare_with_pixels(&bytes, &self.policy),
            Some(pool) => {
                // Pixels only as large as the checks' inputs need.
                let reduce_to = self.checker.as_ref().map_or(0, |c| c.largest_input());
                pool.prepare(&bytes, &self.policy, reduce_to)
            }
        };
        let (outcome, pending) = match prepared {
            Err(r) => (Err(r), None),
            Ok((p, pixels)) => match (&self.checker, pixels) {
                (Some(c), Some(rgb)) => (Ok(p), Some(c.submit(c.inputs(&rgb)))),
                // Quality alone is a courtesy; models are a gate that an
                // image without RGB pixels must not slip past.
                (Some(c), None) if c.has_models() => (
                    Err(Rejection::new(
                        Reason::Uncheckable,
                        "the image is CMYK; the policy's models need RGB pixels",
                    )),
                    None,
                ),
                _ => (Ok(p), None),
            },
        };
        Checked {
            index,
            name,
            outcome,
            pending,
            audit,
        }
    }
}

/// Processes one chunk. Entries that already have a verdict are skipped,
/// so a task delivered twice does no harm. Returns whether this call
/// completed the batch.
/// `deliveries` counts this one: from the second on, decodes are counted
/// to find an entry that crashes its worker.
pub async fn process_chunk(
    b: &Backends,
    cfg: &WorkerConfig,
    task: &ChunkTask,
    deliveries: u32,
) -> Result<bool> {
    let Some(batch) = b.catalog.batch(&task.batch_id).await? else {
        return Ok(false);
    };
    if batch.phase.is_final() {
        return Ok(false);
    }
    let (Some(&first), Some(&last)) = (task.entries.iter().min(), task.entries.iter().max()) else {
        return Ok(false);
    };
    let undecided: HashSet<u32> = b
        .catalog
        .undecided_between(&batch.id, first, last)
        .await?
        .into_iter()
        .collect();
    let todo: Vec<u32> = task
        .entries
        .iter()
        .copied()
        .filter(|i| undecided.contains(i))
        .collect();
    if !todo.is_empty() {
        let policy = task.policy.clone().unwrap_or_else(|| cfg.policy.clone());
        let dedup = DedupCtx {
            near: policy.near_duplicate_distance,
            scoped: policy.dedup_scope == DedupScope::Tenant,
            owner: task.owner.clone(),
        };
        let checker = checks::checker(b, &cfg.ml, &policy).await?;
        // The pure pipeline runs on a blocking thread, ahead of the async
        // side: one entry without checks (at most two in memory), up to 8
        // with them, so the model threads see batches (the chunks processed
        // at once add theirs). Each holds its entry's bytes, so the depth
        // is capped: 8 × `concurrency` entries in memory at most.
        let depth = if checker.is_some() {
            cfg.ml.batch_size().clamp(1, 8)
        } else {
            1
        };
        let checking = Checking {
            policy: Arc::new(policy),
            checker,
            batch_id: batch.id.as_str().into(),
            guard: (deliveries >= 2 || task.replanned)
                .then(|| (b.catalog.clone(), tokio::runtime::Handle::current())),
            decoders: cfg.decoders.clone(),
        };
        let (tx, mut rx) = mpsc::channel::<Result<Checked, String>>(depth);
        let producer = if picsift_core::model::is_prefix(&batch.staged_key) {
            let names = entry_names(b, &batch.id, first, last).await?;
            tokio::spawn(check_objects(
                b.clone(),
                batch.staged_key.clone(),
                names,
                todo,
                checking.clone(),
                tx,
            ))
        } else {
            let Some(len) = b.blobs.size(&batch.staged_key).await? else {
                for &i in &todo {
                    let v = Verdict::refused(
                        Reason::StorageError,
                        "the staged archive disappeared before this entry was checked",
                    );
                    b.catalog.record_verdict(&batch.id, i, &v, now_ms()).await?;
                }
                return complete(b, &batch.id, &batch.staged_key).await;
            };
            let reader = BlobReader::new(
                b.blobs.clone(),
                &batch.staged_key,
                len,
                tokio::runtime::Handle::current(),
            );
            let checking = checking.clone();
            tokio::task::spawn_blocking(move || check_entries(reader, &todo, &checking, &tx))
        };
        while let Some(checked) = rx.recv().await {
            let checked = checked.map_err(|f| {
                picsift_core::Error::Backend(format!("reading the batch's source failed: {f}"))
            })?;
            let checks = match checked.pending {
                Some(pending) => Some(pending.wait().await.map_err(|e| {
                    picsift_core::Error::Backend(format!(
                        "the quality and ML checks failed to run: {e}"
                    ))
                })?),
                None => None,
            };
            let verdict = match checked.outcome {
                Err(rejection) => rejection.into(),
                Ok(_) if checks.as_ref().is_some_and(|c| c.rejection.is_some()) => {
                    let outcome = checks.expect("checked above");
                    let mut verdict: Verdict = outcome.rejection.expect("checked above").into();
                    verdict.checks = Some(outcome.checks);
                    verdict
                }
                Ok(prepared) => {
                    let source = prepared.source_sha256.clone();
                    // The scores, for search, before the image can be
                    // recorded with its verdict: a retried chunk records
                    // them again. (Scores of an image that ends up not
                    // stored name no image row and match nothing.)
                    if let Some(c) = &checks
                        && !c.checks.scores.is_empty()
                    {
                        b.catalog
                            .record_scores(&prepared.id, &c.checks.scores)
                            .await?;
                    }
                    let entry = (batch.id.as_str(), checked.index, checked.name.as_str());
                    let checks = checks.map(|c| c.checks);
                    let Some(verdict) = store_once(b, cfg, entry, &dedup, prepared, checks).await?
                    else {
                        // An Expire or Cancel decided the entry meanwhile.
                        continue;
                    };
                    // The pre-upload lookup learns this file. Near
                    // duplicates are left out: whether a file is one
                    // depends on the policy of the batch it comes in.
                    let exact = verdict.duplicate_kind == Some(DuplicateKind::Exact);
                    let dup_of = verdict.duplicate_of.as_ref().filter(|_| exact);
                    if let Some(image) = verdict.image_id.as_ref().or(dup_of) {
                        b.catalog.record_original(&source, image).await?;
                    }
                    verdict
                }
            };
            // Before the verdict: a chunk retried after a crash here
            // writes the same copy again.
            if checking.audited(checked.index) {
                checks::write_audit(
                    b,
                    &batch.id,
                    checked.index,
                    &checked.name,
                    &verdict,
                    checked.audit,
                )
                .await;
            }
            b.catalog
                .record_verdict(&batch.id, checked.index, &verdict, now_ms())
                .await?;
        }
        producer.await?;
    }
    complete(b, &batch.id, &batch.staged_key).await
}

async fn complete(b: &Backends, batch_id: &str, staged_key: &str) -> Result<bool> {
    if b.catalog.try_complete(batch_id, now_ms()).await? {
        tracing::info!(batch = batch_id, "batch completed");
        if !owns_source(staged_key) {
            return Ok(true);
        }
        if let Err(e) = b.blobs.delete(staged_key).await {
            tracing::warn!(batch = batch_id, error = %e, "could not delete the staged archive");
        }
        return Ok(true);
    }
    Ok(false)
}

/// The names of a batch's entries `first..=last`, from the catalog.
async fn entry_names(
    b: &Backends,
    batch_id: &str,
    first: u32,
    last: u32,
) -> Result<std::collections::HashMap<u32, String>> {
    let page = b
        .catalog
        .report(batch_id, first.checked_sub(1), last - first + 1)
        .await?;
    Ok(page.into_iter().map(|e| (e.index, e.entry)).collect())
}

/// The prefix counterpart of [`check_entries`]: each entry is the object
/// `prefix + name`, read whole (up to the policy's entry limit).
async fn check_objects(
    b: Backends,
    prefix: String,
    names: std::collections::HashMap<u32, String>,
    todo: Vec<u32>,
    checking: Checking,
    tx: mpsc::Sender<Result<Checked, String>>,
) {
    for index in todo {
        let name = names.get(&index).cloned().unwrap_or_default();
        let key = format!("{prefix}{name}");
        let limit = checking.policy.max_entry_bytes;
        let spelling = checking.policy.spelling;
        let checked = match b.blobs.get_range(&key, 0..limit.saturating_add(1)).await {
            Err(picsift_core::Error::NotFound(_)) => Checked::refused(
                index,
                name,
                Rejection::new(
                    Reason::StorageError,
                    format!("{key} was deleted before it was checked"),
                ),
            ),
            Err(e) => {
                let _ = tx.send(Err(e.to_string())).await;
                return;
            }
            Ok(bytes) if bytes.len() as u64 > limit => Checked::refused(
                index,
                name,
                Rejection::new(
                    Reason::EntryTooLarge,
                    format!(
                        "{key} is larger than {limit} bytes ({})",
                        spelling.name(picsift_core::setting::Setting::MaxEntryBytes)
                    ),
                ),
            ),
            Ok(bytes) => {
                let checking = checking.clone();
                let named = name.clone();
                tokio::task::spawn_blocking(move || {
                    catch_unwind(AssertUnwindSafe(|| {
                        checking.run(index, named.clone(), bytes.to_vec())
                    }))
                    .unwrap_or_else(|_| crashed(index, named))
                })
                .await
                .unwrap_or_else(|_| crashed(index, name))
            }
        };
        if tx.send(Ok(checked)).await.is_err() {
            return;
        }
    }
}

/// Runs the pure steps for each entry, isolating panics per entry.
///
/// A storage failure while reading (the store briefly unreachable) is not
/// the entry's fault: it ends the walk with `Err`, and the chunk is retried.
fn check_entries(
    reader: BlobReader,
    todo: &[u32],
    checking: &Checking,
    tx: &mpsc::Sender<Result<Checked, String>>,
) {
    let failure = reader.failure();
    let mut archive = match ZipArchive::new(reader) {
        Ok(a) => Some(a),
        Err(e) => {
            if let Some(f) = failure.get() {
                let _ = tx.blocking_send(Err(f));
                return;
            }
            tracing::warn!(error = %e, "staged archive unreadable");
            None
        }
    };
    for &index in todo {
        let checked = match archive.as_mut() {
            None => Checked::refused(
                index,
                String::new(),
                Rejection::new(Reason::InternalError, "the staged archive cannot be read"),
            ),
            Some(a) => {
                let run = catch_unwind(AssertUnwindSafe(|| check_one(a, index, checking)));
                run.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(index, panic = what, "pipeline panicked on an entry");
                    crashed(index, String::new())
                })
            }
        };
        if let Some(f) = failure.get() {
            let _ = tx.blocking_send(Err(f));
            return;
        }
        if tx.blocking_send(Ok(checked)).is_err() {
            return;
        }
    }
}

/// The verdict of an entry whose processing panicked.
fn crashed(index: u32, name: String) -> Checked {
    Checked::refused(
        index,
        name,
        Rejection::new(
            Reason::DecoderCrash,
            "processing this entry panicked; it is refused and the rest of the batch goes on",
        ),
    )
}

fn check_one<R: std::io::Read + std::io::Seek>(
    a: &mut ZipArchive<R>,
    index: u32,
    checking: &Checking,
) -> Checked {
    let meta = match EntryMeta::read(a, index as usize) {
        Ok(m) => m,
        Err(e) => {
            return Checked::refused(
                index,
                String::new(),
                Rejection::new(Reason::DecodeError, format!("entry header unreadable: {e}")),
            );
        }
    };
    let policy = &checking.policy;
    match archive::check_entry(&meta, policy)
        .and_then(|()| archive::read_entry(a, index as usize, &meta, policy))
    {
        Ok(bytes) => checking.run(index, meta.name, bytes),
        Err(r) => Checked::refused(index, meta.name, r),
    }
}

/// How a batch's images are deduplicated.
struct DedupCtx {
    /// The near-duplicate threshold, if near duplicates are on.
    near: Option<u32>,
    /// The tenant that uploads the batch.
    owner: String,
    /// Whether only that tenant's images count (per-tenant scope).
    scoped: bool,
}

impl DedupCtx {
    /// The tenant whose images alone count, under per-tenant scope.
    fn scope(&self) -> Option<&str> {
        self.scoped.then_some(self.owner.as_str())
    }

    /// The exact-dedup claim key of an image: its id, or under per-tenant
    /// scope the tenant and the id.
    fn claim_key(&self, id: &str) -> String {
        picsift_core::dedup::claim_key(self.scope(), id)
    }

    /// Whether the image is stored already, as far as this scope sees.
    async fn stored(&self, b: &Backends, id: &str) -> Result<bool> {
        Ok(match self.scope() {
            None => b.catalog.image(id).await?.is_some(),
            Some(t) => !b
                .catalog
                .owned_images(t, &[id.to_string()])
                .await?
                .is_empty(),
        })
    }
}

/// Claims the image, stores it, records it with the entry's verdict and
/// commits the claim, or finds it is a duplicate. Waits while another owner
/// holds a live claim. `None`: the entry was decided meanwhile (its batch
/// expired or was cancelled), and nothing names the bytes put.
async fn store_once(
    b: &Backends,
    cfg: &WorkerConfig,
    (batch_id, index, name): (&str, u32, &str),
    dedup: &DedupCtx,
    mut p: Prepared,
    checks: Option<picsift_core::verdict::Checks>,
) -> Result<Option<Verdict>> {
    // An image already stored under this very id (identical bytes, or this
    // entry's own earlier attempt) is the exact-dedup claim's business;
    // only a new image is checked for near duplicates.
    if !dedup.stored(b, &p.id).await?
        && let Some(verdict) = near_duplicate(b, dedup, &p).await?
    {
        return Ok(Some(Verdict { checks, ..verdict }));
    }
    let key = dedup.claim_key(&p.id);
    let owner = format!("{batch_id}:{index}");
    // The bytes move into a shared buffer once; retries clone the handle, not the image.
    let size = p.bytes.len() as u64;
    let bytes = bytes::Bytes::from(std::mem::take(&mut p.bytes));
    let record = ImageRecord {
        id: p.id.clone(),
        format: p.format,
        width: p.width,
        height: p.height,
        size,
        orientation: p.orientation,
        owner: dedup.owner.clone(),
        batch_id: batch_id.into(),
        entry_index: index,
        entry_name: name.into(),
        pdq: p.pdq.map(|h| h.hash.to_string()),
        pdq_quality: p.pdq.map(|h| h.quality),
        created_ms: now_ms(),
    };
    let matchable = p.pdq.is_some_and(|h| h.quality >= MIN_MATCH_QUALITY);
    let near = dedup
        .near
        .filter(|_| matchable)
        .map(|max| (max, dedup.scope()));
    let accepted = Verdict {
        checks: checks.clone(),
        ..accepted(p)
    };
    // Whether this call recorded the image and the accepted verdict.
    let mut recorded = false;
    loop {
        let claimed = match b.dedup.claim(&key, &owner, now_ms(), cfg.lease_ms).await {
            // Redis lost its data: no claim is answered until the index is
            // rebuilt from the catalog (here, or by the process doing it).
            Err(picsift_core::Error::DedupIndexIncomplete) => {
                let who = format!("worker-{}", std::process::id());
                picsift_core::dedup_index::ensure_complete(
                    b.catalog.as_ref(),
                    b.dedup.as_ref(),
                    &who,
                )
                .await?;
                continue;
            }
            other => other?,
        };
        match claimed {
            ClaimOutcome::Committed {
                image_id,
                by_you: false,
            } => {
                let duplicate = Verdict {
                    checks,
                    ..Verdict::exact_duplicate(image_id)
                };
                if recorded {
                    // Recorded here, then our claim's lease ran out (a
                    // long pause) and another owner committed the image
                    // first: the entry is the duplicate it would have been.
                    b.catalog
                        .correct_verdict(batch_id, index, &record.id, &duplicate, now_ms())
                        .await?;
                }
                return Ok(Some(duplicate));
            }
            ClaimOutcome::Committed { by_you: true, .. } if recorded => {
                return Ok(Some(accepted));
            }
            ClaimOutcome::PendingOther { retry_at } => {
                let wait = (retry_at - now_ms()).clamp(20, 250) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            ClaimOutcome::New | ClaimOutcome::Yours | ClaimOutcome::Committed { .. } => {
                if !recorded && dedup.stored(b, &record.id).await? {
                    // Recorded with another entry's verdict, whose worker
                    // died before committing the claim: the claim goes to
                    // the stored image again, and this entry is its
                    // duplicate (as it would have been).
                    match b.dedup.commit(&key, &owner, &record.id).await? {
                        CommitOutcome::Committed => {
                            return Ok(Some(Verdict {
                                checks,
                                ..Verdict::exact_duplicate(record.id.clone())
                            }));
                        }
                        CommitOutcome::Lost => continue,
                    }
                }
                if !recorded {
                    // A store that stays down fails the chunk, which is
                    // released and retried (up to max_deliveries); the
                    // claim stays ours, so the retry carries on where this
                    // left off.
                    blob_gc::before_put(b.catalog.as_ref(), &record.id).await?;
                    put_with_retries(b, &record.id, &bytes).await?;
                    let put_at = now_ms();
                    // The near-duplicate check above may have raced another
                    // worker storing the same picture, and the batch may
                    // have expired or been cancelled meanwhile: the catalog
                    // checks both and records the image with the entry's
                    // verdict in one step, or nothing.
                    match b
                        .catalog
                        .record_stored(&record, &accepted, near, now_ms())
                        .await?
                    {
                        Stored::Recorded => recorded = true,
                        Stored::Near(m) => {
                            // The bytes may be another tenant's too (keys
                            // are shared, claims per tenant): they are only
                            // noted, and the orphan sweep deletes them if no
                            // record names them after its grace. Our claim
                            // goes (an entry with the same bytes then finds
                            // the near duplicate too).
                            b.catalog.note_orphan_blob(&record.id, now_ms()).await?;
                            b.dedup.release(&key, &owner).await?;
                            return Ok(Some(Verdict {
                                checks,
                                ..Verdict::near_duplicate(m.image_id, m.distance)
                            }));
                        }
                        Stored::EntryDecided => {
                            b.catalog.note_orphan_blob(&record.id, now_ms()).await?;
                            b.dedup.release(&key, &owner).await?;
                            return Ok(None);
                        }
                    }
                    blob_gc::after_record(b, &record.id, &bytes, put_at, now_ms()).await?;
                }
                if matches!(claimed, ClaimOutcome::Committed { .. }) {
                    // Committed by this entry on an earlier delivery.
                    return Ok(Some(accepted));
                }
                match b.dedup.commit(&key, &owner, &record.id).await? {
                    CommitOutcome::Committed => return Ok(Some(accepted)),
                    // Our lease ran out and someone else took over: ask again.
                    CommitOutcome::Lost => continue,
                }
            }
        }
    }
}

/// A stored image that is the same picture by PDQ, other than this very
/// image (identical bytes are the exact-dedup claim's business).
/// The verdict of a stored image: what sanitising removed that the
/// uploader may miss (a motion photo's video, say) is its detail.
fn accepted(p: Prepared) -> Verdict {
    Verdict {
        detail: p.removed,
        ..Verdict::accepted(p.id)
    }
}

async fn near_duplicate(b: &Backends, dedup: &DedupCtx, p: &Prepared) -> Result<Option<Verdict>> {
    let (Some(max), Some(pdq)) = (dedup.near, p.pdq) else {
        return Ok(None);
    };
    if pdq.quality < MIN_MATCH_QUALITY {
        return Ok(None);
    }
    let found = b.catalog.similar(&pdq.hash, max, 2, dedup.scope()).await?;
    Ok(found
        .into_iter()
        .find(|s| s.image_id != p.id)
        .map(|s| Verdict::near_duplicate(s.image_id, s.distance)))
}

async fn put_with_retries(
    b: &Backends,
    id: &str,
    bytes: &bytes::Bytes,
) -> picsift_core::Result<()> {
    let key = image_key(id);
    let mut attempt = 1;
    loop {
        match b.blobs.put(&key, bytes.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 5 => return Err(e),
            Err(e) => {
                tracing::warn!(key, attempt, error = %e, "blob put failed; retrying");
                let wait = picsift_core::backoff::delay_ms(attempt, 100, 1_600);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                attempt += 1;
            }
        }
    }
}

/// Gives up on a task that failed `max_deliveries` times: its undecided
/// entries get a `failed` verdict (so the batch still finishes) and the
/// task goes to the dead-letter queue.
async fn dead_letter(b: &Backends, lease: &picsift_core::backend::Lease) -> Result<()> {
    let task = &lease.task;
    tracing::error!(
        batch = task.batch_id,
        deliveries = lease.deliveries,
        "task keeps failing; dead-lettering it"
    );
    if let (Some(&first), Some(&last)) = (task.entries.iter().min(), task.entries.iter().max()) {
        let undecided: HashSet<u32> = b
            .catalog
            .undecided_between(&task.batch_id, first, last)
            .await?
            .into_iter()
            .collect();
        let verdict = Verdict::refused(
            Reason::RetriesExhausted,
            format!(
                "processing failed {} times; upload the image again",
                lease.deliveries - 1
            ),
        );
        for &i in task.entries.iter().filter(|i| undecided.contains(i)) {
            b.catalog
                .record_verdict(&task.batch_id, i, &verdict, now_ms())
                .await?;
        }
        if let Some(batch) = b.catalog.batch(&task.batch_id).await? {
            complete(b, &batch.id, &batch.staged_key).await?;
        }
    }
    b.queue.dead_letter(lease, "retries exhausted").await?;
    Ok(())
}

/// What the workers are doing, for the idle timeout.
#[derive(Default)]
struct Activity {
    busy: std::sync::atomic::AtomicUsize,
    last_done: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(self.clone())
    }

    /// How long no task has been in hand (since `start` if none ever was).
    fn idle_for(&self, start: std::time::Instant) -> Duration {
        if self.busy.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let last = self
            .last_done
            .lock()
            .map(|l| l.unwrap_or(start))
            .unwrap_or(start);
        last.elapsed()
    }
}

/// A task in hand; dropping it records when it ended.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut l) = self.0.last_done.lock() {
            *l = Some(std::time::Instant::now());
        }
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn stop_when_idle(activity: Arc<Activity>, idle: Duration, stop: CancellationToken) {
    let start = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if activity.idle_for(start) >= idle {
            tracing::info!(
                idle_secs = idle.as_secs(),
                "no task for the idle timeout; stopping"
            );
            stop.cancel();
            return;
        }
    }
}

/// Runs `cfg.concurrency` workers taking tasks until `stop` is notified.
/// A chunk that fails on a backend error is put back after a pause.
pub async fn run_workers(
    b: Backends,
    cfg: WorkerConfig,
    completed: Arc<Notify>,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::default());
    let mut handles = Vec::new();
    if let Some(idle) = cfg.idle_timeout {
        handles.push(tokio::spawn(stop_when_idle(
            activity.clone(),
            idle,
            stop.clone(),
        )));
    }
    for _ in 0..cfg.concurrency.max(1) {
        let (b, cfg, completed, stop) = (b.clone(), cfg.clone(), completed.clone(), stop.clone());
        let activity = activity.clone();
        handles.push(tokio::spawn(async move {
            loop {
                if stop.is_cancelled() {
                    return;
                }
                // Not raced against `stop`: a dequeue dropped midway may
                // leave a task handed to this consumer, stranded until the
                // visibility timeout. A task taken as we stop goes back.
                let lease = b.queue.dequeue(1000).await;
                if stop.is_cancelled() {
                    if let Ok(Some(l)) = &lease {
                        let _ = b.queue.release(l).await;
                    }
                    return;
                }
                let lease = match lease {
                    Ok(Some(l)) => l,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "queue unavailable");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let _busy = activity.begin();
                if lease.deliveries > cfg.max_deliveries {
                    if let Err(e) = dead_letter(&b, &lease).await {
                        tracing::error!(error = %e, "dead-lettering failed; giving the task back");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = b.queue.release(&lease).await;
                    }
                    continue;
                }
                let work = process_chunk(&b, &cfg, &lease.task, lease.deliveries);
                match crate::heartbeat::while_working(b.queue.as_ref(), &lease, work).await {
                    Ok(done) => {
                        if done {
                            completed.notify_one();
                        }
                        if let Err(e) = b.queue.ack(&lease).await {
                            tracing::warn!(error = %e, "ack failed; the task may run again");
                        }
                    }
                    Err(e) => {
                        tracing::error!(batch = lease.task.batch_id, deliveries = lease.deliveries, error = %e, "chunk failed; retrying later");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if let Err(e) = b.queue.release(&lease).await {
                            tracing::warn!(error = %e, "release failed; the task comes back after the visibility timeout");
                        }
                    }
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
}
