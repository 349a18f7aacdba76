//! HEIC and AVIF: the HEIF container checked and its metadata blanked by
//! [`crate::isobmff`], the pictures decoded strictly by libheif (built from
//! the source vendored in `libheif-sys`, with libde265 for HEVC and dav1d
//! for AV1 from the system).
//!
//! The rules, per part of the file (docs/verdicts.md says the same):
//! - **primary image**: header size against the pixel budget before any
//!   pixel is allocated, then a strict decode (`strict_decoding`: a codec
//!   warning is an error) with the container's rotation, mirroring and crop
//!   applied, so PDQ and the models see it upright. A grid (tiles) decodes
//!   as one picture; 10- and 12-bit images are checked as 8-bit RGB; an
//!   alpha plane is decoded too, the checks use the colour planes.
//! - **thumbnails and auxiliary images** (alpha, depth maps, gain maps):
//!   decoded strictly as well and kept: removing them would mean
//!   rewriting the container.
//! - **more than one top-level image** (a collection or burst): refused as
//!   `animated`, like image sequences: picsift checks one picture per entry.
//! - **metadata** (EXIF, XMP, other MIME items): blanked in place.
//! - **colour**: an ICC profile is kept only if it parses
//!   ([`crate::icc::check`]); one that does not is refused, since it cannot
//!   be dropped without rewriting the container. `nclx` colour is kept.

use crate::format::Format;
use crate::policy::Policy;
use crate::verdict::{Reason, Rejection};
use libheif_rs::{
    ColorSpace, DecodingOptions, HeifContext, ImageHandle, LibHeif, RgbChroma, SecurityLimits,
};

/// What [`prepare`] hands on to the pipeline.
pub(crate) struct Checked {
    /// The bytes to store (metadata blanked).
    pub bytes: Vec<u8>,
    /// The primary image, upright, as 8-bit RGB.
    pub rgb: image::RgbImage,
    /// The ICC profile the file carries (validated).
    pub icc: Option<Vec<u8>>,
}

fn libheif_error(what: &str, format: Format, e: libheif_rs::HeifError) -> Rejection {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let reason = if lower.contains("end of data")
        || lower.contains("end of file")
        || lower.contains("insufficient")
        || lower.contains("past the end")
    {
        Reason::Truncated
    } else if what == "header" {
        Reason::InvalidHeader
    } else {
        Reason::DecodeError
    };
    Rejection::new(
        reason,
        format!("strict {} {what} check failed: {text}", format.as_str()),
    )
}

/// Reads a HEIF file with libheif under the policy's pixel budget.
fn context<'a>(
    bytes: &'a [u8],
    format: Format,
    policy: &Policy,
) -> Result<HeifContext<'a>, Rejection> {
    let mut ctx: HeifContext<'a> =
        HeifContext::new().map_err(|e| libheif_error("header", format, e))?;
    let mut limits = SecurityLimits::new();
    limits.set_max_image_size_pixels(policy.max_pixels);
    ctx.set_security_limits(&limits)
        .map_err(|e| libheif_error("header", format, e))?;
    // One thread per image, as for JPEG: the worker runs several images at
    // once, and the per-core cost stays what the benchmark measures.
    ctx.set_max_decoding_threads(0);
    ctx.read_bytes(bytes)
        .map_err(|e| libheif_error("header", format, e))?;
    Ok(ctx)
}

fn options() -> DecodingOptions {
    let mut options = DecodingOptions::new().expect("libheif allocates decoding options");
    options.set_strict_decoding(true);
    options.set_convert_hdr_to_8bit(true);
    options.set_num_codec_threads(1);
    options
}

/// Decodes one image strictly as interleaved 8-bit RGB (RGBA when it has
/// alpha, the alpha then dropped).
fn decode(
    lib: &LibHeif,
    handle: &ImageHandle,
    format: Format,
    what: &str,
) -> Result<image::RgbImage, Rejection> {
    let alpha = handle.has_alpha_channel();
    let chroma = if alpha {
        RgbChroma::Rgba
    } else {
        RgbChroma::Rgb
    };
    let decoded = lib
        .decode(handle, ColorSpace::Rgb(chroma), Some(options()))
        .map_err(|e| libheif_error(what, format, e))?;
    let planes = decoded.planes();
    let Some(plane) = planes.interleaved.filter(|p| p.bits_per_pixel == 8) else {
        return Err(Rejection::new(
            Reason::Uncheckable,
            format!("libheif gave no 8-bit RGB picture for the {what}"),
        ));
    };
    let channels = if alpha { 4 } else { 3 };
    let (w, h) = (plane.width as usize, plane.height as usize);
    let mut rgb = crate::pixels::zeroed(w * h * 3);
    let rows = plane.data.chunks(plane.stride.max(1));
    if w == 0 || rows.len() < h {
        return Err(Rejection::new(
            Reason::DecodeError,
            "libheif gave too few rows",
        ));
    }
    for (row, out) in rows.zip(rgb.chunks_exact_mut(w * 3)) {
        let row = row.get(..w * channels).ok_or_else(|| {
            Rejection::new(Reason::DecodeError, "libheif gave a short row of pixels")
        })?;
        if alpha {
            for (px, o) in row.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
                o.copy_from_slice(&px[..3]);
            }
        } else {
            out.copy_from_slice(row);
        }
    }
    image::RgbImage::from_raw(plane.width, plane.height, rgb)
        .ok_or_else(|| Rejection::new(Reason::DecodeError, "libheif gave too few rows"))
}

