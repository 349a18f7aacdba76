//! The HEIF container (HEIC, AVIF: ISO base media file format boxes) as far
//! as picsift must read it itself. libheif decodes the pictures but cannot
//! say where an item's bytes lie in the file, and removing metadata without
//! re-encoding needs exactly that. So this module walks the boxes, reads
//! every item's type (`iinf`) and extents (`iloc`), blanks the metadata
//! items' bytes in place (zeros: no offset changes, so nothing else moves)
//! and refuses what would let unchecked bytes through: bytes after the last
//! box, media data that no item refers to, and image sequences (a `moov`
//! track, which libheif's still-image API would never decode).

use crate::verdict::{Reason, Rejection};
use std::ops::Range;

/// A HEIF file with its metadata blanked.
#[derive(Debug)]
pub struct Sanitized {
    /// The bytes to store: the upload with metadata item payloads and
    /// `free`/`skip` box payloads zeroed.
    pub bytes: Vec<u8>,
    /// What was blanked, by kind ("Exif", "XMP", …), for logs and tests.
    pub blanked: Vec<String>,
}

/// One box: its type, where its payload starts and where it ends.
#[derive(Clone, Copy, Debug)]
struct Bx {
    kind: [u8; 4],
    body: usize,
    end: usize,
}

fn invalid(detail: impl Into<String>) -> Rejection {
    Rejection::new(Reason::InvalidHeader, detail)
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |v, &b| (v << 8) | u64::from(b))
}

/// Reads `n` bytes (0, 2, 4 or 8) as a big-endian number at `*pos`, within `end`.
fn read(data: &[u8], pos: &mut usize, n: usize, end: usize) -> Result<u64, Rejection> {
    let at = *pos;
    let stop = at
        .checked_add(n)
        .filter(|&s| s <= end)
        .ok_or_else(|| invalid(format!("a HEIF box ends inside a field at byte {at}")))?;
    *pos = stop;
    Ok(be(&data[at..stop]))
}

/// The boxes in `data[from..to]`, back to back; refuses a box that runs past
/// `to` (a cut file) or is smaller than its header.
fn boxes(data: &[u8], from: usize, to: usize) -> Result<Vec<Bx>, Rejection> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        let mut p = pos;
        // What does not even look like a box header is not a cut box but
        // something else appended (a polyglot's zip, a script).
        let kind: Option<[u8; 4]> = data
            .get(pos + 4..pos + 8)
            .filter(|_| pos + 8 <= to)
            .and_then(|k| k.try_into().ok())
            .filter(|k: &[u8; 4]| k.iter().all(|&c| c.is_ascii_alphanumeric() || c == b' '));
        let Some(kind) = kind else {
            return Err(Rejection::new(
                Reason::TrailingData,
                format!("{} bytes at byte {pos} are no HEIF box", to - pos),
            ));
        };
        let size = read(data, &mut p, 4, to)?;
        p += 4;
        let end = match size {
            0 => to,
            1 => {
                let large = read(data, &mut p, 8, to).map_err(|_| truncated(pos))?;
                pos.saturating_add(usize::try_from(large).unwrap_or(usize::MAX))
            }
            n => pos + n as usize,
        };
        if end < p {
            return Err(invalid(format!(
                "HEIF box '{}' at byte {pos} is smaller than its header",
                fourcc(&kind)
            )));
        }
        if end > to {
            return Err(truncated(pos));
        }
        out.push(Bx { kind, body: p, end });
        pos = end;
    }
    Ok(out)
}

fn truncated(at: usize) -> Rejection {
    Rejection::new(
        Reason::Truncated,
        format!("the HEIF box at byte {at} runs past the end of its container"),
    )
}

