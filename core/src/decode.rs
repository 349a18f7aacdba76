//! Strict JPEG decode with libjpeg-turbo (TurboJPEG 3 API, built from
//! the vendored source of `turbojpeg-sys`): every coefficient of every scan
//! entropy-decoded, every warning fatal, the picture written at full size
//! or, for the checks, at a DCT scale ([`strict_jpeg_scaled`]).
//!
//! Why not a pure-Rust decoder: `image`/`zune-jpeg` pad a scan whose
//! entropy-coded data ends early (even in zune's strict mode a premature
//! end-of-image marker is accepted, and progressive scans are never
//! checked), so a JPEG cut short with an end marker glued on decodes as a
//! grey-bottomed picture. libjpeg-turbo reports every such case as a
//! warning ("premature end of data segment", "extraneous bytes before
//! marker", corrupt Huffman data); with `TJPARAM_STOPONWARNING` each
//! warning is an error.

use crate::policy::Policy;
use crate::verdict::{Reason, Rejection};
use std::ffi::CStr;
use turbojpeg_sys as tj;

/// Most scans a progressive JPEG may have: a scan-bomb guard.
const MAX_SCANS: i32 = 500;

/// Most memory libjpeg-turbo may use for one image besides the output
/// buffer, in MiB (a progressive image keeps all its coefficients: about
/// 128 bytes per 8×8 block per component, ~300 MiB at 50 MP with 3
/// components at full resolution).
const MAX_MEMORY_MIB: i32 = 512;

struct Handle(tj::tjhandle);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

impl Handle {
    fn error(&self) -> String {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle.
        unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    fn set(&self, param: tj::TJPARAM, value: i32) -> Result<(), Rejection> {
        // SAFETY: a valid handle and a parameter id from the bindings.
        if unsafe { tj::tj3Set(self.0, param as i32, value) } != 0 {
            return Err(Rejection::new(
                Reason::InternalError,
                format!("libjpeg-turbo refused a setting: {}", self.error()),
            ));
        }
        Ok(())
    }

    fn get(&self, param: tj::TJPARAM) -> i32 {
        // SAFETY: a valid handle and a parameter id from the bindings.
        unsafe { tj::tj3Get(self.0, param as i32) }
    }
}

/// A decoded JPEG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Width in pixels, as written (scaled, see [`strict_jpeg_scaled`]).
    pub width: u32,
    /// Height in pixels, as written.
    pub height: u32,
    /// The frame's own width and height.
    pub full: (u32, u32),
    /// Packed RGB pixels, row by row; `None` for CMYK images.
    pub rgb: Option<Vec<u8>>,
}

/// Decodes every pixel of `jpeg`, refusing anything libjpeg-turbo would
/// warn about. The pixel budget is checked from the header before the
/// output buffer is allocated.
pub fn strict_jpeg(jpeg: &[u8], policy: &Policy) -> Result<Decoded, Rejection> {
    strict_jpeg_scaled(jpeg, policy, u32::MAX)
}

