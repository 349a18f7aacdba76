//! Image bytes are content-addressed and shared by every tenant: a worker
//! that loses a near-duplicate race under per-tenant dedup used to delete
//! `images/<sha>` at once, taking the bytes another tenant's record still
//! named. Now it notes them, and the sweep deletes only bytes that no
//! record names, after its grace, never while a worker puts them again.

use picsift_backends::embedded::{FsBlobStore, MemQueue};
use picsift_backends::sql::{SqlCatalog, SqliteDedup};
use picsift_core::backend::{Backends, NewBatch};
use picsift_core::blob_gc::{self, GRACE_MS};
use picsift_core::format::Format;
use picsift_core::model::{ImageRecord, image_key};
use std::sync::Arc;

const T0: i64 = 1_700_000_000_000;

async fn backends(dir: &std::path::Path) -> Backends {
    let catalog = Arc::new(SqlCatalog::open_sqlite(&dir.join("c.db")).await.unwrap());
    Backends {
        blobs: Arc::new(FsBlobStore::open(dir.join("blobs")).await.unwrap()),
        dedup: Arc::new(SqliteDedup::of(&catalog).unwrap()),
        uploads: catalog.clone(),
        catalog,
        queue: Arc::new(MemQueue::new()),
    }
}

fn record(id: &str, owner: &str) -> ImageRecord {
    ImageRecord {
        id: id.into(),
        format: Format::Jpeg,
        width: 1,
        height: 1,
        size: 5,
        orientation: None,
        owner: owner.into(),
        batch_id: "a".into(),
        entry_index: 0,
        entry_name: "x.jpg".into(),
        pdq: None,
        pdq_quality: None,
        created_ms: T0,
    }
}

async fn exists(b: &Backends, id: &str) -> bool {
    b.blobs.size(&image_key(id)).await.unwrap().is_some()
}

#[tokio::test]
async fn a_lost_race_never_deletes_bytes_another_tenants_record_names() {
    let dir = tempfile::tempdir().unwrap();
    let b = backends(dir.path()).await;
    b.catalog
        .create_batch(&NewBatch {
            id: "a".into(),
            owner: "alice".into(),
            staged_key: "staging/a.zip".into(),
            upload_bytes: 1,
            total_entries: 1,
            callback_url: None,
            now: T0,
        })
        .await
        .unwrap();
    let shared = "5".repeat(64);
    let lone = "6".repeat(64);
    // Alice's image is stored and recorded.
    b.blobs
        .put(&image_key(&shared), "bytes".into())
        .await
        .unwrap();
    b.catalog
        .insert_image(&record(&shared, "alice"))
        .await
        .unwrap();
    // Bob uploaded the same bytes and a near duplicate of them won in his
    // scope: his worker steps back, as `worker::store::store_once` does.
    b.catalog.note_orphan_blob(&shared, T0).await.unwrap();
    // Bytes nobody recorded (a race lost within one tenant).
    b.blobs
        .put(&image_key(&lone), "bytes".into())
        .await
        .unwrap();
    b.catalog.note_orphan_blob(&lone, T0).await.unwrap();

    // Within the grace nothing goes.
    assert_eq!(blob_gc::sweep(&b, T0 + GRACE_MS - 1).await.unwrap(), 0);
    assert!(exists(&b, &lone).await);
    // After it, only the bytes no record names.
    assert_eq!(blob_gc::sweep(&b, T0 + GRACE_MS).await.unwrap(), 1);
    assert!(exists(&b, &shared).await, "Alice's image lost its bytes");
    assert!(!exists(&b, &lone).await);
    // Both notes are done with.
    assert_eq!(blob_gc::sweep(&b, T0 + 10 * GRACE_MS).await.unwrap(), 0);
}

#[tokio::test]
async fn a_worker_putting_noted_bytes_again_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = backends(dir.path()).await;
    let id = "7".repeat(64);
    b.blobs.put(&image_key(&id), "bytes".into()).await.unwrap();
    b.catalog.note_orphan_blob(&id, T0).await.unwrap();
    // A worker stores the same image later: before its put it takes the
    // bytes back from the sweep, then puts and records.
    blob_gc::before_put(b.catalog.as_ref(), &id).await.unwrap();
    assert_eq!(blob_gc::sweep(&b, T0 + GRACE_MS).await.unwrap(), 0);
    assert!(exists(&b, &id).await);

    // A worker whose put and record were more than half the grace apart
    // puts again what a sweep took meanwhile.
    b.catalog.note_orphan_blob(&id, T0).await.unwrap();
    assert_eq!(blob_gc::sweep(&b, T0 + GRACE_MS).await.unwrap(), 1);
    let bytes = bytes::Bytes::from_static(b"bytes");
    blob_gc::after_record(&b, &id, &bytes, T0, T0 + GRACE_MS)
        .await
        .unwrap();
    assert!(exists(&b, &id).await);
}
