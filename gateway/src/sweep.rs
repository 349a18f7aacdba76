//! Resumable uploads whose time ran out are cleaned up on a schedule: an
//! abandoned upload's parts (an open S3 multipart upload is billed and
//! invisible), its tail objects, its half-assembled archive, its quota
//! place and its row; a finished one's row (kept until then for a client
//! that lost the last answer). Every gateway runs the sweep; the steps are
//! idempotent, so two gateways sweeping the same upload do no harm.

use crate::{AppState, Problem};
use picsift_core::model::staging_key;
use picsift_core::resumable::{Finished, UploadRecord, tail_prefix};
use picsift_core::time::now_ms;
use std::time::Duration;

/// Drops upload `r`: everything it holds but a batch it became.
pub async fn forget(s: &AppState, r: &UploadRecord) -> Result<(), Problem> {
    let key = staging_key(&r.id);
    if r.finished != Some(Finished::Batch) {
        if !r.multipart_id.is_empty() {
            s.blobs.abort_parts(&key, &r.multipart_id).await?;
        }
        s.blobs.delete(&key).await?;
    }
    for k in s.blobs.list(&tail_prefix(&r.id)).await? {
        s.blobs.delete(&k).await?;
    }
    if r.options.reserved {
        s.catalog.release_upload(&r.id).await?;
    }
    s.uploads.delete_upload(&r.id).await?;
    Ok(())
}

/// One pass: every upload expired by now; how many were dropped.
pub async fn sweep_once(s: &AppState) -> Result<usize, Problem> {
    let mut dropped = 0;
    loop {
        let expired = s.uploads.expired_uploads(now_ms(), 100).await?;
        if expired.is_empty() {
            return Ok(dropped);
        }
        for r in &expired {
            forget(s, r).await?;
            if r.finished.is_none() {
                s.metrics.uploads_expired.inc();
                tracing::info!(
                    upload = r.id,
                    offset = r.offset,
                    "an abandoned upload expired and was cleaned up"
                );
            }
            dropped += 1;
        }
    }
}

/// Sweeps until the process ends: every minute, or twice per expiry
/// period when that is shorter.
pub fn spawn(s: AppState) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis((s.limits.upload_ttl_ms.max(2_000) / 2).min(60_000) as u64);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(p) = sweep_once(&s).await {
                tracing::warn!(
                    error = p.detail,
                    "sweeping expired uploads failed; next pass retries"
                );
            }
        }
    })
}
