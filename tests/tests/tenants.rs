//! Tenants against a real `picsift serve`: API keys, isolation (every
//! endpoint called across tenants answers 401, 403 or 404, never data),
//! dedup scope and what a duplicate verdict reveals, rate limits, quotas
//! and transport limits.

mod common;

use common::{Server, client_with, sha256_hex};
use picsift_tests::{ZipBuilder, jpeg};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn upload_as(server: &Server, http: &Client, zip: Vec<u8>) -> String {
    let r = http
        .post(server.url("/v1/batches"))
        .header("content-type", "application/zip")
        .body(zip)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Polled with the admin key: the tenant's own requests stay few.
    server.wait_done(&id).await;
    id
}

async fn report_as(server: &Server, http: &Client, id: &str) -> Vec<Value> {
    let page: Value = http
        .get(server.url(&format!("/v1/batches/{id}/report")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["entries"].as_array().unwrap().clone()
}

/// Every documented route with concrete ids: (method, path, body).
fn every_endpoint(batch: &str, image: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::POST, "/v1/batches".into(), None),
        (Method::GET, format!("/v1/batches/{batch}"), None),
        (Method::GET, format!("/v1/batches/{batch}/report"), None),
        (Method::GET, "/v1/images".into(), None),
        (Method::GET, format!("/v1/images?batch={batch}"), None),
        (Method::GET, format!("/v1/images/{image}"), None),
        (Method::HEAD, format!("/v1/images/{image}"), None),
        (Method::GET, format!("/v1/images/{image}/metadata"), None),
        (
            Method::POST,
            "/v1/search/similar".into(),
            Some(serde_json::json!({"image_id": image})),
        ),
        (
            Method::POST,
            "/v1/images/lookup".into(),
            Some(serde_json::json!({"sha256": [image]})),
        ),
        (Method::GET, "/openapi.json".into(), None),
        (Method::GET, format!("/v1/audit?batch={batch}"), None),
        (Method::GET, format!("/v1/audit/{batch}/0/content"), None),
    ]
}

