//! The UploadBatch controller: observe, plan ([`crate::batch::plan`]),
//! apply, write status.
//!
//! It watches UploadBatches as untyped objects and parses each in the
//! reconcile, so one malformed object gets a Warning event instead of
//! stopping the watch for every other batch.

use crate::batch::{self, Observed, SourceState, Step};
use crate::conditions::from_time;
use crate::{Context, Error, FIELD_MANAGER, FINALIZER, Result};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, Resource, ResourceExt};
use kube::runtime::controller::Action;
use picsift_core::backend::{NewBatch, report_ndjson};
use picsift_core::intake::{IntakeConfig, enqueue_batch};
use picsift_core::model::owns_source;
use picsift_core::time::Millis;
use picsift_core::verdict::{Reason, Verdict};
use picsift_crds::{BATCH_ID_ANNOTATION, UploadBatch, ValidationPolicy};
use std::sync::Arc;
use std::time::Duration;

/// The controller's name in metrics.
pub const NAME: &str = "uploadbatch";

/// The API resource UploadBatches are watched as.
pub fn resource() -> ApiResource {
    ApiResource::erase::<UploadBatch>(&())
}

/// Reconciles one UploadBatch.
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    let result = reconcile_inner(&obj, &ctx).await;
    ctx.metrics.reconciled(NAME, result.is_err());
    if result.is_ok() {
        ctx.retries.succeeded(&retry_key(&obj));
    }
    result
}

