//! Quality measurements as tensor operations on the inference device:
//! contrast (standard deviation of grey levels), sharpness (variance of the
//! Laplacian) and the fractions of blown-out and crushed pixels, over a
//! 256×256 grey thumbnail.

use picsift_core::policy::QualityPolicy;
use picsift_core::setting::{Setting, Spelling};
use picsift_core::verdict::{Quality, Reason, Rejection};
use tch::{Device, Kind, Tensor};

/// Side of the grey thumbnail measured.
pub(crate) const SIDE: u32 = 256;
/// Values measured per image.
pub(crate) const OUTPUTS: usize = 4;

pub(crate) struct Runner {
    device: Device,
    laplacian: Tensor,
}

impl Runner {
    pub(crate) fn new(device: Device) -> Self {
        let laplacian = Tensor::from_slice(&[0f32, 1., 0., 1., -4., 1., 0., 1., 0.])
            .view([1, 1, 3, 3])
            .to_device(device);
        Self { device, laplacian }
    }

    /// `n` thumbnails (0–255 grey, row-major) in, `n × OUTPUTS` values out.
    pub(crate) fn measure(&self, flat: &[f32], n: usize) -> Result<Vec<f32>, String> {
        let side = i64::from(SIDE);
        let n = n as i64;
        let x = Tensor::from_slice(flat)
            .view([n, 1, side, side])
            .to_device(self.device);
        let out = tch::no_grad(|| {
            let per_image = |t: &Tensor| t.reshape([n, -1]);
            let contrast = per_image(&x).std_dim(1, true, false);
            let lap = x.conv2d(&self.laplacian, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
            let sharpness = per_image(&lap).var_dim(1, true, false);
            let over = per_image(&x.ge(250.0).to_kind(Kind::Float)).mean_dim(1, false, Kind::Float);
            let under = per_image(&x.le(5.0).to_kind(Kind::Float)).mean_dim(1, false, Kind::Float);
            Tensor::stack(&[contrast, sharpness, over, under], 1)
        });
        Vec::<f32>::try_from(out.to_device(Device::Cpu).flatten(0, -1))
            .map_err(|e| format!("reading the quality measurements failed: {e}"))
    }
}

/// The measurements of one image, from the runner's values.
pub(crate) struct Measured(pub(crate) Quality);

impl Measured {
    pub(crate) fn from_vec(v: &[f32]) -> Self {
        Self(Quality {
            contrast: crate::round(v[0]),
            sharpness: crate::round(v[1]),
            overexposed: crate::round(v[2]),
            underexposed: crate::round(v[3]),
        })
    }
}

/// The first quality check that fails, in order: blank, under-exposed,
/// over-exposed, blurry (a blank image is also "blurry"; the first reason
/// is the useful one).
pub(crate) fn judge(policy: &QualityPolicy, spelling: Spelling, q: &Quality) -> Option<Rejection> {
    if let Some(min) = policy.min_contrast
        && q.contrast < f64::from(min)
    {
        return Some(Rejection::new(
            Reason::Blank,
            format!(
                "grey-level contrast {:.2} is below the policy's minimum {min} ({})",
                q.contrast,
                spelling.name(Setting::MinContrast)
            ),
        ));
    }
    if let Some(max) = policy.max_underexposed
        && q.underexposed > f64::from(max)
    {
        return Some(Rejection::new(
            Reason::Underexposed,
            format!(
                "{:.0}% of the pixels are black (5 or below); the policy allows {:.0}% ({})",
                q.underexposed * 100.0,
                max * 100.0,
                spelling.name(Setting::MaxUnderexposed)
            ),
        ));
    }
    if let Some(max) = policy.max_overexposed
        && q.overexposed > f64::from(max)
    {
        return Some(Rejection::new(
            Reason::Overexposed,
            format!(
                "{:.0}% of the pixels are white (250 or above); the policy allows {:.0}% ({})",
                q.overexposed * 100.0,
                max * 100.0,
                spelling.name(Setting::MaxOverexposed)
            ),
        ));
    }
    if let Some(min) = policy.min_sharpness
        && q.sharpness < f64::from(min)
    {
        return Some(Rejection::new(
            Reason::Blurry,
            format!(
                "sharpness (variance of the Laplacian) {:.1} is below the policy's minimum {min} ({})",
                q.sharpness,
                spelling.name(Setting::MinSharpness)
            ),
        ));
    }
    None
}
