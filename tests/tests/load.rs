//! Load run against the cluster processes (one gateway, N workers, over
//! real Redis, PostgreSQL and Garage on loopback): uploads arrive on a fixed
//! schedule (open loop: a slow server does not slow the arrivals down), and
//! the run reports time to `202` and to completion, errors, each process's
//! RSS over time and the queue's backlog over time. Completion is when the
//! batch's signed webhook arrives at a receiver in this test.
//!
//! Short run (in `scripts/test.sh`, to keep the generator working): 20 s at
//! 1 upload/s. The documented run (docs/benchmarks.md):
//! `PICSIFT_LOAD_SECS=600 PICSIFT_LOAD_RATE=4 cargo test -p picsift-tests --test load -- --nocapture`
//! with `PICSIFT_LOAD_IMAGES` images of `PICSIFT_LOAD_WIDTH`×¾ of it per
//! upload (default 25 of 320×240) and `PICSIFT_LOAD_WORKERS` workers
//! (default 2). Every image is a different picture.
//!
//! Asserts only what must hold at any speed: every upload answered `202`,
//! every batch completed, every entry accepted or refused as a duplicate.

mod common;

use common::cluster::*;
use picsift_backends::cluster::RedisQueue;
use picsift_core::backend::WorkQueue;
use picsift_tests::{ZipBuilder, encode_jpeg, photo};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When each batch's completion webhook arrived, and its counts.
type Completions = Arc<Mutex<HashMap<String, (Instant, Value)>>>;

async fn completion_receiver() -> (String, Completions) {
    let done: Completions = Arc::default();
    let log = done.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                if let Ok(event) = serde_json::from_slice::<Value>(&body)
                    && let Some(id) = event["data"]["id"].as_str()
                {
                    log.lock()
                        .unwrap()
                        .entry(id.to_string())
                        .or_insert((Instant::now(), event["data"]["counts"].clone()));
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, done)
}

