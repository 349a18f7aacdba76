//! The operator's and the gateway's Kubernetes API calls, against a
//! `tower-test` mock of the API server (there is no API server here),
//! with the real embedded backends (files, SQLite, in-process queue).
//! Each test checks method, path, field manager and body.

mod mock;

use kube::runtime::controller::Action;
use mock::*;
use picsift_core::backend::{NewBatch, Scheduler};
use picsift_core::model::{Phase, staging_key};
use picsift_gateway::KubeScheduler;
use picsift_operator::controller;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_batch_applied_by_hand_is_planned_once_with_finalizer_status_and_event() {
    let f = backends().await;
    f.backends
        .blobs
        .put("imports/five.zip", zip_of(5).into())
        .await
        .unwrap();
    let ub = upload_batch(
        "five",
        json!({"source": {"key": "imports/five.zip"}}),
        json!({}),
    );
    let (client, calls) = mock_client(server(ub.clone(), true));
    let ctx = context(client, f.backends.clone());

    let action = controller::reconcile(dynamic(&ub), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    let calls = calls.lock().unwrap().clone();

    let get = find(&calls, "GET", "/validationpolicies/default");
    assert_eq!(get.len(), 1);
    let fin = find(&calls, "PATCH", &format!("{UB_PATH}/five"));
    assert_eq!(fin.len(), 1, "{calls:#?}");
    assert_applied_by_operator(fin[0]);
    assert_eq!(
        fin[0].body["metadata"]["finalizers"],
        json!(["picsift.io/cleanup"])
    );
    let status = find(&calls, "PATCH", &format!("{UB_PATH}/five/status"));
    assert_eq!(status.len(), 1);
    assert_applied_by_operator(status[0]);
    let s = &status[0].body["status"];
    assert_eq!(s["phase"], "Processing");
    assert_eq!(s["batchId"], "uid-five");
    assert_eq!(s["enqueued"], true);
    assert_eq!(s["observedGeneration"], 1);
    let ready = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Accepted"))
    );
    let events = find(&calls, "POST", EVENTS);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body["reason"], "Planned");
    assert_eq!(events[0].body["type"], "Normal");
    assert_eq!(events[0].body["regarding"]["name"], "five");

    // The catalog has the batch, and 5 entries in chunks of 2 are queued
    // with the ValidationPolicy's limits.
    let batch = f.backends.catalog.batch("uid-five").await.unwrap().unwrap();
    assert_eq!((batch.phase, batch.total_entries), (Phase::Processing, 5));
    assert_eq!(f.backends.queue.backlog().await.unwrap(), 3);
    let lease = f.backends.queue.dequeue(10).await.unwrap().unwrap();
    assert_eq!(lease.task.policy.as_ref().map(|p| p.max_entries), Some(100));
    f.backends.queue.release(&lease).await.unwrap();

    // Reconciling again with that status (as the API server now has it)
    // enqueues nothing and emits no event.
    let mut again = ub.clone();
    again["metadata"]["finalizers"] = json!(["picsift.io/cleanup"]);
    again["status"] = s.clone();
    let (client, calls2) = mock_client(server(again.clone(), true));
    let ctx2 = context(client, f.backends.clone());
    controller::reconcile(dynamic(&again), ctx2).await.unwrap();
    assert_eq!(
        f.backends.queue.backlog().await.unwrap(),
        3,
        "enqueued twice"
    );
    let calls2 = calls2.lock().unwrap().clone();
    assert!(find(&calls2, "POST", EVENTS).is_empty());
    assert!(find(&calls2, "PATCH", &format!("{UB_PATH}/five")).is_empty());
}

