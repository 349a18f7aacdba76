//! A chunk that keeps failing is dead-lettered, never retried forever, and
//! its entries get a `failed` verdict so the batch still finishes.

use picsift_backends::embedded::{FsBlobStore, MemQueue};
use picsift_backends::sql::{SqlCatalog, SqliteDedup};
use picsift_core::backend::Backends;
use picsift_core::backend::{Catalog, NewBatch, WorkQueue};
use picsift_core::chunk::ChunkTask;
use picsift_core::model::{EntryPlan, Phase};
use picsift_worker::WorkerConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn task_past_its_delivery_limit_is_dead_lettered_and_its_entries_fail() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(
        SqlCatalog::open_sqlite(&dir.path().join("c.db"))
            .await
            .unwrap(),
    );
    let queue = Arc::new(MemQueue::new());
    let b = Backends {
        blobs: Arc::new(FsBlobStore::open(dir.path().join("blobs")).await.unwrap()),
        uploads: catalog.clone(),
        catalog: catalog.clone(),
        dedup: Arc::new(SqliteDedup::of(&catalog).expect("a SQLite catalog")),
        queue: queue.clone(),
    };
    let batch = NewBatch {
        owner: "default".into(),
        id: "b1".into(),
        staged_key: "staging/b1.zip".into(),
        upload_bytes: 1,
        total_entries: 3,
        callback_url: None,
        now: 0,
    };
    catalog.create_batch(&batch).await.unwrap();
    let entries: Vec<EntryPlan> = (0..3)
        .map(|i| EntryPlan {
            index: i,
            name: format!("e{i}.jpg"),
            compressed_size: 10,
        })
        .collect();
    catalog.record_entries("b1", &entries, 0).await.unwrap();
    // Entry 2 was decided before the trouble started; it keeps its verdict.
    let ok = picsift_core::verdict::Verdict::accepted("x".repeat(64));
    catalog.record_verdict("b1", 2, &ok, 0).await.unwrap();

    // The task has already failed max_deliveries times.
    let cfg = WorkerConfig {
        max_deliveries: 3,
        concurrency: 1,
        ..WorkerConfig::default()
    };
    queue
        .enqueue(ChunkTask {
            owner: "default".into(),
            replanned: false,
            batch_id: "b1".into(),
            entries: vec![0, 1, 2],
            policy: None,
        })
        .await
        .unwrap();
    for _ in 0..3 {
        let lease = queue.dequeue(0).await.unwrap().unwrap();
        queue.release(&lease).await.unwrap();
    }

    let stop = CancellationToken::new();
    let run = tokio::spawn(picsift_worker::run_workers(
        b.clone(),
        cfg,
        Arc::new(Notify::new()),
        stop.clone(),
    ));
    let mut waited = 0;
    while catalog.batch("b1").await.unwrap().unwrap().phase != Phase::Completed {
        assert!(waited < 100, "batch did not complete");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    stop.cancel();
    run.await.unwrap();

    let report = catalog.report("b1", None, 10).await.unwrap();
    for line in &report[..2] {
        assert_eq!(
            (line.verdict.as_str(), line.reason.map(|r| r.code())),
            ("failed", Some("retries_exhausted")),
            "{line:?}"
        );
    }
    assert_eq!(report[2].verdict, "accepted");
    let dead = queue.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0.entries, vec![0, 1, 2]);
    assert_eq!(queue.backlog().await.unwrap(), 0);
}
