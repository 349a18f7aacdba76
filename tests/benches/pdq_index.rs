//! The PDQ near-duplicate index next to a brute-force scan of the same
//! hashes in memory, in the same run: query latency p50 and p99, and recall
//! of planted neighbours at distances 0 to 31. The in-memory multi-index
//! (`pdq_memory::MemoryIndex`, what the standalone catalog answers from)
//! always; with PICSIFT_BENCH_SQLITE=1 the SQLite catalog itself (bulk
//! loaded, then opened: the open loads its memory index);
//! PICSIFT_BENCH_POSTGRES=1 also times the PostgreSQL catalog (a server is
//! started as in the tests; the catalog answers from its copy in memory,
//! loaded on the first query; `near_cluster` compares it with the MIH table
//! in the database it replaced).
//!
//! Run: `cargo bench -p picsift-tests --bench pdq_index`
//! Size: PICSIFT_BENCH_HASHES (default 1000000), PICSIFT_BENCH_QUERIES (default 256).

#[path = "shared/postgres.rs"]
mod postgres;

use picsift_backends::sql::SqlCatalog;
use picsift_core::Result;
use picsift_core::backend::Catalog;
use picsift_core::pdq::Hash;
use picsift_core::pdq_memory::MemoryIndex;
use std::time::Instant;

use picsift_tests::hashes::{Rng, id, ms, percentile};

fn words(h: &Hash) -> [u64; 4] {
    let b = h.to_bytes();
    std::array::from_fn(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8])))
}

fn backend(e: impl std::fmt::Display) -> picsift_core::Error {
    picsift_core::Error::Backend(e.to_string())
}

