//! The picsift worker: takes chunk tasks from the queue, runs the pipeline
//! and the quality and ML checks (libtorch) on each entry, claims, stores
//! and commits, records verdicts and completes batches.
//!
//! Only this crate (and the binaries that run it) links libtorch: planning
//! batches is `picsift_core::intake`, webhook delivery is
//! `picsift_backends::notify`.

pub mod checks;
mod entries;
pub mod heartbeat;
pub mod isolated;
mod process;
mod run;
mod store;

pub use process::process_chunk;
pub use run::run_workers;

use picsift_core::chunk::ChunkLimits;
use picsift_core::intake::IntakeConfig;
use picsift_core::policy::Policy;
use std::sync::Arc;

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
    /// Decoding in child processes ([`isolated`]): `picsift serve` sets it,
    /// so a decoder crash costs an entry, never the server; `None` decodes
    /// in this process (the cluster's workers are processes of their own).
    pub decoders: Option<Arc<isolated::DecoderPool>>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            chunk_limits: ChunkLimits::default(),
            lease_ms: picsift_core::dedup::DEFAULT_LEASE_MS,
            concurrency: default_concurrency(),
            max_deliveries: picsift_core::chunk::DEFAULT_MAX_DELIVERIES,
            idle_timeout: None,
            ml: Arc::new(
                picsift_ml::Runtime::new(picsift_ml::Options::default())
                    .expect("the default ML options are valid"),
            ),
            decoders: None,
        }
    }
}

/// Chunks processed at once unless configured: one per core.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl WorkerConfig {
    /// What enqueueing a batch under this configuration needs, where this
    /// process takes every chunk (`picsift serve`): chunks in multiples of
    /// its concurrency.
    pub fn intake(&self) -> IntakeConfig {
        IntakeConfig {
            policy: self.policy.clone(),
            chunk_limits: self.chunk_limits,
            lanes: self.concurrency,
        }
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
