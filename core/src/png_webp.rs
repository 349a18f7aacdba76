//! Lossless metadata removal for the chunked formats (PNG, WebP), and the
//! end-of-file checks that make their decode strict: a file must end where
//! its last chunk ends.

use crate::verdict::{Reason, Rejection};

/// PNG ancillary chunks that affect how pixels look; every other ancillary
/// chunk (text, EXIF, time ...) is dropped.
const PNG_KEEP: &[&[u8; 4]] = &[
    b"PLTE", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"cICP", b"acTL",
    b"fcTL", b"fdAT",
];

/// Copies a PNG keeping critical and colour chunks only; refuses a file
/// that is truncated or has bytes after `IEND`.
pub fn strip_png(data: &[u8]) -> Result<Vec<u8>, Rejection> {
    let mut out = data[..8].to_vec();
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
        let critical = kind[0].is_ascii_uppercase();
        if critical || PNG_KEEP.contains(&kind) {
            out.extend_from_slice(&data[pos..end]);
        }
        pos = end;
        if kind == b"IEND" {
            if pos != data.len() {
                return Err(Rejection::new(
                    Reason::TrailingData,
                    format!("{} bytes follow the PNG IEND chunk", data.len() - pos),
                ));
            }
            return Ok(out);
        }
    }
}

/// Copies a WebP without its EXIF and XMP chunks (clearing their VP8X
/// flags); refuses a file whose RIFF size disagrees with its length.
pub fn strip_webp(data: &[u8]) -> Result<Vec<u8>, Rejection> {
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
    let mut out = data[..12].to_vec();
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
        match &head[..4] {
            b"EXIF" | b"XMP " => {}
            b"VP8X" => {
                let start = out.len();
                out.extend_from_slice(&data[pos..end]);
                // Flags byte: bit 3 EXIF, bit 2 XMP.
                if let Some(flags) = out.get_mut(start + 8) {
                    *flags &= !0b0000_1100;
                }
            }
            _ => out.extend_from_slice(&data[pos..end]),
        }
        pos = end;
    }
    let size = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&size.to_le_bytes());
    Ok(out)
}
