//! Batch life cycle against a real `picsift serve`: webhooks, a restart in
//! the middle of a batch, and the command-line client.

mod common;

use axum::http::{HeaderMap, StatusCode};
use common::{Server, files_under, line, picsift_bin, sha256_hex};
use picsift_core::backend::{Catalog, DedupIndex};
use picsift_core::webhook::Secret;
use picsift_tests::{ZipBuilder, jpeg};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLXBpY3NpZnQ=";

#[tokio::test(flavor = "multi_thread")]
async fn webhook_is_signed_retried_and_its_outcome_shown() {
    // The receiver fails the first attempt, then verifies and accepts.
    type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let mut log = log.lock().unwrap();
                log.push((headers, body.to_vec()));
                if log.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    // The receiver listens on loopback, which callbacks reach only when the
    // configuration allows it (tests/tests/webhooks.rs shows the refusal).
    let server = Server::start(dir.path(), &["--webhook-allowed-networks", "127.0.0.1/32"]);
    let zip = ZipBuilder::new()
        .stored("a.jpg", &jpeg(70, 200, 150))
        .stored("b.txt", b"text")
        .finish();
    let (status, body, _) = server.upload(zip, &format!("?callback={hook}")).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    server.wait_done(&id).await;

    let start = Instant::now();
    let status = loop {
        let s = server.get_json(&format!("/v1/batches/{id}")).await;
        if s["notification"]["state"] == "delivered" {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "webhook not delivered: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["notification"]["attempts"], 2, "{status}");
    assert!(status["notification"]["delivered_at"].is_string());

    let log = received.lock().unwrap();
    assert_eq!(log.len(), 2);
    let secret = Secret::parse(SECRET);
    for (headers, body) in log.iter() {
        let msg_id = headers["webhook-id"].to_str().unwrap();
        let ts: i64 = headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let sig = headers["webhook-signature"].to_str().unwrap();
        assert!(
            secret.verify(msg_id, ts, body, sig),
            "signature does not verify"
        );
        assert!(!Secret::parse("whsec_b3RoZXI=").verify(msg_id, ts, body, sig));
        let event: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["type"], "batch.completed");
        assert_eq!(event["data"]["id"], id.as_str());
        assert_eq!(event["data"]["counts"]["accepted"], 1);
        assert_eq!(event["data"]["counts"]["rejected"], 1);
    }
    // Retries keep the message id, so receivers can deduplicate.
    assert_eq!(log[0].0["webhook-id"], log[1].0["webhook-id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_in_the_middle_of_a_batch_loses_nothing_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--concurrency", "1"]);
    let mut z = ZipBuilder::new();
    let n = 40;
    for i in 0..n {
        // Every fifth entry repeats an earlier photo.
        let seed = if i % 5 == 4 { 200 + i - 3 } else { 200 + i };
        z = z.stored(&format!("p{i:02}.jpg"), &jpeg(seed, 1600, 1200));
    }
    let id = server.upload_ok(z.finish()).await;

    // Kill the server (SIGKILL, no shutdown) once some entries are decided.
    let start = Instant::now();
    loop {
        let s = server.get_json(&format!("/v1/batches/{id}")).await;
        let c = &s["counts"];
        let decided = ["accepted", "duplicate", "rejected", "failed"]
            .iter()
            .map(|k| c[k].as_u64().unwrap_or(0))
            .sum::<u64>();
        if decided >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no progress: {s}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    {
        let catalog =
            picsift_backends::sql::SqlCatalog::open_sqlite(&dir.path().join("catalog.db"))
                .await
                .unwrap();
        let pending = catalog.pending_entries(&id).await.unwrap();
        assert!(
            !pending.is_empty(),
            "the batch finished before the kill; the test proves nothing"
        );
    }

    let server = Server::start(dir.path(), &["--concurrency", "1"]);
    let done = server.wait_done(&id).await;
    assert_eq!(done["phase"], "completed");
    assert_eq!(
        (
            done["counts"]["accepted"].as_u64(),
            done["counts"]["duplicate"].as_u64()
        ),
        (Some(32), Some(8)),
        "{done}"
    );
    let report = server.report(&id).await;
    assert_eq!(report.len(), n as usize, "exactly one verdict per entry");
    let accepted: std::collections::BTreeSet<String> = report
        .iter()
        .filter(|l| l["verdict"] == "accepted")
        .map(|l| l["image_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(accepted.len(), 32);
    for l in report.iter().filter(|l| l["verdict"] == "duplicate") {
        assert!(
            accepted.contains(l["duplicate_of"].as_str().unwrap()),
            "duplicate of a stored image: {l}"
        );
    }
    // The image files are exactly the accepted images, each once, each hashing to its id.
    let stored: Vec<_> = files_under(&dir.path().join("blobs/images"));
    assert_eq!(stored.len(), accepted.len());
    for path in stored {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(accepted.contains(&name));
        assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), name);
    }
    drop(server);
    let catalog = picsift_backends::sql::SqlCatalog::open_sqlite(&dir.path().join("catalog.db"))
        .await
        .unwrap();
    let claims = picsift_backends::sql::SqliteDedup::of(&catalog).unwrap();
    assert_eq!(
        claims.pending_claims().await.unwrap(),
        0,
        "no claim left pending"
    );
    assert_eq!(catalog.image_ids().await.unwrap().len(), 32);
}

fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    std::process::Command::new(picsift_bin())
        .args(args)
        .env("PICSIFT_SERVER", &server.base)
        .env("PICSIFT_API_KEY", &server.key)
        .output()
        .expect("run picsift")
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_uploads_a_folder_follows_the_batch_and_prints_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let folder = tempfile::tempdir().unwrap();
    let photo = jpeg(80, 500, 400);
    std::fs::create_dir_all(folder.path().join("trip")).unwrap();
    std::fs::write(folder.path().join("trip/beach.jpg"), &photo).unwrap();
    std::fs::write(folder.path().join("trip/beach copy.jpg"), &photo).unwrap();
    std::fs::write(folder.path().join("hills.jpg"), jpeg(81, 640, 480)).unwrap();
    std::fs::write(folder.path().join("readme.txt"), "not an image").unwrap();

    let up = cli(&server, &["upload", folder.path().to_str().unwrap()]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let id = String::from_utf8(up.stdout).unwrap().trim().to_string();
    assert_eq!(id.len(), 36, "stdout is the batch id: {id:?}");

    let status = tokio::task::spawn_blocking({
        let base = server.base.clone();
        let key = server.key.clone();
        let id = id.clone();
        move || {
            std::process::Command::new(picsift_bin())
                .args(["status", &id, "--wait"])
                .env("PICSIFT_SERVER", base)
                .env("PICSIFT_API_KEY", key)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("completed")
            && text.contains("accepted 2")
            && text.contains("duplicate 1")
            && text.contains("rejected 1"),
        "{text}"
    );

    let report = cli(&server, &["report", &id]);
    assert!(report.status.success());
    let table = String::from_utf8_lossy(&report.stdout);
    for want in ["hills.jpg", "trip/beach.jpg", "duplicate", "not_an_image"] {
        assert!(table.contains(want), "{want} missing from:\n{table}");
    }
    let lines = server.report(&id).await;
    assert_eq!(line(&lines, "readme.txt")["reason"], "not_an_image");

    let missing = cli(&server, &["status", "no-such-batch"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    // Download what the batch stored: each file is named for its id and
    // hashes to it; a second run finds them there and fetches nothing.
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    let down = cli(&server, &["download", "--batch", &id, "--out", out_dir]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let files = files_under(out.path());
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let name = f.file_stem().unwrap().to_str().unwrap();
        assert_eq!(sha256_hex(&std::fs::read(f).unwrap()), name);
        assert_eq!(f.extension().unwrap(), "jpg");
    }
    let again = cli(&server, &["download", "--batch", &id, "--out", out_dir]);
    assert!(again.status.success());
    assert!(again.stdout.is_empty(), "nothing new written");
    let by_search = tempfile::tempdir().unwrap();
    let searched = cli(
        &server,
        &[
            "download",
            "--search",
            "min_width=600",
            "--out",
            by_search.path().to_str().unwrap(),
        ],
    );
    assert!(
        searched.status.success(),
        "{}",
        String::from_utf8_lossy(&searched.stderr)
    );
    assert_eq!(
        files_under(by_search.path()).len(),
        1,
        "only hills.jpg is 640 wide"
    );
    let nothing = cli(&server, &["download", "--out", out_dir]);
    assert!(!nothing.status.success());
    // Uploading the folder again with one new photo sends only what the
    // server does not have: the new photo and the text file it refused.
    std::fs::write(folder.path().join("new.jpg"), jpeg(82, 300, 200)).unwrap();
    let again = cli(&server, &["upload", folder.path().to_str().unwrap()]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let note = String::from_utf8_lossy(&again.stderr);
    assert!(note.contains("leaving out 3 of 5 files"), "{note}");
    let second = String::from_utf8(again.stdout).unwrap().trim().to_string();
    server.wait_done(&second).await;
    let lines = server.report(&second).await;
    let names: Vec<&str> = lines.iter().map(|l| l["entry"].as_str().unwrap()).collect();
    assert_eq!(names, ["new.jpg", "readme.txt"]);
}
