//! The per-image pipeline on generated and real-world files, without a server.

use picsift_core::jpeg;
use picsift_core::pipeline::{prepare, sha256_hex};
use picsift_core::policy::Policy;
use picsift_core::verdict::Reason;
use picsift_tests::{
    jpeg as photo_jpeg, truncated, truncated_with_eoi, with_metadata, with_zip_appended,
};
use std::path::PathBuf;

fn corpus_jpegs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/pdq");
    assert!(
        root.exists(),
        "{} is missing (the PDQ reference corpus, tests/data/pdq)",
        root.display()
    );
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "jpg") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn image_crate_pads_a_truncated_jpeg_and_ours_refuses_it() {
    let full = photo_jpeg(1, 640, 480);
    let cut = truncated_with_eoi(&full);
    // The lenient path: `image` decodes the cut file to a full-size picture.
    let lenient = image::load_from_memory_with_format(&cut, image::ImageFormat::Jpeg)
        .expect("image's JPEG decoder accepts the cut file");
    assert_eq!((lenient.width(), lenient.height()), (640, 480));
    // Ours refuses it, and the plain truncation, and an appended archive.
    let policy = Policy::default();
    assert_eq!(
        prepare(&cut, &policy).unwrap_err().reason,
        Reason::Truncated
    );
    assert_eq!(
        prepare(&truncated(&full), &policy).unwrap_err().reason,
        Reason::Truncated
    );
    assert_eq!(
        prepare(&with_zip_appended(&full), &policy)
            .unwrap_err()
            .reason,
        Reason::TrailingData
    );
    assert!(prepare(&full, &policy).is_ok());
}

#[test]
fn truncated_progressive_jpegs_are_refused_at_every_cut() {
    let policy = Policy::default();
    let progressive: Vec<_> = corpus_jpegs()
        .into_iter()
        .filter(|p| jpeg::parse(&std::fs::read(p).unwrap()).is_ok_and(|s| s.progressive))
        .collect();
    assert!(!progressive.is_empty(), "the corpus has progressive JPEGs");
    for path in progressive {
        let full = std::fs::read(&path).unwrap();
        for tenth in 2..10 {
            let mut cut = full[..full.len() * tenth / 10].to_vec();
            while cut.last() == Some(&0xFF) {
                cut.pop();
            }
            cut.extend_from_slice(&[0xFF, 0xD9]);
            let r = prepare(&cut, &policy);
            assert!(
                r.is_err(),
                "{} cut at {tenth}/10 was accepted",
                path.display()
            );
        }
    }
}

#[test]
fn real_world_jpegs_pass_strict_decode() {
    let policy = Policy::default();
    let (mut passed, mut sef) = (0, 0);
    for path in corpus_jpegs() {
        let bytes = std::fs::read(&path).unwrap();
        // Samsung phones append a "SEFT" block after the end-of-image
        // marker: recognised, removed, and said so (docs/verdicts.md).
        if bytes.ends_with(b"SEFT") {
            let p = prepare(&bytes, &policy)
                .unwrap_or_else(|r| panic!("{} refused: {r:?}", path.display()));
            assert_eq!(p.removed.as_deref(), Some("Samsung SEF trailer removed"));
            assert!(!p.bytes.windows(4).any(|w| w == b"SEFH"));
            sef += 1;
        }
        let p = prepare(&bytes, &policy)
            .unwrap_or_else(|r| panic!("{} refused: {r:?}", path.display()));
        assert_eq!(p.id, sha256_hex(&p.bytes));
        passed += 1;
    }
    assert!(passed >= 30, "only {passed} corpus JPEGs checked");
    assert_eq!(sef, 4, "the corpus's four Samsung photos");
}

#[test]
fn twelve_megapixel_photo_passes_and_sanitising_keeps_its_pixels() {
    let original = photo_jpeg(2, 4000, 3000);
    let p = prepare(&original, &Policy::default()).unwrap();
    assert_eq!((p.width, p.height), (4000, 3000));
    let before = image::load_from_memory(&original).unwrap().to_rgb8();
    let after = image::load_from_memory(&p.bytes).unwrap().to_rgb8();
    assert!(before == after, "metadata removal changed pixels");
}

#[test]
fn phone_metadata_is_removed_and_orientation_kept_alone() {
    let plain = photo_jpeg(3, 320, 240);
    let phone = with_metadata(&plain, 6);
    assert!(phone.windows(3).any(|w| w == b"GPS"));
    let policy = Policy::default();
    let p = prepare(&phone, &policy).unwrap();
    assert_eq!(p.orientation, Some(6));
    for needle in [&b"GPS"[..], b"Example Street", b"ACM"] {
        assert!(
            !p.bytes.windows(needle.len()).any(|w| w == needle),
            "{:?} survived",
            String::from_utf8_lossy(needle)
        );
    }
    // What is left of EXIF is the orientation: the photo stays upright.
    let minimal = picsift_core::exif::orientation_only(6);
    assert!(p.bytes.windows(minimal.len()).any(|w| w == minimal));
    assert_eq!(jpeg::parse(&p.bytes).unwrap().orientation, Some(6));
    assert_eq!(p.bytes.last(), Some(&0xD9));
    // The same photo with other metadata is the same image; without its
    // orientation it is another (it displays turned).
    assert_eq!(
        prepare(&with_metadata(&plain, 6), &policy).unwrap().id,
        p.id
    );
    assert_ne!(prepare(&plain, &policy).unwrap().id, p.id);
}

