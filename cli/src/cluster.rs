//! The cluster processes without libtorch: `picsift gateway`,
//! `picsift operator` and `picsift reindex`, over S3, PostgreSQL and Redis,
//! from one configuration file (docs/configuration.md); and the wiring the
//! worker process (`crate::worker`) shares with them.

use crate::config::Config;
use crate::process::{init_logging, shutdown_signal};
use crate::startup::{Dependency, patiently};
use anyhow::Context;
use picsift_backends::cluster::{RedisDedup, RedisQueue, S3BlobStore};
use picsift_backends::notify::Notifier;
use picsift_backends::sql::SqlCatalog;
use picsift_core::backend::{Backends, BlobStore, Scheduler};
use picsift_core::chunk::ChunkLimits;
use picsift_core::intake::{IntakeConfig, LocalScheduler};
use picsift_gateway::starting::Startup;
use picsift_gateway::{AppState, KubeScheduler};
use picsift_operator::OperatorConfig;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Options shared by the cluster commands.
#[derive(clap::Args)]
pub struct ClusterArgs {
    /// The configuration file (TOML); every key can also come from PICSIFT_* variables.
    #[arg(long, env = "PICSIFT_CONFIG")]
    pub config: Option<PathBuf>,
}

pub(crate) fn load(args: &ClusterArgs) -> anyhow::Result<Config> {
    Config::load(args.config.as_deref(), |k| std::env::var(k).ok())
}

/// Connects to S3 (and checks the bucket takes a write), PostgreSQL and
/// Redis: waits for those that are not up yet, and stops with the setting
/// to fix when one is misconfigured ([`crate::startup`]).
pub(crate) async fn backends(
    cfg: &Config,
    consumer: &str,
    startup: &Startup,
) -> anyhow::Result<Backends> {
    let s3 = cfg.s3();
    let blobs = patiently(Dependency::S3, "s3", startup, || async {
        let store = S3BlobStore::connect(s3.clone()).await?;
        store.probe().await?;
        Ok(store)
    })
    .await?;
    let catalog = patiently(Dependency::Postgres, "postgres", startup, || {
        SqlCatalog::connect_postgres(&cfg.postgres.url, cfg.postgres.max_connections)
    })
    .await?;
    let dedup = patiently(Dependency::Redis, "redis", startup, || {
        RedisDedup::connect(&cfg.redis.url, &cfg.redis.prefix)
    })
    .await?;
    let queue = patiently(Dependency::Redis, "redis queue", startup, || {
        RedisQueue::connect(
            &cfg.redis.url,
            &cfg.redis.prefix,
            consumer,
            cfg.redis.visibility_timeout_ms,
        )
    })
    .await?;
    let catalog = Arc::new(catalog);
    Ok(Backends {
        blobs: Arc::new(blobs),
        uploads: catalog.clone(),
        catalog,
        dedup: Arc::new(dedup),
        queue: Arc::new(queue),
    })
}

/// How this deployment enqueues batches: the policy and chunk sizes of the
/// configuration.
pub(crate) fn intake_config(cfg: &Config) -> anyhow::Result<IntakeConfig> {
    Ok(IntakeConfig {
        policy: cfg.policy()?,
        chunk_limits: ChunkLimits {
            max_entries: cfg.worker.chunk_entries.max(1),
            max_bytes: cfg.worker.chunk_bytes.max(1),
        },
        // The cluster's workers come and go.
        lanes: 1,
    })
}

pub(crate) fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "picsift".into());
    format!("{host}-{}", std::process::id())
}

/// `picsift gateway`: the HTTP API. Received batches are planned into the
/// Redis queue at once. The port opens first: while S3, PostgreSQL or
/// Redis are not up yet, `/readyz` answers 503 naming them
/// ([`picsift_gateway::starting`]).
pub async fn gateway(args: ClusterArgs) -> anyhow::Result<()> {
    init_logging();
    // glibc's malloc raises its mmap threshold each time a big block is
    // freed, after which the 8 MiB part buffers of resumable uploads come
    // from its heap and stay in the RSS (measured: 111 MB peak instead of
    // flat). A fixed threshold hands each one back to the system when freed.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc parameter; called before any
    // thread of ours allocates big blocks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let cfg = load(&args)?;
    let policy = cfg.policy()?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (listen)", cfg.listen))?;
    let addr = listener.local_addr()?;
    let startup = Startup::new(&["postgres", "redis", "s3"]);
    let mut server = tokio::spawn(picsift_gateway::serve(
        listener,
        picsift_gateway::starting::router(startup.clone()),
        cfg.limits.transport(),
        shutdown_signal(),
    ));
    eprintln!(
        "picsift gateway starting on http://{addr}: /readyz answers 503 until S3, PostgreSQL and Redis do"
    );
    let state = tokio::select! {
        state = gateway_state(&cfg, policy, &startup) => state?,
        stopped = &mut server => {
            stopped.context("server task failed")?.context("server failed")?;
            return Ok(());
        }
    };
    // Abandoned resumable uploads are cleaned up when they expire (every
    // replica sweeps; the steps are idempotent).
    picsift_gateway::sweep::spawn(state.clone());
    startup.ready(picsift_gateway::router(state));
    eprintln!("picsift gateway listening on http://{addr}");
    server
        .await
        .context("server task failed")?
        .context("server failed")?;
    Ok(())
}

