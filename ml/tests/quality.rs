//! The quality checks on generated images: blank, blurred, over- and
//! under-exposed, and a sharp, well-exposed picture that passes.

use image::{Rgb, RgbImage};
use picsift_core::orientation::Oriented;
use picsift_core::policy::{Policy, QualityPolicy};
use picsift_core::verdict::Reason;
use picsift_ml::{DeviceChoice, Options, Runtime};

/// A textured, well-exposed picture: gradients, discs and fine detail.
fn picture(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let disc = ((u - 0.4).powi(2) + (v - 0.5).powi(2) < 0.05) as u8 as f32;
        let detail = (((x / 3) ^ (y / 5)) % 7) as f32 * 9.0;
        let r = 60.0 + 90.0 * u + 60.0 * disc + detail;
        let g = 70.0 + 80.0 * v + detail * 0.5;
        let b = 120.0 - 50.0 * u + 40.0 * disc;
        Rgb([r.min(255.0) as u8, g.min(255.0) as u8, b.min(255.0) as u8])
    })
}

fn map(img: &RgbImage, f: impl Fn(f32) -> f32) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        Rgb(img
            .get_pixel(x, y)
            .0
            .map(|c| f(f32::from(c)).clamp(0.0, 255.0) as u8))
    })
}

/// 93% of the picture clipped to `level`: a blown-out (or crushed) photo
/// with some detail left, so it is not blank.
fn burn(img: &RgbImage, level: u8) -> RgbImage {
    let edge = img.width() * 93 / 100;
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        if x < edge {
            Rgb([level; 3])
        } else {
            *img.get_pixel(x, y)
        }
    })
}

fn policy(quality: QualityPolicy) -> Policy {
    Policy {
        quality,
        ..Policy::default()
    }
}

/// The device under test: `PICSIFT_ML_DEVICE` (scripts/gpu-check.sh sets
/// `cuda`), else the GPU when there is one.
fn runtime(batch: usize) -> Runtime {
    Runtime::new(Options {
        device: DeviceChoice::from_env().unwrap(),
        batch_size: batch,
        ..Options::default()
    })
    .unwrap()
}

fn with_blur() -> QualityPolicy {
    QualityPolicy {
        min_sharpness: Some(50.0),
        ..QualityPolicy::default()
    }
}

#[test]
fn each_quality_check_rejects_its_image_and_passes_a_good_picture() {
    let rt = runtime(8);
    let checker = rt.checker(&policy(with_blur())).unwrap();
    let good = picture(800, 600);
    let cases = [
        ("good", good.clone(), None),
        (
            "blank",
            RgbImage::from_pixel(640, 480, Rgb([128, 128, 130])),
            Some(Reason::Blank),
        ),
        (
            "blurred",
            image::imageops::blur(&good, 12.0),
            Some(Reason::Blurry),
        ),
        ("overexposed", burn(&good, 255), Some(Reason::Overexposed)),
        ("underexposed", burn(&good, 0), Some(Reason::Underexposed)),
    ];
    for (name, img, want) in cases {
        let out = checker.check_blocking(&img).unwrap();
        let q = out.checks.quality.expect("quality measured");
        eprintln!("{name}: {q:?}");
        assert_eq!(
            out.rejection.as_ref().map(|r| r.reason),
            want,
            "{name}: {q:?} {:?}",
            out.rejection
        );
        assert!(out.checks.scores.is_empty());
    }
}

#[test]
fn quality_thresholds_off_pass_everything_but_still_measure() {
    let rt = runtime(4);
    let off = QualityPolicy {
        min_contrast: None,
        min_sharpness: None,
        max_overexposed: Some(1.0),
        max_underexposed: None,
    };
    let checker = rt.checker(&policy(off)).unwrap();
    let out = checker
        .check_blocking(&RgbImage::from_pixel(64, 64, Rgb([255, 255, 255])))
        .unwrap();
    assert_eq!(out.rejection, None);
    let q = out.checks.quality.unwrap();
    assert!(q.contrast < 0.01 && q.overexposed > 0.99, "{q:?}");
    // No check at all: nothing to run.
    assert!(
        rt.checker(&policy(QualityPolicy::off()))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn batched_and_single_quality_measurements_agree() {
    let images: Vec<RgbImage> = (0..20)
        .map(|i| {
            map(&picture(300 + i * 7, 200 + i * 3), |c| {
                c * (0.5 + i as f32 / 20.0)
            })
        })
        .collect();
    let one = runtime(1).checker(&policy(with_blur())).unwrap();
    let many = runtime(64).checker(&policy(with_blur())).unwrap();
    let single: Vec<_> = images
        .iter()
        .map(|i| one.check_blocking(i).unwrap())
        .collect();
    let pending: Vec<_> = images
        .iter()
        .map(|i| many.submit(many.inputs(&Oriented::upright(i.clone()))))
        .collect();
    for (p, s) in pending.into_iter().zip(single) {
        let b = p.wait_blocking().unwrap();
        let (b, s) = (b.checks.quality.unwrap(), s.checks.quality.unwrap());
        assert!(
            (b.contrast - s.contrast).abs() < 1e-3 * s.contrast.max(1.0),
            "{b:?} {s:?}"
        );
        assert!(
            (b.sharpness - s.sharpness).abs() < 1e-3 * s.sharpness.max(1.0),
            "{b:?} {s:?}"
        );
        assert_eq!(b.overexposed, s.overexposed);
    }
}
