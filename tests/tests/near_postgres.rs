//! Near duplicates across the cluster's processes (backends/src/sql/pg_near.rs):
//! each process's catalog keeps its own copy of the hashes in memory, so
//! what the conformance suite checks within one catalog is checked here
//! between several catalogs on one PostgreSQL database, as the gateways and
//! workers of a cluster are: racing inserts from different processes, a
//! process seeing what another recorded, a restart rebuilding the copy, and
//! a slow transaction that commits after younger ones.

use picsift_backends::sql::SqlCatalog;
use picsift_core::backend::Catalog;
use picsift_core::format::Format;
use picsift_core::model::ImageRecord;
use picsift_core::pdq::Hash;
use picsift_tests::services::postgres::Postgres;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

/// A fresh database on the one server this test binary starts.
async fn database() -> String {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    tokio::task::spawn_blocking(|| {
        SERVER
            .get_or_init(Postgres::start)
            .create_database(&format!("near_{}", NEXT.fetch_add(1, Ordering::Relaxed)))
    })
    .await
    .unwrap()
}

/// `n` catalogs on `url`, as `n` processes would hold.
async fn processes(url: &str, n: usize) -> Vec<Arc<dyn Catalog>> {
    let mut out: Vec<Arc<dyn Catalog>> = Vec::new();
    for _ in 0..n {
        out.push(Arc::new(
            SqlCatalog::connect_postgres(url, 8).await.unwrap(),
        ));
    }
    out
}

fn image(id: &str, hash: &Hash) -> ImageRecord {
    ImageRecord {
        id: format!("{id:0>64}"),
        format: Format::Jpeg,
        width: 640,
        height: 480,
        size: 1234,
        orientation: None,
        owner: "default".into(),
        batch_id: "b".into(),
        entry_index: 0,
        entry_name: "a.jpg".into(),
        pdq: Some(hash.to_string()),
        pdq_quality: Some(90),
        created_ms: 1_700_000_000_000,
    }
}

/// Records `img` through `c` unless a stored image is within 31 bits: that
/// image's id.
async fn store(c: &Arc<dyn Catalog>, img: &ImageRecord) -> Option<String> {
    let told = c.insert_image_unless_near(img, 31, None).await.unwrap();
    told.map(|m| m.image_id)
}

/// `base` with its first `bits` bits (spread over the bytes) flipped.
fn flipped(base: &Hash, bits: usize) -> Hash {
    let mut b = base.to_bytes();
    for k in 0..bits {
        b[k % 32] ^= 1 << (k / 32);
    }
    Hash::from_bytes(b)
}

