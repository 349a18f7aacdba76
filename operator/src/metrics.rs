//! Prometheus metrics of the operator, served at /metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which controller a reconcile belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// `uploadbatch` or `workerpool`.
    pub controller: String,
}

/// Worker counts by pool and state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    /// The WorkerPool.
    pub pool: String,
    /// `desired`, `running` or `pending`.
    pub state: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Family<ControllerLabel, Counter>,
    /// Reconciles that failed (and were retried).
    pub errors: Family<ControllerLabel, Counter>,
    /// Chunk tasks waiting in the queue.
    pub backlog: Gauge,
    /// Workers by pool and state.
    pub workers: Family<WorkerLabel, Gauge>,
    /// Age of the oldest unfinished batch, in seconds.
    pub oldest_pending: Gauge<f64, AtomicU64>,
    /// Batches found received but never scheduled, and failed.
    pub orphans_failed: Counter,
    /// Tasks reclaimed from workers that died or stalled (the queue's own
    /// count, across every worker; see [`Metrics::saw_reclaimed`]).
    pub reclaimed: Counter,
    /// The queue's count when last seen.
    reclaimed_seen: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("picsift");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ControllerLabel, Counter>::default();
        let backlog = Gauge::default();
        let workers = Family::<WorkerLabel, Gauge>::default();
        let oldest_pending = Gauge::<f64, AtomicU64>::default();
        let orphans_failed = Counter::default();
        let reclaimed = Counter::default();
        registry.register("operator_reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "operator_reconcile_errors",
            "Reconciles that failed and will be retried",
            errors.clone(),
        );
        registry.register(
            "queue_backlog",
            "Chunk tasks waiting in the queue",
            backlog.clone(),
        );
        registry.register("workers", "Worker Jobs by pool and state", workers.clone());
        registry.register(
            "oldest_pending_batch_age_seconds",
            "Age of the oldest batch not yet finished",
            oldest_pending.clone(),
        );
        registry.register(
            "orphaned_batches_failed",
            "Batches received but never scheduled (the gateway stopped in between), failed",
            orphans_failed.clone(),
        );
        registry.register(
            "tasks_reclaimed",
            "Chunk tasks handed out again because their worker held them past the visibility timeout (it died or stalled)",
            reclaimed.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            backlog,
            workers,
            oldest_pending,
            orphans_failed,
            reclaimed,
            reclaimed_seen: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Adds what the queue counted since it was last seen. The queue's
    /// count starts again from 0 when Redis lost its data: that start
    /// counts from there.
    pub fn saw_reclaimed(&self, total: u64) {
        let last = self.reclaimed_seen.swap(total, Ordering::Relaxed);
        self.reclaimed
            .inc_by(if total >= last { total - last } else { total });
    }

    /// Counts a reconcile of `controller`, failed or not.
    pub fn reconciled(&self, controller: &str, failed: bool) {
        let label = ControllerLabel {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&label).inc();
        if failed {
            self.errors.get_or_create(&label).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let m = Metrics::default();
        m.reconciled("uploadbatch", true);
        m.backlog.set(7);
        m.workers
            .get_or_create(&WorkerLabel {
                pool: "gpu".into(),
                state: "running".into(),
            })
            .set(2);
        let text = m.render();
        for name in [
            "picsift_operator_reconciles_total{controller=\"uploadbatch\"} 1",
            "picsift_operator_reconcile_errors_total{controller=\"uploadbatch\"} 1",
            "picsift_queue_backlog 7",
            "picsift_workers{pool=\"gpu\",state=\"running\"} 2",
            "picsift_oldest_pending_batch_age_seconds",
            "picsift_tasks_reclaimed_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn reclaimed_tasks_count_what_the_queue_counted_since_last_seen() {
        let m = Metrics::default();
        // (the queue's count, the metric after seeing it)
        for (queue, metric) in [(0, 0), (3, 3), (3, 3), (5, 5), (1, 6), (2, 7)] {
            m.saw_reclaimed(queue);
            assert_eq!(m.reclaimed.get(), metric, "after seeing {queue}");
        }
    }
}
