//! The picsift operator: reconciles `UploadBatch` (plan, enqueue, progress,
//! deadline, report, clean-up, TTL) and `WorkerPool` (worker Jobs that
//! follow the backlog). It links no libtorch: it enqueues batches through
//! `picsift_core::intake` and never runs the pipeline.
//!
//! Decisions are pure ([`batch::plan`], [`autoscale::decide`],
//! [`autoscale::share`], [`health::assess`], [`orphans::suspects`],
//! [`retry::delay`], [`jobs::worker_job`]); the controllers only observe,
//! apply and write status, with server-side apply under one field manager.

pub mod autoscale;
pub mod batch;
pub mod conditions;
pub mod controller;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod orphans;
pub mod pool;
pub mod retry;
pub mod run;

pub use run::{OperatorConfig, run};

use picsift_core::backend::Backends;
use picsift_core::chunk::ChunkLimits;
use picsift_core::time::Millis;
use std::sync::Arc;

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "picsift-operator";
/// The finalizer that cleans a batch's staged upload and queued work.
pub const FINALIZER: &str = "picsift.io/cleanup";
/// Label of worker Jobs and pods: the pool they belong to.
pub const POOL_LABEL: &str = "picsift.io/pool";
/// Label of worker Jobs and pods: their slot in the pool.
pub const SLOT_LABEL: &str = "picsift.io/slot";

/// What the reconcilers share.
pub struct Context {
    /// The API server.
    pub client: kube::Client,
    /// S3, PostgreSQL and Redis.
    pub backends: Backends,
    /// Chunk sizes for planning.
    pub chunk_limits: ChunkLimits,
    /// The operator's namespace (worker Jobs go here unless a pool says otherwise).
    pub namespace: String,
    /// How long a finished UploadBatch is kept.
    pub ttl_ms: Millis,
    /// How long a processing batch may go without progress, with the queue
    /// idle, before it is planned again.
    pub stall_ms: Millis,
    /// Publishes events.
    pub recorder: kube::runtime::events::Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The time every decision is taken at (the wall clock, or a set one in tests).
    pub clock: picsift_core::time::Clock,
    /// Failed reconciles in a row per object, for their backoff.
    pub retries: retry::Retries,
}

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A backend (S3, PostgreSQL, Redis) failed.
    #[error(transparent)]
    Backend(#[from] picsift_core::Error),
    /// An object lacks what the API server always sets.
    #[error("{0}")]
    Malformed(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Publishes an event about `reference`; a failure to publish is logged,
/// never an error of the reconcile.
pub(crate) async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    warning: bool,
    reason: &str,
    note: String,
) {
    use kube::runtime::events::{Event, EventType};
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, reason, "could not publish an event");
    }
}