/// Checks a HEIC or AVIF file (see the module docs for the rules).
pub(crate) fn prepare(data: &[u8], format: Format, policy: &Policy) -> Result<Checked, Rejection> {
    let clean = crate::isobmff::sanitize(data)?;
    // What is stored is what is decoded: the blanked bytes.
    let (rgb, icc) = check(&clean.bytes, format, policy)?;
    Ok(Checked {
        bytes: clean.bytes,
        rgb,
        icc,
    })
}

/// Every picture of a sanitised file decoded strictly: the primary's
/// upright pixels and its validated ICC profile.
fn check(
    bytes: &[u8],
    format: Format,
    policy: &Policy,
) -> Result<(image::RgbImage, Option<Vec<u8>>), Rejection> {
    let ctx = context(bytes, format, policy)?;
    let count = ctx.image_ids().len();
    if count != 1 {
        return Err(Rejection::new(
            Reason::Animated,
            format!(
                "the file holds {count} top-level images (a collection or burst); picsift checks one picture per entry"
            ),
        ));
    }
    let primary = ctx
        .primary_image_handle()
        .map_err(|e| libheif_error("header", format, e))?;
    policy.check_dimensions(primary.width(), primary.height())?;
    let icc = match primary.color_profile_raw() {
        Some(profile) => {
            crate::icc::check(&profile.data).map_err(|e| {
                Rejection::new(
                    Reason::InvalidHeader,
                    format!("its ICC profile is not valid ({e}) and cannot be removed without rewriting the file"),
                )
            })?;
            Some(profile.data)
        }
        None => None,
    };
    let lib = LibHeif::new();
    let rgb = decode(&lib, &primary, format, "image")?;
    if rgb.dimensions() != (primary.width(), primary.height()) {
        return Err(Rejection::new(
            Reason::DecodeError,
            "the decoded size differs from the header's",
        ));
    }
    for (what, handle) in further_images(&primary) {
        let handle = handle.map_err(|e| libheif_error(what, format, e))?;
        policy.check_dimensions(handle.width(), handle.height())?;
        lib.decode(&handle, ColorSpace::Undefined, Some(options()))
            .map_err(|e| libheif_error(what, format, e))?;
    }
    Ok((rgb, icc))
}

/// The primary's thumbnails, auxiliary images (gain maps …; alpha is
/// decoded with the primary) and depth maps, each named for errors. Each is
/// decoded in whatever form libheif prefers: only that it decodes strictly
/// matters.
fn further_images(primary: &ImageHandle) -> Vec<(&'static str, libheif_rs::Result<ImageHandle>)> {
    let mut ids = vec![0; primary.number_of_thumbnails()];
    let n = primary.thumbnail_ids(&mut ids);
    let mut out: Vec<_> = ids[..n]
        .iter()
        .map(|id| ("thumbnail", primary.thumbnail(*id)))
        .collect();
    let filter = libheif_rs::AuxiliaryImagesFilter::new()
        .omit_alpha()
        .omit_depth();
    out.extend(
        primary
            .auxiliary_images(filter)
            .into_iter()
            .map(|h| ("auxiliary image", Ok(h))),
    );
    let mut ids = vec![0; primary.number_of_depth_images().max(0) as usize];
    let n = primary.depth_image_ids(&mut ids);
    out.extend(
        ids[..n]
            .iter()
            .map(|id| ("depth image", primary.depth_image_handle(*id))),
    );
    out
}

/// The stored image's primary picture, upright, for thumbnails (leniently:
/// it passed [`prepare`] when it was stored).
pub fn decode_rgb(bytes: &[u8], format: Format) -> Result<image::RgbImage, String> {
    let ctx = HeifContext::read_from_bytes(bytes).map_err(|e| e.to_string())?;
    let primary = ctx.primary_image_handle().map_err(|e| e.to_string())?;
    decode(&LibHeif::new(), &primary, format, "image").map_err(|r| r.detail)
}
