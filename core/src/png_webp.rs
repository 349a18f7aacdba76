//! Lossless metadata removal for the chunked formats (PNG, WebP), and the
//! end-of-file checks that make their decode strict: a file must end where
//! its last chunk ends. What stays is what the pixels need, a validated ICC
//! profile ([`crate::icc`]) and a minimal EXIF block with the orientation
//! alone ([`crate::exif`]), as for JPEG. An animation is stored as the
//! still picsift decoded (PNG: its default image) or refused (WebP, whose
//! frames cannot be separated from the still without re-encoding).

use crate::verdict::{Reason, Rejection};

/// PNG ancillary chunks that affect how pixels look; every other ancillary
/// chunk (text, EXIF, time, animation ...) is dropped. `iCCP` is kept only
/// when its profile passed [`crate::icc::check`].
const PNG_KEEP: &[&[u8; 4]] = &[
    b"PLTE", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"pHYs", b"cICP",
];

/// A PNG with only what the pixels need, and the EXIF orientation it had.
pub struct Stripped {
    /// The bytes to store.
    pub bytes: Vec<u8>,
    /// The EXIF orientation (1–8) of the upload, kept in `bytes`.
    pub orientation: Option<u16>,
    /// Whether the upload was an animation (an APNG's `acTL`), of which
    /// `bytes` keep the default image alone.
    pub animated: bool,
}

/// One chunk: its type and where it starts and ends (CRC included).
struct Chunk<'a> {
    kind: &'a [u8; 4],
    start: usize,
    end: usize,
}

impl Chunk<'_> {
    fn data<'d>(&self, file: &'d [u8]) -> &'d [u8] {
        &file[self.start + 8..self.end - 4]
    }
}

/// Every chunk of a PNG up to `IEND`; refuses a file that is truncated or
/// has bytes after it.
fn png_chunks(data: &[u8]) -> Result<Vec<Chunk<'_>>, Rejection> {
    let mut chunks = Vec::new();
    let mut pos = 8;
    loop {
        let Some(head) = data.get(pos..pos + 8) else {
            return Err(Rejection::new(
                Reason::Truncated,
                format!("PNG data ends at byte {} before its IEND chunk", data.len()),
            ));
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind: &[u8; 4] = head[4..8].try_into().unwrap_or(&[0; 4]);
        let end = pos
            .checked_add(12)
            .and_then(|p| p.checked_add(len))
            .filter(|&e| e <= data.len());
        let Some(end) = end else {
            return Err(Rejection::new(
                Reason::Truncated,
                format!(
                    "PNG chunk {} at byte {pos} runs past the end of the file",
                    String::from_utf8_lossy(kind)
                ),
            ));
        };
        chunks.push(Chunk {
            kind,
            start: pos,
            end,
        });
        pos = end;
        if kind == b"IEND" {
            if pos != data.len() {
                return Err(Rejection::new(
                    Reason::TrailingData,
                    format!("{} bytes follow the PNG IEND chunk", data.len() - pos),
                ));
            }
            return Ok(chunks);
        }
    }
}

/// Copies a PNG keeping critical and colour chunks, the ICC profile when
/// `keep_icc`, and the orientation as a minimal `eXIf` after `IHDR`.
pub fn strip_png(data: &[u8], keep_icc: bool) -> Result<Stripped, Rejection> {
    let chunks = png_chunks(data)?;
    let orientation = chunks
        .iter()
        .find(|c| c.kind == b"eXIf")
        .and_then(|c| crate::exif::orientation(c.data(data)));
    let mut out = data[..8].to_vec();
    for c in &chunks {
        let critical = c.kind[0].is_ascii_uppercase();
        if critical || PNG_KEEP.contains(&c.kind) || (keep_icc && c.kind == b"iCCP") {
            out.extend_from_slice(&data[c.start..c.end]);
        }
        if c.kind == b"IHDR"
            && let Some(o) = orientation.filter(|&o| o != 1)
        {
            let tiff = crate::exif::orientation_only(o);
            out.extend_from_slice(&(tiff.len() as u32).to_be_bytes());
            let typed = [b"eXIf".as_slice(), &tiff].concat();
            out.extend_from_slice(&typed);
            out.extend_from_slice(&crc32fast::hash(&typed).to_be_bytes());
        }
    }
    Ok(Stripped {
        bytes: out,
        orientation,
        animated: chunks.iter().any(|c| c.kind == b"acTL"),
    })
}

