//! What phones write after a JPEG's end-of-image marker, understood rather
//! than refused. A large share of today's phone photos carry one: the
//! second image of an MPO or the gain map of an HDR photo (indexed by an
//! MPF segment, CIPA DC-007), the video of a motion photo (an MP4 that the
//! photo's XMP announces), Samsung's SEF block (timestamps, depth, video).
//! Each known layout is checked and removed: an MPF image must decode
//! strictly like the primary, a video must be a well-formed ISO BMFF box
//! chain, an SEF block must be consistent. The primary is stored alone,
//! and the verdict says what was removed. Anything else after the image
//! (a zip or a script: a polyglot) stays `trailing_data`.

use crate::verdict::{Reason, Rejection};
use std::ops::Range;

/// The known parts of a trailer, as found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Images indexed by the MPF segment (MPO views, gain maps), in order.
    pub mpf_images: Vec<Range<usize>>,
    /// A motion photo's video.
    pub motion_video: Option<Range<usize>>,
    /// Samsung's SEF block (its data and its directory).
    pub sef: Option<Range<usize>>,
}

impl Layout {
    /// What was removed, for the verdict's detail.
    pub fn removed(&self) -> String {
        self.removed_but(None)
    }

    /// What was removed when the MPF image at `kept` (an index into
    /// [`Self::mpf_images`]) was kept as a gain map.
    pub fn removed_but(&self, kept: Option<usize>) -> String {
        let mut parts = Vec::new();
        if kept.is_some() {
            parts.push(
                "gain map decoded and kept (Ultra HDR; its metadata and the MPF index written anew)"
                    .to_string(),
            );
        }
        match self.mpf_images.len() - usize::from(kept.is_some()) {
            0 => {}
            1 => parts.push(
                "1 further MPF image (a gain map or second view) decoded and removed".to_string(),
            ),
            n => parts.push(format!(
                "{n} further MPF images (gain maps or views) decoded and removed"
            )),
        }
        if self.motion_video.is_some() {
            parts.push("motion-photo video removed".to_string());
        }
        if self.sef.is_some() {
            parts.push("Samsung SEF trailer removed".to_string());
        }
        parts.join("; ")
    }
}

/// What the primary image says about its trailer: the absolute byte
/// ranges its MPF index gives the other images, and whether its XMP
/// announces a motion photo.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Announced {
    /// Further MPF images, absolute ranges in the file.
    pub mpf_images: Vec<Range<usize>>,
    /// Google's `GCamera:MotionPhoto` / `MicroVideo` in the XMP.
    pub motion_photo: bool,
}

/// Reads an APP2 `MPF\0` segment's body (after the signature; `at` is its
/// offset in the file): the byte ranges of the images after the first.
/// `None` when it does not parse.
pub fn mpf_images(body: &[u8], at: usize) -> Option<Vec<Range<usize>>> {
    let tiff = crate::exif::Tiff::new(body)?;
    let (_, len, value) = tiff.ifd0_entry(0xB002)?;
    let (entries_at, len) = (tiff.u32_at(value)? as usize, len as usize);
    if len % 16 != 0 || len == 0 || len / 16 > 64 {
        return None;
    }
    (1..len / 16)
        .map(|i| {
            let e = entries_at + i * 16;
            let size = tiff.u32_at(e + 4)? as usize;
            let offset = tiff.u32_at(e + 8)? as usize;
            // Offsets count from the MP header (the byte-order mark).
            let start = at.checked_add(offset)?;
            Some(start..start.checked_add(size)?)
        })
        .collect()
}

/// Whether an XMP packet announces a motion photo (Google's camera
/// namespace; Samsung's motion photos keep their video in SEF).
pub fn announces_motion_photo(xmp: &[u8]) -> bool {
    let has = |needle: &[u8]| xmp.windows(needle.len()).any(|w| w == needle);
    has(b"MotionPhoto") || has(b"MicroVideo")
}

