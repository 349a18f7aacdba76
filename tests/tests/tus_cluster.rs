//! Resumable and direct uploads in the cluster shape (gateways and a
//! worker over Garage, PostgreSQL and Redis, as real processes): a transfer
//! cut again and again ends with the right batch and exactly the uploaded
//! bytes staged; any gateway replica takes the next request, also after
//! the one appending died; tus-js-client (Node) across two gateways; a
//! direct upload to Garage on presigned URLs; abandoned uploads aborted in
//! S3 at their expiry.

mod common;

use common::cluster::{ADMIN_KEY, Cluster, Setup, base_of, http, wait_done};
use common::proxy::FaultProxy;
use common::sha256_hex;
use common::tus::{OFFSET_STREAM, Tus, batch_of};
use picsift_backends::cluster::S3BlobStore;
use picsift_core::backend::BlobStore;
use picsift_core::model::staging_key;
use picsift_tests::{ZipBuilder, jpeg};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A zip of `n` distinct photos (seeds from `seed`) of about 1 MB each.
fn photos_zip(seed: u64, n: u64) -> Vec<u8> {
    let mut zip = ZipBuilder::new();
    for i in 0..n {
        zip = zip.stored(&format!("p{i}.jpg"), &jpeg(seed + i, 2400, 1800));
    }
    zip.finish()
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}

async fn staged_sha(store: &S3BlobStore, id: &str) -> String {
    let mut s = store.get_stream(&staging_key(id), None).await.unwrap();
    let mut all = Vec::new();
    use futures_util::StreamExt;
    while let Some(c) = s.next().await {
        all.extend_from_slice(&c.unwrap());
    }
    sha256_hex(&all)
}

