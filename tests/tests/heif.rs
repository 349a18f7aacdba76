//! HEIC and AVIF, through the pipeline and end to end through `picsift
//! serve`: every case of `core/src/heif.rs`'s rules with the files of
//! tests/data/heif (made by its make.sh from the PDQ photos), plus damaged
//! and polyglot variants made here. Stored files keep their pictures byte
//! for byte and lose their EXIF; downloaded pixels are compared with the
//! upload's as libheif shows them (rotation applied).

mod common;

use common::{Server, line};
use picsift_core::format::Format;
use picsift_core::pipeline::prepare_with_pixels;
use picsift_core::policy::Policy;
use picsift_tests::ZipBuilder;
use std::path::Path;

fn data(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/heif")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pdq_photo(name: &str) -> image::RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/pdq")
        .join(name);
    image::open(path).unwrap().to_rgb8()
}

/// The upload with the start of its coded picture data scrambled (after
/// the first NAL unit's length): the container still parses, the HEVC or
/// AV1 data does not decode. (Damage deep inside the entropy-coded data is
/// another matter: neither bitstream carries a checksum, and a decoder
/// turns it into wrong pixels without an error; docs/verdicts.md says so.)
fn corrupt(file: &[u8]) -> Vec<u8> {
    let mut out = file.to_vec();
    let at = out
        .windows(4)
        .position(|w| w == b"mdat")
        .expect("a media data box")
        + 8;
    out[at..at + 196].iter_mut().for_each(|b| *b ^= 0x5A);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One upload: entry name, bytes, the expected reason (`None`: accepted)
/// and the stored picture's size.
type Case = (&'static str, Vec<u8>, Option<&'static str>, (u32, u32));

fn cases() -> Vec<Case> {
    let photo = data("photo.heic");
    vec![
        ("photo.heic", photo.clone(), None, (640, 402)),
        ("photo.avif", data("photo.avif"), None, (640, 402)),
        ("alpha.heic", data("alpha.heic"), None, (640, 402)),
        ("p3.heic", data("p3.heic"), None, (640, 402)),
        ("p3.avif", data("p3.avif"), None, (640, 402)),
        ("ten-bit.heic", data("ten-bit.heic"), None, (640, 402)),
        ("ten-bit.avif", data("ten-bit.avif"), None, (640, 402)),
        ("rotated.avif", data("rotated.avif"), None, (378, 504)),
        ("grid.avif", data("grid.avif"), None, (640, 400)),
        ("grid.heic", data("grid.heic"), None, (640, 400)),
        (
            "collection.heic",
            data("collection.heic"),
            Some("animated"),
            (0, 0),
        ),
        (
            "sequence.avifs",
            data("sequence.avifs"),
            Some("animated"),
            (0, 0),
        ),
        (
            "cut.heic",
            photo[..photo.len() * 7 / 10].to_vec(),
            Some("truncated"),
            (0, 0),
        ),
        (
            "corrupt.heic",
            corrupt(&photo),
            Some("decode_error"),
            (0, 0),
        ),
        (
            "polyglot.heic",
            [
                photo.as_slice(),
                &ZipBuilder::new().stored("run.sh", b"echo hi").finish(),
            ]
            .concat(),
            Some("trailing_data"),
            (0, 0),
        ),
    ]
}

#[test]
fn every_heif_case_gets_its_rule_in_the_pipeline() {
    let policy = Policy::default();
    for (name, bytes, reason, size) in cases() {
        let result = prepare_with_pixels(&bytes, &policy);
        match (reason, result) {
            (None, Ok((p, pixels))) => {
                assert_eq!((p.width, p.height), size, "{name}");
                assert_eq!(pixels.unwrap().dimensions(), size, "{name}: upright pixels");
                assert!(p.pdq.is_some(), "{name}: hashed");
                assert_eq!(p.bytes.len(), bytes.len(), "{name}: blanked in place");
                assert!(
                    matches!(p.format, Format::Heic | Format::Avif),
                    "{name}: {:?}",
                    p.format
                );
            }
            (Some(want), Err(r)) => assert_eq!(r.reason.code(), want, "{name}: {}", r.detail),
            (want, got) => panic!(
                "{name}: wanted {want:?}, got {:?}",
                got.map(|(p, _)| p.id).map_err(|r| r.detail)
            ),
        }
    }
}

#[test]
fn the_container_rotation_gives_the_upright_photo() {
    // rotated.avif holds the sideways pixels of exif-rotn-6.jpg with irot 3;
    // decoded, it is that photo as a viewer shows it (orientation 6 applied).
    let (p, pixels) = prepare_with_pixels(&data("rotated.avif"), &Policy::default()).unwrap();
    let sideways = pdq_photo("reg-test-input/exif-rotn/exif-rotn-6.jpg");
    let upright = picsift_core::orientation::apply_orientation(sideways, 6);
    let small = image::imageops::resize(&upright, 378, 504, image::imageops::FilterType::Triangle);
    let want = picsift_core::pdq::hash(&small);
    let got = p.pdq.unwrap();
    let distance = picsift_core::pdq::distance(&got.hash, &want.hash);
    assert!(
        distance <= 31,
        "PDQ distance to the upright photo: {distance}"
    );
    assert_eq!(pixels.unwrap().dimensions(), (378, 504));
}

#[test]
fn a_grid_is_its_tiles_in_place() {
    // Both grids hold the same 640×400 picture, cut into four tiles; a
    // tile out of place would differ by far more than two codecs do.
    let pixels = |name| {
        let (_, pixels) = prepare_with_pixels(&data(name), &Policy::default()).unwrap();
        pixels.unwrap().into_upright()
    };
    let (heic, avif) = (pixels("grid.heic"), pixels("grid.avif"));
    assert_eq!(heic.dimensions(), avif.dimensions());
    let diff: u64 = heic
        .as_raw()
        .iter()
        .zip(avif.as_raw())
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    let mean = diff as f64 / heic.as_raw().len() as f64;
    assert!(mean < 6.0, "mean difference {mean:.2} levels");
}

#[tokio::test(flavor = "multi_thread")]
async fn heic_and_avif_are_checked_stored_without_exif_and_downloaded_as_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    // The default formats take HEIC and AVIF.
    let server = Server::start(dir.path(), &[]);
    let cases = cases();
    let mut zip = ZipBuilder::new();
    for (name, bytes, _, _) in &cases {
        zip = zip.stored(name, bytes);
    }
    let id = server.upload_ok(zip.finish()).await;
    server.wait_done(&id).await;
    let report = server.report(&id).await;
    let http = server.client();
    for (name, upload, reason, size) in &cases {
        let l = line(&report, name);
        let Some(image_id) = l["image_id"].as_str().filter(|_| reason.is_none()) else {
            assert_eq!(l["reason"].as_str(), *reason, "{name}: {l}");
            continue;
        };
        assert_eq!(l["verdict"], "accepted", "{name}: {l}");
        let url = server.url(&format!("/v1/images/{image_id}"));
        let stored = http.get(url).send().await.unwrap().bytes().await.unwrap();
        let format = if name.ends_with(".heic") {
            Format::Heic
        } else {
            Format::Avif
        };
        let shown = picsift_core::heif::decode_rgb(&stored, format).unwrap();
        let original = picsift_core::heif::decode_rgb(upload, format).unwrap();
        assert_eq!(shown.dimensions(), *size, "{name}");
        assert!(shown == original, "{name}: the stored pixels differ");
        // A Display P3 photo keeps its profile, byte for byte: it shows in
        // its colours.
        let p3 = data("display-p3.icc");
        assert_eq!(
            contains(&stored, &p3),
            name.starts_with("p3."),
            "{name}: the Display P3 profile"
        );
        if contains(upload, b"Google") {
            assert!(!contains(&stored, b"Google"), "{name}: EXIF left in");
        }
        let thumb = server.url(&format!("/v1/images/{image_id}/thumbnail"));
        let thumb = http.get(thumb).send().await.unwrap();
        assert_eq!(thumb.status(), 200, "{name}: thumbnail");
    }
    let photo = line(&report, "photo.heic");
    assert!(
        contains(&data("photo.heic"), b"Google"),
        "the upload has EXIF"
    );
    assert_eq!(photo["verdict"], "accepted", "{photo}");
}
