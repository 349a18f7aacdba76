//! The picsift worker: plans a batch's chunks from its archive's central
//! directory, takes chunk tasks from the queue, runs the pipeline on each
//! entry, claims, stores and commits, records verdicts, completes batches
//! and delivers their webhooks.

pub mod checks;
mod notify;
mod plan;
mod process;

pub use notify::{Notifier, NotifierConfig};
pub use plan::{LocalScheduler, plan_batch, resume};
pub use process::{process_chunk, run_workers};

use picsift_core::chunk::ChunkLimits;
use picsift_core::policy::Policy;
use picsift_core::store::{BlobStore, Catalog, DedupIndex, WorkQueue};
use std::sync::Arc;

/// The backends a worker uses, whatever their implementation.
#[derive(Clone)]
pub struct Backends {
    /// Staged uploads and stored images.
    pub blobs: Arc<dyn BlobStore>,
    /// Batches, verdicts and images.
    pub catalog: Arc<dyn Catalog>,
    /// Exact-dedup claims.
    pub dedup: Arc<dyn DedupIndex>,
    /// Chunk tasks.
    pub queue: Arc<dyn WorkQueue>,
}

/// How the worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// What is allowed and the limits.
    pub policy: Policy,
    /// Chunk sizes.
    pub chunk_limits: ChunkLimits,
    /// Dedup claim lease: how long a crashed worker's claim blocks others.
    pub lease_ms: i64,
    /// Chunks processed at once.
    pub concurrency: usize,
    /// Deliveries of a task before it is dead-lettered.
    pub max_deliveries: u32,
    /// With no task for this long, the workers stop (a worker Job's pod
    /// exits and the pool scales down); `None`: run until stopped.
    pub idle_timeout: Option<std::time::Duration>,
    /// The quality and ML checks' models and threads (one per process).
    pub ml: Arc<picsift_ml::Runtime>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            chunk_limits: ChunkLimits::default(),
            lease_ms: 120_000,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_deliveries: 5,
            idle_timeout: None,
            ml: Arc::new(
                picsift_ml::Runtime::new(picsift_ml::Options::default())
                    .expect("the default ML options are valid"),
            ),
        }
    }
}

/// Starts `cfg.concurrency` chunk workers and, given a secret, the webhook
/// notifier; both run until `stop` is cancelled (or the workers were idle
/// for `cfg.idle_timeout`, which cancels `stop`). The standalone server and
/// the cluster worker process run exactly this; under Kubernetes the
/// operator delivers webhooks and workers pass `None`.
pub fn start(
    b: Backends,
    cfg: WorkerConfig,
    secret: Option<picsift_core::webhook::Secret>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, reqwest::Error> {
    let completed = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    if let Some(secret) = secret {
        let notifier = Notifier::new(b.clone(), notifier_config(secret))?;
        tasks.push(tokio::spawn(notifier.run(completed.clone(), stop.clone())));
    }
    tasks.push(tokio::spawn(run_workers(b, cfg, completed, stop)));
    Ok(tasks)
}

/// How webhooks are delivered: signed with `secret`, 10 s per attempt.
pub fn notifier_config(secret: picsift_core::webhook::Secret) -> NotifierConfig {
    NotifierConfig {
        secret,
        timeout: std::time::Duration::from_secs(10),
    }
}

/// Errors of the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend failed.
    #[error(transparent)]
    Backend(#[from] picsift_core::Error),
    /// A blocking task died.
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
