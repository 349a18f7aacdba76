//! An accepted image stored once: checked for near duplicates, its exact
//! claim taken (waiting while another owner holds a live one), its bytes
//! put, its record and verdict committed, and the claim committed after.

use crate::{Result, WorkerConfig};
use picsift_core::backend::{Backends, Stored};
use picsift_core::blob_gc;
use picsift_core::dedup::{ClaimOutcome, CommitOutcome};
use picsift_core::model::{ImageRecord, image_key};
use picsift_core::pdq::MIN_MATCH_QUALITY;
use picsift_core::pipeline::Prepared;
use picsift_core::time::now_ms;
use picsift_core::verdict::Verdict;
use std::time::Duration;

/// How a batch's images are deduplicated.
pub(crate) struct DedupCtx {
    /// The near-duplicate threshold, if near duplicates are on.
    pub(crate) near: Option<u32>,
    /// The tenant that uploads the batch.
    pub(crate) owner: String,
    /// Whether only that tenant's images count (per-tenant scope).
    pub(crate) scoped: bool,
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
pub(crate) async fn store_once(
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

/// The verdict of a stored image: what sanitising removed that the
/// uploader may miss (a motion photo's video, say) is its detail.
fn accepted(p: Prepared) -> Verdict {
    Verdict {
        detail: p.removed,
        ..Verdict::accepted(p.id)
    }
}

/// A stored image that is the same picture by PDQ, other than this very
/// image (identical bytes are the exact-dedup claim's business).
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
