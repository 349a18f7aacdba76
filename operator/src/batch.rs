//! The UploadBatch planner: what to do next, from what was observed and
//! the time. Pure: the controller gathers [`Observed`], applies the
//! [`Plan`]'s steps in order, then writes its status.

use crate::conditions::{set_condition, to_time};
use picsift_core::model::{BatchRecord, Counts, Phase, owns_source};
use picsift_core::time::Millis;
use picsift_crds::{
    BatchCounts, BatchPhase, MAX_DEADLINE_SECONDS, UploadBatchSpec, UploadBatchStatus,
};

/// How often a processing batch's counts are refreshed into its status.
pub const PROGRESS_INTERVAL_MS: Millis = 10_000;
/// How long to wait before looking again for a source that is missing.
pub const MISSING_SOURCE_RETRY_MS: Millis = 300_000;

/// Whether the batch's source object (or prefix) exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// Not looked at: the catalog already has the batch.
    NotChecked,
    /// Nothing at the key (or under the prefix).
    Missing,
    /// There, this many bytes (a zip; 0 for a prefix).
    Present {
        /// Size of the zip.
        bytes: u64,
    },
}

/// Everything the planner needs, gathered by the controller.
#[derive(Clone, Debug)]
pub struct Observed {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp`.
    pub created_at: Millis,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Our finalizer is on the object.
    pub has_finalizer: bool,
    /// The spec.
    pub spec: UploadBatchSpec,
    /// The status as last written.
    pub status: UploadBatchStatus,
    /// The batch's catalog id.
    pub batch_id: String,
    /// Whether the referenced ValidationPolicy exists.
    pub policy_found: bool,
    /// The catalog's record of the batch and its counts, if any.
    pub catalog: Option<(BatchRecord, Counts)>,
    /// The source, when the catalog has no record yet.
    pub source: SourceState,
    /// How long a finished batch is kept.
    pub ttl_ms: Millis,
    /// Now.
    pub now: Millis,
}

/// One thing the controller does, in plan order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Add the cleanup finalizer.
    AddFinalizer,
    /// Record the batch in the catalog (an UploadBatch applied by hand).
    CreateRecord {
        /// Size of the source zip.
        bytes: u64,
    },
    /// Read the entries and enqueue chunk tasks, once.
    Enqueue,
    /// Give undecided entries `deadline_exceeded` and end the batch Expired.
    Expire,
    /// Give undecided entries `cancelled` and end the batch (it is being deleted).
    Cancel,
    /// Write the NDJSON report into the bucket.
    WriteReport,
    /// Delete the staged upload.
    DeleteSource,
    /// Remove the finalizer (the object then goes away).
    RemoveFinalizer,
    /// Delete the UploadBatch: its TTL after finishing has passed.
    Delete,
}

/// An event to emit on the UploadBatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning rather than Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What happened.
    pub message: String,
}

/// What the controller does next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// The status to write (`None`: leave it; the object is going away).
    pub status: Option<UploadBatchStatus>,
    /// Events for the transitions this plan makes.
    pub events: Vec<Note>,
    /// When to look again, in ms from now; `None`: only on a change.
    pub requeue_ms: Option<Millis>,
}

/// The catalog key of a batch's report.
pub fn report_key(batch_id: &str) -> String {
    format!("reports/{batch_id}.ndjson")
}

/// When the batch's deadline falls: its own, at most seven days after creation.
pub fn deadline(spec: &UploadBatchSpec, created_at: Millis) -> Millis {
    let secs = spec
        .deadline_seconds
        .unwrap_or(MAX_DEADLINE_SECONDS)
        .clamp(1, MAX_DEADLINE_SECONDS);
    created_at + secs * 1000
}

/// Decides the next steps for one UploadBatch.
pub fn plan(o: &Observed) -> Plan {
    let mut plan = Plan::default();
    if o.deleting {
        if o.has_finalizer {
            if let Some((batch, _)) = &o.catalog {
                if !batch.phase.is_final() {
                    plan.steps.push(Step::Cancel);
                }
                if owns_source(&batch.staged_key) {
                    plan.steps.push(Step::DeleteSource);
                }
            }
            plan.steps.push(Step::RemoveFinalizer);
        }
        return plan;
    }
    if !o.has_finalizer {
        plan.steps.push(Step::AddFinalizer);
    }
    let mut status = o.status.clone();
    status.batch_id = Some(o.batch_id.clone());
    status.observed_generation = o.generation;
    let deadline = deadline(&o.spec, o.created_at);
    status.deadline = Some(to_time(deadline));
    let generation = o.generation;
    let ready = |status: &mut UploadBatchStatus, ok: bool, reason: &'static str, msg: String| {
        set_condition(
            &mut status.conditions,
            "Ready",
            ok,
            reason,
            &msg,
            generation,
            o.now,
        )
    };

    let Some((batch, counts)) = &o.catalog else {
        // Not in the catalog yet: an UploadBatch applied by hand.
        if !o.policy_found {
            let msg = format!(
                "ValidationPolicy {:?} does not exist in this namespace; create it or change spec.policyRef",
                o.spec.policy_ref.name
            );
            return invalid(o, plan, status, "PolicyNotFound", msg, None);
        }
        return match o.source {
            SourceState::Present { bytes } => {
                plan.steps.push(Step::CreateRecord { bytes });
                plan.steps.push(Step::Enqueue);
                status.enqueued = true;
                status.phase = Some(BatchPhase::Processing);
                ready(
                    &mut status,
                    true,
                    "Accepted",
                    "the source was found and planned".into(),
                );
                set_finished(
                    &mut status,
                    false,
                    "InProgress",
                    "entries are being checked",
                    o,
                );
                plan.events.push(Note {
                    warning: false,
                    reason: "Planned",
                    message: "chunk tasks enqueued".into(),
                });
                plan.requeue_ms = Some(PROGRESS_INTERVAL_MS.min((deadline - o.now).max(1)));
                plan.status = Some(status);
                plan
            }
            SourceState::Missing | SourceState::NotChecked => {
                let msg = format!(
                    "nothing found at {:?} in the bucket; upload it there, or fix spec.source",
                    o.spec.source.location().unwrap_or_default()
                );
                invalid(
                    o,
                    plan,
                    status,
                    "SourceNotFound",
                    msg,
                    Some(MISSING_SOURCE_RETRY_MS),
                )
            }
        };
    };

    status.counts = Some(to_counts(batch, counts));
    if batch.phase.is_final() {
        return finish(o, plan, status, batch, batch.phase);
    }
    if o.now >= deadline {
        plan.steps.push(Step::Expire);
        if let Some(c) = status.counts.as_mut() {
            c.failed += c.pending;
            c.pending = 0;
        }
        return finish(o, plan, status, batch, Phase::Expired);
    }
    if !o.policy_found && !o.status.enqueued {
        let msg = format!(
            "ValidationPolicy {:?} does not exist in this namespace; create it or change spec.policyRef",
            o.spec.policy_ref.name
        );
        return invalid(o, plan, status, "PolicyNotFound", msg, None);
    }
    if !o.status.enqueued || batch.phase == Phase::Received {
        plan.steps.push(Step::Enqueue);
        if !o.status.enqueued {
            plan.events.push(Note {
                warning: false,
                reason: "Planned",
                message: "chunk tasks enqueued".into(),
            });
        }
        status.enqueued = true;
    }
    status.phase = Some(BatchPhase::Processing);
    ready(
        &mut status,
        true,
        "Accepted",
        "the source was found and planned".into(),
    );
    set_finished(
        &mut status,
        false,
        "InProgress",
        "entries are being checked",
        o,
    );
    plan.requeue_ms = Some(PROGRESS_INTERVAL_MS.min(deadline - o.now));
    plan.status = Some(status);
    plan
}

/// A spec that cannot proceed: Ready=False, a Warning event when this is
/// new, and no retry but on a change (or after `retry_ms`).
fn invalid(
    o: &Observed,
    mut plan: Plan,
    mut status: UploadBatchStatus,
    reason: &'static str,
    message: String,
    retry_ms: Option<Millis>,
) -> Plan {
    let was = o.status.conditions.iter().any(|c| {
        c.type_ == "Ready" && c.status == "False" && c.reason == reason && c.message == message
    });
    if !was {
        plan.events.push(Note {
            warning: true,
            reason,
            message: message.clone(),
        });
    }
    status.phase = Some(BatchPhase::Pending);
    status.message = Some(message.clone());
    set_condition(
        &mut status.conditions,
        "Ready",
        false,
        reason,
        &message,
        o.generation,
        o.now,
    );
    plan.requeue_ms = retry_ms;
    plan.status = Some(status);
    plan
}

/// A batch that has ended (or ends now): report, clean-up, and deletion
/// once its TTL has passed.
fn finish(
    o: &Observed,
    mut plan: Plan,
    mut status: UploadBatchStatus,
    batch: &BatchRecord,
    phase: Phase,
) -> Plan {
    let key = report_key(&o.batch_id);
    if o.status.report_key.as_deref() != Some(key.as_str()) {
        plan.steps.push(Step::WriteReport);
        if owns_source(&batch.staged_key) {
            plan.steps.push(Step::DeleteSource);
        }
    }
    status.report_key = Some(key);
    let (new_phase, reason, warning, message) = match phase {
        Phase::Expired => (
            BatchPhase::Expired,
            "Expired",
            true,
            "the deadline passed; unchecked entries got deadline_exceeded".to_string(),
        ),
        Phase::Failed => (
            BatchPhase::Failed,
            "Failed",
            true,
            batch
                .error
                .clone()
                .unwrap_or_else(|| "the batch failed".into()),
        ),
        _ => (
            BatchPhase::Completed,
            "Completed",
            false,
            "every entry has a verdict".to_string(),
        ),
    };
    if o.status.phase != Some(new_phase) {
        plan.events.push(Note {
            warning,
            reason,
            message: message.clone(),
        });
    }
    status.phase = Some(new_phase);
    status.message = Some(message.clone());
    let ended = if phase == batch.phase {
        batch.completed_at.unwrap_or(o.now)
    } else {
        o.now
    };
    status.completed_at = Some(to_time(ended));
    set_finished(&mut status, true, reason, &message, o);
    let delete_at = ended + o.ttl_ms;
    if o.now >= delete_at {
        plan.steps.push(Step::Delete);
        plan.requeue_ms = None;
    } else {
        plan.requeue_ms = Some(delete_at - o.now);
    }
    plan.status = Some(status);
    plan
}

fn set_finished(status: &mut UploadBatchStatus, done: bool, reason: &str, msg: &str, o: &Observed) {
    set_condition(
        &mut status.conditions,
        "Finished",
        done,
        reason,
        msg,
        o.generation,
        o.now,
    );
}

fn to_counts(batch: &BatchRecord, c: &Counts) -> BatchCounts {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    BatchCounts {
        total: n(batch.total_entries),
        accepted: n(c.accepted),
        duplicate: n(c.duplicate),
        rejected: n(c.rejected),
        failed: n(c.failed),
        pending: n(c.pending),
    }
}