#[tokio::test]
async fn an_unknown_policy_sets_a_condition_and_a_warning_and_waits() {
    let f = backends().await;
    f.backends
        .blobs
        .put("imports/a.zip", zip_of(1).into())
        .await
        .unwrap();
    let ub = upload_batch(
        "nopolicy",
        json!({"source": {"key": "imports/a.zip"}, "policyRef": {"name": "missing"}}),
        json!({"finalizers": ["picsift.io/cleanup"]}),
    );
    let (client, calls) = mock_client(server(ub.clone(), false));
    let action = controller::reconcile(dynamic(&ub), context(client, f.backends.clone()))
        .await
        .unwrap();
    // No hot loop: a change to the policy wakes it (the controller watches
    // policies), else an hour.
    assert_eq!(action, Action::requeue(Duration::from_secs(3600)));
    let calls = calls.lock().unwrap().clone();
    let status = &find(&calls, "PATCH", "/uploadbatches/nopolicy/status")[0].body["status"];
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["conditions"][0]["reason"], "PolicyNotFound");
    let events = find(&calls, "POST", EVENTS);
    assert_eq!(events[0].body["type"], "Warning");
    assert_eq!(events[0].body["reason"], "PolicyNotFound");
    assert!(
        f.backends
            .catalog
            .batch("uid-nopolicy")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_malformed_object_gets_a_warning_not_a_stuck_controller() {
    let f = backends().await;
    // No source at all: not an UploadBatch this operator can read.
    let ub = upload_batch("broken", json!({"owner": 7}), json!({}));
    let (client, calls) = mock_client(server(ub.clone(), true));
    let action = controller::reconcile(dynamic(&ub), context(client, f.backends.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].body["reason"], "Malformed");
    assert_eq!(calls[0].body["type"], "Warning");
}

#[tokio::test]
async fn a_malformed_object_being_deleted_loses_the_finalizer() {
    let f = backends().await;
    let ub = upload_batch(
        "broken",
        json!({"owner": 7}),
        json!({"finalizers": ["picsift.io/cleanup"], "deletionTimestamp": "2026-11-26T11:00:00Z"}),
    );
    let (client, calls) = mock_client(server(ub.clone(), true));
    controller::reconcile(dynamic(&ub), context(client, f.backends.clone()))
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].method, "PATCH");
    assert_applied_by_operator(&calls[0]);
    assert_eq!(calls[0].body["metadata"]["finalizers"], json!([]));
}

#[tokio::test]
async fn past_its_deadline_a_batch_expires_with_a_report_and_no_staged_upload() {
    let f = backends().await;
    received_batch(&f, "late", 3).await;
    let ub = upload_batch(
        "late",
        json!({"source": {"key": staging_key("late")}, "deadlineSeconds": 60}),
        json!({"finalizers": ["picsift.io/cleanup"], "annotations": {"picsift.io/batch-id": "late"},
               "creationTimestamp": "2020-01-01T00:00:00Z"}),
    );
    let (client, calls) = mock_client(server(ub.clone(), true));
    controller::reconcile(dynamic(&ub), context(client, f.backends.clone()))
        .await
        .unwrap();
    let batch = f.backends.catalog.batch("late").await.unwrap().unwrap();
    assert_eq!(batch.phase, Phase::Expired);
    let report = f.backends.catalog.report("late", None, 10).await.unwrap();
    assert_eq!(report.len(), 3);
    assert!(
        report
            .iter()
            .all(|e| serde_json::to_value(e).unwrap()["reason"] == "deadline_exceeded")
    );
    let stored = f.backends.blobs.size("reports/late.ndjson").await.unwrap();
    assert!(
        stored.is_some_and(|n| n > 0),
        "report written to the bucket"
    );
    assert_eq!(
        f.backends.blobs.size(&staging_key("late")).await.unwrap(),
        None
    );
    let calls = calls.lock().unwrap().clone();
    let status = &find(&calls, "PATCH", "/uploadbatches/late/status")[0].body["status"];
    assert_eq!(status["phase"], "Expired");
    assert_eq!(status["reportKey"], "reports/late.ndjson");
    assert_eq!(find(&calls, "POST", EVENTS)[0].body["reason"], "Expired");
}

