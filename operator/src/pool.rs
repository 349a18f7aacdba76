//! The WorkerPool controller: observe the backlog (this pool's
//! [`crate::autoscale::share`]) and the pool's Jobs, assess failures
//! ([`crate::health::assess`]), decide ([`crate::autoscale::decide`]),
//! create and delete Jobs, write status with its condition, publish events.
//! The backlog lives in Redis, not in the API, so every pool is looked at
//! again every few seconds.

use crate::autoscale::{self, JobState, WorkerJob};
use crate::conditions::{from_time, set_condition, to_time};
use crate::health::{self, Failures};
use crate::jobs::{job_name, worker_job};
use crate::metrics::WorkerLabel;
use crate::{Context, Error, FIELD_MANAGER, POOL_LABEL, Result, SLOT_LABEL};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{Resource, ResourceExt};
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
    if result.is_ok() {
        ctx.retries.succeeded(&retry_key(&pool));
    }
    result
}

/// The pool's key in [`crate::retry::Retries`].
fn retry_key(pool: &WorkerPool) -> String {
    format!("WorkerPool/{}", pool.name_any())
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
    let now = ctx.clock.now();
    let queued = ctx.backends.queue.backlog().await?;
    let pools: Vec<(String, i32)> = Api::<WorkerPool>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.spec.max_workers))
        .collect();
    let backlog = autoscale::share(queued, &pools, &name, pool.spec.max_workers);
    let prev = pool.status.clone().unwrap_or_default();
    let health = health::assess(
        Failures {
            consecutive: u32::try_from(prev.consecutive_failures).unwrap_or(0),
            last_at: prev.last_failure_time.as_ref().map(from_time),
        },
        &workers,
        now,
    );
    let hold = health.holds(now);
    let scale = autoscale::decide(&pool.spec, backlog, &workers, hold);
    publish_health(ctx, pool, &health).await;
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
        consecutive_failures: i32::try_from(health.failures.consecutive).unwrap_or(i32::MAX),
        last_failure_time: health.failures.last_at.map(to_time),
        observed_generation: pool.metadata.generation,
        conditions: {
            let mut conditions = prev.conditions;
            let (ok, reason, message) = health.condition(now);
            set_condition(
                &mut conditions,
                health::CONDITION,
                ok,
                reason,
                &message,
                pool.metadata.generation,
                now,
            );
            conditions
        },
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
    record_metrics(ctx, &name, &status, queued).await;
    Ok(Action::requeue(INTERVAL))
}

/// A Job's slot and state; `None` for a Job that is not a worker slot.
fn worker_state(job: &Job, pods: &[Pod]) -> Option<WorkerJob> {
    let slot: u32 = job.labels().get(SLOT_LABEL)?.parse().ok()?;
    let status = job.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    // When the Job reached condition `type_` (`Complete` or `Failed`).
    let ended = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
            .map(|c| c.last_transition_time.as_ref().map(from_time))
    };
    let running = pods.iter().any(|p| {
        p.labels().get(SLOT_LABEL).map(String::as_str) == Some(&slot.to_string())
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    });
    let (state, ended_at) = if let Some(at) = ended("Failed") {
        (JobState::Failed, at)
    } else if let Some(at) = ended("Complete") {
        (
            JobState::Succeeded,
            at.or(status.completion_time.as_ref().map(from_time)),
        )
    } else if status.failed.unwrap_or(0) > 0 {
        // Counted failed before its condition is written.
        (JobState::Failed, None)
    } else if status.succeeded.unwrap_or(0) > 0 {
        (
            JobState::Succeeded,
            status.completion_time.as_ref().map(from_time),
        )
    } else if running {
        (JobState::Running, None)
    } else {
        (JobState::Pending, None)
    };
    Some(WorkerJob {
        slot,
        state,
        current: true,
        ended_at,
    })
}

/// An event for each worker Job that failed since the last round, and one
/// when the pool recovers.
async fn publish_health(ctx: &Context, pool: &WorkerPool, health: &health::Health) {
    let reference = pool.object_ref(&());
    let name = pool.name_any();
    let wait_s = health
        .retry_at
        .map_or(0, |t| (t - ctx.clock.now()).max(0) / 1000);
    for &slot in &health.newly_failed {
        let job = job_name(&name, slot);
        tracing::warn!(
            pool = name,
            job,
            in_a_row = health.failures.consecutive,
            wait_s,
            "worker Job failed"
        );
        crate::publish(
            ctx,
            &reference,
            true,
            "WorkerFailed",
            format!(
                "worker Job {job} failed ({} in a row); the next worker starts in {wait_s} s; its logs: kubectl logs job/{job}",
                health.failures.consecutive
            ),
        )
        .await;
    }
    if health.recovered {
        tracing::info!(pool = name, "a worker ended well: failures reset");
        crate::publish(
            ctx,
            &reference,
            false,
            "WorkersRecovered",
            "a worker ended well; the failure count is reset".into(),
        )
        .await;
    }
}

async fn record_metrics(ctx: &Context, pool: &str, status: &WorkerPoolStatus, queued: u64) {
    let m = &ctx.metrics;
    m.backlog.set(i64::try_from(queued).unwrap_or(i64::MAX));
    if let Ok(n) = ctx.backends.queue.reclaimed().await {
        m.saw_reclaimed(n);
    }
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

/// Retries a failed reconcile after a pause that doubles with each
/// failure of this pool in a row ([`crate::retry`]).
pub fn error_policy(pool: Arc<WorkerPool>, error: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.retries.failed(&retry_key(&pool));
    tracing::warn!(pool = pool.name_any(), error = %error, retry_in_s = wait.as_secs(), "reconcile failed; retrying");
    Action::requeue(wait)
}