fn fourcc(kind: &[u8; 4]) -> String {
    kind.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

/// An item from `iinf`: its id and type, and for `mime` items the content type.
struct Info {
    id: u32,
    kind: [u8; 4],
    content_type: String,
}

/// An item from `iloc`: its id, how its offsets count, and its extents.
struct Location {
    id: u32,
    /// 0: offsets in the file; 1: in the `idat` box; 2: from another item.
    method: u8,
    extents: Vec<(u64, u64)>,
}

fn item_infos(data: &[u8], iinf: Bx) -> Result<Vec<Info>, Rejection> {
    let mut p = iinf.body;
    let version = read(data, &mut p, 4, iinf.end)? >> 24;
    read(data, &mut p, if version == 0 { 2 } else { 4 }, iinf.end)?;
    let mut infos = Vec::new();
    for infe in boxes(data, p, iinf.end)? {
        if &infe.kind != b"infe" {
            continue;
        }
        let mut q = infe.body;
        let version = read(data, &mut q, 4, infe.end)? >> 24;
        if version < 2 {
            return Err(invalid(
                "a HEIF item info box of version 0 or 1 (no item type)",
            ));
        }
        let id = read(data, &mut q, if version == 2 { 2 } else { 4 }, infe.end)? as u32;
        read(data, &mut q, 2, infe.end)?; // protection index
        let kind = (read(data, &mut q, 4, infe.end)? as u32).to_be_bytes();
        let strings: Vec<&[u8]> = data[q..infe.end].split(|&b| b == 0).collect();
        let content_type = match &kind {
            b"mime" => String::from_utf8_lossy(strings.get(1).copied().unwrap_or_default()),
            _ => "".into(),
        }
        .into_owned();
        infos.push(Info {
            id,
            kind,
            content_type,
        });
    }
    Ok(infos)
}

fn item_locations(data: &[u8], iloc: Bx) -> Result<Vec<Location>, Rejection> {
    let end = iloc.end;
    let mut p = iloc.body;
    let version = read(data, &mut p, 4, end)? >> 24;
    if version > 2 {
        return Err(invalid(format!("HEIF item locations of version {version}")));
    }
    let sizes = read(data, &mut p, 2, end)?;
    let size = |shift: u32| -> Result<usize, Rejection> {
        match (sizes >> shift) & 0xF {
            n @ (0 | 4 | 8) => Ok(n as usize),
            n => Err(invalid(format!("a HEIF item location field of {n} bytes"))),
        }
    };
    let (offset_size, length_size, base_size) = (size(12)?, size(8)?, size(4)?);
    let index_size = if version == 0 { 0 } else { size(0)? };
    let count = read(data, &mut p, if version < 2 { 2 } else { 4 }, end)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let id = read(data, &mut p, if version < 2 { 2 } else { 4 }, end)? as u32;
        let method = if version == 0 {
            0
        } else {
            (read(data, &mut p, 2, end)? & 0xF) as u8
        };
        read(data, &mut p, 2, end)?; // data reference index
        let base = read(data, &mut p, base_size, end)?;
        let extent_count = read(data, &mut p, 2, end)?;
        let mut extents = Vec::new();
        for _ in 0..extent_count {
            read(data, &mut p, index_size, end)?;
            let offset = read(data, &mut p, offset_size, end)?;
            let length = read(data, &mut p, length_size, end)?;
            extents.push((base.saturating_add(offset), length));
        }
        out.push(Location {
            id,
            method,
            extents,
        });
    }
    Ok(out)
}

/// The bytes one extent covers in `data`, its offsets counted from `origin`
/// within `space`; a length of 0 means "to the end of `space`".
fn extent(
    (offset, length): (u64, u64),
    origin: usize,
    space: usize,
) -> Result<Range<usize>, Rejection> {
    let start = usize::try_from(offset)
        .ok()
        .and_then(|o| o.checked_add(origin))
        .filter(|&s| s <= space);
    let Some(start) = start else {
        return Err(Rejection::new(
            Reason::Truncated,
            "a HEIF item's data lies past the end of the file",
        ));
    };
    let stop = match length {
        0 => space,
        n => usize::try_from(n)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&s| s <= space)
            .ok_or_else(|| {
                Rejection::new(
                    Reason::Truncated,
                    "a HEIF item's data runs past the end of the file",
                )
            })?,
    };
    Ok(start..stop)
}

/// Whether an item of this type carries metadata rather than pixels:
/// EXIF, XMP and any other MIME payload, URI-typed payloads.
fn is_metadata(kind: &[u8; 4]) -> bool {
    matches!(kind, b"Exif" | b"mime" | b"uri ")
}

