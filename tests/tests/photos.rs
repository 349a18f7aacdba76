//! Photos as phones and cameras write them, through `picsift serve`: a
//! portrait photo downloads upright and a wide-gamut one in its colours
//! (the stored file keeps the orientation alone and a validated ICC
//! profile), a damaged profile is dropped, an animated PNG is stored as the
//! still that was checked and an animated WebP is refused. Each stored
//! image is compared with its upload the way an ICC- and orientation-aware
//! viewer sees them: same profile, same upright pixels.

mod common;

use common::{Server, line};
use image::ImageDecoder;
use picsift_tests::{ZipBuilder, crc32, encode_jpeg, photo, with_metadata, with_mpf};

/// A JPEG with `profile` in one APP2 segment right after SOI.
fn with_icc(jpeg: &[u8], profile: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE2]);
    out.extend_from_slice(&((2 + 12 + 2 + profile.len()) as u16).to_be_bytes());
    out.extend_from_slice(b"ICC_PROFILE\0\x01\x01");
    out.extend_from_slice(profile);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// One PNG chunk, length and CRC included.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let typed = [kind.as_slice(), data].concat();
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&typed);
    out.extend_from_slice(&crc32(&typed).to_be_bytes());
    out
}

/// Inserts `chunk` into a PNG right after IHDR (8 + 25 bytes in).
fn after_ihdr(png: &[u8], chunk: &[u8]) -> Vec<u8> {
    [&png[..33], chunk, &png[33..]].concat()
}

fn encode(
    encoder: impl image::ImageEncoder,
    img: &image::RgbImage,
    icc: Option<&[u8]>,
) -> image::ImageResult<()> {
    let mut encoder = encoder;
    if let Some(p) = icc {
        encoder.set_icc_profile(p.to_vec()).unwrap();
    }
    encoder.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
}

/// A two-frame animated WebP (VP8X, ANIM, two ANMF) whose second frame
/// is corrupt: a decoder that reads only the first frame finds nothing wrong.
fn animated_webp(img: &image::RgbImage) -> Vec<u8> {
    let mut still = Vec::new();
    encode(
        image::codecs::webp::WebPEncoder::new_lossless(&mut still),
        img,
        None,
    )
    .unwrap();
    assert_eq!(&still[12..16], b"VP8L", "a simple lossless WebP");
    let frame = &still[12..];
    let u24 = |v: u32| v.to_le_bytes()[..3].to_vec();
    let chunk = |kind: &[u8; 4], data: &[u8]| {
        let mut c = kind.to_vec();
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    };
    let (w, h) = (img.width() - 1, img.height() - 1);
    let vp8x = [vec![0x02, 0, 0, 0], u24(w), u24(h)].concat(); // animation flag
    let anim = [0u8, 0, 0, 0, 0, 0]; // background colour, loop count
    let anmf = |data: &[u8]| {
        let head = [u24(0), u24(0), u24(w), u24(h), u24(100), vec![0]].concat();
        chunk(b"ANMF", &[head.as_slice(), data].concat())
    };
    let mut corrupt = frame.to_vec();
    let half = corrupt.len() / 2;
    corrupt[half..].iter_mut().for_each(|b| *b = 0xA5);
    let body = [
        b"WEBP".to_vec(),
        chunk(b"VP8X", &vp8x),
        chunk(b"ANIM", &anim),
        anmf(frame),
        anmf(&corrupt),
    ]
    .concat();
    [
        b"RIFF".as_slice(),
        &(body.len() as u32).to_le_bytes(),
        &body,
    ]
    .concat()
}

/// What a viewer that honours ICC profiles and EXIF orientation shows:
/// the profile and the upright pixels.
fn as_shown(bytes: &[u8]) -> (Option<Vec<u8>>, image::RgbImage) {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .unwrap();
    let mut decoder = reader.into_decoder().unwrap();
    let icc = decoder.icc_profile().unwrap();
    let orientation = decoder.orientation().unwrap();
    let mut img = image::DynamicImage::from_decoder(decoder).unwrap();
    img.apply_orientation(orientation);
    (icc, img.to_rgb8())
}

