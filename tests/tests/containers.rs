//! The product run from its container images, the way an admin runs it:
//! `picsift/gateway` and `picsift/worker` containers (read-only root, the
//! image's non-root user, no capabilities, the environment the Helm chart
//! gives them, host networking) against real Garage, PostgreSQL and Redis
//! on loopback; the `picsift/operator` image with no reachable API server;
//! the standalone `picsift/picsift` image.
//!
//! The images come from `scripts/images.sh` and run under podman (or the
//! engine in `PICSIFT_CONTAINER_ENGINE`), so a plain `cargo test` skips
//! these tests; `scripts/test.sh` (CI) builds the images after the other
//! tests and then runs them:
//!
//! ```sh
//! ./scripts/images.sh --profile dev && source scripts/container-env.sh
//! cargo test --workspace --test containers -- --ignored
//! ```
//!
//! Missing images or a missing engine fail the tests, saying what to run.

mod common;

use common::{client_with, sha256_hex};
use picsift_backends::cluster::{RedisDedup, S3BlobStore, S3Config};
use picsift_core::backend::{BlobStore, DedupIndex};
use picsift_tests::services::garage::{self, Garage};
use picsift_tests::services::postgres::Postgres;
use picsift_tests::services::redis::RedisServer;
use picsift_tests::services::{free_port, wait_for_port};
use picsift_tests::{ZipBuilder, jpeg, truncated};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The tag scripts/images.sh gives every image: the workspace version.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The gateway's bootstrap admin key (`PICSIFT_ADMIN_KEY`, as the chart's
/// `auth.existingSecret` gives it).
const ADMIN_KEY: &str = "psk_0123456789abcdef_bootstrapKeyForTheClusterTests-0123456789ab";

fn engine() -> String {
    std::env::var("PICSIFT_CONTAINER_ENGINE").unwrap_or_else(|_| "podman".into())
}

fn container_cmd(args: &[&str]) -> Output {
    Command::new(engine())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (install podman: scripts/setup.sh --tests)",
                engine()
            )
        })
}

