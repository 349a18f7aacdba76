//! JPEG at the marker level: a strict structural walk (every segment in
//! bounds, entropy-coded data closed by a marker, the end-of-image marker
//! present; what follows it is reported for [`crate::trailer`] to judge)
//! and lossless metadata removal.
//!
//! Pixel decoding lives in [`crate::pipeline`]; this module never allocates
//! per pixel, so it runs before the pixel budget is known to be safe.

use crate::verdict::{Reason, Rejection};

/// One marker segment (or the entropy-coded data after a start-of-scan).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    marker: u8,
    /// Offset of the `FF` that starts the marker.
    start: usize,
    /// Offset of the segment's payload (after the marker and its length;
    /// fill bytes may sit between `start` and the marker).
    body: usize,
    /// Offset one past the segment (for SOS: past its entropy-coded data).
    end: usize,
}

/// What the structural walk learnt about a JPEG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Structure {
    /// Image width from the frame header.
    pub width: u32,
    /// Image height from the frame header.
    pub height: u32,
    /// Number of colour components.
    pub components: u8,
    /// Whether the frame is progressive.
    pub progressive: bool,
    /// EXIF orientation (1–8) when the file carries one.
    pub orientation: Option<u16>,
    /// Where bytes after the end-of-image marker start, when there are
    /// any ([`crate::trailer`] says whether they are a known layout).
    pub trailer: Option<usize>,
    /// What the image's own segments say about such bytes.
    pub announced: crate::trailer::Announced,
    segments: Vec<Segment>,
}

fn reject(reason: Reason, detail: impl Into<String>) -> Rejection {
    Rejection::new(reason, detail)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn is_sof(m: u8) -> bool {
    matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC)
}

/// Walks every segment of `bytes` without decoding pixels.
pub fn parse(bytes: &[u8]) -> Result<Structure, Rejection> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(reject(
            Reason::InvalidHeader,
            "missing JPEG start-of-image marker",
        ));
    }
    let truncated = |at: usize| {
        reject(
            Reason::Truncated,
            format!("JPEG data ends at byte {at} before its end-of-image marker"),
        )
    };
    let mut segments = Vec::new();
    let mut frame: Option<(u32, u32, u8, bool)> = None;
    let mut orientation = None;
    let mut announced = crate::trailer::Announced::default();
    let mut scans = 0usize;
    let mut pos = 2;
    loop {
        if pos >= bytes.len() {
            return Err(truncated(bytes.len()));
        }
        if bytes[pos] != 0xFF {
            return Err(reject(
                Reason::DecodeError,
                format!(
                    "expected a marker at byte {pos}, found 0x{:02X}",
                    bytes[pos]
                ),
            ));
        }
        // Any number of 0xFF fill bytes may precede a marker code.
        let mut m = pos + 1;
        while m < bytes.len() && bytes[m] == 0xFF {
            m += 1;
        }
        let Some(&marker) = bytes.get(m) else {
            return Err(truncated(bytes.len()));
        };
        let start = pos;
        match marker {
            0xD9 => {
                let end = m + 1;
                if scans == 0 {
                    return Err(reject(
                        Reason::Truncated,
                        "JPEG has no image data (no start-of-scan before end-of-image)",
                    ));
                }
                let Some((width, height, components, progressive)) = frame else {
                    return Err(reject(Reason::InvalidHeader, "JPEG has no frame header"));
                };
                segments.push(Segment {
                    marker,
                    start,
                    body: end,
                    end,
                });
                return Ok(Structure {
                    width,
                    height,
                    components,
                    progressive,
                    orientation,
                    trailer: (end != bytes.len()).then_some(end),
                    announced,
                    segments,
                });
            }
            0x00 | 0xD0..=0xD8 | 0x01 => {
                return Err(reject(
                    Reason::DecodeError,
                    format!("unexpected JPEG marker 0x{marker:02X} at byte {start}"),
                ));
            }
            _ => {}
        }
        let len = be16(bytes, m + 1).ok_or_else(|| truncated(bytes.len()))? as usize;
        if len < 2 {
            return Err(reject(
                Reason::InvalidHeader,
                format!("JPEG segment 0x{marker:02X} at byte {start} has length {len}"),
            ));
        }
        let payload = m + 3;
        let seg_end = m + 1 + len;
        if seg_end > bytes.len() {
            return Err(truncated(bytes.len()));
        }
        let body = &bytes[payload..seg_end];
        if is_sof(marker) {
            if frame.is_some() {
                return Err(reject(
                    Reason::InvalidHeader,
                    "JPEG has more than one frame header",
                ));
            }
            if body.len() < 6 {
                return Err(reject(Reason::InvalidHeader, "JPEG frame header too short"));
            }
            let height = u32::from(u16::from_be_bytes([body[1], body[2]]));
            let width = u32::from(u16::from_be_bytes([body[3], body[4]]));
            if width == 0 || height == 0 {
                return Err(reject(
                    Reason::InvalidHeader,
                    format!("JPEG frame declares {width}×{height} pixels"),
                ));
            }
            frame = Some((
                width,
                height,
                body[5],
                matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
            ));
        } else if marker == 0xE1 && orientation.is_none() && body.starts_with(b"Exif\0\0") {
            orientation = crate::exif::orientation(&body[6..]);
        } else if marker == 0xE1 && body.starts_with(b"http://ns.adobe.com/xap/1.0/\0") {
            announced.motion_photo |= crate::trailer::announces_motion_photo(body);
        } else if marker == 0xE2 && body.starts_with(b"MPF\0") && announced.mpf_images.is_empty() {
            announced.mpf_images =
                crate::trailer::mpf_images(&body[4..], payload + 4).unwrap_or_default();
        }
        if marker != 0xDA {
            segments.push(Segment {
                marker,
                start,
                body: payload,
                end: seg_end,
            });
            pos = seg_end;
            continue;
        }
        if frame.is_none() {
            return Err(reject(
                Reason::InvalidHeader,
                "JPEG scan before any frame header",
            ));
        }
        scans += 1;
        // Entropy-coded data runs to the next marker that is neither a
        // stuffed zero nor a restart marker.
        let mut i = seg_end;
        loop {
            let Some(off) = memchr::memchr(0xFF, &bytes[i..]) else {
                return Err(truncated(bytes.len()));
            };
            i += off;
            match bytes.get(i + 1) {
                None => return Err(truncated(bytes.len())),
                Some(0x00) | Some(0xD0..=0xD7) | Some(0xFF) => i += 1,
                Some(_) => break,
            }
        }
        segments.push(Segment {
            marker,
            start,
            body: payload,
            end: i,
        });
        pos = i;
    }
}