#[tokio::test(flavor = "multi_thread")]
async fn photos_download_upright_and_in_their_colours() {
    let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    let adobe = moxcms::ColorProfile::new_adobe_rgb().encode().unwrap();
    let img = photo(61, 320, 240);

    // A portrait phone photo: sideways pixels, orientation 6, GPS, Display P3.
    let portrait = with_icc(&with_metadata(&encode_jpeg(&img, 90), 6), &p3);
    // A profile that does not parse is dropped; the photo is still taken.
    let bad_icc = with_icc(&encode_jpeg(&photo(62, 320, 240), 90), b"<?php evil(); ?>");
    // A PNG in Adobe RGB, turned (orientation 8 in eXIf).
    let mut png = Vec::new();
    encode(
        image::codecs::png::PngEncoder::new(&mut png),
        &photo(63, 200, 150),
        Some(&adobe),
    )
    .unwrap();
    let exif8 = picsift_core::exif::orientation_only(8);
    let turned_png = after_ihdr(&png, &png_chunk(b"eXIf", &exif8));
    // An animated PNG whose later frame is garbage: stored as its checked still.
    let mut actl = 2u32.to_be_bytes().to_vec(); // two frames,
    actl.extend_from_slice(&0u32.to_be_bytes()); // looping forever
    let apng = after_ihdr(&png, &png_chunk(b"acTL", &actl));
    let iend = apng.len() - 12;
    let apng = [
        &apng[..iend],
        &png_chunk(b"fdAT", b"\0\0\0\x02not a frame at all"),
        &apng[iend..],
    ]
    .concat();
    // A WebP in Display P3 (VP8X, ICCP, VP8L) and an animated one.
    let mut webp = Vec::new();
    encode(
        image::codecs::webp::WebPEncoder::new_lossless(&mut webp),
        &photo(64, 160, 120),
        Some(&p3),
    )
    .unwrap();
    assert_eq!(&webp[12..16], b"VP8X");
    let animated_webp = animated_webp(&photo(65, 160, 120));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--formats", "jpeg,png,webp"]);
    let uploads = [
        ("portrait.jpg", portrait.clone()),
        ("bad-icc.jpg", bad_icc.clone()),
        ("turned.png", turned_png.clone()),
        ("animated.png", apng.clone()),
        ("p3.webp", webp.clone()),
        ("animated.webp", animated_webp),
    ];
    let mut zip = ZipBuilder::new();
    for (name, bytes) in &uploads {
        zip = zip.stored(name, bytes);
    }
    let id = server.upload_ok(zip.finish()).await;
    server.wait_done(&id).await;
    let report = server.report(&id).await;
    let refused = line(&report, "animated.webp");
    assert_eq!(refused["reason"], "animated", "{refused}");
    let still = line(&report, "animated.png");
    assert!(
        still["detail"]
            .as_str()
            .is_some_and(|d| d.contains("APNG animation removed")),
        "{still}"
    );
    // With `animation = refuse`, the APNG is refused too.
    let refuse = picsift_core::policy::Policy {
        animation: picsift_core::policy::Animation::Refuse,
        ..picsift_core::policy::Policy::default()
    };
    let r = picsift_core::pipeline::prepare(&apng, &refuse).unwrap_err();
    assert_eq!(
        r.reason,
        picsift_core::verdict::Reason::Animated,
        "{}",
        r.detail
    );
    assert!(picsift_core::pipeline::prepare(&turned_png, &refuse).is_ok());

    let http = server.client();
    let stored = |name: &'static str| {
        let l = line(&report, name).clone();
        let http = http.clone();
        let url = server.url(&format!(
            "/v1/images/{}",
            l["image_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {l}"))
        ));
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec()
        }
    };
    // (name, upload, the profile a viewer should find in the stored file)
    let cases = [
        ("portrait.jpg", &portrait, Some(&p3)),
        ("bad-icc.jpg", &bad_icc, None),
        ("turned.png", &turned_png, Some(&adobe)),
        ("animated.png", &apng, Some(&adobe)),
        ("p3.webp", &webp, Some(&p3)),
    ];
    for (name, upload, profile) in cases {
        let bytes = stored(name).await;
        let (icc, pixels) = as_shown(&bytes);
        assert_eq!(icc.as_ref(), profile, "{name}: the stored profile");
        let (_, original) = as_shown(upload);
        assert_eq!(
            pixels.dimensions(),
            original.dimensions(),
            "{name}: shown the same way round"
        );
        assert!(pixels == original, "{name}: the stored pixels differ");
        for needle in [b"GPS 51.5007N".as_slice(), b"Example Street", b"<?php"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{name} keeps {needle:?}"
            );
        }
    }
    let portrait_shown = as_shown(&stored("portrait.jpg").await).1;
    assert_eq!(portrait_shown.dimensions(), (240, 320), "upright: portrait");
    let apng_stored = stored("animated.png").await;
    for chunk in [b"acTL", b"fcTL", b"fdAT"] {
        assert!(
            !apng_stored.windows(4).any(|w| w == chunk),
            "the animation is gone: {chunk:?}"
        );
    }
}

