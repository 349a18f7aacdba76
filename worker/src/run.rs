//! The worker loop: `concurrency` consumers taking chunk tasks from the
//! queue, each processed under a heartbeat, failed ones released for a
//! later retry and ones that keep failing dead-lettered, and the workers
//! stopped after an idle timeout (a worker Job's pod then exits).

use crate::WorkerConfig;
use crate::process::{dead_letter, process_chunk};
use picsift_core::backend::Backends;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
