//! A worker that recorded an image with its entry's verdict and died before
//! committing the exact-dedup claim leaves a pending claim whose lease runs
//! out, and its entry is decided (so no redelivery retries it). The next
//! entry with the same bytes must become its duplicate, not a second
//! acceptance of the same image.

use picsift_backends::embedded::{FsBlobStore, MemQueue};
use picsift_backends::sql::{SqlCatalog, SqliteDedup};
use picsift_core::backend::{Backends, BlobStore, Catalog, DedupIndex, NewBatch};
use picsift_core::chunk::ChunkTask;
use picsift_core::dedup::ClaimOutcome;
use picsift_core::model::{EntryPlan, ImageRecord, image_key};
use picsift_core::policy::Policy;
use picsift_core::verdict::Verdict;
use picsift_worker::{WorkerConfig, process_chunk};
use std::io::Write;
use std::sync::Arc;

fn photo() -> Vec<u8> {
    let img = image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 3 + y) as u8, (y * 5) as u8, (x * 7) as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_copy_of_an_image_recorded_by_a_dead_worker_is_its_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(
        SqlCatalog::open_sqlite(&dir.path().join("c.db"))
            .await
            .unwrap(),
    );
    let blobs = Arc::new(FsBlobStore::open(dir.path().join("blobs")).await.unwrap());
    let bytes = photo();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..2 {
        zip.start_file(
            format!("p{i}.jpg"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(&bytes).unwrap();
    }
    let zip = zip.finish().unwrap().into_inner();
    blobs.put("staging/b1.zip", zip.into()).await.unwrap();
    catalog
        .create_batch(&NewBatch {
            id: "b1".into(),
            owner: "default".into(),
            staged_key: "staging/b1.zip".into(),
            upload_bytes: 1,
            total_entries: 2,
            callback_url: None,
            now: 0,
        })
        .await
        .unwrap();
    let entries: Vec<EntryPlan> = (0..2)
        .map(|i| EntryPlan {
            index: i,
            name: format!("p{i}.jpg"),
            compressed_size: 10,
        })
        .collect();
    catalog.record_entries("b1", &entries, 0).await.unwrap();
    let dedup = Arc::new(SqliteDedup::of(&catalog).expect("a SQLite catalog"));
    let b = Backends {
        blobs: blobs.clone(),
        uploads: catalog.clone(),
        catalog: catalog.clone(),
        dedup: dedup.clone(),
        queue: Arc::new(MemQueue::new()),
    };

    // Entry 0's worker: claimed, put, recorded with its verdict, then died
    // before committing (its claim's lease is long over).
    let p = picsift_core::pipeline::prepare(&bytes, &Policy::default()).unwrap();
    assert_eq!(
        dedup.claim(&p.id, "b1:0", 0, 1).await.unwrap(),
        ClaimOutcome::New
    );
    blobs
        .put(&image_key(&p.id), p.bytes.clone().into())
        .await
        .unwrap();
    let record = ImageRecord {
        id: p.id.clone(),
        format: p.format,
        width: p.width,
        height: p.height,
        size: p.bytes.len() as u64,
        orientation: None,
        owner: "default".into(),
        batch_id: "b1".into(),
        entry_index: 0,
        entry_name: "p0.jpg".into(),
        pdq: p.pdq.map(|h| h.hash.to_string()),
        pdq_quality: p.pdq.map(|h| h.quality),
        created_ms: 0,
    };
    catalog
        .record_stored(&record, &Verdict::accepted(p.id.clone()), None, 0)
        .await
        .unwrap();

    // The chunk comes again: entry 0 is decided, entry 1 has the same bytes.
    let task = ChunkTask {
        batch_id: "b1".into(),
        entries: vec![0, 1],
        policy: None,
        owner: "default".into(),
        replanned: false,
    };
    assert!(
        process_chunk(&b, &WorkerConfig::default(), &task, 2)
            .await
            .unwrap()
    );
    let report = catalog.report("b1", None, 10).await.unwrap();
    assert_eq!(report[0].verdict, "accepted");
    assert_eq!(report[1].verdict, "duplicate", "{:?}", report[1]);
    assert_eq!(report[1].duplicate_of.as_deref(), Some(p.id.as_str()));
    // And the claim is committed to the image again.
    assert_eq!(
        dedup
            .claim(&p.id, "other", i64::MAX / 2, 1000)
            .await
            .unwrap(),
        ClaimOutcome::Committed {
            image_id: p.id.clone(),
            by_you: false
        }
    );
}
