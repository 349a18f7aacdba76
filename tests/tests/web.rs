//! The endpoints behind the web frontend, against a real `picsift serve`:
//! the page and its assets (public, strict CSP), `GET /v1/policy`, batch
//! events (server-sent), thumbnails. The page itself is tested in headless
//! Chromium by tests/web.

mod common;

use common::{Server, client_with};
use picsift_tests::{ZipBuilder, jpeg, with_metadata};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn frontend_is_public_with_a_strict_csp_and_the_api_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let anonymous = reqwest::Client::new();
    let page = anonymous.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    // Every asset the page names is served, without a key.
    let assets: Vec<&str> = html
        .split("\"/ui/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(assets.len() >= 3, "{assets:?}");
    for asset in assets {
        let r = anonymous
            .get(server.url(&format!("/ui/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "/ui/{asset}");
        assert!(r.headers().contains_key("content-security-policy"));
    }
    // The scripts' own imports too.
    let app = anonymous
        .get(server.url("/ui/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(app.contains("from './zip.js'"));
    let missing = anonymous
        .get(server.url("/ui/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // The API still needs a key.
    for path in ["/v1/policy", "/v1/images"] {
        let r = anonymous.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn policy_shows_formats_limits_and_what_to_do_about_each_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--formats", "jpeg,png", "--max-upload-bytes", "1000000"],
    );
    let tenant = client_with(&server.tenant_key("acme"));
    let p: Value = tenant
        .get(server.url("/v1/policy"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["formats"], serde_json::json!(["jpeg", "png"]));
    assert_eq!(p["max_upload_bytes"], 1_000_000);
    assert_eq!(p["max_entries"], 10_000);
    let reasons = p["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), picsift_core::verdict::Reason::ALL.len());
    for r in picsift_core::verdict::Reason::ALL {
        let shown = reasons
            .iter()
            .find(|x| x["code"] == r.code())
            .unwrap_or_else(|| panic!("{} missing", r.code()));
        assert_eq!(shown["remedy"], r.remedy());
        assert_eq!(shown["verdict"], r.kind().as_str());
    }
}

#[tokio::test]
async fn thumbnail_is_upright_scaled_cached_and_visible_like_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let owner = client_with(&server.tenant_key("acme"));
    let other = client_with(&server.tenant_key("globex"));
    // 640×480 stored with EXIF orientation 6 (rotate 90°): upright 480×640.
    let zip = ZipBuilder::new()
        .stored("turned.jpg", &with_metadata(&jpeg(801, 640, 480), 6))
        .finish();
    let r = owner
        .post(server.url("/v1/batches"))
        .header("content-type", "application/zip")
        .body(zip)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let batch = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    server.wait_done(&batch).await;
    let report = server.report(&batch).await;
    assert_eq!(report[0]["verdict"], "accepted", "{report:?}");
    let id = report[0]["image_id"].as_str().unwrap().to_string();

    let thumb = |client: &reqwest::Client, query: &str| {
        client
            .get(server.url(&format!("/v1/images/{id}/thumbnail{query}")))
            .send()
    };
    // 100 is served as 128 (multiples of 32); the longer side is the height.
    let r = thumb(&owner, "?size=100").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["cache-control"], "private, max-age=86400");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{id}-128\""));
    let first = r.bytes().await.unwrap();
    let img = image::load_from_memory(&first).unwrap();
    assert_eq!((img.width(), img.height()), (96, 128));
    let cached = dir.path().join(format!("blobs/thumbnails/128/{id}.jpg"));
    assert_eq!(std::fs::read(&cached).unwrap(), first.to_vec());
    // Served from the cache: the same bytes.
    let again = thumb(&owner, "?size=128")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(again, first);
    let revalidated = owner
        .get(server.url(&format!("/v1/images/{id}/thumbnail?size=128")))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    // Clamped to 512, and never enlarged past the image: the default 256.
    let big = thumb(&owner, "?size=100000")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let img = image::load_from_memory(&big).unwrap();
    assert_eq!((img.width(), img.height()), (384, 512));
    let default = thumb(&owner, "").await.unwrap().bytes().await.unwrap();
    let img = image::load_from_memory(&default).unwrap();
    assert_eq!((img.width(), img.height()), (192, 256));
    // As downloads: another tenant gets 404, an admin the thumbnail.
    assert_eq!(
        thumb(&other, "").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        thumb(&server.client(), "").await.unwrap().status(),
        StatusCode::OK
    );
    let unknown = owner
        .get(server.url(&format!("/v1/images/{}/thumbnail", "ab".repeat(32))))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

/// The `data:` of each `status` event of a server-sent event stream.
fn status_events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter(|block| block.lines().any(|l| l == "event: status"))
        .map(|block| {
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            serde_json::from_str(&data).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn events_stream_each_change_and_end_when_the_batch_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--concurrency", "1"]);
    let owner = client_with(&server.tenant_key("acme"));
    let other = client_with(&server.tenant_key("globex"));
    let mut zip = ZipBuilder::new();
    for i in 0..12 {
        zip = zip.stored(&format!("p{i}.jpg"), &jpeg(900 + i, 640, 480));
    }
    zip = zip.stored("notes.txt", b"not an image");
    let r = owner
        .post(server.url("/v1/batches"))
        .header("content-type", "application/zip")
        .body(zip.finish())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let batch = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/batches/{batch}/events");
    assert_eq!(
        other.get(server.url(&path)).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reqwest::Client::new()
            .get(server.url(&path))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = owner.get(server.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The stream ends by itself once the batch is final.
    let body = tokio::time::timeout(Duration::from_secs(120), r.text())
        .await
        .expect("the event stream ends when the batch is final")
        .unwrap();
    let events = status_events(&body);
    assert!(!events.is_empty(), "{body}");
    for pair in events.windows(2) {
        assert_ne!(pair[0], pair[1], "an event only when something changed");
    }
    let last = events.last().unwrap();
    assert_eq!(last["phase"], "completed", "{body}");
    assert_eq!(last["counts"]["accepted"], 12);
    assert_eq!(last["counts"]["rejected"], 1);
    assert_eq!(last["counts"]["pending"], 0);
    // Decided counts only grow along the stream.
    let decided =
        |e: &Value| e["total_entries"].as_u64().unwrap() - e["counts"]["pending"].as_u64().unwrap();
    for pair in events.windows(2) {
        assert!(decided(&pair[0]) <= decided(&pair[1]));
    }
    // A final batch: one event, then the end.
    let r = owner.get(server.url(&path)).send().await.unwrap();
    let again = status_events(&r.text().await.unwrap());
    assert_eq!(again.len(), 1);
    assert_eq!(&again[0], last);
}
