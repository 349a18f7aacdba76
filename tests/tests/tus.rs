//! Resumable uploads (tus 1.0) against a real `picsift serve`: the
//! protocol's behaviours (creation, creation-with-upload, offsets,
//! checksums, deferred length, termination, expiry, two clients on one
//! upload, owners and limits), and that an upload in many requests becomes
//! the batch a one-shot upload would.

mod common;

use common::tus::{OFFSET_STREAM, Tus, batch_of};
use common::{Server, files_under};
use picsift_tests::{ZipBuilder, jpeg};

/// A zip of distinct photos of at least `min` bytes.
fn big_zip(min: usize) -> (Vec<u8>, usize) {
    let mut zip = ZipBuilder::new();
    let mut n = 0;
    let mut size = 0;
    while size < min {
        let photo = jpeg(1000 + n as u64, 2400, 1800);
        size += photo.len() + 100;
        zip = zip.stored(&format!("p{n}.jpg"), &photo);
        n += 1;
    }
    (zip.finish(), n)
}

fn small_zip() -> Vec<u8> {
    ZipBuilder::new()
        .stored("a.jpg", &jpeg(7, 640, 480))
        .stored("b.jpg", &jpeg(8, 640, 480))
        .finish()
}

/// Upload folders left under the blob store: none once uploads are done.
fn leftover_parts(server: &Server) -> Vec<std::path::PathBuf> {
    files_under(&server.data.join("blobs/.parts"))
        .into_iter()
        .chain(files_under(&server.data.join("blobs/staging/tails")))
        .collect()
}

async fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_in_uneven_requests_becomes_the_batch_a_one_shot_upload_would() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let tus = Tus::new(&server.base, &server.key);
    // More than two 8 MiB parts, so parts, tails and the last part all occur.
    let (zip, photos) = big_zip(18 << 20);
    let len = zip.len() as u64;

    let options = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, server.url("/v1/uploads"))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(options.headers()["tus-version"], "1.0.0");
    let extensions = options.headers()["tus-extension"].to_str().unwrap();
    for ext in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "expiration",
        "checksum",
    ] {
        assert!(
            extensions.split(',').any(|e| e == ext),
            "{ext} in {extensions}"
        );
    }
    assert_eq!(options.headers()["tus-checksum-algorithm"], "sha256");

    // creation-with-upload: the first MiB comes with the creation.
    let first = 1 << 20;
    let created = tus
        .http
        .post(server.url("/v1/uploads"))
        .bearer_auth(&server.key)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", len)
        .header("Content-Type", OFFSET_STREAM)
        .body(zip[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        created.headers()["upload-offset"],
        first.to_string().as_str()
    );
    assert!(created.headers().contains_key("upload-expires"));
    let url = created.headers()["location"].to_str().unwrap().to_string();
    assert!(url.starts_with("/v1/uploads/"), "{url}");
    assert_eq!(tus.offset(&url).await, first as u64);

    let mut offset = first;
    let mut last = None;
    for step in [3 << 20, 9 << 20, 5 << 20, usize::MAX] {
        let end = offset.saturating_add(step).min(zip.len());
        let r = tus
            .patch(&url, offset as u64, zip[offset..end].to_vec(), None)
            .await;
        assert_eq!(r.status(), 204, "{:?}", r.text().await);
        assert_eq!(r.headers()["upload-offset"], end.to_string().as_str());
        offset = end;
        if end == zip.len() {
            last = Some(r);
            break;
        }
        assert!(!r.headers().contains_key("picsift-batch-id"));
    }
    let batch = batch_of(&last.unwrap());
    assert!(url.ends_with(&batch), "the batch has the upload's id");
    // A client that lost that answer asks again and is told the same.
    let head = tus.head(&url).await;
    assert_eq!(head.status(), 200);
    assert_eq!(batch_of(&head), batch);
    // The last PATCH again (offset = length, no bytes) changes nothing.
    let again = tus.patch(&url, len, vec![], None).await;
    assert_eq!(again.status(), 204);
    assert_eq!(batch_of(&again), batch);

    let done = server.wait_done(&batch).await;
    assert_eq!(done["phase"], "completed", "{done}");
    assert_eq!(done["upload_bytes"], len);
    // Every entry intact (a zip entry's CRC-32 covers its bytes).
    assert_eq!(done["counts"]["accepted"], photos, "{done}");
    assert!(
        leftover_parts(&server).is_empty(),
        "{:?}",
        leftover_parts(&server)
    );
    assert_eq!(
        metric(&server, "picsift_resumable_uploads_created_total").await,
        1.0
    );
    assert_eq!(
        metric(&server, "picsift_resumable_uploads_completed_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_protocol_refuses_what_it_must_with_its_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-upload-bytes", "50000000"]);
    let tus = Tus::new(&server.base, &server.key);
    let zip = small_zip();
    let len = zip.len() as u64;

    // Over the limit: refused at creation.
    assert_eq!(tus.create(Some(50_000_001), &[]).await.status(), 413);
    // No length and no deferral; a bad version.
    let bare = tus
        .http
        .post(server.url("/v1/uploads"))
        .bearer_auth(&server.key);
    assert_eq!(
        bare.header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let old = tus
        .http
        .post(server.url("/v1/uploads"))
        .bearer_auth(&server.key)
        .header("Tus-Resumable", "0.2.2")
        .header("Upload-Length", 10)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 412);
    // An unknown policy is refused at creation, not after the bytes.
    assert_eq!(
        tus.create(Some(len), &[("policy", "nope")]).await.status(),
        400
    );

    let url = tus.create_ok(len).await;
    // Offset mismatch: 409, nothing kept.
    assert_eq!(
        tus.patch(&url, 5, zip[5..].to_vec(), None).await.status(),
        409
    );
    // The wrong content type: 415.
    let wrong = tus
        .http
        .patch(server.url(&url))
        .bearer_auth(&server.key)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", 0)
        .header("Content-Type", "application/zip")
        .body(zip.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 415);
    // Checksum mismatch: 460, and the offset stays.
    let r = tus
        .patch(&url, 0, zip[..100].to_vec(), Some(b"other bytes"))
        .await;
    assert_eq!(r.status(), 460);
    assert_eq!(tus.offset(&url).await, 0);
    // A matching checksum is taken.
    let r = tus
        .patch(&url, 0, zip[..100].to_vec(), Some(&zip[..100]))
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(tus.offset(&url).await, 100);
    // More bytes than the length: 413, offset unchanged.
    let mut over = zip[100..].to_vec();
    over.extend_from_slice(b"extra");
    assert_eq!(tus.patch(&url, 100, over, None).await.status(), 413);
    assert_eq!(tus.offset(&url).await, 100);

    // Another tenant sees no such upload.
    let other = Tus::new(&server.base, &server.tenant_key("other"));
    assert_eq!(other.head(&url).await.status(), 404);
    assert_eq!(
        other
            .patch(&url, 100, zip[100..].to_vec(), None)
            .await
            .status(),
        404
    );
    assert_eq!(other.delete(&url).await.status(), 404);

    let r = tus.patch(&url, 100, zip[100..].to_vec(), None).await;
    assert_eq!(r.status(), 204);
    let batch = batch_of(&r);
    assert_eq!(server.wait_done(&batch).await["counts"]["accepted"], 2);

    // A deferred length, declared by the last request.
    let r = tus.create(None, &[("strict", "true")]).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["upload-defer-length"], "1");
    let url = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        tus.patch(&url, 0, zip[..1000].to_vec(), None)
            .await
            .status(),
        204
    );
    let head = tus.head(&url).await;
    assert_eq!(head.headers()["upload-defer-length"], "1");
    let last = tus
        .http
        .patch(server.url(&url))
        .bearer_auth(&server.key)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", 1000)
        .header("Upload-Length", len)
        .header("Content-Type", OFFSET_STREAM)
        .body(zip[1000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), 204);
    batch_of(&last);

    // An archive the light check refuses is refused by the last request,
    // with the one-shot upload's problem, and stays refused.
    let not_zip = b"this is not a zip at all".to_vec();
    let url = tus.create_ok(not_zip.len() as u64).await;
    let r = tus.patch(&url, 0, not_zip.clone(), None).await;
    assert_eq!(r.status(), 400);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        problem["type"], "https://picsift.io/problems/not-a-zip",
        "{problem}"
    );
    assert_eq!(tus.head(&url).await.status(), 400);
    assert!(
        leftover_parts(&server).is_empty(),
        "{:?}",
        leftover_parts(&server)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn termination_and_expiry_drop_the_parts_and_the_quota_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--upload-expiry-secs", "2", "--max-open-batches", "1"],
    );
    let tenant = server.tenant_key("acme");
    let tus = Tus::new(&server.base, &tenant);
    let (zip, _) = big_zip(10 << 20);

    // Termination: a part and a tail stored, then dropped.
    let url = tus.create_ok(zip.len() as u64).await;
    let r = tus.patch(&url, 0, zip[..(9 << 20)].to_vec(), None).await;
    assert_eq!(r.status(), 204);
    assert!(!leftover_parts(&server).is_empty());
    // The upload holds the tenant's one place.
    assert_eq!(tus.create(Some(100), &[]).await.status(), 429);
    assert_eq!(tus.delete(&url).await.status(), 204);
    assert_eq!(tus.head(&url).await.status(), 404);
    assert!(
        leftover_parts(&server).is_empty(),
        "{:?}",
        leftover_parts(&server)
    );

    // Expiry: abandoned after its first part; the sweep drops it.
    let url = tus.create_ok(zip.len() as u64).await;
    assert_eq!(
        tus.patch(&url, 0, zip[..(9 << 20)].to_vec(), None)
            .await
            .status(),
        204
    );
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(
        tus.patch(&url, 9 << 20, zip[(9 << 20)..].to_vec(), None)
            .await
            .status(),
        404
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !leftover_parts(&server).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        leftover_parts(&server).is_empty(),
        "{:?}",
        leftover_parts(&server)
    );
    assert_eq!(
        metric(&server, "picsift_resumable_uploads_expired_total").await,
        1.0
    );
    // Its quota place is free again.
    let r = tus.create(Some(zip.len() as u64), &[]).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clients_on_one_upload_never_both_append() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let tus = Tus::new(&server.base, &server.key);
    let zip = small_zip();
    let len = zip.len() as u64;
    let url = tus.create_ok(len).await;

    // The first client's request is slow: its body comes in two halves.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let half = zip.len() / 2;
    tx.send(Ok(zip[..half].to_vec())).await.unwrap();
    let slow = {
        let (tus, url) = (tus.clone(), url.clone());
        let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
        tokio::spawn(async move {
            tus.http
                .patch(format!("{}{url}", tus.base))
                .bearer_auth(&tus.key)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Offset", 0)
                .header("Content-Length", len)
                .header("Content-Type", OFFSET_STREAM)
                .body(body)
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The second client, at the same offset, is told to wait.
    let r = tus.patch(&url, 0, zip.clone(), None).await;
    assert_eq!(r.status(), 423, "{:?}", r.text().await);
    tx.send(Ok(zip[half..].to_vec())).await.unwrap();
    drop(tx);
    let first = slow.await.unwrap();
    assert_eq!(first.status(), 204);
    let batch = batch_of(&first);
    // The second client, trying again, finds the upload done.
    let r = tus.patch(&url, 0, zip.clone(), None).await;
    assert_eq!(r.status(), 409);
    assert_eq!(batch_of(&tus.head(&url).await), batch);
    assert_eq!(server.wait_done(&batch).await["counts"]["accepted"], 2);
}

/// A receiver as a stream of body chunks.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

#[tokio::test(flavor = "multi_thread")]
async fn picsift_upload_resumes_after_drops_and_across_runs() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let proxy =
        common::proxy::FaultProxy::start(server.base.rsplit(':').next().unwrap().parse().unwrap());
    proxy.set_delay(Duration::from_millis(3));
    let work = tempfile::tempdir().unwrap();
    let (zip, photos) = big_zip(40 << 20);
    let file = work.path().join("trip.zip");
    std::fs::write(&file, &zip).unwrap();
    let state = work.path().join("state");
    let run = || {
        Command::new(common::picsift_bin())
            .args([
                "upload",
                "--server",
                &format!("http://127.0.0.1:{}", proxy.port),
            ])
            .arg(&file)
            .env("PICSIFT_API_KEY", &server.key)
            .env("PICSIFT_STATE_DIR", &state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let remembered = || -> Option<String> {
        let text = std::fs::read_to_string(state.join("uploads.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["uploads"]
            .as_object()?
            .values()
            .next()?
            .as_str()
            .map(str::to_string)
    };
    let tus = Tus::new(&server.base, &server.key);

    // The first run is killed once a chunk is in.
    let mut first = run();
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        assert!(
            Instant::now() < deadline,
            "the first run never got a chunk in"
        );
        if let Some(url) = remembered() {
            let path = url
                .split("/v1/")
                .nth(1)
                .map(|p| format!("/v1/{p}"))
                .unwrap();
            if tus.offset(&path).await >= 16 << 20 {
                break path;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    first.kill().unwrap();
    first.wait().unwrap();
    let kept = tus.offset(&url).await;

    // The second run resumes it, through two dropped connections.
    let second = run();
    for wait in [400, 900] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        proxy.cut();
    }
    let out = tokio::task::spawn_blocking(move || second.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // At least where it was when the first run was killed (the server
    // also kept what that run's last request had brought).
    let resumed: u64 = stderr
        .split("resuming at ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no resume in {stderr}"));
    assert!(
        resumed >= kept && resumed > 0,
        "resumed at {resumed}, kept {kept}"
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(url.ends_with(&id), "the remembered upload became the batch");
    assert_eq!(remembered(), None, "a finished upload is forgotten");
    let done = server.wait_done(&id).await;
    assert_eq!(done["counts"]["accepted"], photos, "{done}");
    assert_eq!(done["upload_bytes"], zip.len());
}
