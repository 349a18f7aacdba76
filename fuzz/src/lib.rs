//! What each fuzz target runs: the parsers of untrusted input in
//! `picsift-core`, called the way the gateway and the worker call them, and
//! the invariants their results must keep. A failed assertion is a finding,
//! like a panic.
//!
//! This file depends on `picsift-core` and `zip` only, so that
//! `core/tests/fuzz_regressions.rs` can include it and replay crashers and
//! seeds through exactly these checks in the ordinary test run.

use picsift_core::archive::{self, EntryMeta};
use picsift_core::format::{self, Sniffed};
use picsift_core::policy::Policy;
use picsift_core::{decode, gain_map, isobmff, jpeg, pipeline, png_webp, trailer};
use std::io::Cursor;
use std::ops::Range;
use zip::ZipArchive;

/// Bytes of an upload the gateway has read when it runs the light check.
const GATEWAY_HEAD: usize = 4;

/// Most entries one archive input walks, so that one input stays fast.
const MAX_ENTRIES_WALKED: usize = 64;

/// Every format allowed (the default), and a pixel budget small enough that a decode takes
/// milliseconds: the fuzzer looks for bugs, not for big pictures.
pub fn small_policy() -> Policy {
    Policy {
        max_dimension: 1024,
        max_pixels: 1 << 18,
        ..Policy::default()
    }
}

/// `format::sniff`: the gateway sniffs `SNIFF_LEN` bytes of an entry, the
/// pipeline up to 512; both must agree on what is an image.
pub fn sniff(data: &[u8]) {
    let full = format::sniff(data);
    let head = format::sniff(&data[..data.len().min(format::SNIFF_LEN)]);
    if matches!(full, Sniffed::Image(_)) || matches!(head, Sniffed::Image(_)) {
        assert_eq!(head, full, "a short and a long sniff disagree on an image");
    }
}

/// `jpeg::parse` then `jpeg::strip_metadata`: what is stripped parses again
/// to the same frame and orientation (1 written as none) with the same
/// valid ICC profile, and stripping it again changes nothing.
pub fn jpeg_strip(data: &[u8]) {
    let Ok(s) = jpeg::parse(data) else { return };
    let icc = jpeg::icc_profile(data, &s).filter(|p| picsift_core::icc::check(p).is_ok());
    let clean = jpeg::strip_metadata(data, &s, icc.as_deref());
    // At most a minimal EXIF segment (36 bytes) longer than the upload.
    assert!(
        clean.len() <= data.len() + 36,
        "stripping made the file longer"
    );
    let again =
        jpeg::parse(&clean).unwrap_or_else(|r| panic!("the stripped JPEG no longer parses: {r:?}"));
    assert_eq!(
        (
            again.width,
            again.height,
            again.components,
            again.progressive
        ),
        (s.width, s.height, s.components, s.progressive),
        "stripping changed the frame"
    );
    assert_eq!(
        again.orientation,
        s.orientation.filter(|&o| o != 1),
        "stripping changed the orientation"
    );
    assert_eq!(
        jpeg::icc_profile(&clean, &again),
        icc,
        "stripping changed the profile"
    );
    assert_eq!(
        jpeg::strip_metadata(&clean, &again, icc.as_deref()),
        clean,
        "stripping twice differs from stripping once"
    );
}

/// `decode::strict_jpeg` under [`small_policy`]: a decode within budget, with
/// exactly the pixels it declares.
pub fn decode_jpeg(data: &[u8]) {
    let policy = small_policy();
    let Ok(d) = decode::strict_jpeg(data, &policy) else {
        return;
    };
    policy
        .check_dimensions(d.width, d.height)
        .unwrap_or_else(|r| panic!("decoded past the pixel budget: {r:?}"));
    if let Some(rgb) = &d.rgb {
        assert_eq!(rgb.len(), d.width as usize * d.height as usize * 3);
    }
}

/// `pipeline::prepare` under [`small_policy`]: the id is the hash of what is
/// stored, and what is stored passes the pipeline again unchanged.
pub fn prepare(data: &[u8]) {
    let policy = small_policy();
    let Ok(p) = pipeline::prepare(data, &policy) else {
        return;
    };
    assert_eq!(p.id, pipeline::sha256_hex(&p.bytes));
    assert_eq!(p.source_sha256, pipeline::sha256_hex(data));
    policy
        .check_dimensions(p.width, p.height)
        .unwrap_or_else(|r| panic!("prepared past the pixel budget: {r:?}"));
    let again = pipeline::prepare(&p.bytes, &policy)
        .unwrap_or_else(|r| panic!("the stored bytes fail the pipeline: {r:?}"));
    assert_eq!(again.bytes, p.bytes, "sanitising is not idempotent");
    assert_eq!(
        (again.format, again.width, again.height),
        (p.format, p.width, p.height)
    );
}