/// [`strict_jpeg`], with the picture written at the smallest of
/// libjpeg-turbo's DCT scales (1/8, 1/4, 1/2, 1) that keeps both sides at
/// least `min_side` (full size when none does). Every coefficient is still
/// entropy-decoded, every scan read and every warning fatal, exactly as at
/// full size: scaling only skips inverse-transform work and writes fewer
/// pixels (a 12 MP photo decodes about a third faster at 1/4, tjbench).
/// [`Decoded::width`] and `height` are the written picture's;
/// [`Decoded::full`] is the frame's size.
pub fn strict_jpeg_scaled(
    jpeg: &[u8],
    policy: &Policy,
    min_side: u32,
) -> Result<Decoded, Rejection> {
    // SAFETY: tj3Init has no preconditions; a null return is handled.
    let raw = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as i32) };
    if raw.is_null() {
        return Err(Rejection::new(
            Reason::InternalError,
            "libjpeg-turbo could not start a decompressor",
        ));
    }
    let h = Handle(raw);
    h.set(tj::TJPARAM_TJPARAM_STOPONWARNING, 1)?;
    h.set(tj::TJPARAM_TJPARAM_SCANLIMIT, MAX_SCANS)?;
    h.set(tj::TJPARAM_TJPARAM_MAXMEMORY, MAX_MEMORY_MIB)?;
    h.set(
        tj::TJPARAM_TJPARAM_MAXPIXELS,
        i32::try_from(policy.max_pixels).unwrap_or(i32::MAX),
    )?;
    // SAFETY: the buffer pointer and length describe `jpeg`, which outlives the call.
    if unsafe { tj::tj3DecompressHeader(h.0, jpeg.as_ptr(), jpeg.len() as _) } != 0 {
        return Err(Rejection::new(
            Reason::InvalidHeader,
            format!("JPEG header rejected: {}", h.error()),
        ));
    }
    let (w, hgt) = (
        h.get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
        h.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
    );
    let (width, height) = (
        u32::try_from(w).unwrap_or(0),
        u32::try_from(hgt).unwrap_or(0),
    );
    policy.check_dimensions(width, height)?;
    let full = (width, height);
    let (width, height) = match scale_for(width, height, min_side, min_side) {
        1 => (width, height),
        denom => {
            let factor = tj::tjscalingfactor { num: 1, denom };
            // SAFETY: a valid handle and one of libjpeg-turbo's own factors.
            if unsafe { tj::tj3SetScalingFactor(h.0, factor) } != 0 {
                return Err(Rejection::new(
                    Reason::InternalError,
                    format!("libjpeg-turbo refused a scale: {}", h.error()),
                ));
            }
            (width.div_ceil(denom as u32), height.div_ceil(denom as u32))
        }
    };
    let colorspace = h.get(tj::TJPARAM_TJPARAM_COLORSPACE);
    let (format, channels) =
        if colorspace == tj::TJCS_TJCS_CMYK as i32 || colorspace == tj::TJCS_TJCS_YCCK as i32 {
            (tj::TJPF_TJPF_CMYK, 4)
        } else {
            (tj::TJPF_TJPF_RGB, 3)
        };
    let mut pixels = crate::pixels::zeroed(width as usize * height as usize * channels);
    // SAFETY: `pixels` holds width × height × channels bytes, what a pitch of
    // 0 (tightly packed) with this pixel format writes.
    let rc = unsafe {
        tj::tj3Decompress8(
            h.0,
            jpeg.as_ptr(),
            jpeg.len() as _,
            pixels.as_mut_ptr(),
            0,
            format,
        )
    };
    if rc != 0 {
        let msg = h.error();
        let reason = if msg.to_ascii_lowercase().contains("premature end") {
            Reason::Truncated
        } else {
            Reason::DecodeError
        };
        return Err(Rejection::new(
            reason,
            format!("strict JPEG decode failed: {msg}"),
        ));
    }
    let rgb = (channels == 3).then_some(pixels);
    Ok(Decoded {
        width,
        height,
        full,
        rgb,
    })
}

/// The denominator of the smallest DCT scale keeping a `w × h` frame at
/// least `min_w` wide and `min_h` high; 1 (full size) when none smaller
/// does.
fn scale_for(w: u32, h: u32, min_w: u32, min_h: u32) -> i32 {
    [8, 4, 2]
        .into_iter()
        .find(|&d| w.div_ceil(d) >= min_w && h.div_ceil(d) >= min_h)
        .map_or(1, |d| d as i32)
}

/// A reduced-size decode: libjpeg-turbo's DCT scaling (1/8, 1/4, 1/2)
/// picks the smallest scale whose output is still at least `min_w`×`min_h`,
/// so only a fraction of the IDCT work is done. Not a validation step (it
/// is lenient and skips detail); the benchmark compares it with the full
/// decode as a source of model inputs. `None` when it cannot decode or the
/// image is CMYK.
pub fn scaled_rgb(jpeg: &[u8], min_w: u32, min_h: u32) -> Option<image::RgbImage> {
    // SAFETY: as in strict_jpeg; a null handle is handled.
    let raw = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as i32) };
    if raw.is_null() {
        return None;
    }
    let h = Handle(raw);
    // SAFETY: the buffer pointer and length describe `jpeg`.
    if unsafe { tj::tj3DecompressHeader(h.0, jpeg.as_ptr(), jpeg.len() as _) } != 0 {
        return None;
    }
    let (w, hgt) = (
        h.get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
        h.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
    );
    let cs = h.get(tj::TJPARAM_TJPARAM_COLORSPACE);
    if w <= 0 || hgt <= 0 || cs == tj::TJCS_TJCS_CMYK as i32 || cs == tj::TJCS_TJCS_YCCK as i32 {
        return None;
    }
    let scaled = |d: i32, n: i32| (n + d - 1) / d;
    let denom = scale_for(w as u32, hgt as u32, min_w, min_h);
    let factor = tj::tjscalingfactor { num: 1, denom };
    // SAFETY: a valid handle and one of libjpeg-turbo's supported factors.
    if unsafe { tj::tj3SetScalingFactor(h.0, factor) } != 0 {
        return None;
    }
    let (sw, sh) = (scaled(denom, w), scaled(denom, hgt));
    let mut pixels = vec![0u8; sw as usize * sh as usize * 3];
    // SAFETY: `pixels` holds the scaled width × height × 3 bytes.
    let rc = unsafe {
        tj::tj3Decompress8(
            h.0,
            jpeg.as_ptr(),
            jpeg.len() as _,
            pixels.as_mut_ptr(),
            0,
            tj::TJPF_TJPF_RGB,
        )
    };
    if rc != 0 {
        return None;
    }
    image::RgbImage::from_raw(sw as u32, sh as u32, pixels)
}
