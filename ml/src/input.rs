//! The CPU side: decoded pixels to each model's input tensor data.

use image::{RgbImage, imageops};
use picsift_core::orientation::apply_orientation;
use picsift_core::policy::{Fit, ModelSpec};

/// One image's inputs: the quality thumbnail and one tensor per model.
pub struct Inputs {
    /// 256×256 grey levels, 0–255, row-major.
    pub(crate) quality: Option<Vec<f32>>,
    /// Per model (in policy order): 3 × height × width, normalised.
    pub(crate) models: Vec<Vec<f32>>,
}

impl Inputs {
    /// The inputs of a picture stored `rgb` with this EXIF orientation:
    /// a large photo is shrunk first and turned upright after, so a portrait
    /// photo costs no more than a landscape one.
    pub(crate) fn new(
        rgb: &RgbImage,
        orientation: u16,
        specs: &[&ModelSpec],
        quality: bool,
    ) -> Self {
        let src = apply_orientation(reduced(rgb, largest_side(specs, quality)), orientation);
        Self {
            quality: quality
                .then(|| grey(&resize(&src, crate::quality::SIDE, crate::quality::SIDE))),
            models: specs.iter().map(|s| model_input(&src, s)).collect(),
        }
    }
}

/// The longest side any of these inputs needs.
pub(crate) fn largest_side(specs: &[&ModelSpec], quality: bool) -> u32 {
    specs
        .iter()
        .map(|s| s.width.max(s.height))
        .chain(quality.then_some(crate::quality::SIDE))
        .max()
        .unwrap_or(1)
}

/// One area-averaging shrink of a large photo, so each model's resize
/// reads a few hundred thousand pixels, not millions: a picture more than
/// four times `largest` a side becomes twice `largest`; a smaller one stays
/// as it is. Shrinking what this returned again changes nothing, so a
/// decoder process can send the shrunk picture instead of the whole one.
pub fn reduced(rgb: &RgbImage, largest: u32) -> RgbImage {
    if rgb.width().max(rgb.height()) > 4 * largest {
        let scale = (2 * largest) as f32 / rgb.width().max(rgb.height()) as f32;
        let (w, h) = scaled(rgb.width(), rgb.height(), scale);
        imageops::thumbnail(rgb, w, h)
    } else {
        rgb.clone()
    }
}

/// `(w, h) × scale`, at least 1×1.
fn scaled(w: u32, h: u32, scale: f32) -> (u32, u32) {
    (
        ((w as f32 * scale).round() as u32).max(1),
        ((h as f32 * scale).round() as u32).max(1),
    )
}

/// Area averaging to shrink, a triangle filter to enlarge.
fn resize(src: &RgbImage, w: u32, h: u32) -> RgbImage {
    if (src.width(), src.height()) == (w, h) {
        src.clone()
    } else if src.width() >= w && src.height() >= h {
        imageops::thumbnail(src, w, h)
    } else {
        imageops::resize(src, w, h, imageops::FilterType::Triangle)
    }
}

fn grey(img: &RgbImage) -> Vec<f32> {
    img.pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect()
}

/// The spec's input: fitted, channels first, `(pixel / 255 - mean) / std`.
pub fn model_input(src: &RgbImage, spec: &ModelSpec) -> Vec<f32> {
    let (w, h) = (spec.width, spec.height);
    let fitted = match spec.fit {
        Fit::Stretch => resize(src, w, h),
        Fit::Pad => {
            let scale = (w as f32 / src.width() as f32).min(h as f32 / src.height() as f32);
            let (iw, ih) = scaled(src.width(), src.height(), scale);
            let (iw, ih) = (iw.min(w), ih.min(h));
            let mut canvas = RgbImage::new(w, h);
            imageops::replace(
                &mut canvas,
                &resize(src, iw, ih),
                i64::from((w - iw) / 2),
                i64::from((h - ih) / 2),
            );
            canvas
        }
    };
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in fitted.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(p[c]) / 255.0 - spec.mean[c]) / spec.std[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use picsift_core::policy::Output;

    fn spec(w: u32, h: u32, fit: Fit) -> ModelSpec {
        ModelSpec {
            name: "m".into(),
            source: String::new(),
            width: w,
            height: h,
            mean: [0.5; 3],
            std: [0.5; 3],
            fit,
            output: Output::Sigmoid,
            labels: vec!["x".into()],
            reject: vec![],
            fixed_batch: None,
        }
    }

    #[test]
    fn stretch_normalises_channels_first() {
        let img = RgbImage::from_pixel(10, 20, image::Rgb([255, 0, 51]));
        let v = model_input(&img, &spec(4, 2, Fit::Stretch));
        assert_eq!(v.len(), 3 * 8);
        assert!(v[..8].iter().all(|x| (*x - 1.0).abs() < 1e-6));
        assert!(v[8..16].iter().all(|x| (*x + 1.0).abs() < 1e-6));
        assert!(v[16..].iter().all(|x| (*x + 0.6).abs() < 1e-5));
    }

    #[test]
    fn pad_keeps_the_aspect_ratio_and_pads_black() {
        // A white 20×10 image into 8×8: 8×4 of white, centred.
        let img = RgbImage::from_pixel(20, 10, image::Rgb([255, 255, 255]));
        let v = model_input(&img, &spec(8, 8, Fit::Pad));
        let white = v[..64].iter().filter(|x| (**x - 1.0).abs() < 1e-6).count();
        assert_eq!(white, 32);
        assert!((v[0] + 1.0).abs() < 1e-6, "the top-left corner is padding");
        assert!((v[8 * 4] - 1.0).abs() < 1e-6, "the middle row is image");
    }

    #[test]
    fn a_large_photo_is_shrunk_once_and_gives_every_input() {
        let img = RgbImage::from_pixel(4000, 3000, image::Rgb([10, 20, 30]));
        let a = spec(64, 64, Fit::Stretch);
        let b = spec(320, 320, Fit::Pad);
        let inputs = Inputs::new(&img, 1, &[&a, &b], true);
        assert_eq!(inputs.models[0].len(), 3 * 64 * 64);
        assert_eq!(inputs.models[1].len(), 3 * 320 * 320);
        let q = inputs.quality.unwrap();
        assert_eq!(q.len(), 256 * 256);
        assert!(q.iter().all(|g| (g - 18.15).abs() < 0.5));
    }

    #[test]
    fn a_portrait_photo_is_shrunk_then_turned_upright() {
        // Stored 4000×3000 with orientation 6: upright it is 3000 wide and
        // 4000 tall, left half dark (the stored top half), right half light.
        let img = RgbImage::from_fn(4000, 3000, |_, y| {
            let v = if y < 1500 { 255 } else { 0 };
            image::Rgb([v, v, v])
        });
        let a = spec(64, 64, Fit::Stretch);
        let inputs = Inputs::new(&img, 6, &[&a], true);
        let q = inputs.quality.unwrap();
        let (left, right) = (q[128 * 256 + 10], q[128 * 256 + 245]);
        assert!(left < 1.0 && right > 254.0, "left {left}, right {right}");
        let want = Inputs::new(&apply_orientation(img, 6), 1, &[&a], true);
        let diff = want.models[0]
            .iter()
            .zip(&inputs.models[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 0.05, "largest difference {diff}");
    }
}
