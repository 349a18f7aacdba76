//! End to end over real HTTP against a real `picsift serve`: uploads,
//! verdicts, reports, downloads.

mod common;

use common::{Server, files_under, line, sha256_hex};
use picsift_tests::{
    ZipBuilder, declares_dimensions, jpeg, png, truncated, truncated_with_eoi, with_metadata,
    with_zip_appended, zip_bomb_entry,
};
use zip::CompressionMethod;

#[tokio::test(flavor = "multi_thread")]
async fn good_batch_is_accepted_stored_and_downloadable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let photos = [jpeg(1, 4000, 3000), jpeg(2, 1024, 768), jpeg(3, 333, 517)];
    let zip = ZipBuilder::new()
        .stored("a.jpg", &photos[0])
        .file("sub/b.jpg", &photos[1], CompressionMethod::Deflated)
        .stored("c.jpeg", &photos[2])
        .finish();
    let (status, body, headers) = server.upload(zip, "").await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(headers["location"], format!("/v1/batches/{id}").as_str());

    let done = server.wait_done(&id).await;
    assert_eq!(done["phase"], "completed");
    assert_eq!(done["counts"]["accepted"], 3, "{done}");
    for key in ["created_at", "started_at", "completed_at", "updated_at"] {
        assert!(done[key].is_string(), "{key} missing: {done}");
    }
    let report = server.report(&id).await;
    assert_eq!(report.len(), 3);
    let http = server.client();
    for (name, original) in [
        ("a.jpg", &photos[0]),
        ("sub/b.jpg", &photos[1]),
        ("c.jpeg", &photos[2]),
    ] {
        let l = line(&report, name);
        assert_eq!(l["verdict"], "accepted", "{l}");
        let image_id = l["image_id"].as_str().unwrap();
        let r = http
            .get(server.url(&format!("/v1/images/{image_id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/jpeg");
        assert_eq!(r.headers()["etag"], format!("\"{image_id}\"").as_str());
        let stored = r.headers()["last-modified"].to_str().unwrap().to_string();
        let bytes = r.bytes().await.unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            image_id,
            "stored bytes hash to their id"
        );
        // The encoder wrote a JFIF APP0 segment; sanitising removes it and nothing else.
        assert!(bytes.len() < original.len() && bytes.ends_with(&[0xFF, 0xD9]));

        let head = http
            .head(server.url(&format!("/v1/images/{image_id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(
            head.headers()["content-length"],
            bytes.len().to_string().as_str()
        );

        let part = http
            .get(server.url(&format!("/v1/images/{image_id}")))
            .header("range", "bytes=10-109")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(
            part.headers()["content-range"],
            format!("bytes 10-109/{}", bytes.len()).as_str()
        );
        assert_eq!(part.bytes().await.unwrap(), bytes.slice(10..110));

        let cached = http
            .get(server.url(&format!("/v1/images/{image_id}")))
            .header("if-none-match", format!("\"{image_id}\""))
            .send()
            .await
            .unwrap();
        assert_eq!(cached.status(), 304);
        // Last-Modified is when it was stored; asking since then is a 304,
        // since long before is the image.
        let since = |date: &str| {
            http.get(server.url(&format!("/v1/images/{image_id}")))
                .header("if-modified-since", date.to_string())
                .send()
        };
        assert_eq!(since(&stored).await.unwrap().status(), 304);
        assert_eq!(
            since("Mon, 01 Jan 2001 00:00:00 GMT")
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let unknown = http
        .get(server.url(&format!("/v1/images/{}", "0".repeat(64))))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );

    let listed = server.get_json(&format!("/v1/images?batch={id}")).await;
    for img in listed["images"].as_array().unwrap() {
        // Every stored image carries its perceptual hash for near-duplicate search.
        let pdq = img["pdq"].as_str().unwrap_or_default();
        assert!(
            pdq.len() == 64 && pdq.bytes().all(|b| b.is_ascii_hexdigit()),
            "{img}"
        );
        assert!(img["pdq_quality"].as_u64().is_some_and(|q| q > 49), "{img}");
    }
    let mut ids: Vec<&str> = listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = report
        .iter()
        .map(|l| l["image_id"].as_str().unwrap())
        .collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want);
    // The staged upload is gone once the batch is done.
    assert!(files_under(&dir.path().join("blobs/staging")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_within_and_across_batches_name_the_first_image() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let photo = jpeg(7, 640, 480);
    let first = server
        .upload_ok(
            ZipBuilder::new()
                .stored("one.jpg", &photo)
                .stored("again.jpg", &photo)
                // Phone metadata (GPS, make) on the same upright picture:
                // removed, so the same image.
                .stored("phone.jpg", &with_metadata(&photo, 1))
                .finish(),
        )
        .await;
    server.wait_done(&first).await;
    let report = server.report(&first).await;
    let id = line(&report, "one.jpg")["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    for dup in ["again.jpg", "phone.jpg"] {
        let l = line(&report, dup);
        assert_eq!(l["verdict"], "duplicate", "{l}");
        assert_eq!(l["duplicate_of"], id.as_str());
        assert_eq!(l["duplicate_kind"], "exact");
    }

    let second = server
        .upload_ok(
            ZipBuilder::new()
                .stored("later.jpg", &photo)
                .stored("new.jpg", &jpeg(8, 640, 480))
                .finish(),
        )
        .await;
    let done = server.wait_done(&second).await;
    assert_eq!(
        (
            done["counts"]["accepted"].as_u64(),
            done["counts"]["duplicate"].as_u64()
        ),
        (Some(1), Some(1)),
        "{done}"
    );
    let report = server.report(&second).await;
    assert_eq!(line(&report, "later.jpg")["duplicate_of"], id.as_str());
    // Exactly the two distinct images are stored.
    assert_eq!(files_under(&dir.path().join("blobs/images")).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_entry_gets_its_own_reason_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let good = jpeg(20, 800, 600);
    let photo = jpeg(21, 800, 600);
    let inner_zip = ZipBuilder::new().stored("x.jpg", &good).finish();
    let zip = ZipBuilder::new()
        .stored("good.jpg", &good)
        .stored("truncated.jpg", &truncated(&photo))
        .stored("truncated_eoi.jpg", &truncated_with_eoi(&photo))
        .stored("polyglot.jpg", &with_zip_appended(&jpeg(22, 320, 240)))
        .stored("notes.jpg", b"just some text, not an image\n")
        .stored(
            "animation.gif",
            b"GIF89a\x01\0\x01\0\x80\0\0\0\0\0\xff\xff\xff,\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;",
        )
        .stored("../../etc/evil.jpg", &jpeg(24, 64, 64))
        .symlink("link.jpg", "/etc/passwd")
        .encrypted("secret.jpg", &jpeg(25, 64, 64))
        .stored("huge.jpg", &declares_dimensions(20000, 20000))
        .file("bomb.jpg", &zip_bomb_entry(), CompressionMethod::Deflated)
        .lying_size("liar.jpg", &jpeg(26, 320, 240))
        .dir("folder/")
        .stored("nested.jpg", &inner_zip)
        .finish();
    let id = server.upload_ok(zip).await;
    let done = server.wait_done(&id).await;
    assert_eq!(done["phase"], "completed");
    let report = server.report(&id).await;
    assert_eq!(report.len(), 14, "one verdict per entry");
    assert_eq!(line(&report, "good.jpg")["verdict"], "accepted");
    let expected = [
        ("truncated.jpg", "truncated"),
        ("truncated_eoi.jpg", "truncated"),
        ("polyglot.jpg", "trailing_data"),
        ("notes.jpg", "not_an_image"),
        ("animation.gif", "format_not_allowed"),
        ("../../etc/evil.jpg", "unsafe_name"),
        ("link.jpg", "symlink"),
        ("secret.jpg", "encrypted"),
        ("huge.jpg", "dimensions_too_large"),
        ("bomb.jpg", "compression_ratio"),
        ("liar.jpg", "size_mismatch"),
        ("folder/", "directory_entry"),
        ("nested.jpg", "nested_archive"),
    ];
    for (entry, reason) in expected {
        let l = line(&report, entry);
        assert_eq!(
            (l["verdict"].as_str(), l["reason"].as_str()),
            (Some("rejected"), Some(reason)),
            "{l}"
        );
        assert!(l["detail"].as_str().is_some_and(|d| !d.is_empty()), "{l}");
    }
    // Nothing was ever written from an entry name.
    assert!(
        !dir.path().join("etc").exists()
            && !dir.path().parent().unwrap().join("etc/evil.jpg").exists()
    );
    assert_eq!(files_under(&dir.path().join("blobs/images")).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn png_is_accepted_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--formats", "jpeg,png"]);
    let mut shot = png(30, 200, 100);
    // A tEXt chunk before IEND: metadata that sanitising drops.
    let iend = shot.len() - 12;
    let text = b"\0\0\0\x0dtEXtComment\0hello\0\0\0\0";
    shot.splice(iend..iend, text.iter().copied());
    let id = server
        .upload_ok(ZipBuilder::new().stored("shot.png", &shot).finish())
        .await;
    server.wait_done(&id).await;
    let report = server.report(&id).await;
    let l = line(&report, "shot.png");
    assert_eq!(l["verdict"], "accepted", "{l}");
    let r = server
        .client()
        .get(server.url(&format!("/v1/images/{}", l["image_id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    let stored = r.bytes().await.unwrap();
    assert!(!stored.windows(4).any(|w| w == b"tEXt"));
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_uploads_answer_problems_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-upload-bytes", "2000000"]);
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "not a zip",
            b"GIF89a this is not a zip at all".to_vec(),
            "",
            400,
            "not-a-zip",
        ),
        ("empty body", Vec::new(), "", 400, "not-a-zip"),
        (
            "empty archive",
            ZipBuilder::new().finish(),
            "",
            400,
            "empty-archive",
        ),
        (
            "only text",
            ZipBuilder::new().stored("a.jpg", b"hello").finish(),
            "",
            400,
            "no-images",
        ),
        (
            "unknown policy",
            ZipBuilder::new()
                .stored("ok.jpg", &jpeg(41, 64, 64))
                .finish(),
            "?policy=nope",
            400,
            "unknown-policy",
        ),
        (
            "strict with text",
            ZipBuilder::new()
                .stored("ok.jpg", &jpeg(40, 64, 64))
                .stored("a.txt", b"hello")
                .finish(),
            "?strict=true",
            400,
            "no-images",
        ),
        (
            "prepended data",
            [
                b"junk".to_vec(),
                ZipBuilder::new()
                    .stored("ok.jpg", &jpeg(41, 64, 64))
                    .finish(),
            ]
            .concat(),
            "",
            400,
            "not-a-zip",
        ),
        (
            "zip header then prepended data",
            [
                b"PK\x03\x04 something else first ".to_vec(),
                ZipBuilder::new()
                    .stored("ok.jpg", &jpeg(45, 64, 64))
                    .finish(),
            ]
            .concat(),
            "",
            400,
            "archive-offset",
        ),
        (
            "bad callback",
            ZipBuilder::new()
                .stored("ok.jpg", &jpeg(44, 64, 64))
                .finish(),
            "?callback=ftp://x",
            400,
            "invalid-callback",
        ),
    ];
    for (what, body, query, status, slug) in cases {
        let r = server
            .client()
            .post(server.url(&format!("/v1/batches{query}")))
            .header("content-type", "application/zip")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            p["type"],
            format!("https://picsift.io/problems/{slug}").as_str(),
            "{what}: {p}"
        );
        assert_eq!(p["status"], status, "{what}");
        assert!(
            p["detail"].as_str().is_some_and(|d| d.len() > 10),
            "{what}: {p}"
        );
    }
    // A body that declares too much is refused before any of it is read:
    // the answer comes while the client has sent only its headers.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
            .await
            .unwrap();
        let head = format!(
            "POST /v1/batches HTTP/1.1\r\nHost: picsift\r\nAuthorization: Bearer {}\r\nContent-Type: application/zip\r\nContent-Length: 3000000\r\n\r\n",
            server.key
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut answer))
            .await
            .expect("answered before the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.contains("application/problem+json") && answer.contains("upload-too-large"),
            "{answer}"
        );
    }
    // A streamed body without Content-Length is cut at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = std::iter::once(Ok(b"PK\x03\x04".to_vec()))
        .chain((0..40).map(|_| Ok(vec![0u8; 100_000])))
        .collect();
    let r = server
        .client()
        .post(server.url("/v1/batches"))
        .header("content-type", "application/zip")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    } // The server may also close the connection while the client is still sending.
    assert!(
        files_under(&dir.path().join("blobs")).is_empty(),
        "refused uploads leave no blobs: {:?}",
        files_under(&dir.path().join("blobs"))
    );
    let listed = server
        .client()
        .get(server.url("/v1/batches/does-not-exist"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_upload_as_a_browser_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let zip = ZipBuilder::new()
        .stored("a.jpg", &jpeg(50, 300, 200))
        .finish();
    let boundary = "----picsiftboundary7MA4YWxkTrZu0gW";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"photos.zip\"\r\nContent-Type: application/zip\r\n\r\n").into_bytes();
    body.extend_from_slice(&zip);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = server
        .client()
        .post(server.url("/v1/batches"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = server.wait_done(&id).await;
    assert_eq!(done["counts"]["accepted"], 1, "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn report_pages_and_ndjson_agree() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut z = ZipBuilder::new();
    for i in 0..12 {
        z = z.stored(&format!("p{i:02}.jpg"), &jpeg(60 + i, 96, 64));
    }
    z = z.stored("bad.jpg", b"nope");
    let id = server.upload_ok(z.finish()).await;
    server.wait_done(&id).await;
    let paged = server.report(&id).await;
    assert_eq!(paged.len(), 13);
    let nd = server
        .client()
        .get(server.url(&format!("/v1/batches/{id}/report")))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(nd.headers()["content-type"], "application/x-ndjson");
    let text = nd.text().await.unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, paged);
    for l in &lines {
        for key in [
            "entry",
            "verdict",
            "reason",
            "detail",
            "image_id",
            "duplicate_of",
        ] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_of_a_stored_photo_are_near_duplicates_naming_it_and_the_distance() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let original = picsift_tests::photo(77, 1024, 768);
    let first = server
        .upload_ok(
            ZipBuilder::new()
                .stored("original.jpg", &picsift_tests::encode_jpeg(&original, 90))
                .finish(),
        )
        .await;
    server.wait_done(&first).await;
    let original_id = line(&server.report(&first).await, "original.jpg")["image_id"]
        .as_str()
        .unwrap()
        .to_string();

    let resized =
        image::imageops::resize(&original, 512, 384, image::imageops::FilterType::Triangle);
    let brighter = image::imageops::brighten(&original, 20);
    // 2% off the right edge. PDQ tolerates small crops only: on this
    // picture 1% off every side is already about 30 bits away.
    let cropped = image::imageops::crop_imm(&original, 0, 0, 1004, 768).to_image();
    let zip = ZipBuilder::new()
        .stored(
            "recompressed.jpg",
            &picsift_tests::encode_jpeg(&original, 60),
        )
        .stored("resized.jpg", &picsift_tests::encode_jpeg(&resized, 90))
        .stored("brighter.jpg", &picsift_tests::encode_jpeg(&brighter, 90))
        .stored("cropped.jpg", &picsift_tests::encode_jpeg(&cropped, 90))
        .stored("other.jpg", &jpeg(78, 1024, 768))
        .finish();
    let second = server.upload_ok(zip).await;
    let done = server.wait_done(&second).await;
    let report = server.report(&second).await;
    assert_eq!(done["counts"]["duplicate"], 4, "{report:#?}");
    for edit in [
        "recompressed.jpg",
        "resized.jpg",
        "brighter.jpg",
        "cropped.jpg",
    ] {
        let l = line(&report, edit);
        assert_eq!(l["verdict"], "duplicate", "{l}");
        assert_eq!(l["duplicate_kind"], "near", "{l}");
        assert_eq!(l["duplicate_of"], original_id.as_str(), "{l}");
        let d = l["distance"].as_u64().unwrap();
        assert!((1..=31).contains(&d), "{edit}: distance {d}");
    }
    assert_eq!(line(&report, "other.jpg")["verdict"], "accepted");

    // Similar-image search finds the original from an edit sent as the
    // body, and nothing else; by id it finds no other stored image.
    let http = server.client();
    let by_body: serde_json::Value = http
        .post(server.url("/v1/search/similar"))
        .header("content-type", "image/jpeg")
        .body(picsift_tests::encode_jpeg(&resized, 70))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let matches = by_body["matches"]
        .as_array()
        .unwrap_or_else(|| panic!("{by_body}"));
    assert_eq!(matches.len(), 1, "{by_body}");
    assert_eq!(matches[0]["image_id"], original_id.as_str());
    assert!(matches[0]["distance"].as_u64().unwrap() <= 31);
    let by_id: serde_json::Value = http
        .post(server.url("/v1/search/similar"))
        .json(&serde_json::json!({"image_id": original_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_id["matches"], serde_json::json!([]), "{by_id}");
    let meta = server
        .get_json(&format!("/v1/images/{original_id}/metadata"))
        .await;
    assert_eq!(meta["entry"], "original.jpg");
    assert_eq!(meta["batch"], first.as_str());
    assert!(
        meta["pdq"].is_string() && meta["pdq_quality"].as_u64() >= Some(50),
        "{meta}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_search_filters_sorts_and_pages_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let sizes = [
        (640, 480),
        (1024, 768),
        (320, 240),
        (1600, 1200),
        (800, 600),
    ];
    let mut zip = ZipBuilder::new();
    for (i, (w, h)) in sizes.iter().enumerate() {
        zip = zip.stored(&format!("p{i}.jpg"), &jpeg(200 + i as u64, *w, *h));
    }
    let id = server.upload_ok(zip.finish()).await;
    server.wait_done(&id).await;

    // Wider than 700, largest file first, one per page.
    let mut widths = Vec::new();
    let mut sizes_seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let cursor = next
            .as_ref()
            .map(|c| format!("&after={c}"))
            .unwrap_or_default();
        let page = server
            .get_json(&format!(
                "/v1/images?min_width=700&sort=-size&limit=1{cursor}"
            ))
            .await;
        for img in page["images"].as_array().unwrap() {
            widths.push(img["width"].as_u64().unwrap());
            sizes_seen.push(img["size"].as_u64().unwrap());
        }
        match page["next"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => break,
        }
    }
    let mut sorted_widths = widths.clone();
    sorted_widths.sort();
    assert_eq!(sorted_widths, vec![800, 1024, 1600]);
    assert!(
        sizes_seen.windows(2).all(|w| w[0] >= w[1]),
        "{sizes_seen:?}"
    );

    let none = server
        .get_json("/v1/images?from=2099-01-01T00:00:00Z")
        .await;
    assert_eq!(none["images"], serde_json::json!([]));
    let bad = server
        .client()
        .get(server.url("/v1/images?sort=sideways"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // A cursor only continues the sort order it came from.
    let first = server.get_json("/v1/images?sort=-size&limit=1").await;
    let cursor = first["next"].as_str().unwrap();
    let mixed = server
        .client()
        .get(server.url(&format!("/v1/images?sort=created&after={cursor}")))
        .send()
        .await
        .unwrap();
    assert_eq!(mixed.status(), 400);
}

/// The PDQ reference corpus's edits of one photo (blur, sharpen, contrast,
/// saturation, shrink, squares) are near duplicates of it once it is stored.
#[tokio::test(flavor = "multi_thread")]
async fn the_reference_corpus_edits_are_near_duplicates_of_their_original() {
    let corpus =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/pdq/bridge-mods"));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let original = std::fs::read(corpus.join("aaa-orig.jpg")).unwrap();
    let first = server
        .upload_ok(ZipBuilder::new().stored("aaa-orig.jpg", &original).finish())
        .await;
    server.wait_done(&first).await;
    let original_id = line(&server.report(&first).await, "aaa-orig.jpg")["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut zip = ZipBuilder::new();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name != "aaa-orig.jpg" {
            zip = zip.stored(&name, &std::fs::read(&path).unwrap());
            names.push(name);
        }
    }
    let second = server.upload_ok(zip.finish()).await;
    server.wait_done(&second).await;
    let report = server.report(&second).await;
    for name in &names {
        let l = line(&report, name);
        assert_eq!(l["verdict"], "duplicate", "{l}");
        assert_eq!(l["duplicate_of"], original_id.as_str(), "{l}");
    }
    assert_eq!(names.len(), 11);
}
