//! `picsift worker`: the cluster's worker process, which runs the pipeline
//! and the quality and ML checks (libtorch). Built only with the `ml`
//! feature; the gateway and operator images leave it out.

use crate::cluster::{ClusterArgs, backends, consumer_name, intake_config, load, stall_ms};
use crate::config::Config;
use crate::process::{init_logging, shutdown_signal};
use anyhow::Context;
use picsift_backends::notify::{Notifier, NotifierConfig};
use picsift_core::backend::Backends;
use picsift_core::blob_gc;
use picsift_core::intake::{IntakeConfig, enqueue_batch};
use picsift_core::model::Phase;
use picsift_core::progress::{self, Progress};
use picsift_core::time::now_ms;
use picsift_worker::WorkerConfig;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Starts the chunk workers and, given a secret, the webhook notifier
/// (woken as batches complete); both run until `stop` is cancelled (or the
/// workers were idle for `cfg.idle_timeout`, which cancels `stop`). The
/// standalone server and the cluster worker process both run this; under
/// Kubernetes the operator delivers webhooks and workers pass `None`.
pub(crate) fn start_workers(
    b: Backends,
    cfg: WorkerConfig,
    notify: Option<NotifierConfig>,
    stop: CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let completed = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    if let Some(notify) = notify {
        let notifier = Notifier::new(b.clone(), notify).context("cannot start webhook delivery")?;
        tasks.push(tokio::spawn(notifier.run(completed.clone(), stop.clone())));
    }
    tasks.push(tokio::spawn(housekeeping(b.clone(), stop.clone())));
    tasks.push(tokio::spawn(picsift_worker::run_workers(
        b, cfg, completed, stop,
    )));
    Ok(tasks)
}

/// Every five minutes: deletes image bytes that no record names
/// ([`blob_gc::sweep`]) and tidies the queue (gone workers leave its
/// consumer group). Every worker process runs it: two sweeps at once delete
/// the same bytes twice, which is harmless.
async fn housekeeping(b: Backends, stop: CancellationToken) {
    loop {
        match blob_gc::sweep(&b, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "deleted image bytes no record names"),
            Err(e) => {
                tracing::warn!(error = %e, "the orphan bytes sweep failed; next in five minutes")
            }
        }
        if let Err(e) = b.queue.tidy().await {
            tracing::warn!(error = %e, "tidying the queue failed; next in five minutes");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
        }
    }
}

fn worker_config(cfg: &Config) -> anyhow::Result<WorkerConfig> {
    let intake = intake_config(cfg)?;
    Ok(WorkerConfig {
        policy: intake.policy,
        chunk_limits: intake.chunk_limits,
        lease_ms: cfg.worker.lease_ms,
        concurrency: if cfg.worker.concurrency == 0 {
            picsift_worker::default_concurrency()
        } else {
            cfg.worker.concurrency
        },
        max_deliveries: cfg.worker.max_deliveries.max(1),
        idle_timeout: (cfg.worker.idle_timeout_secs > 0)
            .then(|| Duration::from_secs(cfg.worker.idle_timeout_secs)),
        ml: Arc::new(cfg.ml.runtime()?),
        // A worker is a process of its own: a decoder crash ends it, and
        // the entry is refused after it did so twice (worker/src/entries.rs).
        decoders: None,
    })
}

/// `picsift worker`: takes chunk tasks until stopped (or idle for
/// `worker.idle_timeout_secs`). Outside Kubernetes it also delivers
/// webhooks and plans batches a gateway received but did not get to plan;
/// under Kubernetes the operator does both.
pub async fn worker(args: ClusterArgs) -> anyhow::Result<()> {
    init_logging();
    let cfg = load(&args)?;
    let wcfg = worker_config(&cfg)?;
    let b = backends(&cfg, &consumer_name(), &Default::default()).await?;
    picsift_worker::checks::start_checks(&b, &wcfg)
        .await
        .context("the policy's quality and ML checks cannot run")?;
    let stop = CancellationToken::new();
    let standalone = !cfg.kubernetes.enabled;
    let notify = standalone.then(|| cfg.notifier());
    let mut background = start_workers(b.clone(), wcfg.clone(), notify, stop.clone())?;
    if standalone {
        // A replan is the cluster's: other workers take its chunks too.
        let intake = picsift_core::intake::IntakeConfig {
            lanes: 1,
            ..wcfg.intake()
        };
        background.push(tokio::spawn(sweep(b, intake, stall_ms(&cfg), stop.clone())));
    }
    eprintln!("picsift worker {} started", consumer_name());
    let drain = Duration::from_secs(cfg.worker.drain_secs);
    tokio::select! {
        _ = shutdown_signal() => tracing::warn!(
            grace_s = drain.as_secs(),
            "stopping: taking no new chunk, finishing the chunks in hand (worker.drain_secs)"
        ),
        _ = stop.cancelled() => eprintln!("picsift worker: idle; exiting"),
    }
    stop.cancel();
    match tokio::time::timeout(drain, futures_util::future::join_all(background)).await {
        Ok(_) => tracing::info!("stopped: every chunk in hand is finished"),
        Err(_) => tracing::warn!(
            grace_s = drain.as_secs(),
            "stopped with chunks unfinished after the drain grace; they come back to another worker after the visibility timeout"
        ),
    }
    Ok(())
}

/// Plans batches left `received` (their gateway died between accepting
/// and planning), and re-enqueues the pending entries of a processing batch
/// that [`progress::watch`] finds stalled (its tasks were lost, e.g. by a
/// Redis that restarted empty). Tasks enqueued twice do no harm: decided
/// entries are skipped. Under Kubernetes the operator applies the same rules.
async fn sweep(b: Backends, cfg: IntakeConfig, stall_ms: i64, stop: CancellationToken) {
    let mut seen: HashMap<String, Progress> = HashMap::new();
    loop {
        let now = now_ms();
        match b.catalog.unfinished_batches().await {
            Ok(batches) => {
                let queue_idle = matches!(b.queue.backlog().await, Ok(0));
                seen.retain(|id, _| batches.iter().any(|x| &x.id == id));
                for batch in &batches {
                    let stalled = match batch.phase {
                        Phase::Received => progress::unplanned(batch.created_at, now),
                        _ => match b.catalog.counts(&batch.id).await {
                            Ok(c) => {
                                let last = seen.get(&batch.id).copied();
                                let (p, replan) =
                                    progress::watch(last, c.pending, queue_idle, now, stall_ms);
                                seen.insert(batch.id.clone(), p);
                                replan
                            }
                            Err(_) => false,
                        },
                    };
                    if stalled {
                        tracing::warn!(
                            batch = batch.id,
                            phase = batch.phase.as_str(),
                            "batch made no progress; planning it again"
                        );
                        if let Err(e) = enqueue_batch(&b, &cfg, &batch.id).await {
                            tracing::warn!(batch = batch.id, error = %e, "re-planning failed");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list unfinished batches"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
    }
}