/// `archive::light_check` as the gateway runs it (the upload's first bytes
/// and a reader over the whole upload), under the default policy.
pub fn archive_light_check(data: &[u8]) {
    let policy = Policy::default();
    let _ = archive::declared_entries(&mut Cursor::new(data));
    let head = &data[..data.len().min(GATEWAY_HEAD)];
    let Ok(s) = archive::light_check(head, Cursor::new(data), &policy) else {
        return;
    };
    assert!(s.images >= 1 && s.images <= s.entries, "{s:?}");
    assert!(s.entries <= policy.max_entries, "{s:?}");
    assert!(s.declared_bytes <= policy.max_total_uncompressed_bytes);
    assert!(s.refused.len() <= 20);
}

/// The worker's walk over a staged archive (`check_one` in
/// `worker/src/entries.rs`): entry metadata, the checks that need no
/// inflating, then a bounded read that must yield exactly the declared size.
pub fn archive_entries(data: &[u8]) {
    let policy = Policy::default();
    let Ok(mut a) = ZipArchive::new(Cursor::new(data)) else {
        return;
    };
    for i in 0..a.len().min(MAX_ENTRIES_WALKED) {
        let Ok(meta) = EntryMeta::read(&mut a, i) else {
            continue;
        };
        let _ = archive::sniff_entry(&mut a, i);
        if archive::check_entry(&meta, &policy).is_err() {
            continue;
        }
        if let Ok(bytes) = archive::read_entry(&mut a, i, &meta, &policy) {
            assert_eq!(bytes.len() as u64, meta.size, "{meta:?}");
            assert!(meta.size <= policy.max_entry_bytes, "{meta:?}");
        }
    }
}

/// What follows a JPEG's end, classified ([`trailer::classify`], with an
/// MPF index read by [`trailer::mpf_images`]): never a panic, and a layout
/// it accepts covers exactly the bytes after the image, in order, with no
/// gap and no overlap. The first input byte says where the image ends and
/// whether the XMP announced a motion photo; the rest is the file.
pub fn jpeg_trailer(data: &[u8]) {
    let Some((&cut, file)) = data.split_first() else {
        return;
    };
    let start = usize::from(cut).min(file.len());
    let announced = trailer::Announced {
        mpf_images: trailer::mpf_images(file, 0).unwrap_or_default(),
        motion_photo: cut & 1 == 1,
    };
    let Ok(layout) = trailer::classify(file, start, &announced) else {
        return;
    };
    let mut parts: Vec<Range<usize>> = layout.mpf_images.clone();
    parts.extend(layout.motion_video.clone());
    parts.extend(layout.sef.clone());
    parts.sort_by_key(|r| r.start);
    let mut pos = start;
    for part in &parts {
        assert_eq!(part.start, pos, "a gap or an overlap before {part:?}");
        assert!(part.end >= part.start, "an inverted range {part:?}");
        pos = part.end;
    }
    assert_eq!(pos, file.len(), "bytes after the image left unclassified");
}

/// [`png_webp::strip_png`] and [`png_webp::strip_webp`]: never a panic,
/// and stripping what was stripped changes nothing and keeps the
/// orientation written.
pub fn chunked_strip(data: &[u8]) {
    let strip = |bytes: &[u8]| {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(png_webp::strip_png(bytes, true))
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(png_webp::strip_webp(bytes, true))
        } else {
            None
        }
    };
    let Some(Ok(once)) = strip(data) else {
        return;
    };
    let twice = strip(&once.bytes)
        .expect("the stripped file keeps its signature")
        .unwrap_or_else(|r| panic!("the stripped file no longer strips: {r:?}"));
    assert_eq!(twice.bytes, once.bytes, "stripping twice differs from once");
    assert_eq!(
        twice.orientation,
        once.orientation.filter(|&o| o != 1),
        "the orientation written is not the one read"
    );
}

/// `gain_map::Metadata::parse`: an Ultra HDR gain map's XMP. What parses
/// is written anew and reads back the same.
pub fn gain_map_xmp(data: &[u8]) {
    let Ok(meta) = gain_map::Metadata::parse(data) else {
        return;
    };
    let written = meta.xmp();
    let again = gain_map::Metadata::parse(written.as_bytes())
        .unwrap_or_else(|e| panic!("the written XMP does not parse: {e}"));
    assert_eq!(again, meta, "the written XMP reads back differently");
}

/// `isobmff::brand` and `isobmff::sanitize`: the HEIF container walk and
/// metadata blanking. Blanking keeps every offset (same length), and
/// sanitising the sanitised file changes nothing.
pub fn heif_container(data: &[u8]) {
    let _ = isobmff::brand(data);
    let Ok(once) = isobmff::sanitize(data) else {
        return;
    };
    assert_eq!(once.bytes.len(), data.len(), "blanking keeps every offset");
    let twice = isobmff::sanitize(&once.bytes).expect("a sanitised file passes again");
    assert!(
        twice.bytes == once.bytes,
        "sanitising twice changes nothing"
    );
}
