//! Batches the gateway recorded but never handed over. The gateway writes
//! the batch record, then creates its UploadBatch; a gateway that dies in
//! between leaves a record in phase `received` that no controller will
//! ever look at. The client got no `202` (the response comes after the
//! UploadBatch), so it uploads again; the orphan is failed with a reason
//! and its staged upload deleted, never left `received` forever.
//!
//! [`suspects`] is the pure rule (old enough to be more than a slow
//! gateway); [`sweep`] applies it every [`INTERVAL`] on the leader.

use crate::{Context, Result, controller};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ResourceExt;
use picsift_core::model::{BatchRecord, Phase, owns_source};
use picsift_core::time::Millis;
use picsift_crds::BATCH_ID_ANNOTATION;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a batch may stay `received` without an UploadBatch: far more
/// than a gateway takes between its two writes.
pub const GRACE_MS: Millis = 10 * 60_000;
/// How often the leader looks.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// The batch's error.
pub const REASON: &str = "the upload was received but never scheduled (the gateway stopped before it handed the batch over); upload it again";

/// The batches that may be orphans at `now`: still `received` after
/// [`GRACE_MS`]. Whether an UploadBatch exists for them decides.
pub fn suspects(batches: &[BatchRecord], now: Millis) -> Vec<&BatchRecord> {
    batches
        .iter()
        .filter(|b| b.phase == Phase::Received && now - b.created_at >= GRACE_MS)
        .collect()
}

/// One look: fails every suspect that no UploadBatch names (by name or
/// by its batch-id annotation), deleting its staged upload. Returns the
/// failed batch ids.
pub async fn sweep_once(ctx: &Context) -> Result<Vec<String>> {
    let now = ctx.clock.now();
    let batches = ctx.backends.catalog.unfinished_batches().await?;
    let suspects = suspects(&batches, now);
    if suspects.is_empty() {
        return Ok(Vec::new());
    }
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &controller::resource());
    let known: HashSet<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .flat_map(|o| {
            [
                Some(o.name_any()),
                o.annotations().get(BATCH_ID_ANNOTATION).cloned(),
            ]
        })
        .flatten()
        .collect();
    let mut failed = Vec::new();
    for batch in suspects.into_iter().filter(|b| !known.contains(&b.id)) {
        ctx.backends
            .catalog
            .fail_batch(&batch.id, REASON, now)
            .await?;
        if owns_source(&batch.staged_key)
            && let Err(e) = ctx.backends.blobs.delete(&batch.staged_key).await
        {
            tracing::warn!(batch = batch.id, error = %e, "could not delete an orphan's staged upload");
        }
        tracing::warn!(
            batch = batch.id,
            owner = batch.owner,
            age_s = (now - batch.created_at) / 1000,
            "a batch was received but never scheduled: failed"
        );
        ctx.metrics.orphans_failed.inc();
        failed.push(batch.id.clone());
    }
    Ok(failed)
}

/// Runs [`sweep_once`] every [`INTERVAL`] until `stop`.
pub async fn sweep(ctx: std::sync::Arc<Context>, stop: CancellationToken) {
    loop {
        if let Err(e) = sweep_once(&ctx).await {
            tracing::warn!(error = %e, "looking for orphaned batches failed; next look in a minute");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picsift_core::model::NotifyState;

    fn batch(id: &str, phase: Phase, created_at: Millis) -> BatchRecord {
        BatchRecord {
            id: id.into(),
            phase,
            owner: "t".into(),
            staged_key: format!("staging/{id}.zip"),
            upload_bytes: 1,
            total_entries: 1,
            error: None,
            callback_url: None,
            notify_state: NotifyState::None,
            notify_attempts: 0,
            notify_last_error: None,
            notify_next_at: None,
            notify_delivered_at: None,
            created_at,
            updated_at: created_at,
            started_at: None,
            completed_at: None,
        }
    }

    #[test]
    fn only_batches_received_longer_than_the_grace_are_suspects() {
        let now = 100 * 60_000;
        let batches = [
            batch("old-received", Phase::Received, now - GRACE_MS),
            batch("young-received", Phase::Received, now - GRACE_MS + 1),
            batch("old-processing", Phase::Processing, now - 5 * GRACE_MS),
            batch("ancient-received", Phase::Received, 0),
        ];
        let ids: Vec<&str> = suspects(&batches, now)
            .iter()
            .map(|b| b.id.as_str())
            .collect();
        assert_eq!(ids, ["old-received", "ancient-received"]);
    }
}
