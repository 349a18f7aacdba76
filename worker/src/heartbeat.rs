//! A worker's heartbeat: while it works on a chunk, its lease is extended
//! every third of the queue's lease time, so a chunk that takes longer
//! than the visibility timeout (a big batch of large photos, a slow model)
//! is not handed to a second worker while the first is alive. Without it
//! the task was delivered again every visibility timeout, each delivery
//! counting towards `retries_exhausted`, and overlapping decodes could look
//! like decoder crashes. A worker that dies stops beating, and its task
//! comes back after one lease time, as before.

use picsift_core::backend::{Lease, WorkQueue};
use std::future::Future;
use std::time::Duration;

/// Runs `work` while extending `lease` on `queue`; returns its output.
pub async fn while_working<T>(
    queue: &dyn WorkQueue,
    lease: &Lease,
    work: impl Future<Output = T>,
) -> T {
    let Some(ttl) = queue.lease_ttl() else {
        return work.await;
    };
    let every = (ttl / 3).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => match queue.extend(lease).await {
                Ok(true) => tracing::debug!(batch = lease.task.batch_id, "lease extended"),
                Ok(false) => tracing::warn!(
                    batch = lease.task.batch_id,
                    "lease lost: another worker holds this chunk now; finishing it anyway (verdicts and dedup are idempotent)"
                ),
                Err(e) => tracing::warn!(batch = lease.task.batch_id, error = %e, "could not extend the lease; trying again"),
            },
        }
    }
}
