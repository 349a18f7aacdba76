//! The gateway's Prometheus metrics at `/metrics` (public, like the
//! health endpoints): what resumable uploads do, which nothing else shows.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// The counters, registered once per process.
pub struct Metrics {
    registry: Registry,
    /// Resumable uploads created.
    pub uploads_created: Counter,
    /// Resumable uploads that became batches.
    pub uploads_completed: Counter,
    /// Abandoned uploads cleaned up when they expired.
    pub uploads_expired: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("picsift");
        let (created, completed, expired) =
            (Counter::default(), Counter::default(), Counter::default());
        registry.register(
            "resumable_uploads_created",
            "Resumable uploads (tus and direct) created",
            created.clone(),
        );
        registry.register(
            "resumable_uploads_completed",
            "Resumable uploads that became batches",
            completed.clone(),
        );
        registry.register(
            "resumable_uploads_expired",
            "Abandoned resumable uploads cleaned up at their expiry (parts aborted, staging deleted)",
            expired.clone(),
        );
        Self {
            registry,
            uploads_created: created,
            uploads_completed: completed,
            uploads_expired: expired,
        }
    }
}

/// `GET /metrics`, in the OpenMetrics text format.
pub async fn show(State(s): State<crate::AppState>) -> impl IntoResponse {
    let metrics: &Arc<Metrics> = &s.metrics;
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
}
