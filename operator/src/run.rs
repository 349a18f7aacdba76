//! The operator process: metrics and health endpoints, leader election
//! with a Lease, then the two controllers while this replica leads.

use crate::metrics::Metrics;
use crate::{Context, FIELD_MANAGER, POOL_LABEL, controller, pool};
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DynamicObject};
use kube::core::ResourceExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use picsift_core::backend::Backends;
use picsift_core::chunk::ChunkLimits;
use picsift_core::time::Millis;
use picsift_crds::{ValidationPolicy, WorkerPool};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why this replica is not ready, answered by /readyz with a 503; `None`
/// once the Kubernetes API has answered.
type NotReady = Arc<Mutex<Option<String>>>;

fn set_not_ready(state: &NotReady, reason: Option<String>) {
    match state.lock() {
        Ok(mut r) => *r = reason,
        Err(poisoned) => *poisoned.into_inner() = reason,
    }
}

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// The operator's namespace: its Lease, and worker Jobs by default.
    pub namespace: String,
    /// How long a finished UploadBatch is kept.
    pub ttl_ms: Millis,
    /// How long a processing batch may go without progress, with the queue
    /// idle, before it is planned again.
    pub stall_ms: Millis,
    /// Address of /metrics, /livez and /readyz.
    pub metrics_listen: SocketAddr,
    /// The Lease's name.
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod name).
    pub identity: String,
    /// Chunk sizes for planning.
    pub chunk_limits: ChunkLimits,
}

/// Errors that end the operator process.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Leader election failed or leadership was lost: exit, and come back as
    /// a standby, so two replicas never reconcile at once.
    #[error("leader election: {0}")]
    Lease(String),
    /// The metrics listener could not start.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// Runs the operator until `stop` or until leadership is lost.
/// `on_leading` starts work that only the leader does (webhook delivery,
/// re-planning stalled batches); it gets a token cancelled at the end.
pub async fn run(
    client: kube::Client,
    backends: Backends,
    cfg: OperatorConfig,
    stop: CancellationToken,
    on_leading: impl FnOnce(CancellationToken) -> Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(cfg.metrics_listen)
        .await
        .map_err(|e| RunError::Listen(cfg.metrics_listen, e))?;
    let not_ready: NotReady = Arc::new(Mutex::new(Some(
        "waiting for the Kubernetes API".to_string(),
    )));
    tokio::spawn(serve_http(
        listener,
        metrics.clone(),
        backends.clone(),
        not_ready.clone(),
        stop.clone(),
    ));

    // Taking part in the election needs the API server (the Lease is
    // created or read here). Until it answers, the replica stays up, not
    // ready, and says why, rather than exiting into a crash loop.
    let mut failures = 0;
    let manager = loop {
        let built = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
            .with_namespace(&cfg.namespace)
            .with_identity(&cfg.identity)
            .with_field_manager(FIELD_MANAGER)
            .build()
            .await;
        match built {
            Ok(manager) => break manager,
            Err(e) => {
                failures += 1;
                let delay =
                    Duration::from_millis(picsift_core::backoff::delay_ms(failures, 1_000, 30_000));
                tracing::error!(
                    error = %e,
                    lease = cfg.lease_name,
                    namespace = cfg.namespace,
                    retry_in_s = delay.as_secs(),
                    "cannot reach the Kubernetes API (its address comes from the pod's service account or KUBECONFIG); not ready until it answers"
                );
                set_not_ready(
                    &not_ready,
                    Some(format!("cannot reach the Kubernetes API: {e}")),
                );
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    set_not_ready(&not_ready, None);
    tracing::info!(
        identity = cfg.identity,
        lease = cfg.lease_name,
        "waiting for leadership"
    );
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            changed = manager.changed() => match changed {
                Ok(true) => break,
                Ok(false) => set_not_ready(&not_ready, None),
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: retrying");
                    set_not_ready(&not_ready, Some(format!("leader election: {e}")));
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
            },
        }
    }
    tracing::info!(identity = cfg.identity, "leading: reconciling");

    let ctx = Arc::new(Context {
        client: client.clone(),
        backends,
        chunk_limits: cfg.chunk_limits,
        namespace: cfg.namespace.clone(),
        ttl_ms: cfg.ttl_ms,
        stall_ms: cfg.stall_ms,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(cfg.identity.clone()),
            },
        ),
        metrics,
        clock: picsift_core::time::Clock::system(),
        retries: Default::default(),
    });
    let work = stop.child_token();
    let mut extra = on_leading(work.clone());
    extra.push(tokio::spawn(crate::orphans::sweep(
        ctx.clone(),
        work.clone(),
    )));
    let controllers = futures_util::future::join(
        batch_controller(client.clone(), ctx.clone(), work.clone()),
        pool_controller(client, ctx, cfg.namespace.clone(), work.clone()),
    );
    // `changed` renews the Lease while it waits. Any answer means this
    // replica can no longer be sure it leads: a lost Lease, or a renewal
    // that failed (the API server unreachable, so another replica may take
    // over once the Lease expires). Either way it stops working.
    let outcome = tokio::select! {
        _ = controllers => Ok(()),
        _ = stop.cancelled() => Ok(()),
        lost = manager.changed() => Err(RunError::Lease(match lost {
            Ok(_) => "leadership lost".into(),
            Err(e) => format!("renewing the Lease failed: {e}"),
        })),
    };
    work.cancel();
    for task in extra {
        let _ = task.await;
    }
    let _ = manager.release().await;
    outcome
}