/// Resident memory of a process, in MB (from `/proc`).
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The zips to upload, all made before the clock starts (on every core),
/// so that making them neither delays an arrival nor takes CPU from the
/// processes under load.
fn zips(count: usize, images: usize, width: u32) -> Vec<Vec<u8>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let make = |n: usize| {
        let mut zip = ZipBuilder::new();
        for i in 0..images {
            let seed = 1_000_000 + (n * images + i) as u64;
            let jpeg = encode_jpeg(&photo(seed, width, width * 3 / 4), 88);
            zip = zip.stored(&format!("img-{i:03}.jpg"), &jpeg);
        }
        zip.finish()
    };
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t..count).step_by(threads).map(make).collect::<Vec<_>>()))
            .collect();
        let parts: Vec<Vec<Vec<u8>>> = parts.into_iter().map(|p| p.join().unwrap()).collect();
        (0..count)
            .map(|n| parts[n % threads][n / threads].clone())
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn sustained_uploads_all_complete() {
    let secs: f64 = picsift_tests::env_or("PICSIFT_LOAD_SECS", 20.0);
    let rate: f64 = picsift_tests::env_or("PICSIFT_LOAD_RATE", 1.0);
    let images = picsift_tests::env_or("PICSIFT_LOAD_IMAGES", 25.0) as usize;
    let width = picsift_tests::env_or("PICSIFT_LOAD_WIDTH", 320.0) as u32;
    let n_workers = picsift_tests::env_or("PICSIFT_LOAD_WORKERS", 2.0) as usize;
    let uploads = (secs * rate).round() as usize;
    eprintln!(
        "load: {uploads} uploads at {rate}/s of {images} images {width}x{}, {n_workers} workers",
        width * 3 / 4
    );
    let (hook, done) = completion_receiver().await;
    let c = Cluster::start_with(Setup {
        top_level: "webhook_allowed_networks = [\"127.0.0.1/32\"]".into(),
        // One client uploads everything: no per-tenant rate or open-batch
        // limit, which would refuse what many tenants would send.
        sections: "[limits]\nrequests_per_second = 0\nmax_open_batches = 0\n".into(),
        ..Setup::default()
    });
    let (gateway, line) = c.spawn("gateway", "listening on");
    let base = base_of(&line);
    let workers: Vec<Proc> = (0..n_workers)
        .map(|_| c.spawn("worker", "started").0)
        .collect();
    let queue = RedisQueue::connect(&c.redis.url, "picsift:", "load-observer", 60_000)
        .await
        .unwrap();
    let made_at = Instant::now();
    let mut made = zips(uploads, images, width).into_iter();
    eprintln!(
        "load: {uploads} zips made in {:.0} s",
        made_at.elapsed().as_secs_f64()
    );

    // Arrivals on schedule, each upload on its own task.
    let start = Instant::now();
    let sent: Arc<Mutex<Vec<(String, Instant, f64)>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    let mut samples = Vec::new();
    let mut last_sample = start - Duration::from_secs(10);
    for n in 0..uploads {
        let at = start + Duration::from_secs_f64(n as f64 / rate);
        while Instant::now() < at {
            if last_sample.elapsed() >= Duration::from_secs(5) {
                last_sample = Instant::now();
                samples.push(sample(start, &gateway, &workers, &queue, &sent, &done).await);
                eprintln!("load: {}", samples.last().unwrap());
            }
            tokio::time::sleep((at - Instant::now()).min(Duration::from_millis(50))).await;
        }
        let zip = made.next().unwrap();
        let url = format!("{base}/v1/batches?callback={hook}");
        let (sent, errors) = (sent.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = http()
                .post(url)
                .header("content-type", "application/zip")
                .body(zip)
                .send()
                .await;
            let took = t0.elapsed().as_secs_f64();
            match r {
                Ok(r) if r.status() == 202 => {
                    let v: Value = r.json().await.unwrap();
                    let id = v["id"].as_str().unwrap().to_string();
                    sent.lock().unwrap().push((id, t0, took));
                }
                Ok(r) => {
                    let what = format!("{}: {}", r.status(), r.text().await.unwrap_or_default());
                    errors.lock().unwrap().push(what);
                }
                Err(e) => errors.lock().unwrap().push(e.to_string()),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let arrivals_s = start.elapsed().as_secs_f64();
    // Then until every batch completed (or 30 minutes).
    loop {
        let (n_sent, n_done) = (sent.lock().unwrap().len(), done.lock().unwrap().len());
        if n_done >= n_sent || start.elapsed().as_secs_f64() > arrivals_s + 1800.0 {
            break;
        }
        if last_sample.elapsed() >= Duration::from_secs(5) {
            last_sample = Instant::now();
            samples.push(sample(start, &gateway, &workers, &queue, &sent, &done).await);
            eprintln!("load: {}", samples.last().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    samples.push(sample(start, &gateway, &workers, &queue, &sent, &done).await);
    let total_s = start.elapsed().as_secs_f64();

    // Figures.
    let sent = sent.lock().unwrap().clone();
    let done = done.lock().unwrap().clone();
    let mut to_202: Vec<f64> = sent.iter().map(|(_, _, s)| *s).collect();
    let mut to_done: Vec<f64> = sent
        .iter()
        .filter_map(|(id, t0, _)| Some(done.get(id)?.0.duration_since(*t0).as_secs_f64()))
        .collect();
    to_202.sort_by(f64::total_cmp);
    to_done.sort_by(f64::total_cmp);
    let mut counts: HashMap<String, u64> = HashMap::new();
    for (_, c) in done.values() {
        for (k, v) in c.as_object().into_iter().flatten() {
            *counts.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
    }
    eprintln!(
        "\n| t (s) | uploaded | completed | queue backlog (chunks) | gateway RSS (MB) | worker RSS (MB) |"
    );
    eprintln!("|---|---|---|---|---|---|");
    for s in &samples {
        eprintln!("{s}");
    }
    eprintln!(
        "\nload: {} uploads in {arrivals_s:.0} s ({:.2}/s offered), all done after {total_s:.0} s; \
         {} images/s processed on average; errors {}; \
         time to 202 p50 {:.3} s p99 {:.3} s max {:.3} s; \
         time to completion p50 {:.1} s p99 {:.1} s max {:.1} s; counts {counts:?}",
        sent.len(),
        uploads as f64 / arrivals_s,
        (done.len() * images) as f64 / total_s,
        errors.lock().unwrap().len(),
        percentile(&to_202, 0.5),
        percentile(&to_202, 0.99),
        to_202.last().copied().unwrap_or(f64::NAN),
        percentile(&to_done, 0.5),
        percentile(&to_done, 0.99),
        to_done.last().copied().unwrap_or(f64::NAN),
    );
    storage_per_image(&c.postgres.url, &c.redis.url).await;
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "uploads refused: {errors:#?}");
    assert_eq!(done.len(), uploads, "every batch completed");
    let judged = counts.get("accepted").unwrap_or(&0) + counts.get("duplicate").unwrap_or(&0);
    assert_eq!(judged, (uploads * images) as u64, "{counts:?}");
    drop(workers);
    drop(gateway);
}

/// One row of the table over time.
async fn sample(
    start: Instant,
    gateway: &Proc,
    workers: &[Proc],
    queue: &RedisQueue,
    sent: &Mutex<Vec<(String, Instant, f64)>>,
    done: &Mutex<HashMap<String, (Instant, Value)>>,
) -> String {
    let backlog = match queue.backlog().await {
        Ok(n) => n.to_string(),
        Err(_) => "?".into(),
    };
    let worker_rss: Vec<String> = workers
        .iter()
        .map(|w| format!("{:.0}", rss_mb(w.0.id())))
        .collect();
    format!(
        "| {:.0} | {} | {} | {backlog} | {:.0} | {} |",
        start.elapsed().as_secs_f64(),
        sent.lock().unwrap().len(),
        done.lock().unwrap().len(),
        rss_mb(gateway.0.id()),
        worker_rss.join(", ")
    )
}

/// What the catalog and Redis hold per stored image and per report entry
/// after the run (for the capacity plan, docs/scaling.md).
async fn storage_per_image(postgres: &str, redis_url: &str) {
    let pool = sqlx::PgPool::connect(postgres).await.unwrap();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (images, entries) = (count("images").await, count("entries").await);
    let sizes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, pg_total_relation_size(c.oid)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let total: i64 = sizes.iter().map(|s| s.1).sum();
    let listed: Vec<String> = sizes
        .iter()
        .take(6)
        .map(|(t, b)| format!("{t} {:.0} kB", *b as f64 / 1024.0))
        .collect();
    let (used, _) = common::redis_memory(redis_url).await;
    eprintln!(
        "load: PostgreSQL {:.1} MB for {images} images and {entries} entries \
         ({:.0} bytes per entry, all tables and indexes; largest: {}); Redis {:.1} MB",
        total as f64 / 1e6,
        total as f64 / entries.max(1) as f64,
        listed.join(", "),
        used as f64 / 1e6
    );
}
