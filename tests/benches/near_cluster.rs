//! The cluster's near-duplicate check-and-insert, two designs in one run on
//! one PostgreSQL server, with the same stored images, the same new images
//! and the same concurrency:
//!
//! - **global lock + MIH table** (the design before migration 0013,
//!   replayed here in SQL of its own: one advisory lock for every insert,
//!   candidates from a `pdq_mih`-style table joined with `images`);
//! - **the catalog** (`SqlCatalog::insert_image_unless_near`: candidate row
//!   locks, each worker's copy of the hashes in memory; backends/src/sql/pg_near.rs).
//!
//! Each worker is a catalog (or pool) of its own, as a worker process has,
//! running `PICSIFT_BENCH_CONCURRENCY` inserts at once. Every tenth new
//! image is a near duplicate (1–31 bits) of a stored one and must be
//! refused; the rest are random, so accepted. Printed per design and number
//! of workers: images/s, latency p50/p99, refused (must equal planted).
//!
//! Run: `cargo bench -p picsift-tests --bench near_cluster`
//! Sizes: PICSIFT_BENCH_STORED (default 200000), PICSIFT_BENCH_INSERTS
//! (per run, default 2000), PICSIFT_BENCH_CONCURRENCY (per worker, default
//! 4), PICSIFT_BENCH_WORKERS (default "1,2,4").

#[path = "shared/postgres.rs"]
mod postgres;

use anyhow::Result;
use picsift_backends::sql::SqlCatalog;
use picsift_core::backend::Catalog;
use picsift_core::format::Format;
use picsift_core::model::ImageRecord;
use picsift_core::pdq::Hash;
use picsift_core::pdq_index;
use picsift_tests::hashes::{Rng, id, ms, percentile};
use postgres::load_postgres;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The advisory lock key the old design took for every near check.
const GLOBAL_LOCK: i64 = 0x0070_6963_7369_6674;

fn record(image_id: &str, hash: &Hash) -> ImageRecord {
    ImageRecord {
        id: image_id.to_string(),
        format: Format::Jpeg,
        width: 1,
        height: 1,
        size: 1,
        orientation: None,
        owner: "default".into(),
        batch_id: "bench".into(),
        entry_index: 0,
        entry_name: "x.jpg".into(),
        pdq: Some(hash.to_string()),
        pdq_quality: Some(90),
        created_ms: 0,
    }
}