/// The gateway's state: its backends connected, its admin key in place.
async fn gateway_state(
    cfg: &Config,
    policy: picsift_core::policy::Policy,
    startup: &Startup,
) -> anyhow::Result<AppState> {
    let b = backends(cfg, &consumer_name(), startup).await?;
    // A new Redis (a first start, or one that lost its data while the
    // gateway was down) has no complete index yet: uploads would be held
    // back until it is, so it is made complete before the first one.
    // At most 10 s: a rebuild another process holds (one that died holds
    // its lock until the lock's lease ends) must not keep the gateway from
    // starting; uploads are then held back by the gate until it is done.
    let who = format!("gateway-{}", std::process::id());
    let complete =
        picsift_core::dedup_index::ensure_complete(b.catalog.as_ref(), b.dedup.as_ref(), &who);
    match tokio::time::timeout(std::time::Duration::from_secs(10), complete).await {
        Ok(done) => done?,
        Err(_) => {
            tracing::warn!("the dedup index is being rebuilt elsewhere; starting without waiting")
        }
    }
    if let Ok(key) = std::env::var("PICSIFT_ADMIN_KEY") {
        crate::admin::bootstrap_key(b.catalog.as_ref(), &key).await?;
    }
    let scheduler: Arc<dyn Scheduler> = if cfg.kubernetes.enabled {
        let client = kube_client().await?;
        let ns = namespace(cfg, &client);
        tracing::info!(namespace = ns, "uploads become UploadBatches");
        Arc::new(KubeScheduler::new(
            client,
            &ns,
            &cfg.kubernetes.default_policy,
        ))
    } else {
        Arc::new(LocalScheduler::new(b.clone(), intake_config(cfg)?))
    };
    Ok(AppState {
        uploads: b.uploads.clone(),
        metrics: Default::default(),
        blobs: b.blobs.clone(),
        catalog: b.catalog.clone(),
        scheduler,
        policy,
        queue: Some(b.queue.clone()),
        dedup: b.dedup.clone(),
        rebuilding: Default::default(),
        limits: cfg.limits.tenant_limits(),
        rate: Arc::new(
            patiently(Dependency::Redis, "redis rate limiter", startup, || {
                picsift_backends::cluster::RedisRateLimiter::connect(
                    &cfg.redis.url,
                    &cfg.redis.prefix,
                )
            })
            .await?,
        ),
    })
}

/// A chunk legitimately takes up to a visibility timeout; twice that
/// without progress means its task is gone.
pub(crate) fn stall_ms(cfg: &Config) -> i64 {
    (2 * cfg.redis.visibility_timeout_ms as i64).max(60_000)
}

async fn kube_client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster service account or kubeconfig)")
}

/// The configured namespace, else the client's (the pod's service account
/// namespace in a cluster).
fn namespace(cfg: &Config, client: &kube::Client) -> String {
    if cfg.kubernetes.namespace.is_empty() {
        client.default_namespace().to_string()
    } else {
        cfg.kubernetes.namespace.clone()
    }
}

/// `picsift operator`: reconciles UploadBatches and WorkerPools while this
/// replica holds the leader Lease; the leader also delivers webhooks.
pub async fn operator(args: ClusterArgs) -> anyhow::Result<()> {
    init_logging();
    let cfg = load(&args)?;
    let intake = intake_config(&cfg)?;
    let client = kube_client().await?;
    let b = backends(&cfg, &consumer_name(), &Startup::default()).await?;
    let stop = CancellationToken::new();
    let op = OperatorConfig {
        namespace: namespace(&cfg, &client),
        ttl_ms: (cfg.operator.ttl_secs_after_finished as i64).saturating_mul(1000),
        metrics_listen: cfg.operator.metrics_listen,
        lease_name: cfg.operator.lease_name.clone(),
        identity: consumer_name(),
        chunk_limits: intake.chunk_limits,
        stall_ms: stall_ms(&cfg),
    };
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    let notifier = Notifier::new(b.clone(), cfg.notifier())?;
    eprintln!("picsift operator {} started", op.identity);
    // Stalled batches are the UploadBatch controller's business here (it
    // plans them again under their own ValidationPolicy): no sweep.
    picsift_operator::run(client, b, op, stop, move |work| {
        let wake = Arc::new(tokio::sync::Notify::new());
        vec![tokio::spawn(notifier.run(wake, work))]
    })
    .await?;
    Ok(())
}

/// `picsift reindex`: rebuilds the Redis dedup claims from the catalog.
pub async fn reindex(args: ClusterArgs) -> anyhow::Result<()> {
    init_logging();
    let cfg = load(&args)?;
    let catalog = SqlCatalog::connect_postgres(&cfg.postgres.url, cfg.postgres.max_connections)
        .await
        .context("cannot reach PostgreSQL")?;
    let dedup = RedisDedup::connect(&cfg.redis.url, &cfg.redis.prefix)
        .await
        .context("cannot reach Redis")?;
    use picsift_core::backend::DedupIndex;
    let who = format!("reindex-{}", std::process::id());
    if !dedup
        .begin_rebuild(&who, picsift_core::dedup_index::REBUILD_TTL_MS)
        .await?
    {
        anyhow::bail!(
            "another process is rebuilding the dedup index now (workers do it by themselves when Redis lost its data); try again when it is done"
        );
    }
    let Some(restored) = picsift_core::dedup_index::rebuild_holding(&catalog, &dedup, &who).await?
    else {
        anyhow::bail!(
            "the rebuild lost its right midway (Redis lost its data again, or this process stalled and another took over); run it again"
        );
    };
    eprintln!("reindex: committed claims written for {restored} catalog images");
    Ok(())
}