/// Uploads the rest of `zip` in one request, again and again, through a
/// proxy that cuts the connection at a random moment of each, until it
/// went through. Returns the batch and how many requests were cut.
async fn upload_through_cuts(
    tus: &Tus,
    proxy: &FaultProxy,
    zip: &[u8],
    cuts: u32,
) -> (String, u32) {
    let url = tus.create_ok(zip.len() as u64).await;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut cut = 0;
    loop {
        let r = tus.head(&url).await;
        if r.status() == 423 {
            // A cut request still finishing on the gateway.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if r.status() == 200 && r.headers().contains_key("picsift-batch-id") {
            // The cut came after the last byte: the upload is done.
            return (batch_of(&r), cut);
        }
        assert_eq!(r.status(), 200, "HEAD");
        let offset: u64 = r.headers()["upload-offset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let cutter = (cut < cuts).then(|| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let after = Duration::from_millis(100 + rng % 400);
            let cuts = proxy.cuts_handle();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                cuts.cut();
            })
        });
        let sent = tus
            .http
            .patch(format!("{}{url}", tus.base))
            .bearer_auth(&tus.key)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset)
            .header("Content-Type", OFFSET_STREAM)
            .body(zip[offset as usize..].to_vec())
            .send()
            .await;
        if let Some(c) = cutter {
            c.abort();
        }
        match sent {
            Ok(r) if r.status() == 204 => {
                assert_eq!(r.headers()["upload-offset"], zip.len().to_string().as_str());
                return (batch_of(&r), cut);
            }
            // 423: the gateway has not seen the cut connection's end yet.
            // 409: it had not yet, when asked, saved what the cut request
            // brought; 423: it is still saving it. Both: ask again.
            Ok(r) if r.status() == 423 || r.status() == 409 => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(r) => panic!("PATCH at {offset}: {} {:?}", r.status(), r.text().await),
            Err(e) => {
                cut += 1;
                eprintln!("cut {cut} at offset {offset}+: {e}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resumable_and_direct_uploads_across_gateways() {
    let c = Cluster::start();
    let store = S3BlobStore::connect(c.s3.clone()).await.unwrap();
    let (_a, a_line) = c.spawn("gateway", "listening on");
    let (mut b_proc, b_line) = c.spawn("gateway", "listening on");
    let (a, b) = (base_of(&a_line), base_of(&b_line));

    // 1. Cut again and again, through a slow proxy; no worker yet, so the
    // staged archive stays to be compared byte for byte.
    let zip = photos_zip(100, 20);
    let proxy = FaultProxy::start(port_of(&a));
    proxy.set_delay(Duration::from_millis(5));
    let via = Tus::new(&format!("http://127.0.0.1:{}", proxy.port), ADMIN_KEY);
    let (batch, cuts) = upload_through_cuts(&via, &proxy, &zip, 4).await;
    assert!(cuts >= 3, "only {cuts} requests were cut");
    assert_eq!(staged_sha(&store, &batch).await, sha256_hex(&zip));
    assert_eq!(
        store.list("staging/tails/").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(store.open_multipart_uploads().await.unwrap(), 0);
    let (_worker, _) = c.spawn("worker", "worker");
    let done = wait_done(&a, &batch).await;
    assert_eq!(
        (done["phase"].clone(), done["counts"]["accepted"].clone()),
        (json!("completed"), json!(20)),
        "{done}"
    );

    // 2. Gateways take turns; then the one appending dies mid-request
    // after its first save: the other goes on from what was saved once the
    // dead one's lock lapses.
    let zip = photos_zip(200, 45);
    let (ta, tb) = (Tus::new(&a, ADMIN_KEY), Tus::new(&b, ADMIN_KEY));
    let url = ta.create_ok(zip.len() as u64).await;
    let step = 3 << 20;
    assert_eq!(
        tb.patch(&url, 0, zip[..step].to_vec(), None).await.status(),
        204
    );
    assert_eq!(
        ta.patch(&url, step as u64, zip[step..2 * step].to_vec(), None)
            .await
            .status(),
        204
    );
    assert_eq!(tb.offset(&url).await, 2 * step as u64);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(zip[2 * step..2 * step + (30 << 20)].to_vec()))
        .await
        .unwrap();
    let stuck = {
        let tb = tb.clone();
        let (url, rest) = (url.clone(), (zip.len() - 2 * step) as u64);
        let body =
            reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|c| (c, rx))
            }));
        tokio::spawn(async move {
            tb.http
                .patch(format!("{}{url}", tb.base))
                .bearer_auth(&tb.key)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Offset", 2 * step)
                .header("Content-Length", rest)
                .header("Content-Type", OFFSET_STREAM)
                .body(body)
                .send()
                .await
        })
    };
    // Once B saved what the request brought (every 32 MiB), B dies.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ta.offset(&url).await < 32 << 20 {
        assert!(Instant::now() < deadline, "the part was never saved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b_proc.kill();
    assert!(stuck.await.unwrap().is_err(), "the dead gateway answered");
    drop(tx);
    let saved = ta.offset(&url).await;
    assert_eq!(saved, 32 << 20, "whole parts are saved every 32 MiB");
    let start = Instant::now();
    let finished = loop {
        // An empty PATCH asks first: a refusal comes before any body (the
        // gateway answers 423 without reading one, which can break the pipe
        // under a large body).
        let probe = ta.patch(&url, saved, vec![], None).await;
        match probe.status().as_u16() {
            423 => {
                assert!(
                    start.elapsed() < Duration::from_secs(40),
                    "the dead gateway's lock never lapsed"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            204 => {}
            s => panic!("{s}: {:?}", probe.text().await),
        }
        let r = ta
            .patch(&url, saved, zip[saved as usize..].to_vec(), None)
            .await;
        assert_eq!(r.status(), 204, "{:?}", r.headers());
        break r;
    };
    eprintln!("the dead gateway's lock lapsed after {:?}", start.elapsed());
    let batch = batch_of(&finished);
    assert_eq!(wait_done(&a, &batch).await["counts"]["accepted"], 45);

    // 3. tus-js-client (Node): stopped after three chunks on one gateway,
    // finished on another.
    let (_b2, b2_line) = c.spawn("gateway", "listening on");
    let b2 = base_of(&b2_line);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.zip");
    std::fs::write(&file, photos_zip(300, 12)).unwrap();
    let node = |endpoint: &str, extra: &[&str]| -> Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/run.sh");
        let out = std::process::Command::new(script)
            .args([
                "--endpoint",
                &format!("{endpoint}/v1/uploads"),
                "--key",
                ADMIN_KEY,
                "--file",
            ])
            .arg(&file)
            .args(extra)
            .output()
            .expect("node (tests/node/run.sh)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(out.stdout.trim_ascii()).unwrap()
    };
    let stopped = node(&a, &["--chunk-size", "2097152", "--stop-after", "6291456"]);
    assert_eq!(stopped["stopped"], true, "{stopped}");
    let upload_url = stopped["upload_url"].as_str().unwrap().replace(&a, &b2);
    let done_node = node(
        &b2,
        &["--chunk-size", "2097152", "--upload-url", &upload_url],
    );
    assert_eq!(done_node["resumed_from"], stopped["offset"], "{done_node}");
    let batch = done_node["batch_id"].as_str().unwrap();
    assert_eq!(wait_done(&b2, batch).await["counts"]["accepted"], 12);

    // 4. Direct upload to Garage: the gateway never sees the bytes.
    for (seed, n) in [(400, 12), (500, 2)] {
        let zip = photos_zip(seed, n);
        let started: Value = http()
            .post(format!("{a}/v1/uploads"))
            .json(&json!({"size": zip.len()}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let parts = started["parts"]
            .as_array()
            .unwrap_or_else(|| panic!("{started}"));
        let part_size = started["part_size"].as_u64().unwrap() as usize;
        let mut tags = Vec::new();
        for p in parts {
            let n = p["number"].as_u64().unwrap() as usize;
            let range = n.saturating_sub(1) * part_size..(n.max(1) * part_size).min(zip.len());
            let put = reqwest::Client::new()
                .put(p["url"].as_str().unwrap())
                .body(zip[range].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(put.status(), 200);
            tags.push(json!({"number": n, "etag": put.headers()["etag"].to_str().unwrap()}));
        }
        let complete = format!("{a}{}", started["complete_url"].as_str().unwrap());
        if parts.len() > 1 {
            // A part missing is refused, and the upload can still complete.
            let short = http()
                .post(&complete)
                .json(&json!({"parts": &tags[1..]}))
                .send()
                .await
                .unwrap();
            assert_eq!(short.status(), 400);
        }
        let r = http()
            .post(&complete)
            .json(&json!({"parts": tags}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        let body: Value = r.json().await.unwrap();
        let id = body["id"].as_str().unwrap();
        let done = wait_done(&a, id).await;
        assert_eq!(done["counts"]["accepted"], n, "{done}");
        assert_eq!(done["upload_bytes"], zip.len());
    }
    assert_eq!(store.open_multipart_uploads().await.unwrap(), 0);

    // `picsift upload` of a zip goes direct when the server offers it: its
    // upload is no tus upload (HEAD finds none), and it becomes the batch.
    let zip_file = dir.path().join("cli.zip");
    std::fs::write(&zip_file, photos_zip(700, 10)).unwrap();
    let out = std::process::Command::new(common::picsift_bin())
        .args(["upload", "--server", &a])
        .arg(&zip_file)
        .env("PICSIFT_API_KEY", ADMIN_KEY)
        .env("PICSIFT_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(
        ta.head(&format!("/v1/uploads/{id}")).await.status(),
        404,
        "not a tus upload"
    );
    assert_eq!(wait_done(&a, &id).await["counts"]["accepted"], 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_uploads_are_aborted_in_s3_when_they_expire() {
    let c = Cluster::start_with(Setup {
        sections: "[limits]\nupload_expiry_secs = 2\n".into(),
        ..Setup::default()
    });
    let store = S3BlobStore::connect(c.s3.clone()).await.unwrap();
    let (_g, line) = c.spawn("gateway", "listening on");
    let base = base_of(&line);
    let tus = Tus::new(&base, ADMIN_KEY);
    let zip = photos_zip(600, 12);
    let url = tus.create_ok(zip.len() as u64).await;
    assert_eq!(
        tus.patch(&url, 0, zip[..(9 << 20)].to_vec(), None)
            .await
            .status(),
        204
    );
    let direct = http()
        .post(format!("{base}/v1/uploads"))
        .json(&json!({"size": zip.len()}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 201);
    assert_eq!(store.open_multipart_uploads().await.unwrap(), 2);
    assert_eq!(store.list("staging/tails/").await.unwrap().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.open_multipart_uploads().await.unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "abandoned multipart uploads were never aborted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(store.list("staging/").await.unwrap().is_empty());
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("picsift_resumable_uploads_expired_total 2"),
        "{metrics}"
    );
    assert_eq!(tus.head(&url).await.status(), 404);
}
