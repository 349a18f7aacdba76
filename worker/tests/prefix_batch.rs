//! A batch whose source is a prefix in the bucket (an UploadBatch applied by
//! hand may point at one): every object under it is an entry, checked like
//! an archive's, and none of the user's objects is deleted.

use picsift_backends::embedded::{FsBlobStore, MemQueue};
use picsift_backends::sql::{SqlCatalog, SqliteDedup};
use picsift_core::backend::{Backends, NewBatch};
use picsift_core::intake::{IntakeConfig, enqueue_batch};
use picsift_core::model::Phase;
use picsift_worker::WorkerConfig;
use std::sync::Arc;

#[tokio::test]
async fn a_prefix_batch_checks_every_object_under_it_and_deletes_none() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(
        SqlCatalog::open_sqlite(&dir.path().join("c.db"))
            .await
            .unwrap(),
    );
    let b = Backends {
        blobs: Arc::new(FsBlobStore::open(dir.path().join("blobs")).await.unwrap()),
        uploads: catalog.clone(),
        catalog: catalog.clone(),
        dedup: Arc::new(SqliteDedup::of(&catalog).expect("a SQLite catalog")),
        queue: Arc::new(MemQueue::new()),
    };
    for (name, bytes) in [
        ("a.jpg", picsift_tests::jpeg(1, 64, 48)),
        ("b.jpg", picsift_tests::jpeg(2, 64, 48)),
        ("c.jpg", picsift_tests::jpeg(1, 64, 48)),
        ("notes.txt", b"not an image".to_vec()),
    ] {
        b.blobs
            .put(&format!("imports/scan/{name}"), bytes.into())
            .await
            .unwrap();
    }
    // As the operator records and enqueues it.
    b.catalog
        .create_batch(&NewBatch {
            id: "scan".into(),
            owner: "default".into(),
            staged_key: "imports/scan/".into(),
            upload_bytes: 0,
            total_entries: 0,
            callback_url: None,
            now: 0,
        })
        .await
        .unwrap();
    let intake = IntakeConfig {
        chunk_limits: picsift_core::chunk::ChunkLimits {
            max_entries: 2,
            max_bytes: 1 << 30,
        },
        ..IntakeConfig::default()
    };
    enqueue_batch(&b, &intake, "scan").await.unwrap();

    let cfg = WorkerConfig::default();
    while let Some(lease) = b.queue.dequeue(10).await.unwrap() {
        picsift_worker::process_chunk(&b, &cfg, &lease.task, lease.deliveries)
            .await
            .unwrap();
        b.queue.ack(&lease).await.unwrap();
    }
    let batch = b.catalog.batch("scan").await.unwrap().unwrap();
    assert_eq!((batch.phase, batch.total_entries), (Phase::Completed, 4));
    let report = b.catalog.report("scan", None, 10).await.unwrap();
    let verdicts: Vec<(String, String)> = report
        .iter()
        .map(|e| {
            let v = serde_json::to_value(e).unwrap();
            (
                v["entry"].as_str().unwrap().into(),
                v["verdict"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("a.jpg".into(), "accepted".into()),
            ("b.jpg".into(), "accepted".into()),
            ("c.jpg".into(), "duplicate".into()),
            ("notes.txt".into(), "rejected".into()),
        ]
    );
    assert_eq!(
        b.blobs.list("imports/scan/").await.unwrap().len(),
        4,
        "the user's objects stay"
    );
}
