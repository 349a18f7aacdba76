//! True format from the bytes, never from the name.

use serde::{Deserialize, Serialize};

/// What the leading bytes of an entry say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JPEG (JFIF, Exif): `FF D8 FF`.
    Jpeg,
    /// PNG.
    Png,
    /// WebP (RIFF container).
    Webp,
    /// HEIC: HEVC pictures in a HEIF container (`ftyp` brand `heic`, …).
    Heic,
    /// AVIF: AV1 pictures in a HEIF container (`ftyp` brand `avif`).
    Avif,
}

impl Format {
    /// The media type of the format.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
            Self::Heic => "image/heic",
            Self::Avif => "image/avif",
        }
    }

    /// The lower-case name used in the catalog and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Heic => "heic",
            Self::Avif => "avif",
        }
    }

    /// Parses [`Self::as_str`] back (case-insensitive, `jpg` too).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            "webp" => Some(Self::Webp),
            "heic" | "heif" => Some(Self::Heic),
            "avif" => Some(Self::Avif),
            _ => None,
        }
    }
}

/// The result of sniffing leading bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// An image format picsift can check.
    Image(Format),
    /// An archive or compressed stream (a nested archive).
    Archive(&'static str),
    /// An image format picsift does not handle (GIF, TIFF, BMP ...).
    OtherImage(&'static str),
    /// Anything else.
    Unknown,
}

/// How many leading bytes [`sniff`] needs to decide
/// (a HEIF `ftyp` box names its format among its first brands).
pub const SNIFF_LEN: usize = 32;

/// Decides the format from the first bytes of a file.
pub fn sniff(head: &[u8]) -> Sniffed {
    let starts = |sig: &[u8]| head.starts_with(sig);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        Sniffed::Image(Format::Jpeg)
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Sniffed::Image(Format::Png)
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Sniffed::Image(Format::Webp)
    } else if let Some(brand) = crate::isobmff::brand(head) {
        match brand {
            "heic" => Sniffed::Image(Format::Heic),
            "avif" => Sniffed::Image(Format::Avif),
            _ => Sniffed::OtherImage("heif"),
        }
    } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") || starts(b"PK\x07\x08") {
        Sniffed::Archive("zip")
    } else if starts(&[0x1F, 0x8B]) {
        Sniffed::Archive("gzip")
    } else if starts(b"7z\xBC\xAF\x27\x1C") {
        Sniffed::Archive("7z")
    } else if starts(b"Rar!\x1A\x07") {
        Sniffed::Archive("rar")
    } else if starts(b"BZh") {
        Sniffed::Archive("bzip2")
    } else if starts(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Sniffed::Archive("xz")
    } else if starts(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Sniffed::Archive("zstd")
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Sniffed::Archive("tar")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Sniffed::OtherImage("gif")
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        Sniffed::OtherImage("tiff")
    } else if starts(b"BM") {
        Sniffed::OtherImage("bmp")
    } else {
        Sniffed::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_decided_by_bytes() {
        let cases: &[(&[u8], Sniffed)] = &[
            (b"\xFF\xD8\xFF\xE0\0\x10JFIF", Sniffed::Image(Format::Jpeg)),
            (b"\x89PNG\r\n\x1a\n\0\0", Sniffed::Image(Format::Png)),
            (b"RIFF\0\0\0\0WEBPVP8 ", Sniffed::Image(Format::Webp)),
            (b"PK\x03\x04\x14\0", Sniffed::Archive("zip")),
            (b"\x1F\x8B\x08\0", Sniffed::Archive("gzip")),
            (b"GIF89a", Sniffed::OtherImage("gif")),
            (
                b"\0\0\0\x18ftypheic\0\0\0\0mif1heic",
                Sniffed::Image(Format::Heic),
            ),
            (
                b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf",
                Sniffed::Image(Format::Avif),
            ),
            (
                b"\0\0\0\x18ftypmif1\0\0\0\0mif1jpeg",
                Sniffed::OtherImage("heif"),
            ),
            (b"\0\0\0\x18ftypisom\0\0\0\0isommp42", Sniffed::Unknown),
            (b"hello, this is text", Sniffed::Unknown),
            (b"", Sniffed::Unknown),
            (b"\xFF\xD8", Sniffed::Unknown),
        ];
        for (bytes, want) in cases {
            assert_eq!(sniff(bytes), *want, "{bytes:?}");
        }
    }
}
