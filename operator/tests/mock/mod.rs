//! The mock API server and the fixtures the operator's API tests share:
//! a `tower-test` mock that records every call, the real embedded
//! backends, and a context whose clock is fixed.
#![allow(dead_code)] // each test file uses its own part

use http::{Request, Response};
use kube::api::DynamicObject;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use picsift_backends::embedded::{FsBlobStore, MemQueue};
use picsift_backends::sql::{SqlCatalog, SqliteDedup};
use picsift_core::backend::{Backends, NewBatch};
use picsift_core::chunk::ChunkLimits;
use picsift_core::model::staging_key;
use picsift_core::time::{Clock, Millis};
use picsift_operator::Context;
use picsift_operator::metrics::Metrics;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// One request the mock API server received.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

impl Call {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

pub type Answer = Box<dyn Fn(&Call) -> (u16, Value) + Send + Sync>;

/// A kube client whose API server is `answer`; every call is recorded.
pub fn mock_client(answer: Answer) -> (kube::Client, Arc<Mutex<Vec<Call>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let call = Call {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, reply) = answer(&call);
            seen.lock().unwrap().push(call);
            let resp = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
    });
    (kube::Client::new(service, "picsift"), calls)
}

/// A List answer.
pub fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

pub fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

pub fn policy(name: &str) -> Value {
    json!({
        "apiVersion": "picsift.io/v1alpha1", "kind": "ValidationPolicy",
        "metadata": {"name": name, "namespace": "picsift", "uid": "vp-uid"},
        "spec": {"formats": ["jpeg"], "limits": {"maxEntries": 100}}
    })
}

/// Answers like an API server holding `object` (the UploadBatch or
/// WorkerPool under test) and, when `with_policy`, the default policy.
pub fn server(object: Value, with_policy: bool) -> Answer {
    Box::new(move |call: &Call| {
        let path = call.path();
        if path.contains("/validationpolicies/") {
            return if with_policy {
                (200, policy("default"))
            } else {
                not_found()
            };
        }
        if path.ends_with("/events") {
            return (201, call.body.clone());
        }
        if path.ends_with("/jobs") || path.ends_with("/pods") {
            return (
                200,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
            );
        }
        if path.contains("/jobs/") {
            return (200, call.body.clone());
        }
        if path.ends_with("/workerpools") {
            let items = if object["kind"] == "WorkerPool" {
                vec![object.clone()]
            } else {
                Vec::new()
            };
            return (200, list(items));
        }
        (200, object.clone())
    })
}

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub backends: Backends,
}

pub async fn backends() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(
        SqlCatalog::open_sqlite(&dir.path().join("c.db"))
            .await
            .unwrap(),
    );
    let backends = Backends {
        blobs: Arc::new(FsBlobStore::open(dir.path().join("blobs")).await.unwrap()),
        uploads: catalog.clone(),
        catalog: catalog.clone(),
        dedup: Arc::new(SqliteDedup::of(&catalog).expect("a SQLite catalog")),
        queue: Arc::new(MemQueue::new()),
    };
    Fixture {
        _dir: dir,
        backends,
    }
}

/// When the fixtures' UploadBatches were created (their `creationTimestamp`).
pub const CREATED: &str = "2026-11-26T10:00:00Z";
/// The time the tests run the controllers at: ten seconds after [`CREATED`],
/// whatever the calendar says.
pub fn created_ms() -> Millis {
    picsift_core::time::parse_rfc3339(CREATED).unwrap()
}
pub const DAY_MS: Millis = 86_400_000;

pub fn context(client: kube::Client, backends: Backends) -> Arc<Context> {
    context_at(client, backends, created_ms() + 10_000)
}

pub fn context_at(client: kube::Client, backends: Backends, now: Millis) -> Arc<Context> {
    Arc::new(Context {
        client: client.clone(),
        backends,
        chunk_limits: ChunkLimits {
            max_entries: 2,
            max_bytes: 1 << 30,
        },
        namespace: "picsift".into(),
        ttl_ms: 3_600_000,
        stall_ms: 600_000,
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "picsift-operator".into(),
                instance: None,
            },
        ),
        metrics: Arc::new(Metrics::default()),
        clock: Clock::fixed(now),
        retries: Default::default(),
    })
}

pub fn zip_of(n: u32) -> Vec<u8> {
    let mut z = picsift_tests::ZipBuilder::new();
    for i in 0..n {
        z = z.stored(
            &format!("img{i}.jpg"),
            &picsift_tests::jpeg(u64::from(i), 64, 48),
        );
    }
    z.finish()
}

pub fn upload_batch(name: &str, spec: Value, extra_meta: Value) -> Value {
    let mut meta = json!({
        "name": name, "namespace": "picsift", "uid": format!("uid-{name}"),
        "generation": 1, "creationTimestamp": CREATED
    });
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    json!({"apiVersion": "picsift.io/v1alpha1", "kind": "UploadBatch", "metadata": meta, "spec": spec})
}

pub fn dynamic(v: &Value) -> Arc<DynamicObject> {
    Arc::new(serde_json::from_value(v.clone()).unwrap())
}

pub fn find<'a>(calls: &'a [Call], method: &str, path_end: &str) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| c.method == method && c.path().ends_with(path_end))
        .collect()
}

pub const UB_PATH: &str = "/apis/picsift.io/v1alpha1/namespaces/picsift/uploadbatches";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/picsift/events";

pub fn assert_applied_by_operator(call: &Call) {
    assert!(
        call.uri.contains("fieldManager=picsift-operator") && call.uri.contains("force=true"),
        "not a forced server-side apply by picsift-operator: {}",
        call.uri
    );
    assert_eq!(call.content_type, "application/apply-patch+yaml");
}

/// A batch recorded `received` at [`created_ms`], its upload of `entries`
/// staged, not planned (what a gateway leaves if it dies right then).
pub async fn recorded_batch(f: &Fixture, id: &str, entries: u32) {
    let key = staging_key(id);
    f.backends
        .blobs
        .put(&key, zip_of(entries).into())
        .await
        .unwrap();
    f.backends
        .catalog
        .create_batch(&NewBatch {
            owner: "default".into(),
            id: id.into(),
            staged_key: key,
            upload_bytes: 1,
            total_entries: u64::from(entries),
            callback_url: None,
            now: created_ms(),
        })
        .await
        .unwrap();
}

/// [`recorded_batch`], then planned: its entries recorded and queued, none
/// decided yet.
pub async fn received_batch(f: &Fixture, id: &str, entries: u32) {
    recorded_batch(f, id, entries).await;
    picsift_core::intake::enqueue_batch(&f.backends, &Default::default(), id)
        .await
        .unwrap();
}