/// One check-and-insert the old way; whether it was refused.
async fn old_insert(pool: &PgPool, i: &ImageRecord, hash: &Hash) -> Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(GLOBAL_LOCK)
        .execute(&mut *tx)
        .await?;
    let candidates: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT i.id, i.pdq FROM bench_mih m JOIN images i ON i.id = m.image_id WHERE m.k = ANY($1)",
    )
    .bind(pdq_index::probes(hash, 31))
    .fetch_all(&mut *tx)
    .await?;
    let near = candidates.into_iter().any(|(_, pdq)| {
        pdq.and_then(|p| p.parse::<Hash>().ok())
            .is_some_and(|h| h.distance(hash) <= 31)
    });
    if near {
        tx.rollback().await?;
        return Ok(true);
    }
    sqlx::query(
        "INSERT INTO images (id, format, width, height, size, batch_id, entry_idx, entry_name, created_at, pdq, pdq_quality, owner)
         VALUES ($1, 'jpeg', 1, 1, 1, 'bench', 0, 'x.jpg', 0, $2, 90, 'default')",
    )
    .bind(&i.id)
    .bind(&i.pdq)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO image_owners (image_id, owner) VALUES ($1, 'default')")
        .bind(&i.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO bench_mih (k, image_id) SELECT k, $2 FROM UNNEST($1::BIGINT[]) AS k")
        .bind(pdq_index::keys(hash).to_vec())
        .bind(&i.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(false)
}

/// A worker of either design.
#[derive(Clone)]
enum Worker {
    Old(PgPool),
    New(Arc<SqlCatalog>),
}

impl Worker {
    async fn insert(&self, i: &ImageRecord, hash: &Hash) -> Result<bool> {
        Ok(match self {
            Worker::Old(pool) => old_insert(pool, i, hash).await?,
            Worker::New(c) => c.insert_image_unless_near(i, 31, None).await?.is_some(),
        })
    }
}

/// Runs `work` through `workers`, `concurrency` at a time each: elapsed,
/// latencies and how many were refused.
async fn run(
    workers: &[Worker],
    concurrency: usize,
    work: Arc<Vec<(ImageRecord, Hash)>>,
) -> Result<(Duration, Vec<Duration>, usize)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in workers {
        for _ in 0..concurrency {
            let (w, next, work) = (w.clone(), next.clone(), work.clone());
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                let mut refused = 0;
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((i, hash)) = work.get(k) else { break };
                    let t = Instant::now();
                    refused += usize::from(w.insert(i, hash).await?);
                    times.push(t.elapsed());
                }
                anyhow::Ok((times, refused))
            }));
        }
    }
    let (mut times, mut refused) = (Vec::new(), 0);
    for t in tasks {
        let (ts, r) = t.await??;
        times.extend(ts);
        refused += r;
    }
    Ok((start.elapsed(), times, refused))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return Ok(()); // `cargo test --benches` probes bench binaries this way.
    }
    let stored: u64 = picsift_tests::env_or("PICSIFT_BENCH_STORED", 200_000);
    let inserts: usize = picsift_tests::env_or("PICSIFT_BENCH_INSERTS", 2_000);
    let concurrency: usize = picsift_tests::env_or("PICSIFT_BENCH_CONCURRENCY", 4);
    let worker_counts: Vec<usize> = std::env::var("PICSIFT_BENCH_WORKERS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let all: Vec<(String, Hash)> = (0..stored).map(|i| (id(i), rng.hash())).collect();

    let pg = picsift_tests::services::postgres::Postgres::start();
    let (old_url, new_url) = (pg.create_database("old"), pg.create_database("new"));
    // Both migrated alike; the old design's table added to its database.
    drop(SqlCatalog::connect_postgres(&old_url, 1).await?);
    let new_catalog = SqlCatalog::connect_postgres(&new_url, 1).await?;
    let old_pool = PgPool::connect(&old_url).await?;
    let new_pool = PgPool::connect(&new_url).await?;
    sqlx::query("CREATE TABLE bench_mih (k BIGINT NOT NULL, image_id TEXT COLLATE \"C\" NOT NULL, PRIMARY KEY (k, image_id))")
        .execute(&old_pool)
        .await?;
    let t = Instant::now();
    load_postgres(&new_pool, &all).await?;
    eprintln!(
        "{stored} images loaded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    load_postgres(&old_pool, &all).await?;
    sqlx::query(
        "INSERT INTO bench_mih (k, image_id)
         SELECT ((s << 16) | ('x' || substr(pdq, 4 * s + 1, 4))::BIT(16)::INT)::BIGINT, id
         FROM images, generate_series(0, 15) AS s",
    )
    .execute(&old_pool)
    .await?;
    sqlx::query("ANALYZE").execute(&old_pool).await?;
    eprintln!(
        "... and with the MIH table in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The SQL key computation agrees with pdq_index::keys.
    let k: Vec<i64> = sqlx::query_scalar("SELECT k FROM bench_mih WHERE image_id = $1 ORDER BY k")
        .bind(&all[0].0)
        .fetch_all(&old_pool)
        .await?;
    let mut want = pdq_index::keys(&all[0].1).to_vec();
    want.sort_unstable();
    anyhow::ensure!(k == want, "MIH keys differ: {k:?} vs {want:?}");
    drop(new_catalog);

    println!(
        "stored {stored}, {inserts} inserts per run, {concurrency} at once per worker, every tenth a planted near duplicate"
    );
    println!("| design | workers | images/s | p50 ms | p99 ms | refused / planted |");
    println!("|---|---|---|---|---|---|");
    for (round, &n) in worker_counts.iter().enumerate() {
        // Fresh new images per run (both designs get the same ones).
        let mut planted = 0;
        let work: Vec<(ImageRecord, Hash)> = (0..inserts)
            .map(|k| {
                let image_id = format!("{:064x}", (round as u64 + 1) << 40 | k as u64);
                let hash = if k % 10 == 0 {
                    planted += 1;
                    let base = &all[(rng.next_u64() % stored) as usize].1;
                    let d = 1 + (rng.next_u64() % 31) as u32;
                    rng.neighbour(base, d)
                } else {
                    rng.hash()
                };
                (record(&image_id, &hash), hash)
            })
            .collect();
        let work = Arc::new(work);
        for design in ["global lock + MIH table", "candidate locks + memory copy"] {
            let mut workers = Vec::new();
            let mut load = Duration::ZERO;
            let rss_before = picsift_tests::bench::rss_kb(std::process::id(), "VmRSS");
            for _ in 0..n {
                if design.starts_with("global") {
                    let pool = sqlx::postgres::PgPoolOptions::new()
                        .max_connections(concurrency as u32)
                        .connect(&old_url)
                        .await?;
                    workers.push(Worker::Old(pool));
                } else {
                    let c = SqlCatalog::connect_postgres(&new_url, concurrency as u32).await?;
                    // Its copy loaded before the clock starts, as a running
                    // worker's is.
                    let t = Instant::now();
                    c.similar(&all[0].1, 0, 1, None).await?;
                    load = load.max(t.elapsed());
                    workers.push(Worker::New(Arc::new(c)));
                }
            }
            if !load.is_zero() {
                let grown = picsift_tests::bench::rss_kb(std::process::id(), "VmRSS")
                    .saturating_sub(rss_before);
                eprintln!(
                    "{n} workers' memory copies loaded (slowest {:.1} s), {:.0} bytes per image each",
                    load.as_secs_f64(),
                    grown as f64 * 1024.0 / (n as f64 * stored as f64)
                );
            }
            let (elapsed, mut times, refused) = run(&workers, concurrency, work.clone()).await?;
            println!(
                "| {design} | {n} | {:.0} | {:.2} | {:.2} | {refused} / {planted} |",
                inserts as f64 / elapsed.as_secs_f64(),
                ms(percentile(&mut times, 0.5)),
                ms(percentile(&mut times, 0.99)),
            );
        }
    }
    Ok(())
}
