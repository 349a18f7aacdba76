//! The per-image pipeline, a pure function of the bytes and the policy:
//! true format, header and pixel budget, sanitising, strict full decode of
//! what will be stored, and the content hash.

use crate::format::{self, Format, Sniffed};
use crate::jpeg;
use crate::orientation::Oriented;
use crate::policy::{Animation, GainMaps, Policy, Sanitize};
use crate::verdict::{Reason, Rejection};
use sha2::{Digest, Sha256};

/// An image that passed every check, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The bytes to store (metadata removed).
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`, lower-case hex: the image id.
    pub id: String,
    /// SHA-256 of the entry as uploaded (before sanitising): what a client
    /// can compute to ask whether a file is already known.
    pub source_sha256: String,
    /// The true format.
    pub format: Format,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// EXIF orientation found (and removed) in the upload, if any.
    pub orientation: Option<u16>,
    /// PDQ hash and quality of the upright image (orientation applied);
    /// `None` for CMYK JPEGs.
    pub pdq: Option<crate::pdq::Pdq>,
    /// What sanitising removed that the uploader may miss (a motion
    /// photo's video, a gain map), for the verdict's detail.
    pub removed: Option<String>,
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs every step on one entry's bytes.
pub fn prepare(data: &[u8], policy: &Policy) -> Result<Prepared, Rejection> {
    prepare_with_pixels(data, policy).map(|(prepared, _)| prepared)
}

/// [`prepare`], also giving the decoded pixels with the orientation that
/// turns them upright, for the quality and ML checks; `None` for CMYK
/// JPEGs.
pub fn prepare_with_pixels(
    data: &[u8],
    policy: &Policy,
) -> Result<(Prepared, Option<Oriented>), Rejection> {
    let format = match format::sniff(&data[..data.len().min(512)]) {
        Sniffed::Image(f) if policy.allows(f) => f,
        Sniffed::Image(f) => {
            let allowed: Vec<_> = policy.allowed_formats.iter().map(|f| f.as_str()).collect();
            return Err(Rejection::new(
                Reason::FormatNotAllowed,
                format!(
                    "the bytes are {}; the policy allows {} ({})",
                    f.as_str(),
                    allowed.join(", "),
                    policy.spelling.name(crate::setting::Setting::Formats)
                ),
            ));
        }
        Sniffed::Archive(kind) => {
            return Err(Rejection::new(
                Reason::NestedArchive,
                format!("the entry is a {kind} archive"),
            ));
        }
        Sniffed::OtherImage(kind) => {
            return Err(Rejection::new(
                Reason::FormatNotAllowed,
                format!("the bytes are {kind}, which picsift does not accept"),
            ));
        }
        Sniffed::Unknown => {
            return Err(Rejection::new(
                Reason::NotAnImage,
                "the leading bytes match no image format",
            ));
        }
    };
    let Stage {
        mut bytes,
        mut width,
        mut height,
        mut orientation,
        pixels,
        icc,
        removed,
    } = match format {
        Format::Jpeg => prepare_jpeg(data, policy)?,
        Format::Png | Format::Webp => prepare_other(data, format, policy)?,
        Format::Heic | Format::Avif => {
            let checked = crate::heif::prepare(data, format, policy)?;
            Stage {
                bytes: checked.bytes,
                width: checked.rgb.width(),
                height: checked.rgb.height(),
                // The container's own rotation and mirroring (`irot`,
                // `imir`) stay in the bytes; the pixels come upright.
                orientation: None,
                pixels: Some(checked.rgb),
                icc: checked.icc,
                removed: None,
            }
        }
    };
    let mut format = format;
    let mut pixels = pixels.map(|stored| Oriented {
        stored,
        orientation: orientation.unwrap_or(1),
    });
    if policy.sanitize == crate::policy::Sanitize::Reencode {
        let Some(oriented) = pixels.take() else {
            return Err(Rejection::new(
                Reason::Uncheckable,
                "the policy re-encodes every image, and a CMYK JPEG cannot be re-encoded without changing its colours",
            ));
        };
        let rgb = oriented.into_upright();
        // No HEVC or AV1 encoder is linked: those become lossless PNG.
        if matches!(format, Format::Heic | Format::Avif) {
            format = Format::Png;
        }
        bytes = reencode(&rgb, format, icc)?;
        (width, height, orientation) = (rgb.width(), rgb.height(), None);
        pixels = Some(Oriented::upright(rgb));
    }
    let pdq = pixels.as_ref().map(crate::pdq::hash_oriented);
    let prepared = Prepared {
        id: sha256_hex(&bytes),
        source_sha256: sha256_hex(data),
        bytes,
        format,
        width,
        height,
        orientation,
        pdq,
        removed,
    };
    Ok((prepared, pixels))
}

/// What a format's stage hands on.
struct Stage {
    /// The sanitised bytes.
    bytes: Vec<u8>,
    width: u32,
    height: u32,
    /// EXIF orientation (1–8), kept in `bytes` as a minimal EXIF block.
    orientation: Option<u16>,
    /// Decoded pixels as stored (not yet turned upright); `None` for CMYK.
    pixels: Option<image::RgbImage>,
    /// The ICC profile kept in `bytes` ([`crate::icc::check`] passed).
    icc: Option<Vec<u8>>,
    /// What was removed besides metadata ([`Prepared::removed`]).
    removed: Option<String>,
}

fn prepare_jpeg(data: &[u8], policy: &Policy) -> Result<Stage, Rejection> {
    let structure = jpeg::parse(data)?;
    policy.check_dimensions(structure.width, structure.height)?;
    let mut kept: Option<KeptGainMap> = None;
    let removed = match structure.trailer {
        None => None,
        Some(at) => {
            let layout = crate::trailer::classify(data, at, &structure.announced)?;
            for (i, range) in layout.mpf_images.iter().enumerate() {
                check_mpf_image(&data[range.clone()], policy).map_err(|r| {
                    Rejection::new(r.reason, format!("MPF image {}: {}", i + 2, r.detail))
                })?;
            }
            // Re-encoding stores fresh pixels of the primary alone.
            if policy.gain_maps == GainMaps::Keep && policy.sanitize == Sanitize::Strip {
                kept = kept_gain_map(data, &layout);
            }
            Some(layout.removed_but(kept.as_ref().map(|k| k.index)))
        }
    };
    let icc = jpeg::icc_profile(data, &structure).filter(|p| crate::icc::check(p).is_ok());
    let clean = jpeg::strip_metadata(data, &structure, icc.as_deref());
    // What is stored is what is decoded: every coefficient, strictly. The
    // picture is written no larger than the checks read it (PDQ samples
    // 512 × 512; the quality and ML inputs are smaller still), unless it
    // is to be re-encoded, which needs every pixel.
    let min_side = match policy.sanitize {
        Sanitize::Reencode => u32::MAX,
        Sanitize::Strip => crate::pdq::DOWNSAMPLE_DIMS as u32,
    };
    let decoded = crate::decode::strict_jpeg_scaled(&clean, policy, min_side)?;
    if decoded.full != (structure.width, structure.height) {
        return Err(Rejection::new(
            Reason::DecodeError,
            "decoded size differs from the frame header",
        ));
    }
    let pixels = decoded
        .rgb
        .and_then(|rgb| image::RgbImage::from_raw(decoded.width, decoded.height, rgb));
    // A kept gain map follows the primary with both images' metadata
    // written anew; its coded data was decoded above with the others'.
    let clean = match kept {
        Some(k) => crate::gain_map::assemble(&clean, &k.bytes, &k.metadata),
        None => clean,
    };
    Ok(Stage {
        bytes: clean,
        width: structure.width,
        height: structure.height,
        orientation: structure.orientation,
        pixels,
        icc,
        removed,
    })
}

fn prepare_other(data: &[u8], format: Format, policy: &Policy) -> Result<Stage, Rejection> {
    let image_format = match format {
        Format::Png => image::ImageFormat::Png,
        _ => image::ImageFormat::WebP,
    };
    let invalid = |e: image::ImageError| {
        Rejection::new(
            Reason::InvalidHeader,
            format!("cannot read the {} header: {e}", format.as_str()),
        )
    };
    // One read of the header gives the dimensions and the ICC profile
    // (PNG's `iCCP` inflated, WebP's `ICCP`).
    let mut header = image::ImageReader::with_format(std::io::Cursor::new(data), image_format)
        .into_decoder()
        .map_err(invalid)?;
    let (width, height) = image::ImageDecoder::dimensions(&header);
    policy.check_dimensions(width, height)?;
    let icc = image::ImageDecoder::icc_profile(&mut header)
        .ok()
        .flatten()
        .filter(|p| crate::icc::check(p).is_ok());
    let stripped = match format {
        Format::Png => crate::png_webp::strip_png(data, icc.is_some())?,
        _ => crate::png_webp::strip_webp(data, icc.is_some())?,
    };
    if stripped.animated && policy.animation == Animation::Refuse {
        return Err(Rejection::new(
            Reason::Animated,
            "the PNG is an animation (APNG); the policy refuses animations (animation = refuse)",
        ));
    }
    let removed = stripped.animated.then(|| {
        "APNG animation removed: its default image, decoded and checked, is stored".to_string()
    });
    let clean = stripped.bytes;
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(&clean[..]), image_format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(policy.max_dimension);
    limits.max_image_height = Some(policy.max_dimension);
    limits.max_alloc = Some(policy.max_pixels.saturating_mul(8));
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| match e {
        image::ImageError::Decoding(_) if is_eof(&e) => Rejection::new(
            Reason::Truncated,
            format!("{} data ends early: {e}", format.as_str()),
        ),
        _ => Rejection::new(
            Reason::DecodeError,
            format!("strict {} decode failed: {e}", format.as_str()),
        ),
    })?;
    Ok(Stage {
        bytes: clean,
        width,
        height,
        orientation: stripped.orientation,
        pixels: Some(decoded.to_rgb8()),
        icc,
        removed,
    })
}

/// A gain map to store after the primary ([`crate::gain_map`]).
struct KeptGainMap {
    /// Its index among the trailer's MPF images.
    index: usize,
    /// Its bytes without metadata.
    bytes: Vec<u8>,
    metadata: crate::gain_map::Metadata,
}

/// The first of the (already strictly decoded) MPF images whose XMP is a
/// valid Ultra HDR gain map's.
fn kept_gain_map(data: &[u8], layout: &crate::trailer::Layout) -> Option<KeptGainMap> {
    layout
        .mpf_images
        .iter()
        .enumerate()
        .find_map(|(index, range)| {
            let image = &data[range.clone()];
            let structure = jpeg::parse(image).ok()?;
            let xmp = crate::gain_map::xmp_of(image, &structure)?;
            let metadata = crate::gain_map::Metadata::parse(&xmp).ok()?;
            Some(KeptGainMap {
                index,
                bytes: jpeg::strip_metadata(image, &structure, None),
                metadata,
            })
        })
}

/// A further image of an MPF file (a gain map, an MPO's second view): it is
/// removed, but only after the same strict checks as the primary, so that
/// no undecodable bytes hide behind an index.
fn check_mpf_image(data: &[u8], policy: &Policy) -> Result<(), Rejection> {
    let structure = jpeg::parse(data)?;
    if structure.trailer.is_some() {
        return Err(Rejection::new(
            Reason::TrailingData,
            "bytes follow its end-of-image marker inside its MPF range",
        ));
    }
    policy.check_dimensions(structure.width, structure.height)?;
    crate::decode::strict_jpeg(data, policy).map(drop)
}

/// A fresh encoding of decoded, upright pixels (content disarm): of the
/// upload's bytes only a validated ICC profile survives, so the colours do.
/// JPEG at quality 90; PNG and WebP lossless (RGB: an alpha channel is
/// dropped).
fn reencode(
    rgb: &image::RgbImage,
    format: Format,
    icc: Option<Vec<u8>>,
) -> Result<Vec<u8>, Rejection> {
    use image::ImageEncoder;
    fn encode(
        mut encoder: impl ImageEncoder,
        rgb: &image::RgbImage,
        icc: Option<Vec<u8>>,
    ) -> image::ImageResult<()> {
        if let Some(profile) = icc {
            // Every encoder here takes a profile; one that did not would
            // store sRGB-assumed pixels, as before.
            let _ = encoder.set_icc_profile(profile);
        }
        encoder.write_image(
            rgb.as_raw(),
            rgb.width(),
            rgb.height(),
            image::ExtendedColorType::Rgb8,
        )
    }
    let mut out = Vec::new();
    let result = match format {
        Format::Jpeg => encode(
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90),
            rgb,
            icc,
        ),
        Format::Png | Format::Heic | Format::Avif => {
            encode(image::codecs::png::PngEncoder::new(&mut out), rgb, icc)
        }
        Format::Webp => encode(
            image::codecs::webp::WebPEncoder::new_lossless(&mut out),
            rgb,
            icc,
        ),
    };
    result.map_err(|e| {
        Rejection::new(
            Reason::InternalError,
            format!("re-encoding the image failed: {e}"),
        )
    })?;
    Ok(out)
}

fn is_eof(e: &image::ImageError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("eof") || text.contains("end of file") || text.contains("unexpected end")
}