/// The fields of an Adobe APP14 segment: "Adobe", version, two flag words
/// and the colour transform (how CMYK/YCCK and RGB pixels decode).
const ADOBE_FIELDS: usize = 12;

/// Whether a segment survives sanitising as it is: everything the decoder
/// needs (tables, frame, scans, restart interval, and the Adobe
/// colour-transform flag, cut to its fields) and nothing else. The ICC
/// profile and the orientation are written anew by [`strip_metadata`].
fn keep(marker: u8, body: &[u8]) -> bool {
    match marker {
        0xC4 | 0xCC | 0xDB | 0xDD | 0xDA | 0xD9 | 0xDC => true,
        m if is_sof(m) => true,
        0xEE => body.starts_with(b"Adobe") && body.len() >= ADOBE_FIELDS,
        _ => false,
    }
}

/// The ICC profile carried by the JPEG's APP2 `ICC_PROFILE` segments,
/// joined in sequence order; `None` when there is none or its chunks are
/// inconsistent (a number missing or repeated, counts that disagree).
pub fn icc_profile(bytes: &[u8], structure: &Structure) -> Option<Vec<u8>> {
    let mut chunks: Vec<(u8, u8, &[u8])> = structure
        .segments
        .iter()
        .filter(|s| s.marker == 0xE2)
        .filter_map(|s| bytes.get(s.body..s.end)?.strip_prefix(ICC_SIGNATURE))
        .map(|rest| (rest.first().copied(), rest.get(1).copied(), rest.get(2..)))
        .map(|(seq, count, data)| Some((seq?, count?, data?)))
        .collect::<Option<_>>()?;
    let count = chunks.first()?.1;
    chunks.sort_by_key(|c| c.0);
    let complete = usize::from(count) == chunks.len()
        && chunks
            .iter()
            .enumerate()
            .all(|(i, c)| usize::from(c.0) == i + 1 && c.1 == count);
    complete.then(|| chunks.iter().flat_map(|c| c.2.iter().copied()).collect())
}

/// The bodies of the segments with this marker (an APPn), in file order.
pub fn app_segments<'a>(
    bytes: &'a [u8],
    structure: &'a Structure,
    marker: u8,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    structure
        .segments
        .iter()
        .filter(move |s| s.marker == marker)
        .filter_map(|s| bytes.get(s.body..s.end))
}