/// Checks the container and blanks its metadata (see the module docs).
pub fn sanitize(data: &[u8]) -> Result<Sanitized, Rejection> {
    let top = boxes(data, 0, data.len())?;
    if top.first().map(|b| &b.kind) != Some(b"ftyp") {
        return Err(invalid("a HEIF file must start with its 'ftyp' box"));
    }
    let mut meta = None;
    let mut blank: Vec<Range<usize>> = Vec::new();
    let mut blanked = Vec::new();
    for b in &top[1..] {
        match &b.kind {
            b"meta" if meta.is_none() => meta = Some(*b),
            b"mdat" => {}
            // Padding, whatever it holds, is zeroed.
            b"free" | b"skip" => blank.push(b.body..b.end),
            b"moov" => {
                return Err(Rejection::new(
                    Reason::Animated,
                    "the file is an image sequence (a 'moov' track); picsift takes still HEIC and AVIF images",
                ));
            }
            other => {
                return Err(invalid(format!(
                    "unexpected top-level HEIF box '{}'",
                    fourcc(other)
                )));
            }
        }
    }
    let meta = meta.ok_or_else(|| invalid("the HEIF file has no 'meta' box"))?;
    let children = boxes(data, (meta.body + 4).min(meta.end), meta.end)?;
    let find = |k: &[u8; 4]| children.iter().find(|b| &b.kind == k).copied();
    let infos = match find(b"iinf") {
        Some(iinf) => item_infos(data, iinf)?,
        None => Vec::new(),
    };
    let locations = match find(b"iloc") {
        Some(iloc) => item_locations(data, iloc)?,
        None => Vec::new(),
    };
    let idat = find(b"idat");
    let mut media: Vec<Range<usize>> = Vec::new();
    for location in &locations {
        let info = infos.iter().find(|i| i.id == location.id);
        let metadata = info.is_some_and(|i| is_metadata(&i.kind));
        for &e in &location.extents {
            let range = match (location.method, idat) {
                (0, _) => extent(e, 0, data.len())?,
                (1, Some(idat)) => extent(e, idat.body, idat.end)?,
                (1, None) => {
                    return Err(invalid("a HEIF item lies in an 'idat' box that is missing"));
                }
                _ => continue, // from another item: no bytes of its own
            };
            if location.method == 0 {
                // Item data lives in the media data, never in the boxes
                // that describe it (blanking must not touch structure).
                let inside = top
                    .iter()
                    .any(|b| &b.kind == b"mdat" && b.body <= range.start && range.end <= b.end);
                if !inside {
                    return Err(invalid(format!(
                        "item {}'s data at bytes {}..{} is not inside a media data box",
                        location.id, range.start, range.end
                    )));
                }
                media.push(range.clone());
            }
            if metadata {
                blank.push(range);
            }
        }
        if let Some(info) = info.filter(|_| metadata) {
            blanked.push(match &info.kind {
                b"Exif" => "Exif".to_string(),
                b"mime" if info.content_type.contains("rdf+xml") => "XMP".to_string(),
                b"mime" => format!("MIME ({})", info.content_type),
                other => fourcc(other),
            });
        }
    }
    // Every byte of the media data belongs to some item, so none is stored
    // unchecked (a polyglot's payload hidden in 'mdat').
    media.sort_by_key(|r| r.start);
    for mdat in top.iter().filter(|b| &b.kind == b"mdat") {
        let mut covered = mdat.body;
        for r in &media {
            if r.start > covered && r.start < mdat.end {
                break;
            }
            covered = covered.max(r.end.min(mdat.end));
        }
        if covered < mdat.end {
            return Err(Rejection::new(
                Reason::TrailingData,
                format!(
                    "{} bytes of the HEIF media data, from byte {covered}, belong to no image or metadata item",
                    mdat.end - covered
                ),
            ));
        }
    }
    let mut bytes = data.to_vec();
    for r in blank {
        bytes[r].fill(0);
    }
    Ok(Sanitized { bytes, blanked })
}