/// The deadline (default and most: 7 days after creation) is read from the
/// clock the controller is given: a millisecond before it the batch goes on,
/// at it the batch expires.
#[tokio::test]
async fn the_deadline_is_taken_from_the_injected_clock() {
    let deadline = created_ms() + 7 * DAY_MS;
    for (now, phase, expired) in [
        (deadline - 1, "Processing", false),
        (deadline, "Expired", true),
    ] {
        let f = backends().await;
        received_batch(&f, "week", 2).await;
        let ub = upload_batch(
            "week",
            json!({"source": {"key": staging_key("week")}}),
            json!({"finalizers": ["picsift.io/cleanup"], "annotations": {"picsift.io/batch-id": "week"}}),
        );
        let (client, calls) = mock_client(server(ub.clone(), true));
        controller::reconcile(dynamic(&ub), context_at(client, f.backends.clone(), now))
            .await
            .unwrap();
        let calls = calls.lock().unwrap().clone();
        let status = &find(&calls, "PATCH", "/uploadbatches/week/status")[0].body["status"];
        assert_eq!(
            status["phase"],
            phase,
            "at deadline {:+} ms",
            now - deadline
        );
        let batch = f.backends.catalog.batch("week").await.unwrap().unwrap();
        assert_eq!(batch.phase == Phase::Expired, expired);
        let counts = f.backends.catalog.counts("week").await.unwrap();
        assert_eq!(counts.failed, if expired { 2 } else { 0 });
    }
}

#[tokio::test]
async fn deleting_a_batch_cancels_its_work_deletes_the_staged_upload_and_drops_the_finalizer() {
    let f = backends().await;
    received_batch(&f, "gone", 2).await;
    let ub = upload_batch(
        "gone",
        json!({"source": {"key": staging_key("gone")}}),
        json!({"finalizers": ["picsift.io/cleanup"], "annotations": {"picsift.io/batch-id": "gone"},
               "deletionTimestamp": "2026-11-26T11:00:00Z"}),
    );
    let (client, calls) = mock_client(server(ub.clone(), true));
    controller::reconcile(dynamic(&ub), context(client, f.backends.clone()))
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    let patch = find(&calls, "PATCH", "/uploadbatches/gone");
    assert_eq!(patch.len(), 1);
    assert_applied_by_operator(patch[0]);
    assert_eq!(patch[0].body["metadata"]["finalizers"], json!([]));
    assert!(find(&calls, "PATCH", "/uploadbatches/gone/status").is_empty());
    assert_eq!(
        f.backends.blobs.size(&staging_key("gone")).await.unwrap(),
        None
    );
    let batch = f.backends.catalog.batch("gone").await.unwrap().unwrap();
    assert_eq!(batch.phase, Phase::Failed);
    assert_eq!(f.backends.catalog.counts("gone").await.unwrap().failed, 2);
}

#[tokio::test]
async fn a_finished_batch_past_its_ttl_is_deleted() {
    let f = backends().await;
    received_batch(&f, "old", 1).await;
    f.backends
        .catalog
        .fail_batch("old", "broken", created_ms() - 2 * 3_600_000)
        .await
        .unwrap();
    let ub = upload_batch(
        "old",
        json!({"source": {"key": staging_key("old")}}),
        json!({"finalizers": ["picsift.io/cleanup"], "annotations": {"picsift.io/batch-id": "old"}}),
    );
    let (client, calls) = mock_client(server(ub.clone(), true));
    controller::reconcile(dynamic(&ub), context(client, f.backends.clone()))
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    let delete = find(&calls, "DELETE", &format!("{UB_PATH}/old"));
    assert_eq!(delete.len(), 1, "{calls:#?}");
    assert_eq!(delete[0].body["propagationPolicy"], "Background");
    // The record stays in the catalog.
    assert!(f.backends.catalog.batch("old").await.unwrap().is_some());
}

