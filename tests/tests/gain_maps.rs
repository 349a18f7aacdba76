//! An Ultra HDR photo through `picsift serve` with `gain_maps = "keep"`:
//! the gain map is stored after the primary, both images' pixels as
//! uploaded, with an MPF index and XMP written anew (the gain map's
//! numbers kept, everything else gone); a gain map whose metadata does not
//! hold up is dropped as under the default policy.

mod common;

use common::{Server, line};
use picsift_core::gain_map::{Metadata, xmp_of};
use picsift_tests::{ZipBuilder, encode_jpeg, photo, with_mpf, with_segment};

const XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

/// An XMP packet with one `rdf:Description` holding `attributes`.
fn xmp(attributes: &str) -> Vec<u8> {
    let packet = format!(
        "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\
         <rdf:Description rdf:about=\"\" xmlns:hdrgm=\"http://ns.adobe.com/hdr-gain-map/1.0/\" \
         xmlns:exif=\"http://ns.adobe.com/exif/1.0/\" {attributes}/></rdf:RDF></x:xmpmeta>"
    );
    [XMP, packet.as_bytes()].concat()
}

/// The gain map's metadata, with a location riding along.
const GAIN_MAP: &str = "hdrgm:Version=\"1.0\" hdrgm:GainMapMin=\"0\" hdrgm:GainMapMax=\"2.5\" \
    hdrgm:Gamma=\"1\" hdrgm:HDRCapacityMin=\"0\" hdrgm:HDRCapacityMax=\"2.5\" \
    exif:GPSLatitude=\"GPS 51.5007N\"";

/// An Ultra HDR JPEG: a primary announcing the gain map, the MPF index,
/// then the gain map with its metadata.
fn ultra_hdr(seed: u64, gain_map_attributes: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let primary = encode_jpeg(&photo(seed, 320, 240), 90);
    let map = image::imageops::grayscale(&photo(seed + 1, 80, 60));
    let map = image::DynamicImage::ImageLuma8(map).to_rgb8();
    let map = encode_jpeg(&map, 85);
    let announced = with_segment(
        &primary,
        0xE1,
        &xmp("hdrgm:Version=\"1.0\" exif:UserComment=\"Example Street\""),
    );
    let annotated = with_segment(&map, 0xE1, &xmp(gain_map_attributes));
    (with_mpf(&announced, &annotated), primary, map)
}

fn pixels(jpeg: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .unwrap()
        .to_rgb8()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_gain_map_is_stored_after_the_primary_with_its_metadata_written_anew() {
    let (hdr, primary, map) = ultra_hdr(91, GAIN_MAP);
    let (bad, _, _) = ultra_hdr(
        93,
        &GAIN_MAP.replace("GainMapMin=\"0\"", "GainMapMin=\"9\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "gain_maps = \"keep\"\n").unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--policy", policy.to_str().unwrap()],
    );
    let zip = ZipBuilder::new()
        .stored("hdr.jpg", &hdr)
        .stored("inconsistent.jpg", &bad)
        .finish();
    let id = server.upload_ok(zip).await;
    server.wait_done(&id).await;
    let report = server.report(&id).await;
    let stored = |name: &str| {
        let l = line(&report, name).clone();
        assert_eq!(l["verdict"], "accepted", "{name}: {l}");
        let url = server.url(&format!("/v1/images/{}", l["image_id"].as_str().unwrap()));
        let http = server.client();
        async move {
            let bytes = http.get(url).send().await.unwrap().bytes().await.unwrap();
            (
                l["detail"].as_str().unwrap_or_default().to_string(),
                bytes.to_vec(),
            )
        }
    };

    let (detail, bytes) = stored("hdr.jpg").await;
    assert!(detail.contains("gain map decoded and kept"), "{detail}");
    let s = picsift_core::jpeg::parse(&bytes).unwrap();
    let end = s.trailer.expect("the gain map follows the primary");
    assert_eq!(
        s.announced.mpf_images,
        vec![end..bytes.len()],
        "the MPF index"
    );
    let primary_xmp = String::from_utf8(xmp_of(&bytes, &s).unwrap()).unwrap();
    assert!(
        primary_xmp.contains("hdrgm:Version=\"1.0\""),
        "{primary_xmp}"
    );
    let gain_map = &bytes[end..];
    let g = picsift_core::jpeg::parse(gain_map).unwrap();
    let want = Metadata::parse(&xmp(GAIN_MAP)[XMP.len()..]).unwrap();
    assert_eq!(
        Metadata::parse(&xmp_of(gain_map, &g).unwrap()).unwrap(),
        want
    );
    // Pixels as uploaded, in both images; nothing else of the metadata.
    assert!(
        pixels(&bytes[..end]) == pixels(&primary),
        "the primary's pixels"
    );
    assert!(pixels(gain_map) == pixels(&map), "the gain map's pixels");
    for needle in [b"GPS 51.5007N".as_slice(), b"Example Street"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "keeps {needle:?}"
        );
    }

    let (detail, bytes) = stored("inconsistent.jpg").await;
    assert!(detail.contains("1 further MPF image"), "{detail}");
    let s = picsift_core::jpeg::parse(&bytes).unwrap();
    assert_eq!(s.trailer, None, "the primary alone");
}