async fn batch_controller(client: kube::Client, ctx: Arc<Context>, stop: CancellationToken) {
    let ar = controller::resource();
    let batches: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let ctrl = Controller::new_with(batches, watcher::Config::default(), ar.clone());
    let store = ctrl.store();
    // A ValidationPolicy created or changed wakes the batches waiting for it.
    let policies: Api<ValidationPolicy> = Api::all(client);
    ctrl.watches(policies, watcher::Config::default(), move |vp| {
        let (ns, name) = (vp.namespace(), vp.name_any());
        store
            .state()
            .into_iter()
            .filter(|o| {
                o.namespace() == ns
                    && o.data["spec"]["policyRef"]["name"]
                        .as_str()
                        .unwrap_or("default")
                        == name
            })
            .map(|o| ObjectRef::from_obj_with(o.as_ref(), ar.clone()))
            .collect::<Vec<_>>()
    })
    // Status writes wake the controller too; while counts change, at most
    // one reconcile per batch every two seconds (the requeue timers do the
    // rest).
    .with_config(controller_config())
    .graceful_shutdown_on(stop.cancelled_owned())
    .run(controller::reconcile, controller::error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

async fn pool_controller(
    client: kube::Client,
    ctx: Arc<Context>,
    namespace: String,
    stop: CancellationToken,
) {
    let pools: Api<WorkerPool> = Api::all(client.clone());
    let jobs: Api<Job> = Api::namespaced(client, &namespace);
    // Pools are cluster-scoped and their Jobs namespaced: the owner lookup
    // of `owns` would miss, so Jobs map to their pool by label.
    Controller::new(pools, watcher::Config::default())
        .watches(jobs, watcher::Config::default().labels(POOL_LABEL), |job| {
            job.labels()
                .get(POOL_LABEL)
                .map(|pool| ObjectRef::<WorkerPool>::new(pool))
        })
        .with_config(controller_config())
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(pool::reconcile, pool::error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default()
        .debounce(std::time::Duration::from_secs(2))
        .concurrency(16)
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    backends: Backends,
    not_ready: NotReady,
    stop: CancellationToken,
) {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let queue = backends.queue.clone();
                let not_ready = match not_ready.lock() {
                    Ok(r) => r.clone(),
                    Err(poisoned) => poisoned.into_inner().clone(),
                };
                async move {
                    if let Some(reason) = not_ready {
                        return (StatusCode::SERVICE_UNAVAILABLE, reason);
                    }
                    match queue.backlog().await {
                        Ok(_) => (StatusCode::OK, "ok".to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}")),
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "metrics server failed");
    }
}
