//! A batch the gateway recorded but never handed over (it died between
//! its two writes) is found and failed, its staged upload deleted; batches
//! that have their UploadBatch are left alone.

mod mock;

use mock::*;
use picsift_core::model::{Phase, staging_key};
use picsift_operator::orphans;
use serde_json::json;

#[tokio::test]
async fn a_batch_received_but_never_scheduled_is_failed_and_its_upload_deleted() {
    let f = backends().await;
    for id in ["lost", "named", "annotated"] {
        recorded_batch(&f, id, 1).await;
    }
    // The API server holds an UploadBatch named for "named", and one whose
    // batch-id annotation is "annotated".
    let objects = vec![
        upload_batch(
            "named",
            json!({"policyRef": {"name": "default"}}),
            json!({}),
        ),
        upload_batch(
            "by-hand",
            json!({"policyRef": {"name": "default"}}),
            json!({"annotations": {"picsift.io/batch-id": "annotated"}}),
        ),
    ];
    let answer = move || -> Answer {
        let objects = objects.clone();
        Box::new(move |call: &Call| {
            assert_eq!(call.method, "GET");
            assert_eq!(call.path(), "/apis/picsift.io/v1alpha1/uploadbatches");
            (200, list(objects.clone()))
        })
    };

    // Within the grace period nothing is asked or changed.
    let (client, calls) = mock_client(answer());
    let ctx = context_at(
        client,
        f.backends.clone(),
        created_ms() + orphans::GRACE_MS - 1,
    );
    assert!(orphans::sweep_once(&ctx).await.unwrap().is_empty());
    assert!(calls.lock().unwrap().is_empty());

    // After it, only the batch no UploadBatch names is failed.
    let (client, calls) = mock_client(answer());
    let ctx = context_at(client, f.backends.clone(), created_ms() + orphans::GRACE_MS);
    assert_eq!(orphans::sweep_once(&ctx).await.unwrap(), ["lost"]);
    assert_eq!(calls.lock().unwrap().len(), 1);
    let lost = f.backends.catalog.batch("lost").await.unwrap().unwrap();
    assert_eq!(lost.phase, Phase::Failed);
    assert_eq!(lost.error.as_deref(), Some(orphans::REASON));
    assert_eq!(
        f.backends.blobs.size(&staging_key("lost")).await.unwrap(),
        None
    );
    for id in ["named", "annotated"] {
        let b = f.backends.catalog.batch(id).await.unwrap().unwrap();
        assert_eq!(b.phase, Phase::Received, "{id}");
        assert!(
            f.backends
                .blobs
                .size(&staging_key(id))
                .await
                .unwrap()
                .is_some()
        );
    }
    assert!(
        ctx.metrics
            .render()
            .contains("picsift_orphaned_batches_failed_total 1")
    );

    // A failed batch is no longer unfinished: the next look finds nothing.
    let (client, _calls) = mock_client(answer());
    let ctx = context_at(
        client,
        f.backends.clone(),
        created_ms() + 2 * orphans::GRACE_MS,
    );
    assert!(orphans::sweep_once(&ctx).await.unwrap().is_empty());
}