#[tokio::test(flavor = "multi_thread")]
async fn near_duplicates_raced_from_four_processes_record_exactly_one() {
    let url = database().await;
    let procs = processes(&url, 4).await;
    for round in 0..6u8 {
        let base = Hash::from_bytes([round.wrapping_mul(53) ^ 0x3c; 32]);
        let start = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16usize)
            .map(|i| {
                let (c, start) = (procs[i % 4].clone(), start.clone());
                // 0 to 30 bits from the base, nested: every pair within
                // 30 bits, so exactly one may be recorded.
                let img = image(&format!("r{round}i{i}"), &flipped(&base, 2 * i));
                tokio::spawn(async move {
                    start.wait().await;
                    let told = c.insert_image_unless_near(&img, 31, None).await.unwrap();
                    (img, told)
                })
            })
            .collect();
        let mut recorded = Vec::new();
        for t in tasks {
            let (img, told) = t.await.unwrap();
            match told {
                None => recorded.push(img),
                Some(m) => {
                    let other = procs[0].image(&m.image_id).await.unwrap().unwrap();
                    let h: Hash = other.pdq.unwrap().parse().unwrap();
                    let mine: Hash = img.pdq.unwrap().parse().unwrap();
                    assert_eq!(h.distance(&mine), m.distance);
                    assert!(m.distance <= 31);
                    assert!(procs[1].image(&img.id).await.unwrap().is_none());
                }
            }
        }
        // No two recorded images are within 31 bits of each other.
        for a in &recorded {
            for b in &recorded {
                let (ha, hb): (Hash, Hash) = (
                    a.pdq.as_ref().unwrap().parse().unwrap(),
                    b.pdq.as_ref().unwrap().parse().unwrap(),
                );
                assert!(
                    a.id == b.id || ha.distance(&hb) > 31,
                    "round {round}: {} and {} both recorded, {} apart",
                    a.id,
                    b.id,
                    ha.distance(&hb)
                );
            }
        }
        assert_eq!(recorded.len(), 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_one_process_records_another_finds_and_a_restart_loads() {
    let url = database().await;
    let procs = processes(&url, 2).await;
    let base = Hash::from_bytes([0x6a; 32]);
    // Both copies loaded (empty) before anything is recorded: B then only
    // catches up.
    for p in &procs {
        assert!(p.similar(&base, 31, 10, None).await.unwrap().is_empty());
    }
    let first = image("first", &base);
    assert_eq!(store(&procs[0], &first).await, None);
    let found = procs[1]
        .similar(&flipped(&base, 7), 31, 10, None)
        .await
        .unwrap();
    assert_eq!(
        found
            .iter()
            .map(|s| (s.image_id.as_str(), s.distance))
            .collect::<Vec<_>>(),
        vec![(first.id.as_str(), 7)]
    );
    let near = image("near", &flipped(&base, 20));
    assert_eq!(store(&procs[1], &near).await, Some(first.id.clone()));
    // A tenant's scope sees only its own images.
    assert!(
        procs[1]
            .similar(&base, 31, 10, Some("someone-else"))
            .await
            .unwrap()
            .is_empty()
    );
    // Restarted: a new process loads the copy from the catalog.
    let restarted = processes(&url, 1).await.remove(0);
    let found = restarted.similar(&base, 31, 10, None).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].image_id, first.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_committed_after_younger_transactions_is_still_found() {
    let url = database().await;
    let procs = processes(&url, 2).await;
    let (old_hash, young_hash) = (Hash::from_bytes([0x11; 32]), Hash::from_bytes([0xe7; 32]));
    assert!(
        procs[0]
            .similar(&old_hash, 31, 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    // A slow transaction takes its id first and inserts, uncommitted.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut slow = pool.begin().await.unwrap();
    let old = image("old", &old_hash);
    sqlx::query(
        "INSERT INTO images (id, format, width, height, size, batch_id, entry_idx, entry_name, created_at, pdq, pdq_quality, owner)
         VALUES ($1, 'jpeg', 1, 1, 1, 'b', 0, 'a.jpg', 0, $2, 90, 'default')",
    )
    .bind(&old.id)
    .bind(old.pdq.as_deref())
    .execute(&mut *slow)
    .await
    .unwrap();
    // A younger one commits, and process 0 catches up past it.
    let young = image("young", &young_hash);
    assert_eq!(store(&procs[1], &young).await, None);
    let seen = procs[0].similar(&young_hash, 0, 10, None).await.unwrap();
    assert_eq!(seen.len(), 1, "the younger image is seen");
    assert!(
        procs[0]
            .similar(&old_hash, 31, 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    // The slow one commits afterwards: the next catch-up reads it, once.
    slow.commit().await.unwrap();
    for _ in 0..2 {
        let found = procs[0].similar(&old_hash, 31, 10, None).await.unwrap();
        assert_eq!(found.len(), 1, "found once: {found:?}");
        assert_eq!(found[0].image_id, old.id);
    }
    // And it stops its near duplicate, in the process that caught up.
    let near = image("near-old", &flipped(&old_hash, 9));
    assert_eq!(store(&procs[0], &near).await, Some(old.id));
}