/// What starts an APP2 segment holding an ICC profile chunk.
const ICC_SIGNATURE: &[u8] = b"ICC_PROFILE\0";

/// Most profile bytes one APP2 segment holds: 65535 less the length field,
/// the signature and the chunk's sequence number and count.
const ICC_CHUNK: usize = 65_535 - 2 - 12 - 2;

/// Rebuilds the JPEG without metadata: EXIF (GPS included), XMP, IPTC,
/// comments, JFIF thumbnails and unknown APPn segments go, and an Adobe
/// segment keeps only its fields; the compressed image data is copied byte
/// for byte. What is written anew: a minimal EXIF segment with the
/// orientation alone ([`crate::exif`]) when it is not 1, and `icc` (a
/// profile [`crate::icc::check`] passed) in APP2 chunks. The result ends at
/// the end-of-image marker.
pub fn strip_metadata(bytes: &[u8], structure: &Structure, icc: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&[0xFF, 0xD8]);
    if let Some(o) = structure.orientation.filter(|&o| o != 1) {
        let tiff = crate::exif::orientation_only(o);
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
        out.extend_from_slice(b"Exif\0\0");
        out.extend_from_slice(&tiff);
    }
    if let Some(profile) = icc {
        // At most 1 MiB (icc::MAX_PROFILE_BYTES): 17 chunks, well under 255.
        let count = profile.len().div_ceil(ICC_CHUNK) as u8;
        for (i, part) in profile.chunks(ICC_CHUNK).enumerate() {
            out.extend_from_slice(&[0xFF, 0xE2]);
            out.extend_from_slice(
                &((2 + ICC_SIGNATURE.len() + 2 + part.len()) as u16).to_be_bytes(),
            );
            out.extend_from_slice(ICC_SIGNATURE);
            out.extend_from_slice(&[i as u8 + 1, count]);
            out.extend_from_slice(part);
        }
    }
    for s in &structure.segments {
        let body = bytes.get(s.body..s.end).unwrap_or(&[]);
        if !keep(s.marker, body) {
            continue;
        }
        if s.marker == 0xEE {
            out.extend_from_slice(&[0xFF, 0xEE]);
            out.extend_from_slice(&((ADOBE_FIELDS + 2) as u16).to_be_bytes());
            out.extend_from_slice(&body[..ADOBE_FIELDS]);
        } else {
            out.extend_from_slice(&bytes[s.start..s.end]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny but complete baseline JPEG made by the `image` crate.
    fn tiny_jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(32, 16, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 16) as u8, 128])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    fn with_segment(jpeg: &[u8], marker: u8, body: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    fn exif_with_orientation(o: u16) -> Vec<u8> {
        let mut b = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01".to_vec();
        b.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1]);
        b.extend_from_slice(&o.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn complete_jpeg_parses_with_its_dimensions() {
        let s = parse(&tiny_jpeg()).unwrap();
        assert_eq!(
            (s.width, s.height, s.components, s.progressive),
            (32, 16, 3, false)
        );
        assert_eq!(s.orientation, None);
    }

    #[test]
    fn truncated_jpeg_is_rejected_at_every_cut() {
        let j = tiny_jpeg();
        for cut in 2..j.len() {
            let r = parse(&j[..cut]).unwrap_err();
            assert!(
                matches!(
                    r.reason,
                    Reason::Truncated | Reason::InvalidHeader | Reason::DecodeError
                ),
                "cut {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn bytes_after_end_of_image_are_reported_and_never_kept() {
        let plain = tiny_jpeg();
        let mut j = plain.clone();
        j.extend_from_slice(b"PK\x03\x04 appended archive");
        let s = parse(&j).unwrap();
        assert_eq!(s.trailer, Some(plain.len()));
        assert_eq!(parse(&plain).unwrap().trailer, None);
        assert_eq!(
            strip_metadata(&j, &s, None),
            strip_metadata(&plain, &parse(&plain).unwrap(), None)
        );
    }

    #[test]
    fn metadata_is_stripped_and_scan_data_kept_byte_for_byte() {
        let j = tiny_jpeg();
        let with = with_segment(
            &with_segment(&j, 0xE1, &exif_with_orientation(6)),
            0xFE,
            b"a comment with GPS 51.5N",
        );
        let s = parse(&with).unwrap();
        assert_eq!(s.orientation, Some(6));
        let clean = strip_metadata(&with, &s, None);
        assert!(!clean.windows(3).any(|w| w == b"GPS"));
        let again = parse(&clean).unwrap();
        assert_eq!(again.orientation, Some(6), "the photo stays upright");
        // The clean file is the original without its APPn/COM segments,
        // plus an EXIF segment that holds the orientation and nothing else.
        let orig_clean = strip_metadata(&j, &parse(&j).unwrap(), None);
        let tiff = crate::exif::orientation_only(6);
        let mut want = vec![0xFF, 0xD8, 0xFF, 0xE1, 0, (8 + tiff.len()) as u8];
        want.extend_from_slice(b"Exif\0\0");
        want.extend_from_slice(&tiff);
        want.extend_from_slice(&orig_clean[2..]);
        assert_eq!(clean, want);
        assert_eq!(clean.last(), Some(&0xD9));
        // Orientation 1 is the default: nothing is written for it.
        let upright = with_segment(&j, 0xE1, &exif_with_orientation(1));
        assert_eq!(
            strip_metadata(&upright, &parse(&upright).unwrap(), None),
            orig_clean
        );
    }

    /// `profile` split into `parts` APP2 chunks, inserted last chunk first.
    fn with_icc_chunks(jpeg: &[u8], profile: &[u8], parts: usize) -> Vec<u8> {
        let size = profile.len().div_ceil(parts);
        let mut out = jpeg.to_vec();
        for (i, part) in profile.chunks(size).enumerate() {
            let mut body = b"ICC_PROFILE\0".to_vec();
            body.extend_from_slice(&[i as u8 + 1, parts as u8]);
            body.extend_from_slice(part);
            out = with_segment(&out, 0xE2, &body);
        }
        out
    }

    #[test]
    fn a_valid_icc_profile_is_reassembled_and_kept_in_order() {
        let j = tiny_jpeg();
        let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
        let with = with_icc_chunks(&j, &p3, 3);
        let s = parse(&with).unwrap();
        let profile = icc_profile(&with, &s).unwrap();
        assert_eq!(
            profile, p3,
            "chunks joined by sequence number, not file order"
        );
        let clean = strip_metadata(&with, &s, Some(&profile));
        let again = parse(&clean).unwrap();
        assert_eq!(icc_profile(&clean, &again), Some(p3.clone()));
        assert_eq!(
            strip_metadata(&clean, &again, Some(&p3)),
            clean,
            "idempotent"
        );
        // A profile larger than one segment is split and joined again.
        let mut big = vec![7u8; 150_000];
        big[..4].copy_from_slice(&150_000u32.to_be_bytes());
        let clean = strip_metadata(&j, &parse(&j).unwrap(), Some(&big));
        assert_eq!(icc_profile(&clean, &parse(&clean).unwrap()), Some(big));
        // Chunks that do not add up are no profile.
        let missing = with_icc_chunks(&j, &p3, 3);
        let s = parse(&missing).unwrap();
        let mut lying = missing.clone();
        let at = lying
            .windows(12)
            .position(|w| w == b"ICC_PROFILE\0")
            .unwrap();
        lying[at + 13] = 4; // "one of 4"
        assert_eq!(icc_profile(&lying, &parse(&lying).unwrap()), None);
        assert!(icc_profile(&missing, &s).is_some());
    }

    #[test]
    fn segments_after_fill_bytes_are_recognised() {
        let j = tiny_jpeg();
        // An Adobe segment preceded by 0xFF fill bytes survives, cut to its
        // fields; an ICC profile does not.
        let adobe = with_segment(&j, 0xEE, b"Adobe\0\x64\0\0\0\0\x01<?php payload");
        let both = with_segment(&adobe, 0xE2, b"ICC_PROFILE\0\x01\x01<?php icc");
        let mut filled = both[..2].to_vec();
        filled.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
        filled.extend_from_slice(&both[2..]);
        let s = parse(&filled).unwrap();
        let clean = strip_metadata(&filled, &s, None);
        assert!(clean.windows(5).any(|w| w == b"Adobe"));
        assert!(!clean.windows(5).any(|w| w == b"<?php"));
        assert!(!clean.windows(11).any(|w| w == b"ICC_PROFILE"));
        let again = parse(&clean).unwrap();
        assert_eq!(
            strip_metadata(&clean, &again, None),
            clean,
            "stripping is idempotent"
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut d = vec![0xFF, 0xD8];
            d.extend(data);
            let _ = parse(&d);
        }

        #[test]
        fn corrupting_one_byte_never_panics(at in 0usize..400, val in proptest::num::u8::ANY) {
            let mut j = tiny_jpeg();
            let at = at % j.len();
            j[at] = val;
            if let Ok(s) = parse(&j) {
                let _ = strip_metadata(&j, &s, None);
            }
        }
    }
}