fn container_ok(args: &[&str]) -> String {
    let out = container_cmd(args);
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        engine(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `picsift/<role>:<version>`, which must have been built.
fn image(role: &str) -> String {
    let image = format!("picsift/{role}:{VERSION}");
    let out = container_cmd(&["image", "inspect", &image]);
    assert!(
        out.status.success(),
        "image {image} is missing: run scripts/images.sh first (scripts/test.sh does)"
    );
    image
}

/// tests/data/containers.json: how the chart runs each role's container.
fn contract() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/containers.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A running container, removed when dropped (its logs printed first if
/// the test is failing).
struct Container {
    name: String,
}

impl Container {
    /// `engine run -d` of `image` for `role` as the chart runs it: the
    /// image's user, a read-only root with the role's writable paths as
    /// tmpfs, no capabilities, no privilege escalation, host networking.
    fn start(role: &str, image: &str, env: &[(String, String)], extra: &[&str]) -> Container {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "picsift-test-{role}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let c = contract();
        let spec = &c["roles"][role];
        let user = format!("{}:{}", c["user"], c["group"]);
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            name.as_str(),
            "--network=host",
            "--read-only",
            "--user",
            user.as_str(),
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for path in spec["writable"].as_array().unwrap() {
            args.push("--tmpfs".into());
            args.push(format!("{}:rw,mode=1777,size=512m", path.as_str().unwrap()));
        }
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(image.into());
        for a in spec["args"].as_array().unwrap() {
            args.push(a.as_str().unwrap().into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        container_ok(&args);
        Container { name }
    }

    fn logs(&self) -> String {
        let out = container_cmd(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn running(&self) -> bool {
        container_ok(&["inspect", "--format", "{{.State.Running}}", &self.name]).trim() == "true"
    }

    /// Waits for `text` in the logs.
    fn wait_log(&self, text: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.logs().contains(text) {
            assert!(
                self.running(),
                "{} exited before logging {text:?}:\n{}",
                self.name,
                self.logs()
            );
            assert!(
                start.elapsed() < timeout,
                "{} did not log {text:?} within {timeout:?}:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL, as when a node dies under the pod.
    fn kill(&self) {
        container_ok(&["kill", "--signal", "KILL", &self.name]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- logs of {} ---\n{}", self.name, self.logs());
        }
        let _ = container_cmd(&["rm", "-f", "-t", "0", &self.name]);
    }
}

/// Garage, PostgreSQL and Redis on loopback, and the environment the chart
/// gives every cluster container (its ConfigMap and Secrets).
struct Services {
    _garage: Garage,
    _postgres: Postgres,
    redis: RedisServer,
    s3: S3Config,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Services {
    fn start() -> Services {
        let garage = Garage::start();
        let bucket = garage.bucket("picsift");
        let postgres = Postgres::start();
        let redis = RedisServer::start();
        let s3 = S3Config {
            endpoint: garage.endpoint.clone(),
            region: garage::REGION.into(),
            bucket: bucket.clone(),
            access_key_id: garage::ACCESS_KEY.into(),
            secret_access_key: garage::SECRET_KEY.into(),
            ..S3Config::default()
        };
        let env = [
            // The chart's ConfigMap (templates/configmap.yaml), but for
            // PICSIFT_KUBERNETES_ENABLED: without an API server the gateway
            // plans batches into the queue itself instead of creating
            // UploadBatches.
            ("PICSIFT_LOG", "info"),
            ("PICSIFT_S3_ENDPOINT", garage.endpoint.as_str()),
            ("PICSIFT_S3_REGION", garage::REGION),
            ("PICSIFT_S3_BUCKET", bucket.as_str()),
            ("PICSIFT_S3_PATH_STYLE", "true"),
            ("PICSIFT_REDIS_PREFIX", "picsift:"),
            // Its Secrets (templates/_helpers.tpl, picsift.secretEnv).
            ("PICSIFT_REDIS_URL", redis.url.as_str()),
            ("PICSIFT_POSTGRES_URL", postgres.url.as_str()),
            ("PICSIFT_S3_ACCESS_KEY_ID", garage::ACCESS_KEY),
            ("PICSIFT_S3_SECRET_ACCESS_KEY", garage::SECRET_KEY),
            ("PICSIFT_WEBHOOK_SECRET", "whsec_dGVzdA=="),
            // extraConfig: small chunks and short timeouts, so a killed
            // worker's chunk comes back within seconds.
            ("PICSIFT_REDIS_VISIBILITY_TIMEOUT_MS", "3000"),
            ("PICSIFT_WORKER_LEASE_MS", "5000"),
            ("PICSIFT_WORKER_CHUNK_ENTRIES", "2"),
            ("PICSIFT_WORKER_CONCURRENCY", "1"),
            ("PICSIFT_WORKER_MAX_DELIVERIES", "30"),
            ("PICSIFT_POSTGRES_MAX_CONNECTIONS", "4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let dir = tempfile::tempdir().unwrap();
        Services {
            _garage: garage,
            _postgres: postgres,
            redis,
            s3,
            env,
            dir,
        }
    }

    fn env_with(&self, more: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// A file the containers may read, for `-v PATH:...:ro`.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// A worker as its Job's pod runs it (operator/src/jobs.rs).
    fn worker(&self) -> Container {
        let w = Container::start(
            "worker",
            &image("worker"),
            &self.env_with(&[
                ("PICSIFT_KUBERNETES_ENABLED", "true"),
                ("PICSIFT_WORKER_IDLE_TIMEOUT_SECS", "0"),
                ("HOSTNAME", "picsift-worker-0-test"),
            ]),
            &[],
        );
        w.wait_log("started", Duration::from_secs(60));
        w
    }
}

async fn get_json(url: &str) -> Value {
    client_with(ADMIN_KEY)
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn upload(base: &str, zip: Vec<u8>) -> String {
    let r = client_with(ADMIN_KEY)
        .post(format!("{base}/v1/batches"))
        .header("content-type", "application/zip")
        .body(zip)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn wait_done(base: &str, id: &str, timeout: Duration) -> Value {
    let start = Instant::now();
    loop {
        let s = get_json(&format!("{base}/v1/batches/{id}")).await;
        if ["completed", "failed", "expired"].contains(&s["phase"].as_str().unwrap_or("")) {
            return s;
        }
        assert!(start.elapsed() < timeout, "batch {id} not done: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn report(base: &str, id: &str) -> BTreeMap<String, Value> {
    let text = client_with(ADMIN_KEY)
        .get(format!("{base}/v1/batches/{id}/report"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|l| (l["entry"].as_str().unwrap().to_string(), l))
        .collect()
}

async fn download(base: &str, id: &str) -> Vec<u8> {
    let r = client_with(ADMIN_KEY)
        .get(format!("{base}/v1/images/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET /v1/images/{id}");
    r.bytes().await.unwrap().to_vec()
}

fn corpus() -> PathBuf {
    picsift_tests::ml::corpus_dir()
}

/// Real photos from the PDQ reference corpus, none a near duplicate of
/// another: the labelme subset and the bridge of bridge-mods/.
fn real_photos() -> Vec<(String, Vec<u8>)> {
    let mut files = picsift_tests::ml::labelme_photos();
    files.push(corpus().join("bridge-mods/aaa-orig.jpg"));
    files
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(p).unwrap(),
            )
        })
        .collect()
}

/// The TorchScript model the policy runs in the worker, from
/// scripts/models.sh: it proves libtorch loads and runs in the image.
fn pattern_model() -> Vec<u8> {
    std::fs::read(picsift_tests::ml::models_dir().join("pattern.pt")).unwrap()
}

const POLICY: &str = r#"# The policy the gateway plans batches with (the ValidationPolicy's part):
# quality checks and the demo "pattern" model, scored and never enforced,
# loaded by the worker from the bucket.
[policy]
formats = ["jpeg"]
[[policy.models]]
name = "pattern"
source = "blob:models/pattern.pt"
width = 64
height = 64
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]
output = "softmax"
labels = ["photo", "pattern"]
reject = []
"#;

/// Gateway and worker containers process real photos; a worker killed in
/// the middle of a batch loses nothing and stores nothing twice; the
/// operator image with no API server says so and reports not ready.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the images: scripts/test.sh builds them (scripts/images.sh --profile dev) and runs this with --ignored"]
async fn the_cluster_runs_from_the_images() {
    // Fail early, before any service starts, when an image is missing.
    let (gateway_image, operator_image) = (image("gateway"), image("operator"));
    image("worker");
    let s = Services::start();
    let store = S3BlobStore::connect(s.s3.clone()).await.unwrap();
    store
        .put("models/pattern.pt", pattern_model().into())
        .await
        .unwrap();

    // The operator, with an API server address that answers nothing. It is
    // started first: it waits on its own while the batches run.
    let api_port = free_port();
    let kubeconfig = s.file(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: gone, cluster: {{server: \"https://127.0.0.1:{api_port}\", insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: picsift, user: {{token: not-a-token}}}}]\n\
             contexts: [{{name: gone, context: {{cluster: gone, user: picsift, namespace: picsift}}}}]\n\
             current-context: gone\n"
        ),
    );
    let metrics_port = free_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let operator = Container::start(
        "operator",
        &operator_image,
        &s.env_with(&[
            ("PICSIFT_KUBERNETES_ENABLED", "true"),
            ("PICSIFT_OPERATOR_METRICS_LISTEN", &metrics_listen),
            ("KUBECONFIG", "/etc/picsift/kubeconfig"),
        ]),
        &[
            "-v",
            &format!("{}:/etc/picsift/kubeconfig:ro", kubeconfig.display()),
        ],
    );

    // The gateway, on a free port of the host network.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let policy = s.file("picsift.toml", POLICY);
    let gateway = Container::start(
        "gateway",
        &gateway_image,
        &s.env_with(&[
            ("PICSIFT_KUBERNETES_ENABLED", "false"),
            ("PICSIFT_LISTEN", &listen),
            ("PICSIFT_ADMIN_KEY", ADMIN_KEY),
            ("PICSIFT_CONFIG", "/etc/picsift/picsift.toml"),
        ]),
        &[
            "-v",
            &format!("{}:/etc/picsift/picsift.toml:ro", policy.display()),
        ],
    );
    let base = format!("http://{listen}");
    gateway.wait_log("listening on", Duration::from_secs(60));
    let ready = client_with(ADMIN_KEY)
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());

    // Batch 1: real photos, generated photos to make it long enough to
    // kill a worker in, and exact copies of some of each.
    let mut entries: Vec<(String, Vec<u8>)> = real_photos();
    for seed in 0..20u64 {
        entries.push((
            format!("generated-{seed:02}.jpg"),
            jpeg(700 + seed, 1600, 1200),
        ));
    }
    let copies: Vec<(String, Vec<u8>)> = [0, 3, 9, 15]
        .iter()
        .map(|&i| (format!("copy-of-{}", entries[i].0), entries[i].1.clone()))
        .collect();
    entries.extend(copies);
    let mut zip = ZipBuilder::new();
    for (name, bytes) in &entries {
        zip = zip.stored(name, bytes);
    }
    let worker = s.worker();
    let first = upload(&base, zip.finish()).await;

    // Kill the worker once the batch is under way, then start another.
    let start = Instant::now();
    loop {
        let st = get_json(&format!("{base}/v1/batches/{first}")).await;
        let c = &st["counts"];
        let decided = ["accepted", "duplicate", "rejected", "failed"]
            .iter()
            .map(|k| c[k].as_u64().unwrap_or(0))
            .sum::<u64>();
        if decided >= 2 {
            assert!(
                c["pending"].as_u64().unwrap_or(0) > 0,
                "the batch finished before the kill: {st}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress: {st}\n{}",
            worker.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill();
    let killed_logs = worker.logs();
    drop(worker);
    let _worker = s.worker();
    let done = wait_done(&base, &first, Duration::from_secs(300)).await;
    assert_eq!(done["phase"], "completed", "{done}");
    assert_eq!(done["counts"]["pending"], 0, "{done}");

    // Every verdict: one accepted per distinct content, every copy an exact
    // duplicate of it; the model scored every accepted image.
    let lines = report(&base, &first).await;
    assert_eq!(lines.len(), entries.len(), "one report line per entry");
    let mut by_content: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, bytes) in &entries {
        by_content
            .entry(sha256_hex(bytes))
            .or_default()
            .push(name.as_str());
    }
    let mut accepted = BTreeSet::new();
    for names in by_content.values() {
        let verdicts: Vec<&Value> = names.iter().map(|n| &lines[*n]).collect();
        let stored: Vec<&&Value> = verdicts
            .iter()
            .filter(|l| l["verdict"] == "accepted")
            .collect();
        assert_eq!(stored.len(), 1, "one of {names:?} is stored: {verdicts:?}");
        let id = stored[0]["image_id"].as_str().unwrap().to_string();
        let score = &stored[0]["checks"]["scores"]["pattern"]["photo"];
        assert!(
            score.as_f64().is_some_and(|p| (0.0..=1.0).contains(&p)),
            "the pattern model scored {names:?}: {}",
            stored[0]
        );
        for l in verdicts.iter().filter(|l| l["verdict"] != "accepted") {
            assert_eq!(l["verdict"], "duplicate", "{l}");
            assert_eq!(l["duplicate_kind"], "exact", "{l}");
            assert_eq!(l["duplicate_of"], id.as_str(), "{l}");
        }
        assert!(accepted.insert(id), "two contents stored as one image");
    }
    let bridge = lines["aaa-orig.jpg"]["image_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Batch 2, on the second worker: the corpus's edits of the bridge photo
    // are near duplicates of it, the photo itself an exact one, and what is
    // not a whole JPEG is rejected with its reason.
    let mut zip = ZipBuilder::new();
    let mut edits = Vec::new();
    for e in std::fs::read_dir(corpus().join("bridge-mods")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name != "aaa-orig.jpg" {
            zip = zip.stored(&name, &std::fs::read(&path).unwrap());
            edits.push(name);
        }
    }
    let labelme = &entries[0].1;
    let second = upload(
        &base,
        zip.stored(
            "again.jpg",
            &std::fs::read(corpus().join("bridge-mods/aaa-orig.jpg")).unwrap(),
        )
        .stored("cut-short.jpg", &truncated(labelme))
        .stored("notes.txt", b"not an image at all")
        .stored(
            "c.png",
            &std::fs::read(corpus().join("misc-images/c.png")).unwrap(),
        )
        .finish(),
    )
    .await;
    let done = wait_done(&base, &second, Duration::from_secs(300)).await;
    assert_eq!(done["phase"], "completed", "{done}");
    let lines2 = report(&base, &second).await;
    assert_eq!(edits.len(), 11);
    for name in &edits {
        let l = &lines2[name];
        assert_eq!(l["verdict"], "duplicate", "{l}");
        assert_eq!(l["duplicate_kind"], "near", "{l}");
        assert_eq!(l["duplicate_of"], bridge.as_str(), "{l}");
    }
    let again = &lines2["again.jpg"];
    assert_eq!(
        (
            &again["verdict"],
            &again["duplicate_kind"],
            &again["duplicate_of"]
        ),
        (
            &Value::from("duplicate"),
            &Value::from("exact"),
            &Value::from(bridge.as_str())
        ),
        "{again}"
    );
    for (name, reason) in [
        ("cut-short.jpg", "truncated"),
        ("notes.txt", "not_an_image"),
        ("c.png", "format_not_allowed"),
    ] {
        let l = &lines2[name];
        assert_eq!(
            (&l["verdict"], &l["reason"]),
            (&Value::from("rejected"), &Value::from(reason)),
            "{l}"
        );
    }

    // Nothing lost, nothing stored twice: the bucket holds exactly the
    // accepted images, each downloads through the gateway and hashes to
    // its id, staging is cleaned up, and no dedup claim is left pending.
    let stored: BTreeSet<String> = store
        .list("images/")
        .await
        .unwrap()
        .iter()
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        stored, accepted,
        "the bucket holds exactly the accepted images"
    );
    for id in &accepted {
        assert_eq!(&sha256_hex(&download(&base, id).await), id);
    }
    assert!(
        store.list("staging/").await.unwrap().is_empty(),
        "staged uploads are deleted"
    );
    let dedup = RedisDedup::connect(&s.redis.url, "picsift:").await.unwrap();
    assert_eq!(
        dedup.pending_claims().await.unwrap(),
        0,
        "no claim left pending"
    );
    assert!(
        killed_logs.contains("started"),
        "the killed worker had started: {killed_logs}"
    );

    // The operator: still running, live, not ready, and saying why.
    wait_for_port(
        metrics_port,
        "the operator's probes",
        Duration::from_secs(30),
    );
    let http = reqwest::Client::new();
    let probes = format!("http://{metrics_listen}");
    let live = http.get(format!("{probes}/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = http.get(format!("{probes}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(why.contains("cannot reach the Kubernetes API"), "{why}");
    assert!(operator.running(), "{}", operator.logs());
    let logs = operator.logs();
    assert!(
        logs.contains("cannot reach the Kubernetes API") && logs.contains("not ready"),
        "{logs}"
    );

    // Without any API server configured (no service account, no
    // KUBECONFIG), it stops at once, saying so.
    let out = container_cmd(&[
        "run",
        "--rm",
        "--network=host",
        "--read-only",
        &operator_image,
        "operator",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("cannot reach the Kubernetes API"), "{said}");
}

/// `podman run -p 8080:8080 -v data:/data picsift/picsift serve`: the
/// standalone server, its data in a named volume, takes an upload.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the images: scripts/test.sh builds them (scripts/images.sh --profile dev) and runs this with --ignored"]
async fn the_standalone_image_serves_and_takes_an_upload() {
    let image = image("picsift");
    let volume = format!("picsift-test-data-{}", std::process::id());
    let port = free_port();
    let name = format!("picsift-test-standalone-{}", std::process::id());
    container_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--read-only",
        "--tmpfs",
        "/tmp:rw,mode=1777",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-v",
        &format!("{volume}:/data"),
        &image,
        "serve",
    ]);
    let server = Container { name };
    struct Volume(String);
    impl Drop for Volume {
        fn drop(&mut self) {
            let _ = container_cmd(&["volume", "rm", "-f", &self.0]);
        }
    }
    let _volume = Volume(volume);
    server.wait_log("listening on", Duration::from_secs(60));
    let base = format!("http://127.0.0.1:{port}");
    wait_for_port(
        port,
        "picsift serve in its container",
        Duration::from_secs(30),
    );
    // The admin key the first start wrote into the volume.
    let key = container_ok(&["exec", &server.name, "cat", "/data/admin.key"]);
    let key = key.trim();
    let http = client_with(key);
    let photos = real_photos();
    let mut zip = ZipBuilder::new();
    for (name, bytes) in &photos {
        zip = zip.stored(name, bytes);
    }
    let r = http
        .post(format!("{base}/v1/batches"))
        .header("content-type", "application/zip")
        .body(zip.finish())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let start = Instant::now();
    let status = loop {
        let s: Value = http
            .get(format!("{base}/v1/batches/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["phase"] != "received" && s["phase"] != "processing" {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["phase"], "completed", "{status}");
    assert_eq!(
        status["counts"]["accepted"],
        photos.len(),
        "every photo stored: {status}"
    );
    let list: Value = http
        .get(format!("{base}/v1/images?batch={id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let images = list["images"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(images.len(), photos.len());
    for img in images {
        let id = img["id"].as_str().unwrap_or_else(|| panic!("{img}"));
        let bytes = http
            .get(format!("{base}/v1/images/{id}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(sha256_hex(&bytes), id);
    }
}