async fn reconcile_inner(obj: &DynamicObject, ctx: &Context) -> Result<Action> {
    let ar = resource();
    let reference = obj.object_ref(&ar);
    let ub: UploadBatch = match serde_json::to_value(obj).and_then(serde_json::from_value) {
        Ok(ub) => ub,
        Err(e) => {
            // Nothing can be done with it until someone fixes it; but a
            // deletion must not hang on our finalizer.
            tracing::warn!(name = obj.name_any(), error = %e, "malformed UploadBatch");
            if obj.meta().deletion_timestamp.is_some()
                && obj.finalizers().iter().any(|f| f == FINALIZER)
            {
                let api: Api<DynamicObject> = Api::namespaced_with(
                    ctx.client.clone(),
                    &obj.namespace().unwrap_or_default(),
                    &ar,
                );
                let patch = serde_json::json!({
                    "apiVersion": "picsift.io/v1alpha1",
                    "kind": "UploadBatch",
                    "metadata": {"name": obj.name_any(), "finalizers": []},
                });
                api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(&patch))
                    .await?;
                return Ok(Action::await_change());
            }
            crate::publish(
                ctx,
                &reference,
                true,
                "Malformed",
                format!("cannot read this UploadBatch: {e}"),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let ns = ub
        .namespace()
        .ok_or_else(|| Error::Malformed("UploadBatch without a namespace".into()))?;
    let name = ub.name_any();
    let api: Api<UploadBatch> = Api::namespaced(ctx.client.clone(), &ns);
    let observed = observe(ctx, &ub, &ns).await?;
    let plan = batch::plan(&observed.observed);
    tracing::debug!(batch = name, steps = ?plan.steps, "plan");
    let mut gone = false;
    for step in &plan.steps {
        apply(ctx, &api, &ub, &observed, step).await?;
        gone |= matches!(step, Step::RemoveFinalizer | Step::Delete);
    }
    if let (Some(status), false) = (plan.status, gone) {
        let patch = serde_json::json!({
            "apiVersion": "picsift.io/v1alpha1",
            "kind": "UploadBatch",
            "status": status,
        });
        api.patch_status(&name, &apply_params(), &Patch::Apply(&patch))
            .await?;
    }
    for note in plan.events {
        crate::publish(ctx, &reference, note.warning, note.reason, note.message).await;
    }
    Ok(match plan.requeue_ms {
        Some(ms) => Action::requeue(Duration::from_millis(ms.max(1) as u64)),
        None => Action::await_change(),
    })
}

/// What [`observe`] found, with what the steps need besides the planner's input.
struct Observation {
    observed: Observed,
    policy: Option<ValidationPolicy>,
}

async fn observe(ctx: &Context, ub: &UploadBatch, ns: &str) -> Result<Observation> {
    let meta = ub.meta();
    let batch_id = ub
        .annotations()
        .get(BATCH_ID_ANNOTATION)
        .cloned()
        .or_else(|| meta.uid.clone())
        .ok_or_else(|| Error::Malformed("UploadBatch without a uid".into()))?;
    let policies: Api<ValidationPolicy> = Api::namespaced(ctx.client.clone(), ns);
    let policy = policies.get_opt(&ub.spec.policy_ref.name).await?;
    let catalog = match ctx.backends.catalog.batch(&batch_id).await? {
        Some(b) => {
            let counts = ctx.backends.catalog.counts(&batch_id).await?;
            Some((b, counts))
        }
        None => None,
    };
    let source = if catalog.is_some() {
        SourceState::NotChecked
    } else {
        source_state(ctx, &ub.spec.source).await?
    };
    Ok(Observation {
        observed: Observed {
            generation: meta.generation,
            created_at: meta
                .creation_timestamp
                .as_ref()
                .map(from_time)
                .unwrap_or_else(|| ctx.clock.now()),
            deleting: meta.deletion_timestamp.is_some(),
            has_finalizer: ub.finalizers().iter().any(|f| f == FINALIZER),
            spec: ub.spec.clone(),
            status: ub.status.clone().unwrap_or_default(),
            batch_id,
            policy_found: policy.is_some(),
            catalog,
            source,
            ttl_ms: ctx.ttl_ms,
            queue_idle: matches!(ctx.backends.queue.backlog().await, Ok(0)),
            stall_ms: ctx.stall_ms,
            now: ctx.clock.now(),
        },
        policy,
    })
}

async fn source_state(ctx: &Context, source: &picsift_crds::Source) -> Result<SourceState> {
    let blobs = &ctx.backends.blobs;
    Ok(match (&source.key, &source.prefix) {
        (Some(key), _) => match blobs.size(key).await? {
            Some(bytes) => SourceState::Present { bytes },
            None => SourceState::Missing,
        },
        (None, Some(prefix)) => {
            if blobs.list(prefix).await?.is_empty() {
                SourceState::Missing
            } else {
                SourceState::Present { bytes: 0 }
            }
        }
        (None, None) => SourceState::Missing,
    })
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn apply(
    ctx: &Context,
    api: &Api<UploadBatch>,
    ub: &UploadBatch,
    o: &Observation,
    step: &Step,
) -> Result<()> {
    let name = ub.name_any();
    let id = &o.observed.batch_id;
    let catalog = &ctx.backends.catalog;
    let location = ub.spec.source.location().unwrap_or_default().to_string();
    match step {
        Step::AddFinalizer | Step::RemoveFinalizer => {
            // Under server-side apply the finalizer is ours alone: applying
            // without it removes it, whatever others added.
            let finalizers: Vec<&str> = match step {
                Step::AddFinalizer => vec![FINALIZER],
                _ => vec![],
            };
            let patch = serde_json::json!({
                "apiVersion": "picsift.io/v1alpha1",
                "kind": "UploadBatch",
                "metadata": {"name": name, "finalizers": finalizers},
            });
            api.patch(&name, &apply_params(), &Patch::Apply(&patch))
                .await?;
        }
        Step::CreateRecord { bytes } => {
            catalog
                .create_batch(&NewBatch {
                    id: id.clone(),
                    owner: ub
                        .spec
                        .owner
                        .clone()
                        .unwrap_or_else(|| picsift_core::auth::DEFAULT_TENANT.to_string()),
                    staged_key: location,
                    upload_bytes: *bytes,
                    total_entries: 0,
                    callback_url: ub.spec.notification.as_ref().map(|n| n.url.clone()),
                    now: o.observed.created_at,
                })
                .await?;
        }
        Step::Enqueue => {
            let policy = o
                .policy
                .as_ref()
                .map(|p| p.spec.to_policy())
                .unwrap_or_default();
            let cfg = IntakeConfig {
                policy,
                chunk_limits: ctx.chunk_limits,
                // The pool's workers come and go.
                lanes: 1,
            };
            enqueue_batch(&ctx.backends, &cfg, id).await?;
        }
        Step::Expire => {
            decide_rest(
                ctx,
                id,
                Reason::DeadlineExceeded,
                "the batch's deadline passed before this entry was checked",
            )
            .await?;
            catalog
                .end_batch(
                    id,
                    picsift_core::model::Phase::Expired,
                    "the deadline passed before every entry was checked",
                    ctx.clock.now(),
                )
                .await?;
        }
        Step::Cancel => {
            decide_rest(
                ctx,
                id,
                Reason::Cancelled,
                "the UploadBatch was deleted before this entry was checked",
            )
            .await?;
            catalog
                .fail_batch(
                    id,
                    "the UploadBatch was deleted before the batch finished",
                    ctx.clock.now(),
                )
                .await?;
        }
        Step::WriteReport => {
            let lines = report_ndjson(catalog.clone(), id.clone(), None, None);
            ctx.backends
                .blobs
                .put_stream(&batch::report_key(id), lines)
                .await?;
        }
        Step::DeleteSource => {
            // Only what the gateway staged; the planner checked, and this
            // guards against a future planner that does not.
            if owns_source(&location) {
                ctx.backends.blobs.delete(&location).await?;
            }
        }
        Step::Delete => {
            api.delete(&name, &DeleteParams::background()).await?;
        }
    }
    Ok(())
}

/// Gives every undecided entry of a batch the same failed verdict. Queued
/// tasks of the batch then find nothing to do (or a final batch) and are
/// acked without work.
async fn decide_rest(ctx: &Context, id: &str, reason: Reason, detail: &str) -> Result<()> {
    let catalog = &ctx.backends.catalog;
    let now: Millis = ctx.clock.now();
    for (index, _) in catalog.pending_entries(id).await? {
        catalog
            .record_verdict(id, index, &Verdict::refused(reason, detail), now)
            .await?;
    }
    Ok(())
}

/// The object's key in [`crate::retry::Retries`].
fn retry_key(obj: &DynamicObject) -> String {
    format!(
        "UploadBatch/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Retries a failed reconcile after a pause that doubles with each
/// failure of this object in a row ([`crate::retry`]).
pub fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.retries.failed(&retry_key(&obj));
    tracing::warn!(name = obj.name_any(), error = %error, retry_in_s = wait.as_secs(), "reconcile failed; retrying");
    Action::requeue(wait)
}
