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

/// One shrink of a large photo by averaging whole `k × k` blocks (integer
/// sums, one pass), so that each input's own resize reads a few hundred
/// thousand pixels, not millions: `k` is the largest that keeps the
/// shorter side at least `largest` and leaves an even remainder on both
/// axes (so the blocks are laid symmetrically: a portrait photo shrunk then
/// turned still matches one turned first; photos' even sides always allow
/// an even `k`). The result's shorter side is below `2 × largest`, so
/// shrinking it again changes nothing, and a decoder process can send it
/// instead of the whole picture. A picture whose shorter side is under
/// `2 × largest` stays as it is; one whose sides allow no such block is
/// area-averaged to a shorter side of `largest`.
///
/// `image`'s `thumbnail` alone on a 12 MP photo cost 35 ms, a fifth of
/// the standalone server's CPU per photo; on the 1000 × 750 picture a
/// 12 MP photo decodes to at a quarter scale, 7 ms (perf,
/// docs/benchmarks.md). The block sums cost a fraction of either.
pub fn reduced(rgb: &RgbImage, largest: u32) -> RgbImage {
    let largest = largest.max(1);
    let short = rgb.width().min(rgb.height());
    if short < 2 * largest {
        return rgb.clone();
    }
    let even = |len: u32, k: u32| (len.div_ceil(k) * k - len).is_multiple_of(2);
    let fits = |k: u32| short.div_ceil(k) >= largest && short.div_ceil(k) < 2 * largest;
    match (2..=short / largest)
        .rev()
        .find(|&k| fits(k) && even(rgb.width(), k) && even(rgb.height(), k))
    {
        Some(k) => block_average(rgb, k),
        None => {
            let (w, h) = scaled(rgb.width(), rgb.height(), largest as f32 / short as f32);
            imageops::thumbnail(rgb, w.max(largest), h.max(largest))
        }
    }
}

/// The mean of each `k × k` block, rounded. The blocks are laid about the
/// centre (the edge blocks share what is left over; evenly when it is
/// even), so turning or mirroring a picture maps its blocks onto blocks
/// and a photo shrunk then turned upright matches one turned then shrunk. Rows
/// are summed into one accumulator row (which vectorises), then each
/// block's columns.
fn block_average(src: &RgbImage, k: u32) -> RgbImage {
    let (w, h) = src.dimensions();
    let (ow, oh) = (w.div_ceil(k), h.div_ceil(k));
    // Block `i` of `n` over `len` pixels: [start, end).
    let span = |i: u32, n: u32, len: u32| {
        let lead = (n * k - len) / 2;
        ((i * k).saturating_sub(lead), ((i + 1) * k - lead).min(len))
    };
    let raw = src.as_raw();
    let stride = 3 * w as usize;
    let mut out = Vec::with_capacity(3 * (ow * oh) as usize);
    let mut acc = vec![0u32; stride];
    for by in 0..oh {
        let (y0, y1) = span(by, oh, h);
        acc.fill(0);
        for row in raw[y0 as usize * stride..y1 as usize * stride].chunks_exact(stride) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += u32::from(v);
            }
        }
        for bx in 0..ow {
            let (x0, x1) = span(bx, ow, w);
            let n = (y1 - y0) * (x1 - x0);
            let mut sum = [0u32; 3];
            for px in acc[3 * x0 as usize..3 * x1 as usize].chunks_exact(3) {
                sum[0] += px[0];
                sum[1] += px[1];
                sum[2] += px[2];
            }
            out.extend(sum.map(|s| ((s + n / 2) / n) as u8));
        }
    }
    RgbImage::from_raw(ow, oh, out).expect("the size was computed from the blocks")
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

    #[test]
    fn blocks_average_with_rounding_and_narrower_edge_blocks() {
        // 6×3, blocks of 4 about the centre: columns [0..3) and [3..6)
        // (the 2 left over shared), rows [0..3) (the 1 left over, after).
        let img = RgbImage::from_fn(6, 3, |x, y| image::Rgb([(10 * x + y) as u8, 7, 255]));
        let b = block_average(&img, 4);
        assert_eq!(b.dimensions(), (2, 1));
        assert_eq!(
            b.get_pixel(0, 0).0,
            [11, 7, 255],
            "(0 + 1 + 2 + 10 + ... + 22) / 9"
        );
        assert_eq!(b.get_pixel(1, 0).0, [41, 7, 255], "(30 + ... + 52) / 9");
        // 5 wide in blocks of 2: [0..2), [2..4), [4] (odd: the 1 after).
        let b = block_average(
            &RgbImage::from_fn(5, 1, |x, _| image::Rgb([x as u8, 0, 0])),
            2,
        );
        assert_eq!(
            b.as_raw(),
            &vec![1, 0, 0, 3, 0, 0, 4, 0, 0],
            "0.5 and 2.5 round up"
        );
    }

    /// Smooth gradients with fine texture.
    fn textured(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let t = ((x * 7 + y * 13) % 17) as u8;
            image::Rgb([
                (x * 250 / w) as u8 ^ t,
                (y * 250 / h) as u8,
                ((x + y) * 250 / (w + h)) as u8 ^ (t / 2),
            ])
        })
    }

    #[test]
    fn a_photo_shrinks_as_one_area_average_would_within_a_level_or_two() {
        // (picture, largest input) → the shrunk size: the largest block
        // keeping the shorter side at least `largest`, with even
        // remainders (4000 × 3000 for 256: 11 leaves 3 over on 3000; 10).
        type Case = ((u32, u32), u32, (u32, u32));
        let cases: [Case; 5] = [
            // A 12 MP photo decoded at full size (re-encoding, PNG, HEIC).
            ((4000, 3000), 256, (400, 300)),
            ((3000, 4000), 256, (300, 400)),
            // The same decoded at a quarter scale (JPEG): blocks of 2.
            ((1000, 750), 256, (500, 375)),
            ((1000, 750), 320, (500, 375)),
            // Odd sides allow no even remainder: one area average.
            ((1001, 751), 256, (341, 256)),
        ];
        for ((w, h), largest, want) in cases {
            let img = textured(w, h);
            let got = reduced(&img, largest);
            assert_eq!(got.dimensions(), want, "{w}×{h} for {largest}");
            let direct = imageops::thumbnail(&img, want.0, want.1);
            let diffs: Vec<i32> = got
                .as_raw()
                .iter()
                .zip(direct.as_raw())
                .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
                .collect();
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            let max = diffs.iter().copied().max().unwrap_or(0);
            assert!(mean < 1.0 && max <= 16, "{w}×{h}: mean {mean}, max {max}");
            // Shrinking again changes nothing (a decoder child sends this).
            assert_eq!(reduced(&got, largest), got, "{w}×{h} again");
        }
        // Under twice the input a side: as it is.
        let small = textured(600, 400);
        assert_eq!(reduced(&small, 256), small);
    }

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