/// Times `similar` for every probe and counts the planted neighbours found.
async fn report(what: &str, catalog: &dyn Catalog, probes: &[(Hash, String, u32)]) -> Result<()> {
    let mut times = Vec::new();
    let mut found = 0;
    let mut missed_at = Vec::new();
    for (query, planted, d) in probes {
        let t = Instant::now();
        let hits = catalog.similar(query, 31, 10, None).await?;
        times.push(t.elapsed());
        if hits.iter().any(|h| &h.image_id == planted) {
            found += 1;
        } else {
            missed_at.push(*d);
        }
    }
    println!(
        "{what}:  p50 {:.2} ms  p99 {:.2} ms  recall {found}/{}",
        ms(percentile(&mut times, 0.5)),
        ms(percentile(&mut times, 0.99)),
        probes.len()
    );
    if !missed_at.is_empty() {
        println!("{what} missed planted neighbours at distances {missed_at:?}");
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return Ok(()); // `cargo test --benches` probes bench binaries this way.
    }
    let n: u64 = picsift_tests::env_or("PICSIFT_BENCH_HASHES", 1_000_000);
    let queries: u64 = picsift_tests::env_or("PICSIFT_BENCH_QUERIES", 256);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut all: Vec<(String, Hash)> = Vec::with_capacity((n + queries) as usize);
    for i in 0..n {
        all.push((id(i), rng.hash()));
    }
    let mut probes = Vec::new();
    for q in 0..queries {
        let query = rng.hash();
        let d = (q % 32) as u32;
        let planted = (id(n + q), rng.neighbour(&query, d));
        probes.push((query, planted.0.clone(), d));
        all.push(planted);
    }
    println!("hashes: {n} (+{queries} planted neighbours at distances 0..31)");

    // The in-memory multi-index.
    let (t, rss) = (
        Instant::now(),
        picsift_tests::bench::rss_kb(std::process::id(), "VmRSS"),
    );
    let mut index = MemoryIndex::default();
    for (image_id, hash) in &all {
        index.insert(image_id, hash);
    }
    // Fresh memory (nothing freed before to reuse): the index's own size.
    let grown = picsift_tests::bench::rss_kb(std::process::id(), "VmRSS").saturating_sub(rss);
    println!(
        "MIH in memory: built in {:.1} s, {:.0} bytes per image",
        t.elapsed().as_secs_f64(),
        grown as f64 * 1024.0 / all.len() as f64
    );
    let mut mem_t = Vec::new();
    let mut mem_found = 0u32;
    for (query, planted, _) in &probes {
        let t = Instant::now();
        let hits = index.search(query, 31, 10, |_| true);
        mem_t.push(t.elapsed());
        if hits.iter().any(|(id, _)| id == planted) {
            mem_found += 1;
        }
    }
    println!(
        "MIH in memory:  p50 {:.3} ms  p99 {:.3} ms  recall {mem_found}/{queries}",
        ms(percentile(&mut mem_t, 0.5)),
        ms(percentile(&mut mem_t, 0.99)),
    );
    drop(index);

    // Brute force: every hash in memory, popcount of the XOR.
    let flat: Vec<[u64; 4]> = all.iter().map(|(_, h)| words(h)).collect();
    let mut brute_t = Vec::new();
    let mut brute_found = 0u32;
    for (query, planted, _) in &probes {
        let q = words(query);
        let t = Instant::now();
        let brute: Vec<usize> = flat
            .iter()
            .enumerate()
            .filter(|(_, w)| (0..4).map(|i| (w[i] ^ q[i]).count_ones()).sum::<u32>() <= 31)
            .map(|(i, _)| i)
            .collect();
        brute_t.push(t.elapsed());
        if brute.iter().any(|&i| &all[i].0 == planted) {
            brute_found += 1;
        }
    }
    println!(
        "brute force (in memory, one core):  p50 {:.2} ms  p99 {:.2} ms  recall {}/{}",
        ms(percentile(&mut brute_t, 0.5)),
        ms(percentile(&mut brute_t, 0.99)),
        brute_found,
        queries
    );
    if std::env::var_os("PICSIFT_BENCH_SQLITE").is_some() {
        let dir = tempfile::tempdir().map_err(backend)?;
        let path = dir.path().join("catalog.db");
        // Migrations first, then a bulk load through a connection of our
        // own: insert_image is one transaction per image, too slow here.
        drop(SqlCatalog::open_sqlite(&path).await?);
        eprintln!("loading {} hashes into SQLite ...", all.len());
        let load = Instant::now();
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .map_err(|e| picsift_core::Error::Backend(e.to_string()))?;
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| picsift_core::Error::Backend(e.to_string()))?;
        // A thousand images per statement, through json_each.
        for (c, chunk) in all.chunks(1000).enumerate() {
            let rows: Vec<serde_json::Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, (image_id, hash))| {
                    serde_json::json!([image_id, c * 1000 + i, hash.to_string()])
                })
                .collect();
            sqlx::query(
                "INSERT INTO images (id, format, width, height, size, orientation, batch_id, entry_idx, entry_name, created_at, pdq, pdq_quality)
                 SELECT json_extract(value, '$[0]'), 'jpeg', 1, 1, 1, NULL, 'bench', json_extract(value, '$[1]'), 'x.jpg', 0, json_extract(value, '$[2]'), 90
                 FROM json_each(?)",
            )
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| picsift_core::Error::Backend(e.to_string()))?;
        }
        tx.commit()
            .await
            .map_err(|e| picsift_core::Error::Backend(e.to_string()))?;
        let db_mb = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) / (1 << 20);
        eprintln!(
            "loaded in {:.1} s ({db_mb} MiB)",
            load.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let catalog = SqlCatalog::open_sqlite(&path).await?;
        eprintln!(
            "opened (memory index loaded) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        report("SQLite catalog (memory index)", &catalog, &probes).await?;
    }
    if std::env::var_os("PICSIFT_BENCH_POSTGRES").is_some() {
        let pg = picsift_tests::services::postgres::Postgres::start();
        let catalog = picsift_backends::sql::SqlCatalog::connect_postgres(&pg.url, 4).await?;
        let pool = sqlx::PgPool::connect(&pg.url).await.map_err(backend)?;
        let load = Instant::now();
        postgres::load_postgres(&pool, &all)
            .await
            .map_err(backend)?;
        eprintln!("PostgreSQL loaded in {:.1} s", load.elapsed().as_secs_f64());
        // The first query loads the catalog's copy in memory: timed apart.
        let (t, rss) = (
            Instant::now(),
            picsift_tests::bench::rss_kb(std::process::id(), "VmRSS"),
        );
        catalog.similar(&all[0].1, 31, 1, None).await?;
        let grown = picsift_tests::bench::rss_kb(std::process::id(), "VmRSS").saturating_sub(rss);
        println!(
            "PostgreSQL catalog's memory copy loaded in {:.1} s, {:.0} bytes per image",
            t.elapsed().as_secs_f64(),
            grown as f64 * 1024.0 / all.len() as f64
        );
        report("PostgreSQL catalog (memory copy)", &catalog, &probes).await?;
    }
    Ok(())
}
