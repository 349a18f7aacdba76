//! The UploadBatch planner: what to do next, from what was observed and
//! the time. Pure: the controller gathers [`Observed`], applies the
//! [`Plan`]'s steps in order, then writes its status.

use crate::conditions::{set_condition, to_time};
use picsift_core::model::{BatchRecord, Counts, Phase, owns_source};
use picsift_core::progress::{self, Progress};
use picsift_core::time::Millis;
use picsift_crds::{
    BatchCounts, BatchPhase, MAX_DEADLINE_SECONDS, UploadBatchSpec, UploadBatchStatus,
};

/// How often a processing batch's counts are refreshed into its status.
pub const PROGRESS_INTERVAL_MS: Millis = 10_000;
/// How long to wait before looking again for a source that is missing.
pub const MISSING_SOURCE_RETRY_MS: Millis = 300_000;
/// How long an invalid spec waits for a change before it is looked at
/// again (a policy's watch wakes it sooner).
pub const INVALID_RETRY_MS: Millis = 3_600_000;

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
    /// No chunk task is queued (none waiting or in flight).
    pub queue_idle: bool,
    /// How long a processing batch may go without progress, with the
    /// queue idle, before it is planned again.
    pub stall_ms: Millis,
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
    created_at.saturating_add(secs * 1000)
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

    let Some((batch, counts)) = &o.catalog else {
        // Not in the catalog yet: an UploadBatch applied by hand.
        if o.now >= deadline {
            return expire_unrecorded(o, plan, status);
        }
        if o.spec.source.key.as_deref().is_some_and(owns_source) {
            let msg = format!(
                "{} is where the gateway stages uploads; point spec.source at an object outside {}",
                o.spec.source.key.as_deref().unwrap_or_default(),
                picsift_core::model::STAGING_PREFIX
            );
            return invalid(
                o,
                plan,
                status,
                "ReservedSource",
                msg,
                Some(INVALID_RETRY_MS),
            );
        }
        if !o.policy_found {
            let msg = policy_not_found(o);
            return invalid(
                o,
                plan,
                status,
                "PolicyNotFound",
                msg,
                Some(INVALID_RETRY_MS),
            );
        }
        return match o.source {
            SourceState::Present { bytes } => {
                plan.steps.push(Step::CreateRecord { bytes });
                plan.steps.push(Step::Enqueue);
                status.last_progress_time = Some(to_time(o.now));
                mark_processing(&mut status, o);
                plan.events.push(planned());
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
    if !o.policy_found && batch.phase == Phase::Received {
        let msg = policy_not_found(o);
        return invalid(
            o,
            plan,
            status,
            "PolicyNotFound",
            msg,
            Some(INVALID_RETRY_MS),
        );
    }
    // The catalog's phase is the guard: planning moves a batch from
    // received to processing in one statement, so a reconcile working from
    // a stale status never enqueues a batch twice.
    if batch.phase == Phase::Received {
        plan.steps.push(Step::Enqueue);
        plan.events.push(planned());
        status.last_progress_time = Some(to_time(o.now));
    } else {
        // What the last reconcile saw, from the status it wrote.
        let last = match (o.status.counts, &status.last_progress_time) {
            (Some(c), Some(t)) => Some(Progress {
                pending: c.pending.max(0) as u64,
                at: crate::conditions::from_time(t),
            }),
            _ => None,
        };
        let (seen, replan) = progress::watch(last, counts.pending, o.queue_idle, o.now, o.stall_ms);
        if last.map(|p| p.at) != Some(seen.at) {
            status.last_progress_time = Some(to_time(seen.at));
        }
        if replan {
            // Nothing queued and nothing decided for a while: the tasks were
            // lost (a Redis that restarted empty). Decided entries are
            // skipped, so planning again redoes nothing.
            plan.steps.push(Step::Enqueue);
            plan.events.push(Note {
                warning: true,
                reason: "Replanned",
                message: format!(
                    "no progress for {} s with the queue empty; pending entries enqueued again",
                    o.stall_ms / 1000
                ),
            });
        }
    }
    mark_processing(&mut status, o);
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
    let until_deadline = (deadline(&o.spec, o.created_at) - o.now).max(1);
    plan.requeue_ms = Some(retry_ms.map_or(until_deadline, |r| r.min(until_deadline)));
    plan.status = Some(status);
    plan
}

/// The deadline passed before the batch was ever recorded (its spec was
/// never valid): it ends Expired with no entries, and goes after its TTL.
fn expire_unrecorded(o: &Observed, mut plan: Plan, mut status: UploadBatchStatus) -> Plan {
    let message = "the deadline passed before the batch could start".to_string();
    if o.status.phase != Some(BatchPhase::Expired) {
        plan.events.push(Note {
            warning: true,
            reason: "Expired",
            message: message.clone(),
        });
    }
    let ended = o
        .status
        .completed_at
        .as_ref()
        .map_or(o.now, crate::conditions::from_time);
    status.phase = Some(BatchPhase::Expired);
    status.message = Some(message.clone());
    status.completed_at = Some(to_time(ended));
    set_finished(&mut status, true, "Expired", &message, o);
    delete_after_ttl(&mut plan, ended, o);
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
    delete_after_ttl(&mut plan, ended, o);
    plan.status = Some(status);
    plan
}

/// A finished batch goes `ttl_ms` after it ended.
fn delete_after_ttl(plan: &mut Plan, ended: Millis, o: &Observed) {
    let delete_at = ended.saturating_add(o.ttl_ms);
    if o.now >= delete_at {
        plan.steps.push(Step::Delete);
        plan.requeue_ms = None;
    } else {
        plan.requeue_ms = Some(delete_at - o.now);
    }
}

/// A batch being processed: planned, its spec accepted, not finished.
fn mark_processing(status: &mut UploadBatchStatus, o: &Observed) {
    status.enqueued = true;
    status.phase = Some(BatchPhase::Processing);
    let msg = "the source was found and planned";
    set_condition(
        &mut status.conditions,
        "Ready",
        true,
        "Accepted",
        msg,
        o.generation,
        o.now,
    );
    set_finished(status, false, "InProgress", "entries are being checked", o);
}

fn planned() -> Note {
    Note {
        warning: false,
        reason: "Planned",
        message: "chunk tasks enqueued".into(),
    }
}

fn policy_not_found(o: &Observed) -> String {
    format!(
        "ValidationPolicy {:?} does not exist in this namespace; create it or change spec.policyRef",
        o.spec.policy_ref.name
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use picsift_core::model::NotifyState;

    const T0: Millis = 1_800_000_000_000;
    const DAY: Millis = 86_400_000;

    fn spec(deadline: Option<i64>) -> UploadBatchSpec {
        let mut s: UploadBatchSpec =
            serde_json::from_value(serde_json::json!({"source": {"key": "imports/b.zip"}}))
                .unwrap();
        s.deadline_seconds = deadline;
        s
    }

    fn record(phase: Phase, key: &str) -> BatchRecord {
        BatchRecord {
            id: "b".into(),
            owner: "default".into(),
            phase,
            staged_key: key.into(),
            upload_bytes: 100,
            total_entries: 4,
            error: None,
            callback_url: None,
            notify_state: NotifyState::None,
            notify_attempts: 0,
            notify_last_error: None,
            notify_next_at: None,
            notify_delivered_at: None,
            created_at: T0,
            updated_at: T0,
            started_at: None,
            completed_at: phase.is_final().then_some(T0 + 1000),
        }
    }

    fn counts(pending: u64) -> Counts {
        Counts {
            accepted: 4 - pending,
            pending,
            ..Counts::default()
        }
    }

    /// A batch with our finalizer, its record in the catalog, planned.
    fn observed(phase: Phase, pending: u64, now: Millis) -> Observed {
        Observed {
            generation: Some(1),
            created_at: T0,
            deleting: false,
            has_finalizer: true,
            spec: spec(None),
            status: UploadBatchStatus {
                enqueued: true,
                ..UploadBatchStatus::default()
            },
            batch_id: "b".into(),
            policy_found: true,
            catalog: Some((record(phase, "staging/b.zip"), counts(pending))),
            source: SourceState::NotChecked,
            ttl_ms: DAY,
            queue_idle: false,
            stall_ms: 600_000,
            now,
        }
    }

    fn reasons(p: &Plan) -> Vec<&'static str> {
        p.events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn a_batch_applied_by_hand_is_recorded_and_enqueued_once() {
        let mut o = observed(Phase::Received, 4, T0 + 10);
        o.catalog = None;
        o.has_finalizer = false;
        o.status = UploadBatchStatus::default();
        o.source = SourceState::Present { bytes: 100 };
        let p = plan(&o);
        assert_eq!(
            p.steps,
            vec![
                Step::AddFinalizer,
                Step::CreateRecord { bytes: 100 },
                Step::Enqueue
            ]
        );
        let status = p.status.clone().unwrap();
        assert!(status.enqueued);
        assert_eq!(status.phase, Some(BatchPhase::Processing));
        assert_eq!(reasons(&p), vec!["Planned"]);

        // Reconciling again, with that status written and the record
        // there, enqueues nothing more.
        let mut again = observed(Phase::Processing, 4, T0 + 20);
        again.status = status;
        let p2 = plan(&again);
        assert!(p2.steps.is_empty(), "{:?}", p2.steps);
        assert!(p2.events.is_empty());
    }

    #[test]
    fn a_gateway_batch_is_enqueued_once() {
        let mut o = observed(Phase::Received, 4, T0 + 10);
        o.status = UploadBatchStatus::default();
        let p = plan(&o);
        assert_eq!(p.steps, vec![Step::Enqueue]);
        let mut again = observed(Phase::Processing, 4, T0 + 20);
        again.status = p.status.unwrap();
        assert!(plan(&again).steps.is_empty());
    }

    #[test]
    fn progress_is_aggregated_into_status() {
        let p = plan(&observed(Phase::Processing, 1, T0 + 10));
        let c = p.status.unwrap().counts.unwrap();
        assert_eq!((c.total, c.accepted, c.pending), (4, 3, 1));
        assert_eq!(p.requeue_ms, Some(PROGRESS_INTERVAL_MS));
    }

    #[test]
    fn missing_policy_waits_for_a_change_with_one_warning() {
        let mut o = observed(Phase::Received, 4, T0 + 10);
        o.catalog = None;
        o.policy_found = false;
        o.status = UploadBatchStatus::default();
        let p = plan(&o);
        assert!(p.steps.is_empty());
        assert_eq!(
            p.requeue_ms,
            Some(INVALID_RETRY_MS),
            "no hot loop: a change (or an hour) wakes it"
        );
        assert_eq!(reasons(&p), vec!["PolicyNotFound"]);
        let status = p.status.unwrap();
        assert_eq!(status.phase, Some(BatchPhase::Pending));
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "PolicyNotFound")
        );
        // Seen again unchanged: no second event.
        o.status = status;
        o.now += 1000;
        assert!(plan(&o).events.is_empty());
    }

    #[test]
    fn missing_source_is_looked_at_again_later_not_in_a_loop() {
        let mut o = observed(Phase::Received, 4, T0 + 10);
        o.catalog = None;
        o.source = SourceState::Missing;
        let p = plan(&o);
        assert!(p.steps.is_empty());
        assert_eq!(p.requeue_ms, Some(MISSING_SOURCE_RETRY_MS));
        assert_eq!(reasons(&p), vec!["SourceNotFound"]);
    }

    #[test]
    fn deadline_defaults_to_and_is_capped_at_seven_days() {
        assert_eq!(deadline(&spec(None), T0), T0 + 7 * DAY);
        assert_eq!(deadline(&spec(Some(60)), T0), T0 + 60_000);
        assert_eq!(deadline(&spec(Some(30 * 86_400)), T0), T0 + 7 * DAY);
    }

    #[test]
    fn a_batch_past_its_deadline_expires_reports_and_cleans_up() {
        let p = plan(&observed(Phase::Processing, 2, T0 + 7 * DAY));
        assert_eq!(
            p.steps,
            vec![Step::Expire, Step::WriteReport, Step::DeleteSource]
        );
        let status = p.status.clone().unwrap();
        assert_eq!(status.phase, Some(BatchPhase::Expired));
        let c = status.counts.unwrap();
        assert_eq!((c.pending, c.failed), (0, 2));
        assert_eq!(reasons(&p), vec!["Expired"]);
        assert_eq!(p.requeue_ms, Some(DAY), "deleted after the TTL");
    }

    #[test]
    fn one_ms_before_the_deadline_it_still_processes() {
        let p = plan(&observed(Phase::Processing, 2, T0 + 7 * DAY - 1));
        assert!(p.steps.is_empty());
        assert_eq!(p.requeue_ms, Some(1));
    }

    #[test]
    fn a_completed_batch_gets_its_report_once_and_keeps_a_source_it_does_not_own() {
        let mut o = observed(Phase::Completed, 0, T0 + 5000);
        o.catalog = Some((record(Phase::Completed, "imports/x.zip"), counts(0)));
        let p = plan(&o);
        assert_eq!(p.steps, vec![Step::WriteReport]);
        assert_eq!(reasons(&p), vec!["Completed"]);
        o.status = p.status.unwrap();
        let again = plan(&o);
        assert!(again.steps.is_empty());
        assert!(again.events.is_empty(), "events on transitions only");
    }

    #[test]
    fn a_finished_batch_is_deleted_after_its_ttl() {
        let mut o = observed(Phase::Completed, 0, T0 + 1000 + DAY - 1);
        o.status.report_key = Some(report_key("b"));
        let p = plan(&o);
        assert_eq!((p.steps.clone(), p.requeue_ms), (vec![], Some(1)));
        o.now += 1;
        assert_eq!(plan(&o).steps, vec![Step::Delete]);
    }

    #[test]
    fn deleting_cancels_pending_work_and_removes_the_finalizer() {
        let mut o = observed(Phase::Processing, 2, T0 + 10);
        o.deleting = true;
        let p = plan(&o);
        assert_eq!(
            p.steps,
            vec![Step::Cancel, Step::DeleteSource, Step::RemoveFinalizer]
        );
        assert!(p.status.is_none());
        // A finished batch with a user's source: only the finalizer goes.
        let mut done = observed(Phase::Completed, 0, T0 + 10);
        done.catalog = Some((record(Phase::Completed, "imports/x.zip"), counts(0)));
        done.deleting = true;
        assert_eq!(plan(&done).steps, vec![Step::RemoveFinalizer]);
        // Without our finalizer there is nothing to do.
        done.has_finalizer = false;
        assert!(plan(&done).steps.is_empty());
    }

    #[test]
    fn a_stale_status_never_enqueues_a_planned_batch_again() {
        // The catalog says processing; the status read from a stale cache
        // says nothing was enqueued yet.
        let mut o = observed(Phase::Processing, 4, T0 + 10);
        o.status = UploadBatchStatus::default();
        let p = plan(&o);
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert!(p.status.unwrap().enqueued);
    }

    #[test]
    fn a_batch_without_progress_and_an_empty_queue_is_planned_again() {
        let mut o = observed(Phase::Processing, 2, T0 + 1_000_000);
        o.status.counts = Some(BatchCounts {
            total: 4,
            accepted: 2,
            pending: 2,
            ..BatchCounts::default()
        });
        o.status.last_progress_time = Some(to_time(T0));
        // Tasks still queued: it is just waiting its turn.
        assert!(plan(&o).steps.is_empty());
        o.queue_idle = true;
        let p = plan(&o);
        assert_eq!(p.steps, vec![Step::Enqueue]);
        assert_eq!(reasons(&p), vec!["Replanned"]);
        // Progress resets the clock.
        o.status.counts.as_mut().unwrap().pending = 3;
        assert!(plan(&o).steps.is_empty());
    }

    #[test]
    fn a_spec_that_never_became_valid_expires_at_the_deadline_then_goes() {
        let mut o = observed(Phase::Received, 4, T0 + 7 * DAY);
        o.catalog = None;
        o.policy_found = false;
        let p = plan(&o);
        assert!(p.steps.is_empty());
        assert_eq!(p.status.clone().unwrap().phase, Some(BatchPhase::Expired));
        assert_eq!(reasons(&p), vec!["Expired"]);
        assert_eq!(p.requeue_ms, Some(DAY));
        // Before the deadline it waits at most until the deadline.
        o.now = T0 + 7 * DAY - 5;
        assert_eq!(plan(&o).requeue_ms, Some(5));
    }

    #[test]
    fn a_hand_applied_batch_may_not_point_into_the_staging_area() {
        let mut o = observed(Phase::Received, 4, T0 + 10);
        o.catalog = None;
        o.spec.source.key = Some("staging/someone-elses.zip".into());
        o.source = SourceState::Present { bytes: 10 };
        let p = plan(&o);
        assert!(p.steps.is_empty());
        assert_eq!(reasons(&p), vec!["ReservedSource"]);
    }
}
