//! The WorkerPool controller's API calls against the mock API server:
//! scaling on the pool's share of the backlog, backing off while its
//! workers fail, and per-object error backoff.

mod mock;

use kube::runtime::controller::Action;
use mock::*;
use picsift_core::chunk::ChunkTask;
use picsift_operator::pool;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

async fn queue_tasks(f: &Fixture, n: u32) {
    for i in 0..n {
        f.backends
            .queue
            .enqueue(ChunkTask {
                owner: "default".into(),
                replanned: false,
                batch_id: format!("b{i}"),
                entries: vec![0],
                policy: None,
            })
            .await
            .unwrap();
    }
}

fn gpu_pool() -> Value {
    json!({
        "apiVersion": "picsift.io/v1alpha1", "kind": "WorkerPool",
        "metadata": {"name": "gpu", "uid": "pool-uid", "generation": 2},
        "spec": {"minWorkers": 0, "maxWorkers": 10, "targetBacklogPerWorker": 4,
                 "idleTimeoutSeconds": 60, "image": "ghcr.io/picsift/picsift:1",
                 "gpu": {"resourceName": "nvidia.com/gpu", "count": 1},
                 "kueueQueueName": "gpu-queue"}
    })
}

fn created_jobs(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| {
            c.method == "PATCH" && c.path().contains("/apis/batch/v1/namespaces/picsift/jobs/")
        })
        .map(|c| c.path().rsplit('/').next().unwrap().to_string())
        .collect()
}

fn status_of(calls: &[Call]) -> Value {
    let status = find(
        calls,
        "PATCH",
        "/apis/picsift.io/v1alpha1/workerpools/gpu/status",
    );
    assert_eq!(status.len(), 1);
    status[0].body["status"].clone()
}

#[tokio::test]
async fn the_worker_pool_creates_jobs_for_the_backlog_and_reports_status() {
    let f = backends().await;
    queue_tasks(&f, 9).await;
    let pool_obj = gpu_pool();
    let (client, calls) = mock_client(server(pool_obj.clone(), true));
    let pool: picsift_crds::WorkerPool = serde_json::from_value(pool_obj).unwrap();
    let action = pool::reconcile(Arc::new(pool), context(client, f.backends.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(pool::INTERVAL));
    let calls = calls.lock().unwrap().clone();
    let lists: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "GET" && !c.path().ends_with("/workerpools"))
        .collect();
    assert_eq!(lists.len(), 2);
    assert!(
        lists
            .iter()
            .all(|c| c.uri.contains("labelSelector=picsift.io%2Fpool%3Dgpu"))
    );
    let jobs: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            c.method == "PATCH" && c.path().contains("/apis/batch/v1/namespaces/picsift/jobs/")
        })
        .collect();
    let names: Vec<&str> = jobs
        .iter()
        .map(|c| c.path().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["gpu-worker-0", "gpu-worker-1", "gpu-worker-2"]);
    for job in &jobs {
        assert_applied_by_operator(job);
        assert_eq!(
            job.body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"],
            "gpu-queue"
        );
        assert_eq!(
            job.body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            "1"
        );
    }
    let status = find(
        &calls,
        "PATCH",
        "/apis/picsift.io/v1alpha1/workerpools/gpu/status",
    );
    assert_eq!(status.len(), 1);
    assert_applied_by_operator(status[0]);
    let st = &status[0].body["status"];
    assert_eq!(
        [
            &st["desired"],
            &st["running"],
            &st["pending"],
            &st["backlog"],
            &st["observedGeneration"]
        ],
        [&json!(3), &json!(0), &json!(3), &json!(9), &json!(2)]
    );
    assert!(st.get("consecutiveFailures").is_none(), "{st}");
    assert_eq!(st["conditions"][0]["type"], "WorkersHealthy");
    assert_eq!(st["conditions"][0]["status"], "True");
}

#[tokio::test]
async fn two_pools_scale_on_their_own_share_of_the_backlog() {
    let f = backends().await;
    queue_tasks(&f, 9).await;
    let gpu = gpu_pool();
    let mut cpu = gpu_pool();
    cpu["metadata"]["name"] = json!("cpu");
    let others = vec![gpu.clone(), cpu];
    let base = server(gpu.clone(), true);
    let (client, calls) = mock_client(Box::new(move |call: &Call| {
        if call.path().ends_with("/workerpools") {
            return (200, list(others.clone()));
        }
        base(call)
    }));
    let pool: picsift_crds::WorkerPool = serde_json::from_value(gpu).unwrap();
    pool::reconcile(Arc::new(pool), context(client, f.backends.clone()))
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    // Nine tasks, two pools of ten: "cpu" takes five, "gpu" four, one
    // worker's worth (alone it would have started three).
    assert_eq!(created_jobs(&calls), ["gpu-worker-0"]);
    let st = status_of(&calls);
    assert_eq!((&st["backlog"], &st["desired"]), (&json!(4), &json!(1)));
}

