//! The cluster shape, multi-process: one `picsift gateway` and two
//! `picsift worker` processes sharing Garage (S3), PostgreSQL and Redis,
//! all real servers started here on loopback ports.

mod common;

use common::cluster::*;
use common::picsift_bin;
use picsift_backends::cluster::{S3BlobStore, S3Config};
use picsift_core::backend::BlobStore;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn gateway_and_two_workers_process_concurrent_batches_exactly_once() {
    let c = Cluster::start();
    let (_gateway, line) = c.spawn("gateway", "listening on");
    let base = base_of(&line);
    let _w1 = c.spawn("worker", "started");
    let _w2 = c.spawn("worker", "started");

    // Three batches at once; seeds repeat within and across them.
    let plans: Vec<Vec<u64>> = vec![
        vec![1, 2, 3, 1, 4, 5],
        vec![3, 6, 7, 7, 8, 2],
        vec![9, 1, 10, 11, 6, 12],
    ];
    let uploads = plans
        .iter()
        .map(|seeds| upload(&base, batch_zip(seeds, (320, 240))));
    let ids = futures_util::future::join_all(uploads).await;
    let mut batches = HashMap::new();
    for (id, seeds) in ids.iter().zip(&plans) {
        let done = wait_done(&base, id).await;
        assert_eq!(done["phase"], "completed", "{done}");
        batches.insert(id.clone(), seeds.len());
    }
    let distinct: BTreeSet<u64> = plans.iter().flatten().copied().collect();
    let accepted = check_invariants(&c, &base, &batches).await;
    assert_eq!(
        accepted.len(),
        distinct.len(),
        "each distinct photo stored once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_chunk_loses_nothing() {
    let c = Cluster::start();
    let (_gateway, line) = c.spawn("gateway", "listening on");
    let base = base_of(&line);
    let (mut doomed, _) = c.spawn("worker", "started");
    let (survivor, _) = c.spawn("worker", "started");

    let seeds: Vec<u64> = (0..24)
        .map(|i| if i % 6 == 5 { 100 + i - 2 } else { 100 + i })
        .collect();
    // A second batch at the same time repeats photos of the first.
    let others: Vec<u64> = vec![100, 130, 107, 131, 120, 130];
    let (id, other) = tokio::join!(
        upload(&base, batch_zip(&seeds, (1600, 1200))),
        upload(&base, batch_zip(&others, (1600, 1200)))
    );
    // Kill one of the two workers once both are inside the batch: the
    // survivor gets the dead one's chunk after the visibility timeout.
    let start = Instant::now();
    loop {
        let s = get_json(&format!("{base}/v1/batches/{id}")).await;
        let c = &s["counts"];
        if c["accepted"].as_u64().unwrap_or(0) + c["duplicate"].as_u64().unwrap_or(0) >= 2 {
            assert!(
                c["pending"].as_u64().unwrap_or(0) > 0,
                "finished before the kill: {s}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill();
    for b in [&id, &other] {
        let done = wait_done(&base, b).await;
        assert_eq!(done["phase"], "completed", "{done}");
    }
    // The survivor said it took over the dead worker's chunk.
    assert!(
        survivor.logged("reclaimed a task its worker held past the visibility timeout"),
        "no reclaim logged"
    );
    let batches = HashMap::from([(id.clone(), seeds.len()), (other.clone(), others.len())]);
    let accepted = check_invariants(&c, &base, &batches).await;
    let distinct: BTreeSet<u64> = seeds.iter().chain(&others).copied().collect();
    assert_eq!(accepted.len(), distinct.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_answers_503_and_reindex_restores_dedup() {
    let mut c = Cluster::start();
    let (_gateway, line) = c.spawn("gateway", "listening on");
    let base = base_of(&line);
    let _worker = c.spawn("worker", "started");
    let first = upload(&base, batch_zip(&[500, 501], (320, 240))).await;
    wait_done(&base, &first).await;

    c.redis.stop();
    let http = http();
    let r = http
        .post(format!("{base}/v1/batches"))
        .header("content-type", "application/zip")
        .body(batch_zip(&[502], (64, 64)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_no_internals(&r.json().await.unwrap());
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let checks: Value = ready.json().await.unwrap();
    assert!(
        checks["checks"]["queue"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{checks}"
    );
    assert_eq!(checks["checks"]["catalog"], "ok");

    // Redis comes back empty. Nobody runs `picsift reindex`: the gateway
    // finds the index incomplete at the next upload and rebuilds it from
    // the catalog (a worker's first claim would too), so the stored image
    // is still a duplicate (before, the claim answered `new` and it was
    // stored twice).
    c.redis.restart();
    let start = Instant::now();
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gateway did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Uploads are held back (503, Retry-After) until the index is rebuilt;
    // the first one sets the gateway rebuilding it.
    let zip = batch_zip(&[500, 503], (320, 240));
    let mut held_back = 0;
    let again = loop {
        assert!(start.elapsed() < Duration::from_secs(60), "never rebuilt");
        let r = http
            .post(format!("{base}/v1/batches"))
            .header("content-type", "application/zip")
            .body(zip.clone())
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            break r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
        }
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        let problem: Value = r.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        // (Or, for a moment, the dedup connection is not back yet.)
        if detail.contains("being rebuilt") {
            held_back += 1;
        } else {
            assert!(detail.contains("a backend is unavailable"), "{problem}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        held_back >= 1,
        "the first upload after the loss is held back"
    );
    let done = wait_done(&base, &again).await;
    assert_eq!(
        (
            done["counts"]["duplicate"].as_u64(),
            done["counts"]["accepted"].as_u64()
        ),
        (Some(1), Some(1)),
        "{done}"
    );
    // `picsift reindex` still rebuilds it by hand.
    let out = Command::new(picsift_bin())
        .args(["reindex", "--config"])
        .arg(&c.config)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("committed claims written for 3 catalog images"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_outage_in_the_middle_of_a_batch_delays_it_and_loses_nothing() {
    let mut c = Cluster::start();
    let (_gateway, line) = c.spawn("gateway", "listening on");
    let base = base_of(&line);
    let _worker = c.spawn("worker", "started");
    let seeds: Vec<u64> = (0..16)
        .map(|i| if i % 4 == 3 { 300 + i - 1 } else { 300 + i })
        .collect();
    let id = upload(&base, batch_zip(&seeds, (1600, 1200))).await;
    let start = Instant::now();
    loop {
        let s = get_json(&format!("{base}/v1/batches/{id}")).await;
        if s["counts"]["accepted"].as_u64().unwrap_or(0) >= 2 {
            assert!(
                s["counts"]["pending"].as_u64().unwrap_or(0) > 0,
                "finished before the outage: {s}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // S3 goes away for a few seconds in the middle of the batch.
    c.garage.stop();
    let ready = http().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    // An upload while S3 is away is refused whole, with a hint to retry.
    let refused = http()
        .post(format!("{base}/v1/batches"))
        .header("content-type", "application/zip")
        .body(batch_zip(&[399], (64, 64)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_no_internals(&refused.json().await.unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.garage.resume();
    let done = wait_done(&base, &id).await;
    assert_eq!(done["phase"], "completed", "{done}");
    // Every entry is accepted or a duplicate: the outage cost time, not verdicts.
    let batches = HashMap::from([(id.clone(), seeds.len())]);
    let accepted = check_invariants(&c, &base, &batches).await;
    assert_eq!(accepted.len(), seeds.iter().collect::<BTreeSet<_>>().len());
}

/// A worker Job's pod: no configuration file, only the environment the
/// operator's Job template and the chart's ConfigMap give it.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_job_processes_queued_work_and_exits_when_idle() {
    let c = Cluster::start();
    let (_gateway, line) = c.spawn("gateway", "listening on");
    let base = base_of(&line);
    // Queued before any worker exists, as when a pool has scaled to zero.
    let id = upload(&base, batch_zip(&[21, 22, 23, 21, 24], (320, 240))).await;
    let cfg = std::fs::read_to_string(&c.config).unwrap();
    let value = |section: &str, key: &str| -> String {
        let table: toml::Table = toml::from_str(&cfg).unwrap();
        table[section][key].as_str().unwrap().to_string()
    };
    let started = Instant::now();
    let mut worker = Command::new(picsift_bin())
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // libtorch: the worker image finds it through ld.so's
        // configuration; here the library path plays that part.
        .env(
            "LD_LIBRARY_PATH",
            std::env::var("LD_LIBRARY_PATH").unwrap_or_default(),
        )
        .env("HOSTNAME", "gpu-worker-3-abcde")
        .env("PICSIFT_LOG", "warn,picsift_worker=info")
        .env("PICSIFT_KUBERNETES_ENABLED", "true")
        .env("PICSIFT_WORKER_IDLE_TIMEOUT_SECS", "3")
        .env("PICSIFT_S3_ENDPOINT", value("s3", "endpoint"))
        .env("PICSIFT_S3_REGION", value("s3", "region"))
        .env("PICSIFT_S3_BUCKET", value("s3", "bucket"))
        .env("PICSIFT_S3_ACCESS_KEY_ID", value("s3", "access_key_id"))
        .env(
            "PICSIFT_S3_SECRET_ACCESS_KEY",
            value("s3", "secret_access_key"),
        )
        .env("PICSIFT_REDIS_URL", value("redis", "url"))
        .env("PICSIFT_POSTGRES_URL", value("postgres", "url"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let done = wait_done(&base, &id).await;
    assert_eq!(done["phase"], "completed", "{done}");
    assert_eq!(done["counts"]["accepted"], 4);
    assert_eq!(done["counts"]["duplicate"], 1);
    // Then, with nothing left to do, it exits on its own, successfully.
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the idle worker did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "worker exited with {status}");
    let mut batches = HashMap::new();
    batches.insert(id, 5);
    check_invariants(&c, &base, &batches).await;
}

/// Waits up to 30 s for `/readyz` to answer 200.
async fn wait_ready(base: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A 503's problem detail: a fixed sentence and an error id, never a
/// driver's or an SDK's error text.
fn assert_no_internals(problem: &Value) {
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("a backend is unavailable; retry later (error id "),
        "{problem}"
    );
    assert!(
        problem["error_id"]
            .as_str()
            .is_some_and(|id| detail.contains(id)),
        "{problem}"
    );
    let text = problem.to_string();
    for leak in [
        "Error {",
        "dispatch",
        "source",
        "headers",
        "Connection refused",
        "SELECT",
        "redis",
        "postgres",
        "sqlx",
        "pool timed out",
    ] {
        assert!(!text.contains(leak), "{leak:?} in {problem}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn misconfigurations_stop_the_gateway_naming_the_setting_and_outages_are_waited_for() {
    let mut c = Cluster::start();
    // At start: a permanent misconfiguration ends the process with the
    // setting to fix, instead of retrying (or serving) forever.
    let no_db = c.postgres.url.replace("/picsift", "/nodb");
    let unknown_key = c.config.with_file_name("unknown-key.toml");
    std::fs::write(
        &unknown_key,
        std::fs::read_to_string(&c.config).unwrap() + "[redis2]\nurl = \"redis://x\"\n",
    )
    .unwrap();
    let config = c.config.to_string_lossy().into_owned();
    let unknown = unknown_key.to_string_lossy().into_owned();
    for (key, value, file, says) in [
        (
            "PICSIFT_S3_BUCKET",
            "no-such-bucket",
            &config,
            "s3.bucket (PICSIFT_S3_BUCKET): the bucket does not exist",
        ),
        (
            "PICSIFT_S3_SECRET_ACCESS_KEY",
            "not-the-secret",
            &config,
            "s3.access_key_id and s3.secret_access_key (PICSIFT_S3_ACCESS_KEY_ID, PICSIFT_S3_SECRET_ACCESS_KEY): the object store refuses",
        ),
        (
            "PICSIFT_S3_ACCESS_KEY_ID",
            "",
            &config,
            "s3.access_key_id and s3.secret_access_key (PICSIFT_S3_ACCESS_KEY_ID, PICSIFT_S3_SECRET_ACCESS_KEY): no credentials",
        ),
        (
            "PICSIFT_POSTGRES_URL",
            no_db.as_str(),
            &config,
            "postgres.url (PICSIFT_POSTGRES_URL): the database does not exist",
        ),
        ("PICSIFT_LOG", "error", &unknown, "unknown field `redis2`"),
    ] {
        let out = Command::new("timeout")
            .arg("60")
            .arg(picsift_bin())
            .args(["gateway", "--config", file])
            .env("PICSIFT_LOG", "error")
            .env(key, value)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {stderr}");
        assert!(stderr.contains(says), "{key}: {stderr}");
    }

    // An outage at start is waited for, with the port open: /readyz names
    // what the gateway waits for, with no driver text, until it answers.
    c.redis.stop();
    let (gateway, line) = c.spawn("gateway", "starting on");
    let base = line
        .split("starting on ")
        .nth(1)
        .unwrap()
        .split(": ")
        .next()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.unwrap();
        if body["checks"]["redis"]
            .as_str()
            .unwrap()
            .starts_with("waiting")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "redis never reported: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(waiting["checks"]["s3"], "ok", "{waiting}");
    assert_eq!(waiting["checks"]["postgres"], "ok", "{waiting}");
    assert!(!waiting.to_string().contains("refused"), "{waiting}");
    assert_eq!(
        reqwest::get(format!("{base}/livez"))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http()
        .get(format!("{base}/v1/batches"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    c.redis.restart();
    wait_ready(&base, "not ready after Redis came back").await;
    assert!(gateway.logged("listening on"));
    let r = http()
        .get(format!("{base}/v1/batches"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // PostgreSQL down while serving: a 503 with an error id, no driver text.
    c.postgres.stop();
    let r = http()
        .get(format!("{base}/v1/batches"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_no_internals(&r.json().await.unwrap());
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["checks"]["catalog"]
            .as_str()
            .unwrap()
            .starts_with("unavailable (error id "),
        "{ready}"
    );
    c.postgres.resume();
    wait_ready(&base, "not ready after PostgreSQL came back").await;

    // While running: a bucket gone later fails the readiness probe (a read
    // alone took the missing bucket's 404 for a missing object).
    let s3 = S3Config {
        bucket: "no-such-bucket".into(),
        ..c.s3.clone()
    };
    let store = S3BlobStore::connect(s3).await.unwrap();
    let err = store.probe().await.unwrap_err().to_string();
    assert!(err.contains("NoSuchBucket"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_the_chunks_in_hand_and_says_so() {
    let c = Cluster::start();
    let (_gateway, line) = c.spawn("gateway", "listening on");
    let base = base_of(&line);
    let (mut leaving, _) = c.spawn_env("worker", "started", &[("PICSIFT_LOG", "info")]);
    let seeds: Vec<u64> = (0..16).map(|i| 700 + i).collect();
    let id = upload(&base, batch_zip(&seeds, (1600, 1200))).await;
    let start = Instant::now();
    loop {
        let s = get_json(&format!("{base}/v1/batches/{id}")).await;
        if s["counts"]["accepted"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGTERM mid-batch: it stops taking chunks, finishes the one in hand
    // within its grace (worker.drain_secs, 25 s), says so, and exits.
    assert!(
        leaving.terminate(Duration::from_secs(40)),
        "the worker did not exit"
    );
    assert!(leaving.logged("stopping: taking no new chunk, finishing the chunks in hand"));
    assert!(leaving.logged("stopped: every chunk in hand is finished"));
    // What it did not take goes to the next worker at once (nothing was
    // left held); the batch completes with every verdict.
    let _next = c.spawn("worker", "started");
    let done = wait_done(&base, &id).await;
    assert_eq!(done["phase"], "completed", "{done}");
    let batches = HashMap::from([(id.clone(), seeds.len())]);
    let accepted = check_invariants(&c, &base, &batches).await;
    assert_eq!(accepted.len(), seeds.len());
}