/// VP8X flags: ICC profile, alpha, EXIF, XMP, animation.
const VP8X_ICC: u8 = 0x20;
const VP8X_EXIF: u8 = 0x08;
const VP8X_XMP: u8 = 0x04;
const VP8X_ANIMATION: u8 = 0x02;

/// Copies a WebP keeping its image chunks (`VP8X`, `VP8 `, `VP8L`,
/// `ALPH`), the ICC profile when `keep_icc`, and the orientation as a
/// minimal `EXIF` chunk; refuses an animation and a file whose RIFF size
/// disagrees with its length.
pub fn strip_webp(data: &[u8], keep_icc: bool) -> Result<Stripped, Rejection> {
    let riff = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
    match (riff + 8).cmp(&data.len()) {
        std::cmp::Ordering::Greater => {
            return Err(Rejection::new(
                Reason::Truncated,
                "WebP data ends before its RIFF size",
            ));
        }
        std::cmp::Ordering::Less => {
            return Err(Rejection::new(
                Reason::TrailingData,
                format!(
                    "{} bytes follow the WebP RIFF container",
                    data.len() - riff - 8
                ),
            ));
        }
        std::cmp::Ordering::Equal => {}
    }
    let mut chunks = Vec::new();
    let mut pos = 12;
    while pos < data.len() {
        let Some(head) = data.get(pos..pos + 8) else {
            return Err(Rejection::new(
                Reason::Truncated,
                "WebP chunk header cut off",
            ));
        };
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let end = pos + 8 + len + (len & 1);
        if end > data.len() {
            return Err(Rejection::new(
                Reason::Truncated,
                "WebP chunk runs past the end of the file",
            ));
        }
        chunks.push((&head[..4], pos, pos + 8 + len, end));
        pos = end;
    }
    let animated = chunks.iter().any(|(k, ..)| *k == b"ANIM" || *k == b"ANMF")
        || chunks.iter().any(|&(k, s, ..)| {
            k == b"VP8X" && data.get(s + 8).is_some_and(|f| f & VP8X_ANIMATION != 0)
        });
    if animated {
        return Err(Rejection::new(
            Reason::Animated,
            "the WebP is an animation; only its first frame could be checked",
        ));
    }
    let orientation = chunks
        .iter()
        .find(|(k, ..)| *k == b"EXIF")
        .and_then(|&(_, s, e, _)| {
            let payload = &data[s + 8..e];
            crate::exif::orientation(payload.strip_prefix(b"Exif\0\0").unwrap_or(payload))
        })
        .filter(|&o| o != 1);
    let mut out = data[..12].to_vec();
    let mut flags_at = None;
    for &(kind, start, _, end) in &chunks {
        match kind {
            b"VP8X" => {
                flags_at = Some(out.len() + 8);
                out.extend_from_slice(&data[start..end]);
            }
            b"VP8 " | b"VP8L" | b"ALPH" => out.extend_from_slice(&data[start..end]),
            b"ICCP" if keep_icc => out.extend_from_slice(&data[start..end]),
            _ => {}
        }
    }
    // The EXIF chunk comes after the image data (the container's order),
    // and only an extended (VP8X) file can flag it.
    let orientation = orientation.filter(|_| flags_at.is_some());
    if let Some(o) = orientation {
        let tiff = crate::exif::orientation_only(o);
        out.extend_from_slice(b"EXIF");
        out.extend_from_slice(&(tiff.len() as u32).to_le_bytes());
        out.extend_from_slice(&tiff);
    }
    if let Some(at) = flags_at {
        let mut flags = out[at] & !(VP8X_XMP | VP8X_EXIF);
        if !keep_icc {
            flags &= !VP8X_ICC;
        }
        if orientation.is_some() {
            flags |= VP8X_EXIF;
        }
        out[at] = flags;
    }
    let size = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&size.to_le_bytes());
    Ok(Stripped {
        bytes: out,
        orientation,
        // An animated WebP is refused above.
        animated: false,
    })
}