/// A worker Job of pool "gpu" in `slot` that failed at `at`.
fn failed_job(slot: u32, at: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": format!("gpu-worker-{slot}"), "namespace": "picsift",
                     "labels": {"picsift.io/pool": "gpu", "picsift.io/slot": slot.to_string()}},
        "status": {"failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "lastTransitionTime": at}]}
    })
}

#[tokio::test]
async fn a_pool_whose_workers_fail_backs_off_keeps_the_failed_job_and_says_so() {
    let f = backends().await;
    queue_tasks(&f, 9).await;
    // "Now" is CREATED + 10 s; the worker failed 5 s before.
    let failed_at = "2026-11-26T10:00:05Z";
    let answer = move || -> Answer {
        let jobs = vec![failed_job(0, failed_at)];
        let base = server(gpu_pool(), true);
        Box::new(move |call: &Call| {
            if call.method == "GET" && call.path().ends_with("/jobs") {
                return (200, list(jobs.clone()));
            }
            base(call)
        })
    };
    let (client, calls) = mock_client(answer());
    let mut pool: picsift_crds::WorkerPool = serde_json::from_value(gpu_pool()).unwrap();
    pool::reconcile(Arc::new(pool.clone()), context(client, f.backends.clone()))
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    // Nothing created, and the failed Job is not deleted (its logs stay).
    assert!(created_jobs(&calls).is_empty());
    assert!(calls.iter().all(|c| c.method != "DELETE"), "{calls:?}");
    let st = status_of(&calls);
    assert_eq!(st["consecutiveFailures"], 1);
    assert_eq!(st["lastFailureTime"], failed_at);
    assert_eq!(st["conditions"][0]["type"], "WorkersHealthy");
    assert_eq!(st["conditions"][0]["status"], "False");
    assert_eq!(st["conditions"][0]["reason"], "BackOff");
    let events = find(&calls, "POST", "/events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body["type"], "Warning");
    assert_eq!(events[0].body["reason"], "WorkerFailed");
    assert!(
        events[0].body["note"]
            .as_str()
            .unwrap()
            .contains("kubectl logs job/gpu-worker-0")
    );

    // With that status, 10 s after the failure: the same failure is not
    // counted again, the failed Job goes and a new worker starts.
    pool.status = Some(serde_json::from_value(st).unwrap());
    let (client, calls) = mock_client(answer());
    let later = created_ms() + 15_000;
    pool::reconcile(
        Arc::new(pool),
        context_at(client, f.backends.clone(), later),
    )
    .await
    .unwrap();
    let calls = calls.lock().unwrap().clone();
    let st = status_of(&calls);
    assert_eq!(st["consecutiveFailures"], 1);
    assert_eq!(st["conditions"][0]["reason"], "Retrying");
    assert!(find(&calls, "POST", "/events").is_empty());
    let deleted = find(&calls, "DELETE", "/jobs/gpu-worker-0");
    assert_eq!(deleted.len(), 1);
    // Slot 0 is still taken this round; three new workers start beside it.
    assert_eq!(
        created_jobs(&calls),
        ["gpu-worker-1", "gpu-worker-2", "gpu-worker-3"]
    );
}

#[tokio::test]
async fn reconcile_errors_back_off_per_pool() {
    let f = backends().await;
    let (client, _calls) = mock_client(Box::new(|_: &Call| (500, json!({}))));
    let ctx = context(client, f.backends.clone());
    let pool: Arc<picsift_crds::WorkerPool> = Arc::new(serde_json::from_value(gpu_pool()).unwrap());
    let mut waits = Vec::new();
    for _ in 0..3 {
        let err = pool::reconcile(pool.clone(), ctx.clone())
            .await
            .unwrap_err();
        waits.push(pool::error_policy(pool.clone(), &err, ctx.clone()));
    }
    assert_eq!(
        waits,
        [5, 10, 20].map(|s| Action::requeue(Duration::from_secs(s)))
    );
}