/// What the leading bytes of an ISOBMFF file say: `Some("heic")` or
/// `Some("avif")` for the still-image (and sequence) brands picsift knows,
/// `Some("heif")` for another HEIF brand, `None` when it is no `ftyp` box.
pub fn brand(head: &[u8]) -> Option<&'static str> {
    if head.get(4..8) != Some(b"ftyp") {
        return None;
    }
    let size = be(head.get(..4)?) as usize;
    let major = head.get(8..12)?;
    // The compatible brands follow the minor version, up to the box's end.
    let compatible = head
        .get(16..size.min(head.len()))
        .unwrap_or_default()
        .chunks_exact(4);
    let kind = |b: &[u8]| match b {
        b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" => Some("heic"),
        b"avif" | b"avis" => Some("avif"),
        _ => None,
    };
    if let Some(k) = kind(major) {
        return Some(k);
    }
    if !matches!(major, b"mif1" | b"msf1" | b"miaf" | b"mif2") {
        return None;
    }
    Some(compatible.filter_map(kind).next().unwrap_or("heif"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn full(kind: &[u8; 4], version: u8, body: &[u8]) -> Vec<u8> {
        let mut b = vec![version, 0, 0, 0];
        b.extend_from_slice(body);
        bx(kind, &b)
    }

    fn infe(id: u16, kind: &[u8; 4], extra: &[u8]) -> Vec<u8> {
        let mut b = id.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(kind);
        b.push(0); // empty name
        b.extend_from_slice(extra);
        full(b"infe", 2, &b)
    }

    /// A HEIF file with an image item (id 1) and an EXIF item (id 2) whose
    /// data lie at `image` and `exif` in one `mdat`, plus `extra` bytes of
    /// media data that no item claims.
    fn file(image: &[u8], exif: &[u8], extra: &[u8]) -> Vec<u8> {
        let ftyp = bx(b"ftyp", b"heic\0\0\0\0mif1heic");
        let mut iinf = 2u16.to_be_bytes().to_vec();
        iinf.extend(infe(1, b"hvc1", b""));
        iinf.extend(infe(2, b"Exif", b""));
        let iinf = full(b"iinf", 0, &iinf);
        // iloc v0, offset/length 4 bytes, no base offset; offsets fixed below.
        let iloc_len = 16 + 2 * (2 + 2 + 2 + 8);
        let meta_len = 12 + iinf.len() + iloc_len;
        let mdat_body = ftyp.len() + meta_len + 8;
        let mut iloc = vec![0x44, 0x00, 0, 2];
        for (id, off, len) in [
            (1u16, mdat_body, image.len()),
            (2, mdat_body + image.len(), exif.len()),
        ] {
            iloc.extend(id.to_be_bytes());
            iloc.extend([0, 0]);
            iloc.extend(1u16.to_be_bytes());
            iloc.extend((off as u32).to_be_bytes());
            iloc.extend((len as u32).to_be_bytes());
        }
        let iloc = full(b"iloc", 0, &iloc);
        let mut meta_body = iinf;
        meta_body.extend(iloc);
        let meta = full(b"meta", 0, &meta_body);
        assert_eq!(meta.len(), meta_len);
        let mut mdat = image.to_vec();
        mdat.extend_from_slice(exif);
        mdat.extend_from_slice(extra);
        [ftyp, meta, bx(b"mdat", &mdat)].concat()
    }

    #[test]
    fn metadata_items_are_blanked_in_place_and_images_kept() {
        let data = file(b"PIXELS", b"\0\0\0\0II*\0GPS", b"");
        let s = sanitize(&data).unwrap();
        assert_eq!(s.bytes.len(), data.len());
        assert_eq!(s.blanked, ["Exif"]);
        let at = |needle: &[u8], hay: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
        assert!(at(b"PIXELS", &s.bytes).is_some());
        assert!(at(b"II*\0GPS", &s.bytes).is_none());
        assert_eq!(&s.bytes[s.bytes.len() - 11..], &[0; 11]);
    }

    #[test]
    fn the_container_is_refused_when_bytes_escape_the_items() {
        let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
            (
                "media data no item claims",
                file(b"PIXELS", b"EXIF", b"PK\x03\x04zip"),
                Reason::TrailingData,
            ),
            (
                "bytes after the last box",
                [file(b"PIXELS", b"EXIF", b""), b"PK\x03\x04zip".to_vec()].concat(),
                Reason::TrailingData,
            ),
            (
                "cut in the media data",
                {
                    let f = file(b"PIXELS", b"EXIF", b"");
                    f[..f.len() - 3].to_vec()
                },
                Reason::Truncated,
            ),
            (
                "an image sequence",
                [file(b"PIXELS", b"EXIF", b""), bx(b"moov", b"")].concat(),
                Reason::Animated,
            ),
            (
                "an unknown top-level box",
                [file(b"PIXELS", b"EXIF", b""), bx(b"uuid", &[0; 16])].concat(),
                Reason::InvalidHeader,
            ),
            ("no ftyp first", bx(b"meta", &[0; 4]), Reason::InvalidHeader),
        ];
        for (name, data, want) in cases {
            let got = sanitize(&data).map(|s| s.blanked).unwrap_err();
            assert_eq!(got.reason, want, "{name}: {}", got.detail);
        }
    }

    #[test]
    fn brands_name_the_format() {
        let ftyp = |major: &[u8; 4], compat: &[u8]| {
            let mut b = major.to_vec();
            b.extend([0; 4]);
            b.extend_from_slice(compat);
            bx(b"ftyp", &b)
        };
        let cases: &[(Vec<u8>, Option<&str>)] = &[
            (ftyp(b"heic", b"mif1"), Some("heic")),
            (ftyp(b"avif", b"mif1miaf"), Some("avif")),
            (ftyp(b"mif1", b"mif1heic"), Some("heic")),
            (ftyp(b"mif1", b"avifmiaf"), Some("avif")),
            (ftyp(b"avis", b"msf1"), Some("avif")),
            (ftyp(b"mif1", b"jpeg"), Some("heif")),
            (ftyp(b"isom", b"mp42"), None),
            (b"\0\0\0\x20ftyp".to_vec(), None),
            (b"RIFF".to_vec(), None),
        ];
        for (head, want) in cases {
            assert_eq!(brand(head), *want, "{head:?}");
        }
    }
}