#[tokio::test]
async fn the_gateway_creates_an_upload_batch_named_for_the_batch() {
    let (client, calls) = mock_client(Box::new(|call: &Call| match call.method.as_str() {
        "POST" => (201, call.body.clone()),
        _ => (200, policy("default")),
    }));
    let scheduler = KubeScheduler::new(client, "picsift", "default");
    let policy = scheduler.policy(None).await.unwrap().unwrap();
    assert_eq!(policy.max_entries, 100);
    let batch = NewBatch {
        owner: "default".into(),
        id: "0190f0e0-0000-7000-8000-000000000001".into(),
        staged_key: staging_key("0190f0e0-0000-7000-8000-000000000001"),
        upload_bytes: 10,
        total_entries: 2,
        callback_url: Some("https://hooks.example.com/x".into()),
        now: 0,
    };
    scheduler.submit(&batch, None).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls[0].path(),
        "/apis/picsift.io/v1alpha1/namespaces/picsift/validationpolicies/default"
    );
    let post = &calls[1];
    assert_eq!((post.method.as_str(), post.path()), ("POST", UB_PATH));
    assert!(post.uri.contains("fieldManager=picsift-gateway"));
    assert_eq!(post.body["metadata"]["name"], batch.id);
    assert_eq!(
        post.body["metadata"]["annotations"]["picsift.io/batch-id"],
        batch.id
    );
    assert_eq!(
        post.body["spec"]["source"],
        json!({"key": batch.staged_key})
    );
    assert_eq!(post.body["spec"]["policyRef"]["name"], "default");
    assert_eq!(
        post.body["spec"]["notification"]["url"],
        "https://hooks.example.com/x"
    );
}

#[tokio::test]
async fn the_gateway_reports_an_unknown_policy_as_none() {
    let (client, _calls) = mock_client(Box::new(|_: &Call| not_found()));
    let scheduler = KubeScheduler::new(client, "picsift", "default");
    assert!(scheduler.policy(Some("nope")).await.unwrap().is_none());
}

/// The operator's half of a prefix batch: recorded with the prefix as its
/// source and every object under it enqueued as an entry. The worker's half
/// (each object checked, nothing deleted) is `worker/tests/prefix_batch.rs`.
#[tokio::test]
async fn a_prefix_batch_enqueues_every_object_under_it_and_deletes_none() {
    let f = backends().await;
    let blobs = &f.backends.blobs;
    for (name, bytes) in [
        ("a.jpg", picsift_tests::jpeg(1, 64, 48)),
        ("b.jpg", picsift_tests::jpeg(2, 64, 48)),
        ("c.jpg", picsift_tests::jpeg(1, 64, 48)),
        ("notes.txt", b"not an image".to_vec()),
    ] {
        blobs
            .put(&format!("imports/scan/{name}"), bytes.into())
            .await
            .unwrap();
    }
    let ub = upload_batch(
        "scan",
        json!({"source": {"prefix": "imports/scan/"}}),
        json!({}),
    );
    let (client, _calls) = mock_client(server(ub.clone(), true));
    controller::reconcile(dynamic(&ub), context(client, f.backends.clone()))
        .await
        .unwrap();
    let batch = f.backends.catalog.batch("uid-scan").await.unwrap().unwrap();
    assert_eq!(
        (batch.phase, batch.total_entries, batch.staged_key.as_str()),
        (Phase::Processing, 4, "imports/scan/")
    );
    let mut queued = Vec::new();
    while let Some(lease) = f.backends.queue.dequeue(10).await.unwrap() {
        queued.extend(lease.task.entries.iter().copied());
        f.backends.queue.ack(&lease).await.unwrap();
    }
    assert_eq!(queued, [0, 1, 2, 3]);
    assert_eq!(
        blobs.list("imports/scan/").await.unwrap().len(),
        4,
        "the user's objects stay"
    );
}