#[test]
fn pixel_budget_is_checked_before_decoding() {
    let policy = Policy {
        max_pixels: 1_000_000,
        ..Policy::default()
    };
    let r = prepare(&photo_jpeg(4, 1200, 1000), &policy).unwrap_err();
    assert_eq!(r.reason, Reason::DimensionsTooLarge);
    assert!(r.detail.contains("1200×1000"), "{}", r.detail);
}

#[test]
fn reencode_mode_stores_fresh_upright_pixels_and_nothing_of_the_upload() {
    let policy = Policy {
        sanitize: picsift_core::policy::Sanitize::Reencode,
        ..Policy::default()
    };
    // A 640×480 photo with EXIF (orientation 6: rotate 90°) and a payload
    // after it in a comment segment.
    let original = with_metadata(&photo_jpeg(9, 640, 480), 6);
    let p = prepare(&original, &policy).unwrap();
    assert_eq!((p.width, p.height), (480, 640), "stored upright");
    assert_eq!(p.orientation, None, "nothing left to record");
    assert_eq!(p.id, sha256_hex(&p.bytes));
    let structure = jpeg::parse(&p.bytes).unwrap();
    assert_eq!(structure.orientation, None);
    assert!(!p.bytes.windows(4).any(|w| w == b"Exif"), "no EXIF");
    // A fresh encoding: it decodes to the same picture, give or take JPEG.
    let stripped = prepare(&original, &Policy::default()).unwrap();
    assert_ne!(p.bytes, stripped.bytes);
    let again = prepare(&p.bytes, &policy).unwrap();
    assert_eq!((again.width, again.height), (480, 640));
    let (a, b) = (stripped.pdq.unwrap().hash, p.pdq.unwrap().hash);
    assert!(
        a.distance(&b) <= 16,
        "same picture: {} bits apart",
        a.distance(&b)
    );
}

/// Large photos, as `prepare` decodes them: at 1/4 or 1/2 scale (both
/// sides still at least PDQ's 512), every coefficient still read.
fn large_photos() -> Vec<(String, Vec<u8>, (u32, u32))> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/pdq");
    let mut out: Vec<(String, Vec<u8>, (u32, u32))> = ["1", "3", "6", "8"]
        .into_iter()
        .map(|o| {
            let name = format!("exif-rotn-{o}.jpg");
            let path = corpus_jpegs()
                .into_iter()
                .find(|p| p.ends_with(&name))
                .unwrap_or_else(|| panic!("{name} is in {}", root.display()));
            (name, std::fs::read(path).unwrap(), (1008, 756))
        })
        .collect();
    out.push((
        "generated 2400×1800".into(),
        photo_jpeg(31, 2400, 1800),
        (1200, 900),
    ));
    out.push((
        "generated 4000×3000".into(),
        photo_jpeg(32, 4000, 3000),
        (1000, 750),
    ));
    out
}

#[test]
fn large_photos_are_decoded_smaller_and_refused_as_strictly_as_at_full_size() {
    use picsift_core::decode::{strict_jpeg, strict_jpeg_scaled};
    let policy = Policy::default();
    for (name, bytes, scaled) in large_photos() {
        let clean = {
            let s = jpeg::parse(&bytes).unwrap();
            jpeg::strip_metadata(&bytes, &s, None)
        };
        let d = strict_jpeg_scaled(&clean, &policy, 512).unwrap();
        assert_eq!((d.width, d.height), scaled, "{name}");
        let full = strict_jpeg(&clean, &policy).unwrap();
        assert_eq!(d.full, (full.width, full.height), "{name}");
        // Cut short (with and without an end marker) and corrupted in the
        // middle of its entropy-coded data: refused by prepare, for the
        // same reason a full-size decode refuses it.
        let mut corrupt = clean.clone();
        let mid = corrupt.len() / 2;
        for b in &mut corrupt[mid..mid + 64] {
            *b = if *b == 0xFF { 0xFF } else { 0xFF ^ *b };
        }
        for (what, bad) in [
            ("cut with an end marker", truncated_with_eoi(&clean)),
            ("cut", truncated(&clean)),
            ("corrupted", corrupt),
        ] {
            let at_full = strict_jpeg(&bad, &policy).expect_err(what).reason;
            let scaled = strict_jpeg_scaled(&bad, &policy, 512);
            assert_eq!(scaled.expect_err(what).reason, at_full, "{name} {what}");
            assert!(prepare(&bad, &policy).is_err(), "{name} {what} accepted");
        }
    }
}

#[test]
fn the_smaller_decode_hashes_within_a_few_bits_of_the_full_size_one() {
    use picsift_core::orientation::Oriented;
    let policy = Policy::default();
    for (name, bytes, _) in large_photos() {
        let p = prepare(&bytes, &policy).unwrap();
        let s = jpeg::parse(&bytes).unwrap();
        let full =
            picsift_core::decode::strict_jpeg(&jpeg::strip_metadata(&bytes, &s, None), &policy)
                .unwrap();
        let stored = image::RgbImage::from_raw(full.width, full.height, full.rgb.unwrap()).unwrap();
        let at_full = picsift_core::pdq::hash_oriented(&Oriented {
            stored,
            orientation: s.orientation.unwrap_or(1),
        });
        let d = p.pdq.unwrap().hash.distance(&at_full.hash);
        eprintln!("{name}: {d} bits");
        // The reference tolerance is 16 bits (core/tests/pdq_corpus.rs).
        assert!(d <= 16, "{name}: {d} bits from the full-size decode's hash");
    }
}