async fn call(
    http: &Client,
    server: &Server,
    (m, path, body): &(Method, String, Option<Value>),
) -> (StatusCode, String) {
    let mut req = http.request(m.clone(), server.url(path));
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_required_and_tenants_see_only_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--requests-per-second", "0"]);
    let mode = std::fs::metadata(dir.path().join("admin.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let (a_key, b_key) = (server.tenant_key("acme"), server.tenant_key("bravo"));
    let (a, b, admin) = (client_with(&a_key), client_with(&b_key), server.client());

    let photo = jpeg(700, 640, 480);
    let a_batch = upload_as(
        &server,
        &a,
        ZipBuilder::new()
            .stored("mine.jpg", &photo)
            .stored("other.jpg", &jpeg(701, 500, 400))
            .finish(),
    )
    .await;
    let a_report = report_as(&server, &a, &a_batch).await;
    assert!(
        a_report.iter().all(|l| l["verdict"] == "accepted"),
        "{a_report:?}"
    );
    let a_image = a_report[0]["image_id"].as_str().unwrap().to_string();

    // Without a key, or with a bad one: 401 everywhere but health.
    let anonymous = Client::new();
    let bad = client_with("psk_0000000000000000_notAKeyThisServerEverGaveOut00000000000000");
    for endpoint in every_endpoint(&a_batch, &a_image) {
        for (who, http) in [("no key", &anonymous), ("unknown key", &bad)] {
            let (status, text) = call(http, &server, &endpoint).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{who} {endpoint:?}: {text}"
            );
        }
    }
    for open in ["/livez", "/healthz", "/readyz"] {
        assert_eq!(
            anonymous
                .get(server.url(open))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }

    // Tenant B calls every endpoint with A's batch and image: never data.
    for endpoint in every_endpoint(&a_batch, &a_image) {
        let (status, text) = call(&b, &server, &endpoint).await;
        let path = endpoint.1.as_str();
        match path {
            // Not another tenant's data: B's own (empty) views, or B's own
            // upload attempt refused as not a zip.
            "/v1/images" | "/openapi.json" | "/v1/images/lookup" | "/v1/batches" => {
                assert!(
                    !text.contains(&a_image) && !text.contains(&a_batch),
                    "{path}: {text}"
                );
            }
            _ => assert!(
                status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
                "B got {status} for {endpoint:?}: {text}"
            ),
        }
    }
    let listed: Value = b
        .get(server.url("/v1/images"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["images"], serde_json::json!([]), "{listed}");
    let foreign = b
        .get(server.url("/v1/images?owner=acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let lookup: Value = b
        .post(server.url("/v1/images/lookup"))
        .json(&serde_json::json!({"sha256": [sha256_hex(&photo)]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        lookup["known"],
        serde_json::json!([]),
        "B learns nothing by lookup"
    );
    let by_body: Value = b
        .post(server.url("/v1/search/similar"))
        .header("content-type", "image/jpeg")
        .body(photo.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_body["matches"], serde_json::json!([]), "{by_body}");

    // A sees its own; the admin sees both tenants and can filter by owner.
    for (endpoint, http) in [
        (format!("/v1/batches/{a_batch}"), &a),
        (format!("/v1/images/{a_image}"), &a),
        (format!("/v1/images/{a_image}/metadata"), &a),
        (format!("/v1/batches/{a_batch}/report"), &admin),
        (format!("/v1/images/{a_image}"), &admin),
        (format!("/v1/audit?batch={a_batch}"), &admin),
    ] {
        let r = http.get(server.url(&endpoint)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{endpoint}");
    }
    let owned: Value = admin
        .get(server.url("/v1/images?owner=acme"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(owned["images"].as_array().unwrap().len(), 2, "{owned}");
    assert_eq!(owned["images"][0]["owner"], "acme");
    // Batch listings: A's own; the admin's, of everyone or by owner.
    let list = |http: &Client, q: &str| {
        let req = http.get(server.url(&format!("/v1/batches{q}")));
        async move { req.send().await.unwrap() }
    };
    let mine: Value = list(&a, "").await.json().await.unwrap();
    assert_eq!(mine["batches"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["batches"][0]["id"], a_batch.as_str());
    assert_eq!(mine["batches"][0]["owner"], "acme");
    let none: Value = list(&b, "").await.json().await.unwrap();
    assert_eq!(none["batches"], serde_json::json!([]), "{none}");
    assert_eq!(list(&b, "?owner=acme").await.status(), 403);
    let by_admin: Value = list(&admin, "?owner=acme").await.json().await.unwrap();
    assert_eq!(by_admin["batches"].as_array().unwrap().len(), 1);
    let audit = a
        .get(server.url(&format!("/v1/audit?batch={a_batch}")))
        .send()
        .await
        .unwrap();
    assert_eq!(audit.status(), 403, "the audit sample is for admins");

    // Global dedup: B's copy of A's photo is a duplicate, but B is not
    // told which image it duplicates; the admin is.
    let b_batch = upload_as(
        &server,
        &b,
        ZipBuilder::new()
            .stored("copy.jpg", &photo)
            .stored("own.jpg", &jpeg(702, 600, 450))
            .finish(),
    )
    .await;
    let seen_by_b = report_as(&server, &b, &b_batch).await;
    assert_eq!(seen_by_b[0]["verdict"], "duplicate");
    assert_eq!(seen_by_b[0]["duplicate_of"], Value::Null, "{seen_by_b:?}");
    assert!(
        !serde_json::to_string(&seen_by_b)
            .unwrap()
            .contains(&a_image)
    );
    assert_eq!(seen_by_b[1]["verdict"], "accepted");
    let ndjson = b
        .get(server.url(&format!("/v1/batches/{b_batch}/report")))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!ndjson.contains(&a_image), "{ndjson}");
    let seen_by_admin = report_as(&server, &admin, &b_batch).await;
    assert_eq!(seen_by_admin[0]["duplicate_of"], a_image.as_str());
    // B still cannot fetch it.
    let r = b
        .get(server.url(&format!("/v1/images/{a_image}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A revoked key is refused from then on.
    let id = &b_key[4..20];
    let out = std::process::Command::new(common::picsift_bin())
        .args(["admin", "keys", "revoke", id, "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = b.get(server.url("/v1/images")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let listed = std::process::Command::new(common::picsift_bin())
        .args(["admin", "keys", "list", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("acme") && listed.contains("bravo"),
        "{listed}"
    );
    assert!(!listed.contains(&a_key[21..]), "listing never shows a key");
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_scope_dedups_within_a_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "dedup_scope = \"tenant\"\n").unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--policy", policy.to_str().unwrap()]);
    let (a, b) = (
        client_with(&server.tenant_key("acme")),
        client_with(&server.tenant_key("bravo")),
    );
    let photo = jpeg(710, 640, 480);
    let zip = || ZipBuilder::new().stored("p.jpg", &photo).finish();
    let a1 = report_as(&server, &a, &upload_as(&server, &a, zip()).await).await;
    let b1 = report_as(&server, &b, &upload_as(&server, &b, zip()).await).await;
    assert_eq!(a1[0]["verdict"], "accepted", "{a1:?}");
    assert_eq!(
        b1[0]["verdict"], "accepted",
        "another tenant's copy is not a duplicate: {b1:?}"
    );
    let id = a1[0]["image_id"].as_str().unwrap();
    assert_eq!(b1[0]["image_id"], id, "the same bytes, stored once");
    for http in [&a, &b] {
        let r = http
            .get(server.url(&format!("/v1/images/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(sha256_hex(&r.bytes().await.unwrap()), id);
    }
    // B sees the image as its own, without A's batch or entry name.
    let meta: Value = b
        .get(server.url(&format!("/v1/images/{id}/metadata")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["batch"], Value::Null, "{meta}");
    // Within a tenant, the copy is a duplicate it may see.
    let a2 = report_as(&server, &a, &upload_as(&server, &a, zip()).await).await;
    assert_eq!(a2[0]["verdict"], "duplicate");
    assert_eq!(a2[0]["duplicate_of"], id);
}

#[tokio::test(flavor = "multi_thread")]
async fn rates_and_quotas_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--requests-per-second",
            "0.5",
            "--burst",
            "3",
            "--max-bytes-per-month",
            "2000",
        ],
    );
    let a = client_with(&server.tenant_key("acme"));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = a.get(server.url("/v1/images")).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let wait: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&wait), "{wait}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // Admins are not limited.
    for _ in 0..10 {
        let r = server
            .client()
            .get(server.url("/v1/images"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The monthly quota: an upload declaring more than is left.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let zip = ZipBuilder::new()
        .stored("p.jpg", &jpeg(720, 300, 200))
        .finish();
    assert!(zip.len() > 2000);
    let r = a
        .post(server.url("/v1/batches"))
        .header("content-type", "application/zip")
        .body(zip)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry > 0 && retry <= 31 * 86_400,
        "until the next month: {retry}"
    );
    let body: Value = r.json().await.unwrap();
    assert!(
        body["type"].as_str().unwrap().ends_with("quota-exceeded"),
        "{body}"
    );
    // The same bytes sent chunked, with no length to check up front: they
    // are staged, found too big for the quota, refused and not kept
    // (before, a body without a length passed the byte quota whatever its size).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let zip = ZipBuilder::new()
        .stored("p.jpg", &jpeg(720, 300, 200))
        .finish();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        zip.chunks(512).map(|c| Ok(c.to_vec())).collect();
    let r = a
        .post(server.url("/v1/batches"))
        .header("content-type", "application/zip")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(
        body["type"].as_str().unwrap().ends_with("quota-exceeded"),
        "{body}"
    );
    let staged = common::files_under(&dir.path().join("blobs/staging"));
    assert!(staged.is_empty(), "{staged:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_uploads_never_exceed_the_open_batch_limit() {
    let dir = tempfile::tempdir().unwrap();
    // One worker chunk at a time, so batches stay open while uploads race.
    let server = Server::start(
        dir.path(),
        &["--max-open-batches", "2", "--concurrency", "1"],
    );
    let a = client_with(&server.tenant_key("acme"));
    let mut z = ZipBuilder::new();
    for i in 0..6 {
        z = z.stored(&format!("p{i}.jpg"), &jpeg(730 + i, 1600, 1200));
    }
    let zip = z.finish();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (a, url, zip) = (a.clone(), server.url("/v1/batches"), zip.clone());
            tokio::spawn(async move {
                // A refusal comes before the body is read, so the server may
                // close the connection while the client still sends: that
                // is a refusal too (0), never an acceptance.
                match a
                    .post(url)
                    .header("content-type", "application/zip")
                    .body(zip)
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(e) if e.is_request() => 0,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    statuses.sort_unstable();
    let accepted = statuses.iter().filter(|&&s| s == 202).count();
    assert!(
        statuses.iter().all(|&s| s == 202 || s == 429 || s == 0),
        "{statuses:?}"
    );
    assert!((1..=2).contains(&accepted), "{statuses:?}");
    // The server is unharmed.
    let live = a.get(server.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let open = server.get_json("/v1/batches?owner=acme").await;
    let unfinished = open["batches"]
        .as_array()
        .map(|b| b.iter().filter(|b| b["phase"] != "completed").count());
    assert!(unfinished.unwrap_or(0) <= 2, "{open}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_stalled_uploads_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--header-timeout-secs",
            "1",
            "--body-idle-timeout-secs",
            "1",
        ],
    );
    let addr = server.base.trim_start_matches("http://").to_string();
    // Slow headers: the request head never completes.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("the server hangs up on a slow head")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Slow body: a zip that starts, then stalls.
    let zip = ZipBuilder::new()
        .stored("p.jpg", &jpeg(730, 300, 200))
        .finish();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/zip\r\nContent-Length: {}\r\n\r\n",
        server.key,
        zip.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&zip[..100]).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("the server gives up on a stalled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body-timeout"), "{answer}");
    let staged = common::files_under(&dir.path().join("blobs/staging"));
    assert!(staged.is_empty(), "nothing staged: {staged:?}");
    assert_eq!(
        server
            .client()
            .get(server.url("/livez"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
