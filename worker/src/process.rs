//! One chunk task: its undecided entries through the pipeline
//! ([`crate::entries`]), each accepted image stored once
//! ([`crate::store`]), every verdict recorded, and the batch completed by
//! the chunk that decides its last entry. A task that keeps failing is
//! dead-lettered, its undecided entries refused.

use crate::entries::{Checked, Checking, check_entries, check_objects};
use crate::store::{DedupCtx, store_once};
use crate::{Result, WorkerConfig, checks};
use picsift_core::backend::Backends;
use picsift_core::blob_reader::BlobReader;
use picsift_core::chunk::ChunkTask;
use picsift_core::model::owns_source;
use picsift_core::policy::DedupScope;
use picsift_core::time::now_ms;
use picsift_core::verdict::{DuplicateKind, Reason, Verdict};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;

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

/// Gives up on a task that failed `max_deliveries` times: its undecided
/// entries get a `failed` verdict (so the batch still finishes) and the
/// task goes to the dead-letter queue.
pub(crate) async fn dead_letter(b: &Backends, lease: &picsift_core::backend::Lease) -> Result<()> {
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
