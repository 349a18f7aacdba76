//! Rebuilding the Redis dedup index from a PostgreSQL catalog: that it
//! restores every claim the catalog implies, and how long it takes per
//! million images (uploads are held back with 503 while it runs). The
//! catalog is filled with SQL (`generate_series`), a tenth of the images
//! owned by a second tenant too.
//!
//! In the tests: 5,000 images. The figure in docs/benchmarks.md:
//! `PICSIFT_REBUILD_IMAGES=1000000 cargo test -p picsift-tests --test dedup_rebuild -- --nocapture`.
//! It also times the way rebuilds went before (two catalog queries and two
//! Redis round trips per image) on the first 20,000 images, and reports
//! Redis's memory per claim.

mod common;

use common::redis_memory;
use picsift_backends::cluster::RedisDedup;
use picsift_backends::sql::SqlCatalog;
use picsift_core::backend::{Catalog, DedupIndex};
use picsift_core::dedup::{ClaimOutcome, claim_key};
use picsift_tests::services::postgres::Postgres;
use picsift_tests::services::redis::RedisServer;
use std::time::Instant;

async fn flush(url: &str) {
    // No response timeout: a million keys take a while to drop.
    let client = redis::Client::open(url).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_restores_every_claim_the_catalog_implies() {
    let n: u64 = std::env::var("PICSIFT_REBUILD_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let pg = Postgres::start();
    let redis = RedisServer::start();
    let catalog = SqlCatalog::connect_postgres(&pg.url, 4).await.unwrap();
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let filled = Instant::now();
    // Ids as SHA-256 hex: two md5s side by side.
    sqlx::query(
        "INSERT INTO images (id, format, width, height, size, batch_id, entry_idx, entry_name, created_at, owner)
         SELECT md5(i::text) || md5((-i)::text), 'jpeg', 4000, 3000, 3000000,
                'batch-' || (i / 25), i % 25, 'img.jpg', 0, 'acme'
         FROM generate_series(1, $1) AS i",
    )
    .bind(n as i64)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO image_owners (image_id, owner)
         SELECT id, 'acme' FROM images
         UNION ALL SELECT id, 'bravo' FROM images WHERE entry_idx % 10 = 3",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    eprintln!(
        "rebuild: {n} images in the catalog ({:.1} s to fill)",
        filled.elapsed().as_secs_f64()
    );
    let dedup = RedisDedup::connect(&redis.url, "picsift:").await.unwrap();
    let (empty_bytes, _) = redis_memory(&redis.url).await;

    // The paged rebuild, as `ensure_complete` and `picsift reindex` run it.
    let t = Instant::now();
    assert!(dedup.begin_rebuild("bench", 60_000).await.unwrap());
    let restored = picsift_core::dedup_index::rebuild_holding(&catalog, &dedup, "bench")
        .await
        .unwrap();
    let paged_s = t.elapsed().as_secs_f64();
    assert_eq!(restored, Some(n as usize));
    let (used, keys) = redis_memory(&redis.url).await;
    let owners: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM image_owners")
        .fetch_one(&pool)
        .await
        .unwrap();
    // A global claim per image, a tenant claim per owner, and the marker.
    assert_eq!(keys, n + owners as u64 + 1);
    for (i, id) in catalog
        .image_ids()
        .await
        .unwrap()
        .iter()
        .enumerate()
        .step_by(997)
    {
        let tenants = catalog.image_owners(id).await.unwrap();
        for key in std::iter::once(id.clone()).chain(tenants.iter().map(|t| claim_key(Some(t), id)))
        {
            let got = dedup.claim(&key, "probe", 1, 1_000).await.unwrap();
            assert!(
                matches!(&got, ClaimOutcome::Committed { image_id, .. } if image_id == id),
                "image {i}: claim {key} answered {got:?}"
            );
        }
    }

    // The way it went before: per image, its record, its owners, and one
    // Redis round trip per claim; on a sample, scaled to a million.
    flush(&redis.url).await;
    let sample = catalog.image_ids().await.unwrap();
    let sample = &sample[..sample.len().min(20_000)];
    let t = Instant::now();
    for id in sample {
        let img = catalog.image(id).await.unwrap().unwrap();
        let owner = format!("{}:{}", img.batch_id, img.entry_index);
        dedup.restore_committed(id, &owner, id).await.unwrap();
        for tenant in catalog.image_owners(id).await.unwrap() {
            dedup
                .restore_committed(&claim_key(Some(&tenant), id), &owner, id)
                .await
                .unwrap();
        }
    }
    let per_image_s = t.elapsed().as_secs_f64() / sample.len() as f64;
    let paged_per_image_s = paged_s / n as f64;
    eprintln!(
        "rebuild: paged {paged_s:.1} s for {n} images = {:.0} s per million ({:.0} images/s); \
         per image as before {:.0} s per million ({:.0} images/s, from {} images): {:.1}x faster; \
         Redis {:.0} bytes per claim ({keys} keys, {:.1} MB)",
        paged_per_image_s * 1e6,
        1.0 / paged_per_image_s,
        per_image_s * 1e6,
        1.0 / per_image_s,
        sample.len(),
        per_image_s / paged_per_image_s,
        (used - empty_bytes) as f64 / keys as f64,
        (used - empty_bytes) as f64 / 1e6,
    );
}