/// Classifies the bytes from `start` (just after the primary's
/// end-of-image marker) to the end of the file.
pub fn classify(bytes: &[u8], start: usize, announced: &Announced) -> Result<Layout, Rejection> {
    let unknown = |from: usize, end: usize| {
        Rejection::new(
            Reason::TrailingData,
            format!(
                "{} bytes follow the JPEG end-of-image marker (at byte {from}) and are no known layout (MPF image, motion-photo video, Samsung SEF)",
                end - from
            ),
        )
    };
    let mut layout = Layout::default();
    let mut end = bytes.len();
    if let Some(sef) = sef_block(bytes, start) {
        end = sef.start;
        layout.sef = Some(sef);
    }
    let mut pos = start;
    for image in &announced.mpf_images {
        if image.start != pos || image.end > end {
            return Err(unknown(pos, end));
        }
        layout.mpf_images.push(image.clone());
        pos = image.end;
    }
    if pos < end && announced.motion_photo && is_iso_bmff(&bytes[pos..end]) {
        layout.motion_video = Some(pos..end);
        pos = end;
    }
    if pos != end {
        return Err(unknown(pos, end));
    }
    Ok(layout)
}

/// Samsung's SEF block at the end of the file: `…data…SEFH` directory,
/// its size (u32 LE) and `SEFT`. Its range, when consistent and after
/// `start`.
fn sef_block(bytes: &[u8], start: usize) -> Option<Range<usize>> {
    let end = bytes.len();
    if end < start + 8 || &bytes[end - 4..] != b"SEFT" {
        return None;
    }
    let size = u32::from_le_bytes(bytes[end - 8..end - 4].try_into().ok()?) as usize;
    let head = end.checked_sub(8)?.checked_sub(size)?;
    if head < start || bytes.get(head..head + 4)? != b"SEFH" {
        return None;
    }
    let count = u32::from_le_bytes(bytes.get(head + 8..head + 12)?.try_into().ok()?) as usize;
    if count > 64 || 12 + count * 12 > size {
        return None;
    }
    let mut first = head;
    for i in 0..count {
        let e = head + 12 + i * 12;
        let offset = u32::from_le_bytes(bytes.get(e + 4..e + 8)?.try_into().ok()?) as usize;
        let len = u32::from_le_bytes(bytes.get(e + 8..e + 12)?.try_into().ok()?) as usize;
        let data = head.checked_sub(offset)?;
        if data < start || data.checked_add(len)? > head {
            return None;
        }
        first = first.min(data);
    }
    Some(first..end)
}

