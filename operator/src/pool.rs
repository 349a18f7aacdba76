//! The WorkerPool controller: observe the backlog and the pool's Jobs,
//! decide ([`crate::autoscale::decide`]), create and delete Jobs, write
//! status. The backlog lives in Redis, not in the API, so every pool is
//! looked at again every few seconds.

use crate::autoscale::{self, JobState, WorkerJob};
use crate::jobs::{job_name, worker_job};
use crate::metrics::WorkerLabel;
use crate::{Context, Error, FIELD_MANAGER, POOL_LABEL, Result, SLOT_LABEL};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::ResourceExt;
use kube::runtime::controller::Action;
use picsift_crds::{WorkerPool, WorkerPoolStatus};
use std::sync::Arc;
use std::time::Duration;

/// The controller's name in metrics.
pub const NAME: &str = "workerpool";
/// How often a pool follows the backlog.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Reconciles one WorkerPool.
pub async fn reconcile(pool: Arc<WorkerPool>, ctx: Arc<Context>) -> Result<Action> {
    let result = reconcile_inner(&pool, &ctx).await;
    ctx.metrics.reconciled(NAME, result.is_err());
    result
}

async fn reconcile_inner(pool: &WorkerPool, ctx: &Context) -> Result<Action> {
    let name = pool.name_any();
    let uid = pool
        .uid()
        .ok_or_else(|| Error::Malformed("WorkerPool without a uid".into()))?;
    let ns = pool
        .spec
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.namespace.clone());
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = ListParams::default().labels(&format!("{POOL_LABEL}={name}"));
    let jobs = jobs_api.list(&selector).await?.items;
    let pods = pods_api.list(&selector).await?.items;
    let workers: Vec<WorkerJob> = jobs
        .iter()
        .filter_map(|j| worker_state(j, &pods))
        .map(|mut w| {
            let expected = worker_job(&name, &uid, &pool.spec, w.slot, &ns);
            let job = jobs
                .iter()
                .find(|j| j.metadata.name.as_deref() == Some(job_name(&name, w.slot).as_str()));
            w.current = job.is_some_and(|j| crate::jobs::is_current(j, &expected));
            w
        })
        .collect();
    let backlog = ctx.backends.queue.backlog().await?;
    let scale = autoscale::decide(&pool.spec, backlog, &workers);
    for &slot in &scale.create {
        let job = worker_job(&name, &uid, &pool.spec, slot, &ns);
        jobs_api
            .patch(
                &job_name(&name, slot),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&job),
            )
            .await?;
        tracing::info!(pool = name, slot, backlog, "worker Job created");
    }
    for &slot in &scale.delete {
        match jobs_api
            .delete(&job_name(&name, slot), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let status = WorkerPoolStatus {
        desired: scale.desired,
        running: scale.running,
        pending: scale.pending + scale.create.len() as i32,
        backlog: i64::try_from(backlog).unwrap_or(i64::MAX),
        observed_generation: pool.metadata.generation,
        conditions: Vec::new(),
    };
    let patch = serde_json::json!({
        "apiVersion": "picsift.io/v1alpha1",
        "kind": "WorkerPool",
        "status": status,
    });
    Api::<WorkerPool>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    record_metrics(ctx, &name, &status).await;
    Ok(Action::requeue(INTERVAL))
}

/// A Job's slot and state; `None` for a Job that is not a worker slot.
fn worker_state(job: &Job, pods: &[Pod]) -> Option<WorkerJob> {
    let slot: u32 = job.labels().get(SLOT_LABEL)?.parse().ok()?;
    let status = job.status.clone().unwrap_or_default();
    let finished = status.succeeded.unwrap_or(0) > 0
        || status.failed.unwrap_or(0) > 0
        || status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    let running = pods.iter().any(|p| {
        p.labels().get(SLOT_LABEL).map(String::as_str) == Some(&slot.to_string())
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    });
    let state = if finished {
        JobState::Finished
    } else if running {
        JobState::Running
    } else {
        JobState::Pending
    };
    Some(WorkerJob {
        slot,
        state,
        current: true,
    })
}

async fn record_metrics(ctx: &Context, pool: &str, status: &WorkerPoolStatus) {
    let m = &ctx.metrics;
    m.backlog.set(status.backlog);
    for (state, n) in [
        ("desired", status.desired),
        ("running", status.running),
        ("pending", status.pending),
    ] {
        m.workers
            .get_or_create(&WorkerLabel {
                pool: pool.into(),
                state: state.into(),
            })
            .set(i64::from(n));
    }
    if let Ok(batches) = ctx.backends.catalog.unfinished_batches().await {
        let oldest = batches.iter().map(|b| b.created_at).min();
        let age = oldest.map_or(0.0, |t| (ctx.clock.now() - t).max(0) as f64 / 1000.0);
        m.oldest_pending.set(age);
    }
}

/// Retries a failed reconcile after a pause.
pub fn error_policy(pool: Arc<WorkerPool>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(pool = pool.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(INTERVAL)
}
