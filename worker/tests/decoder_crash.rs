//! An entry whose decode takes its worker down (an abort, out of memory:
//! nothing a panic handler sees) is refused as `decoder_crash` once it has
//! done so on a redelivered task, instead of being retried until the task
//! is dead-lettered with the rest of its chunk.

use picsift_backends::embedded::{FsBlobStore, MemQueue};
use picsift_backends::sql::{SqlCatalog, SqliteDedup};
use picsift_core::backend::Backends;
use picsift_core::backend::{BlobStore, Catalog, NewBatch};
use picsift_core::chunk::ChunkTask;
use picsift_core::model::EntryPlan;
use picsift_core::verdict::Reason;
use picsift_worker::{WorkerConfig, process_chunk};
use std::io::Write;
use std::sync::Arc;

fn photo(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([
            (x * 3 + y) as u8 ^ seed,
            (y * 5) as u8,
            (x * 7) as u8 ^ seed,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

async fn setup() -> (tempfile::TempDir, Backends, Arc<SqlCatalog>) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(
        SqlCatalog::open_sqlite(&dir.path().join("c.db"))
            .await
            .unwrap(),
    );
    let blobs = Arc::new(FsBlobStore::open(dir.path().join("blobs")).await.unwrap());
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..3u8 {
        zip.start_file(
            format!("p{i}.jpg"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(&photo(i * 40)).unwrap();
    }
    let zip = zip.finish().unwrap().into_inner();
    blobs.put("staging/b1.zip", zip.into()).await.unwrap();
    catalog
        .create_batch(&NewBatch {
            id: "b1".into(),
            owner: "default".into(),
            staged_key: "staging/b1.zip".into(),
            upload_bytes: 1,
            total_entries: 3,
            callback_url: None,
            now: 0,
        })
        .await
        .unwrap();
    let entries: Vec<EntryPlan> = (0..3)
        .map(|i| EntryPlan {
            index: i,
            name: format!("p{i}.jpg"),
            compressed_size: 10,
        })
        .collect();
    catalog.record_entries("b1", &entries, 0).await.unwrap();
    let b = Backends {
        blobs,
        uploads: catalog.clone(),
        catalog: catalog.clone(),
        dedup: Arc::new(SqliteDedup::of(&catalog).expect("a SQLite catalog")),
        queue: Arc::new(MemQueue::new()),
    };
    (dir, b, catalog)
}

fn task() -> ChunkTask {
    ChunkTask {
        batch_id: "b1".into(),
        entries: vec![0, 1, 2],
        policy: None,
        owner: "default".into(),
        replanned: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_that_killed_its_worker_on_a_redelivery_is_refused_the_rest_goes_on() {
    let (_dir, b, catalog) = setup().await;
    // Delivery 2 of the task began decoding entry 1 and its worker died
    // there (the count went up and never came down).
    assert_eq!(catalog.begin_attempt("b1", 1).await.unwrap(), 1);
    let cfg = WorkerConfig::default();
    assert!(process_chunk(&b, &cfg, &task(), 3).await.unwrap());
    let report = catalog.report("b1", None, 10).await.unwrap();
    let verdicts: Vec<(&str, Option<Reason>)> = report
        .iter()
        .map(|e| (e.verdict.as_str(), e.reason))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("accepted", None),
            ("rejected", Some(Reason::DecoderCrash)),
            ("accepted", None)
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_task_that_ends_normally_leaves_no_count_behind() {
    let (_dir, b, catalog) = setup().await;
    let cfg = WorkerConfig::default();
    // A first delivery counts nothing; a second counts each decode up and down.
    assert!(process_chunk(&b, &cfg, &task(), 2).await.unwrap());
    let report = catalog.report("b1", None, 10).await.unwrap();
    assert!(report.iter().all(|e| e.reason.is_none()), "{report:?}");
    // (Decided entries are no longer counted at all.)
    assert_eq!(catalog.begin_attempt("b1", 0).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_planned_again_after_a_restart_counts_like_a_redelivery() {
    let (_dir, b, catalog) = setup().await;
    // The standalone server died decoding entry 0 of a replanned task (its
    // in-memory queue forgot the deliveries; the plan says it is a retry).
    catalog.begin_attempt("b1", 0).await.unwrap();
    let replanned = ChunkTask {
        replanned: true,
        ..task()
    };
    process_chunk(&b, &WorkerConfig::default(), &replanned, 1)
        .await
        .unwrap();
    let report = catalog.report("b1", None, 10).await.unwrap();
    assert_eq!(report[0].reason, Some(Reason::DecoderCrash), "{report:?}");
}