/// A Google motion photo: XMP announcing it, an MP4 after the image.
fn motion_photo(jpeg: &[u8]) -> Vec<u8> {
    let xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\"><rdf:Description xmlns:GCamera=\"http://ns.google.com/photos/1.0/camera/\" GCamera:MotionPhoto=\"1\" GCamera:MotionPhotoVersion=\"1\"/></rdf:RDF></x:xmpmeta>";
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((xmp.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(xmp);
    out.extend_from_slice(&jpeg[2..]);
    // ftyp and an mdat holding "video" (and, say, a location track).
    out.extend_from_slice(&20u32.to_be_bytes());
    out.extend_from_slice(b"ftypmp42\0\0\0\0isom");
    out.extend_from_slice(&28u32.to_be_bytes());
    out.extend_from_slice(b"mdatvideo frames, GPS...");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn phone_trailers_are_checked_and_removed_and_polyglots_still_refused() {
    let primary = encode_jpeg(&photo(71, 320, 240), 90);
    let gain_map = encode_jpeg(&photo(72, 160, 120), 80);
    let mut broken_map = gain_map.clone();
    broken_map.truncate(gain_map.len() * 2 / 3);
    broken_map.extend_from_slice(&[0xFF, 0xD9]);
    let samsung = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/pdq/reg-test-input/exif-rotn/exif-rotn-6.jpg"),
    )
    .unwrap();
    assert!(samsung.ends_with(b"SEFT"));
    let uploads = [
        ("hdr.jpg", with_mpf(&primary, &gain_map)),
        ("broken-gain-map.jpg", with_mpf(&primary, &broken_map)),
        (
            "motion.jpg",
            motion_photo(&encode_jpeg(&photo(73, 320, 240), 90)),
        ),
        ("samsung.jpg", samsung),
        (
            "polyglot.jpg",
            [
                encode_jpeg(&photo(74, 320, 240), 90),
                b"PK\x03\x04zip".to_vec(),
            ]
            .concat(),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut zip = ZipBuilder::new();
    for (name, bytes) in &uploads {
        zip = zip.stored(name, bytes);
    }
    let id = server.upload_ok(zip.finish()).await;
    server.wait_done(&id).await;
    let report = server.report(&id).await;
    // (entry, verdict, reason, detail contains, bytes the stored file must not hold)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, &'a [u8]);
    let cases: [Case; 5] = [
        ("hdr.jpg", "accepted", None, "1 further MPF image", b"MPF\0"),
        (
            "broken-gain-map.jpg",
            "rejected",
            None,
            "MPF image 2: ",
            b"",
        ),
        (
            "motion.jpg",
            "accepted",
            None,
            "motion-photo video removed",
            b"ftyp",
        ),
        (
            "samsung.jpg",
            "accepted",
            None,
            "Samsung SEF trailer removed",
            b"SEFH",
        ),
        (
            "polyglot.jpg",
            "rejected",
            Some("trailing_data"),
            "no known layout",
            b"",
        ),
    ];
    for (name, verdict, reason, detail, gone) in cases {
        let l = line(&report, name);
        assert_eq!(l["verdict"], verdict, "{name}: {l}");
        if let Some(reason) = reason {
            assert_eq!(l["reason"], reason, "{name}: {l}");
        }
        assert!(
            l["detail"].as_str().unwrap_or_default().contains(detail),
            "{name}: {l}"
        );
        if verdict == "accepted" {
            let url = server.url(&format!("/v1/images/{}", l["image_id"].as_str().unwrap()));
            let stored = server
                .client()
                .get(url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(
                !stored.windows(gone.len()).any(|w| w == gone),
                "{name} keeps {gone:?}"
            );
            assert_eq!(
                &stored[stored.len() - 2..],
                &[0xFF, 0xD9],
                "{name}: ends with the image"
            );
        }
    }
}