/// Whether `b` is a chain of ISO BMFF boxes (an MP4) starting with `ftyp`
/// and ending exactly at its end.
fn is_iso_bmff(b: &[u8]) -> bool {
    if b.get(4..8) != Some(b"ftyp") {
        return false;
    }
    let mut pos = 0usize;
    while pos < b.len() {
        let Some(head) = b.get(pos..pos + 8) else {
            return false;
        };
        let size = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
            0 => b.len() - pos,
            1 => match b.get(pos + 8..pos + 16) {
                Some(l) => usize::try_from(u64::from_be_bytes(l.try_into().unwrap_or([0; 8])))
                    .unwrap_or(usize::MAX),
                None => return false,
            },
            s => s as usize,
        };
        if size < 8 || size > b.len() - pos {
            return false;
        }
        pos += size;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sef(data: &[u8]) -> Vec<u8> {
        // data, then SEFH: version, one entry (type 0xA01, offset back, length).
        let mut out = data.to_vec();
        let mut dir = b"SEFH".to_vec();
        dir.extend_from_slice(&103u32.to_le_bytes());
        dir.extend_from_slice(&1u32.to_le_bytes());
        dir.extend_from_slice(&[0, 0, 0x01, 0x0A]);
        dir.extend_from_slice(&(data.len() as u32).to_le_bytes());
        dir.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&dir);
        out.extend_from_slice(&(dir.len() as u32).to_le_bytes());
        out.extend_from_slice(b"SEFT");
        out
    }

    fn mp4() -> Vec<u8> {
        let mut b = 16u32.to_be_bytes().to_vec();
        b.extend_from_slice(b"ftypisom\0\0\0\0");
        b.extend_from_slice(&12u32.to_be_bytes());
        b.extend_from_slice(b"mdatdata");
        b
    }

    #[test]
    fn each_known_layout_is_recognised_and_anything_else_refused() {
        let jpeg = b"....primary image....".to_vec();
        let start = jpeg.len();
        let nothing = Announced::default();
        let motion = Announced {
            motion_photo: true,
            ..Announced::default()
        };
        let cases: Vec<(&str, Vec<u8>, Announced, Option<&str>)> = vec![
            (
                "sef",
                sef(b"Image_UTC_Data1510110846929"),
                nothing.clone(),
                Some("Samsung SEF trailer removed"),
            ),
            (
                "motion photo",
                mp4(),
                motion.clone(),
                Some("motion-photo video removed"),
            ),
            (
                "motion photo and sef",
                [mp4(), sef(b"MotionPhoto_Data")].concat(),
                motion.clone(),
                Some("motion-photo video removed; Samsung SEF trailer removed"),
            ),
            (
                "video the XMP does not announce",
                mp4(),
                nothing.clone(),
                None,
            ),
            (
                "an appended zip",
                b"PK\x03\x04 polyglot".to_vec(),
                motion.clone(),
                None,
            ),
            (
                "an mp4 with a bad box",
                [mp4(), b"junk".to_vec()].concat(),
                motion.clone(),
                None,
            ),
            (
                "a zip before the sef",
                [b"PK\x03\x04".to_vec(), sef(b"x")].concat(),
                nothing.clone(),
                None,
            ),
        ];
        for (what, trailer, announced, want) in cases {
            let file = [jpeg.clone(), trailer].concat();
            let got = classify(&file, start, &announced);
            match want {
                Some(removed) => {
                    assert_eq!(got.map(|l| l.removed()), Ok(removed.to_string()), "{what}")
                }
                None => assert_eq!(
                    got.map_err(|r| r.reason),
                    Err(Reason::TrailingData),
                    "{what}"
                ),
            }
        }
    }

    #[test]
    fn mpf_images_must_follow_the_primary_exactly() {
        let file = [b"primary".as_slice(), b"GAINMAP", b"view"].concat();
        let announced = Announced {
            mpf_images: vec![7..14, 14..18],
            motion_photo: false,
        };
        let layout = classify(&file, 7, &announced).unwrap();
        assert_eq!(layout.mpf_images, vec![7..14, 14..18]);
        assert!(layout.removed().starts_with("2 further MPF images"));
        let gap = Announced {
            mpf_images: vec![Range { start: 8, end: 14 }],
            motion_photo: false,
        };
        assert!(classify(&file, 7, &gap).is_err(), "a byte no index covers");
        let beyond = Announced {
            mpf_images: vec![Range { start: 7, end: 40 }],
            motion_photo: false,
        };
        assert!(classify(&file, 7, &beyond).is_err(), "past the end");
    }

    #[test]
    fn an_mpf_index_reads_in_both_byte_orders() {
        for le in [true, false] {
            type U16 = fn(u16) -> [u8; 2];
            type U32 = fn(u32) -> [u8; 4];
            let (u16b, u32b): (U16, U32) = if le {
                (u16::to_le_bytes, u32::to_le_bytes)
            } else {
                (u16::to_be_bytes, u32::to_be_bytes)
            };
            let mut b = if le {
                b"II*\0".to_vec()
            } else {
                b"MM\0*".to_vec()
            };
            b.extend_from_slice(&u32b(8));
            b.extend_from_slice(&u16b(1));
            // MPEntry: UNDEFINED, 32 bytes (two entries), at 26.
            b.extend_from_slice(&u16b(0xB002));
            b.extend_from_slice(&u16b(7));
            b.extend_from_slice(&u32b(32));
            b.extend_from_slice(&u32b(26));
            b.extend_from_slice(&u32b(0)); // no next IFD
            for (size, offset) in [(1000u32, 0u32), (200, 900)] {
                b.extend_from_slice(&u32b(0));
                b.extend_from_slice(&u32b(size));
                b.extend_from_slice(&u32b(offset));
                b.extend_from_slice(&[0; 4]);
            }
            let want = Range {
                start: 1000,
                end: 1200,
            };
            assert_eq!(mpf_images(&b, 100), Some(vec![want]), "le {le}");
        }
        assert_eq!(mpf_images(b"XX*\0", 0), None);
    }
}
