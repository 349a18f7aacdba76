//! One conformance suite for the blob store role, run against the embedded
//! filesystem store and against S3 (a real Garage server).

use bytes::Bytes;
use futures_util::StreamExt;
use picsift_backends::cluster::{S3BlobStore, S3Config};
use picsift_backends::embedded::FsBlobStore;
use picsift_core::backend::{BlobStore, ByteStream};
use picsift_tests::services::garage::{self, Garage};
use std::sync::Arc;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn chunks(data: &[u8], size: usize) -> ByteStream {
    let parts: Vec<std::io::Result<Bytes>> = data
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(parts).boxed()
}

async fn collect(s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = s;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

/// What every blob store promises.
async fn blob_store_conforms(store: Arc<dyn BlobStore>) {
    // Whole puts, sizes, reads.
    let a = pattern(1000, 1);
    store
        .put("images/aa/bb/one", Bytes::from(a.clone()))
        .await
        .unwrap();
    assert_eq!(store.size("images/aa/bb/one").await.unwrap(), Some(1000));
    assert_eq!(store.size("images/aa/bb/missing").await.unwrap(), None);
    assert_eq!(
        &store.get_range("images/aa/bb/one", 10..20).await.unwrap()[..],
        &a[10..20]
    );
    // Ranges are clamped to the object's end.
    assert_eq!(
        &store
            .get_range("images/aa/bb/one", 990..5000)
            .await
            .unwrap()[..],
        &a[990..]
    );
    assert_eq!(
        collect(store.get_stream("images/aa/bb/one", None).await.unwrap()).await,
        a
    );
    assert_eq!(
        collect(
            store
                .get_stream("images/aa/bb/one", Some(100..200))
                .await
                .unwrap()
        )
        .await,
        &a[100..200]
    );
    assert!(matches!(
        store.get_range("images/aa/bb/missing", 0..1).await,
        Err(picsift_core::Error::NotFound(_))
    ));
    // Replacing is allowed (content-addressed keys make it a no-op in practice).
    store
        .put("images/aa/bb/one", Bytes::from(a.clone()))
        .await
        .unwrap();

    // Streams, small and larger than one multipart part (5 MiB).
    let small = pattern(70_000, 2);
    assert_eq!(
        store
            .put_stream("staging/small.zip", chunks(&small, 8192))
            .await
            .unwrap(),
        70_000
    );
    assert_eq!(
        &store
            .get_range("staging/small.zip", 0..70_000)
            .await
            .unwrap()[..],
        &small[..]
    );
    let big = pattern(12 << 20, 3);
    assert_eq!(
        store
            .put_stream("staging/big.zip", chunks(&big, 1 << 20))
            .await
            .unwrap(),
        12 << 20
    );
    assert_eq!(store.size("staging/big.zip").await.unwrap(), Some(12 << 20));
    let mid = (6 << 20) - 10..(6 << 20) + 10;
    assert_eq!(
        &store
            .get_range("staging/big.zip", mid.clone())
            .await
            .unwrap()[..],
        &big[mid.start as usize..mid.end as usize]
    );

    // A stream that fails leaves nothing under its key.
    let failing: ByteStream = futures_util::stream::iter(vec![
        Ok(Bytes::from(pattern(6 << 20, 4))),
        Err(std::io::Error::other("client went away")),
    ])
    .boxed();
    assert!(
        store
            .put_stream("staging/broken.zip", failing)
            .await
            .is_err()
    );
    assert_eq!(store.size("staging/broken.zip").await.unwrap(), None);

    // Listing and deleting.
    let listed = store.list("staging/").await.unwrap();
    assert_eq!(
        listed,
        vec![
            "staging/big.zip".to_string(),
            "staging/small.zip".to_string()
        ]
    );
    store.delete("staging/big.zip").await.unwrap();
    store.delete("staging/big.zip").await.unwrap(); // deleting twice is fine
    assert_eq!(
        store.list("staging/").await.unwrap(),
        vec!["staging/small.zip".to_string()]
    );
    assert_eq!(
        store.list("images/").await.unwrap(),
        vec!["images/aa/bb/one".to_string()]
    );
    store.delete("staging/small.zip").await.unwrap();
    assembled_objects_conform(store.as_ref()).await;
}

/// Objects assembled from parts (resumable uploads): parts stored again
/// replace the earlier ones, only the named ETags are put together, an
/// abort leaves nothing, and nothing shows in listings before the end.
async fn assembled_objects_conform(store: &dyn BlobStore) {
    const PART: usize = 5 << 20;
    let (p1, p2, last) = (pattern(PART, 3), pattern(PART, 4), pattern(1234, 5));
    let key = "staging/assembled.zip";
    let upload = store.start_parts(key).await.unwrap();
    let first = store
        .put_part(key, &upload, 1, 0, Bytes::from(pattern(PART, 99)))
        .await
        .unwrap();
    // Part 1 stored again (a retry after a lost answer): the new one counts.
    let again = store
        .put_part(key, &upload, 1, 0, Bytes::from(p1.clone()))
        .await
        .unwrap();
    assert_ne!(first, again, "another part, another ETag");
    let two = store
        .put_part(key, &upload, 2, PART as u64, Bytes::from(p2.clone()))
        .await
        .unwrap();
    let three = store
        .put_part(key, &upload, 3, 2 * PART as u64, Bytes::from(last.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.size(key).await.unwrap(),
        None,
        "not there before the end"
    );
    assert!(store.list("staging/").await.unwrap().is_empty());
    // The ETag of the part since replaced does not finish it.
    assert!(
        store
            .finish_parts(key, &upload, &[first, two.clone(), three.clone()])
            .await
            .is_err()
    );
    let n = store
        .finish_parts(key, &upload, &[again, two, three])
        .await
        .unwrap();
    let want: Vec<u8> = [p1, p2, last].concat();
    assert_eq!(n, want.len() as u64);
    assert_eq!(
        collect(store.get_stream(key, None).await.unwrap()).await,
        want
    );
    store.delete(key).await.unwrap();

    // An aborted one leaves nothing, and aborting twice is fine.
    let upload = store.start_parts(key).await.unwrap();
    store
        .put_part(key, &upload, 1, 0, Bytes::from(pattern(PART, 6)))
        .await
        .unwrap();
    store.abort_parts(key, &upload).await.unwrap();
    store.abort_parts(key, &upload).await.unwrap();
    assert!(
        store
            .put_part(key, &upload, 2, PART as u64, Bytes::from_static(b"x"))
            .await
            .is_err()
    );
    assert_eq!(store.size(key).await.unwrap(), None);
    assert!(
        store
            .list("")
            .await
            .unwrap()
            .iter()
            .all(|k| !k.starts_with("staging/"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filesystem_blob_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path()).await.unwrap();
    blob_store_conforms(Arc::new(store)).await;
}

fn s3_config(g: &Garage, bucket: &str) -> S3Config {
    S3Config {
        endpoint: g.endpoint.clone(),
        region: garage::REGION.into(),
        bucket: bucket.into(),
        path_style: true,
        part_size: 5 << 20,
        access_key_id: garage::ACCESS_KEY.into(),
        secret_access_key: garage::SECRET_KEY.into(),
        ..S3Config::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_blob_store_conforms_and_leaves_no_multipart_uploads() {
    let g = Garage::start();
    let bucket = g.bucket("conformance");
    let store = S3BlobStore::connect(s3_config(&g, &bucket)).await.unwrap();
    blob_store_conforms(Arc::new(store.clone())).await;
    assert_eq!(
        store.open_multipart_uploads().await.unwrap(),
        0,
        "a failed upload left parts behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_keys_live_under_the_configured_prefix() {
    let g = Garage::start();
    let bucket = g.bucket("prefixed");
    let store = S3BlobStore::connect(S3Config {
        prefix: "tenant-a/".into(),
        ..s3_config(&g, &bucket)
    })
    .await
    .unwrap();
    store
        .put("images/x", Bytes::from_static(b"data"))
        .await
        .unwrap();
    assert_eq!(
        store.list("images/").await.unwrap(),
        vec!["images/x".to_string()]
    );
    let raw = S3BlobStore::connect(s3_config(&g, &bucket)).await.unwrap();
    assert_eq!(
        raw.list("").await.unwrap(),
        vec!["tenant-a/images/x".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_presigned_download_urls_serve_the_object_when_configured() {
    let g = Garage::start();
    let bucket = g.bucket("presigned");
    let plain = S3BlobStore::connect(s3_config(&g, &bucket)).await.unwrap();
    assert_eq!(
        plain.presigned_get("images/x").await.unwrap(),
        None,
        "off by default: downloads stream through the gateway"
    );
    let store = S3BlobStore::connect(S3Config {
        presign_downloads: true,
        ..s3_config(&g, &bucket)
    })
    .await
    .unwrap();
    let data = pattern(3000, 9);
    store
        .put("images/aa/bb/img", Bytes::from(data.clone()))
        .await
        .unwrap();
    let url = store
        .presigned_get("images/aa/bb/img")
        .await
        .unwrap()
        .expect("a presigned URL");
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 200, "{url}");
    assert_eq!(got.bytes().await.unwrap().to_vec(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_presigned_part_urls_take_a_clients_bytes() {
    let g = Garage::start();
    let bucket = g.bucket("direct");
    let store = S3BlobStore::connect(s3_config(&g, &bucket)).await.unwrap();
    let ttl = std::time::Duration::from_secs(600);
    let http = reqwest::Client::new();
    // One presigned PUT of a whole object.
    let small = pattern(4000, 1);
    let url = store
        .presigned_part("staging/one.zip", "", 0, ttl)
        .await
        .unwrap()
        .unwrap();
    let put = http.put(&url).body(small.clone()).send().await.unwrap();
    assert_eq!(put.status(), 200, "{url}");
    assert_eq!(store.size("staging/one.zip").await.unwrap(), Some(4000));
    // Parts of a multipart upload, put together with the ETags S3 gave the client.
    let key = "staging/parts.zip";
    let upload = store.start_parts(key).await.unwrap();
    let (a, b) = (pattern(5 << 20, 2), pattern(777, 3));
    let mut etags = Vec::new();
    for (n, part) in [(1, &a), (2, &b)] {
        let url = store
            .presigned_part(key, &upload, n, ttl)
            .await
            .unwrap()
            .unwrap();
        let r = http.put(&url).body(part.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        etags.push(r.headers()["etag"].to_str().unwrap().to_string());
    }
    assert_eq!(
        store.finish_parts(key, &upload, &etags).await.unwrap(),
        (a.len() + b.len()) as u64
    );
    assert_eq!(
        collect(store.get_stream(key, None).await.unwrap()).await,
        [a, b].concat()
    );
    assert_eq!(store.open_multipart_uploads().await.unwrap(), 0);
    // The filesystem store offers none.
    let dir = tempfile::tempdir().unwrap();
    let fs = FsBlobStore::open(dir.path()).await.unwrap();
    assert_eq!(
        fs.presigned_part("staging/x.zip", "", 0, ttl)
            .await
            .unwrap(),
        None
    );
}
