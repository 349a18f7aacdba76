//! The validation policy: what is allowed and the limits. In standalone mode
//! it comes from the command line; in the cluster from a `ValidationPolicy`.

use crate::format::Format;
use crate::setting::{Setting, Spelling};
use crate::verdict::{Reason, Rejection};
use serde::{Deserialize, Serialize};

/// Limits and allow-lists applied to every batch and image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Policy {
    /// Image formats accepted (JPEG, PNG, WebP, HEIC and AVIF by default).
    pub allowed_formats: Vec<Format>,
    /// Most entries one archive may have.
    pub max_entries: u64,
    /// Most bytes one upload may have (the zip itself).
    pub max_upload_bytes: u64,
    /// Most uncompressed bytes all entries together may declare.
    pub max_total_uncompressed_bytes: u64,
    /// Most bytes one entry may inflate to.
    pub max_entry_bytes: u64,
    /// Highest uncompressed / compressed ratio of an entry.
    pub max_compression_ratio: u64,
    /// Widest and tallest image, in pixels.
    pub max_dimension: u32,
    /// Most pixels of an image (width × height).
    pub max_pixels: u64,
    /// An image whose PDQ hash is within this many bits (at most 31) of a
    /// stored image's is a near duplicate of it; `None` turns near
    /// duplicates off. Hashes of quality 49 or less never match.
    pub near_duplicate_distance: Option<u32>,
    /// Quality checks: blank, blur, exposure.
    pub quality: QualityPolicy,
    /// TorchScript models every image must pass (all of them).
    pub models: Vec<ModelSpec>,
    /// The audit sample copied for review.
    pub audit: AuditPolicy,
    /// Among whose images an upload is a duplicate: everyone's (`global`,
    /// the default: each image is stored once, but a duplicate verdict
    /// tells an uploader that someone already has it) or its own tenant's
    /// (`tenant`: nothing is learnt about other tenants, and the same image
    /// may be stored for several).
    #[serde(alias = "dedup_scope")]
    pub dedup_scope: DedupScope,
    /// Whether every tenant may list and download every stored image; by
    /// default a tenant sees only the images it stored.
    #[serde(alias = "shared_images")]
    pub shared_images: bool,
    /// How uploads are made safe to store: `strip` (default) removes every
    /// metadata segment losslessly (EXIF with GPS, XMP, comments, unknown
    /// APPn and chunks) and keeps the orientation alone and a valid ICC
    /// profile, so a photo displays as uploaded; `reencode` stores a fresh
    /// encoding of the decoded, upright pixels (content disarm: nothing of
    /// the upload's bytes is kept but the valid ICC profile; JPEG at
    /// quality 90).
    pub sanitize: Sanitize,
    /// What becomes of an HDR photo's gain map (an Ultra HDR JPEG's second
    /// image): `drop` (default) stores the primary alone, `keep` stores a
    /// gain map that decodes strictly and whose metadata parses, with both
    /// images' metadata written anew ([`crate::gain_map`]).
    #[serde(alias = "gain_maps")]
    pub gain_maps: GainMaps,
    /// What becomes of an animated PNG (APNG): `still` (default) stores its
    /// default image, the still that was decoded and checked, without the
    /// animation; `refuse` refuses it as `animated`. An animated WebP is
    /// refused either way (its frames cannot be separated from the still
    /// without re-encoding), as is a HEIF sequence or collection.
    pub animation: Animation,
    /// How the deployment that made this policy spells its settings, so
    /// that a rejection names the one to change ([`crate::setting`]).
    pub spelling: Spelling,
}

/// See [`Policy::sanitize`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Sanitize {
    /// Lossless removal of metadata.
    #[default]
    Strip,
    /// A fresh encoding of the decoded pixels.
    Reencode,
}

/// See [`Policy::gain_maps`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum GainMaps {
    /// Store the primary image alone.
    #[default]
    Drop,
    /// Keep a validated Ultra HDR gain map.
    Keep,
}

/// See [`Policy::animation`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Animation {
    /// Store an APNG's default image, checked, without the animation.
    #[default]
    Still,
    /// Refuse every animation.
    Refuse,
}

/// See [`Policy::dedup_scope`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DedupScope {
    /// Duplicates across all tenants.
    #[default]
    Global,
    /// Duplicates within the uploader's tenant only.
    Tenant,
}

/// Thresholds of the quality checks, measured on a 256×256 grey thumbnail
/// (0–255 levels). `None` turns a check off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct QualityPolicy {
    /// Reject as `blank` below this standard deviation of grey levels.
    #[serde(alias = "min_contrast")]
    pub min_contrast: Option<f32>,
    /// Reject as `blurry` below this variance of the Laplacian.
    #[serde(alias = "min_sharpness")]
    pub min_sharpness: Option<f32>,
    /// Reject as `overexposed` when more than this fraction of pixels is at 250 or above.
    #[serde(alias = "max_overexposed")]
    pub max_overexposed: Option<f32>,
    /// Reject as `underexposed` when more than this fraction of pixels is at 5 or below.
    #[serde(alias = "max_underexposed")]
    pub max_underexposed: Option<f32>,
}

impl Default for QualityPolicy {
    fn default() -> Self {
        Self {
            min_contrast: Some(2.0),
            // Off by default: how sharp a good picture is depends on what
            // it shows (a misty landscape, a studio backdrop).
            min_sharpness: None,
            max_overexposed: Some(0.9),
            max_underexposed: Some(0.9),
        }
    }
}

impl QualityPolicy {
    /// Whether any quality check is on.
    pub fn any(&self) -> bool {
        self.min_contrast.is_some()
            || self.min_sharpness.is_some()
            || self.max_overexposed.is_some()
            || self.max_underexposed.is_some()
    }

    /// Every check off.
    pub fn off() -> Self {
        Self {
            min_contrast: None,
            min_sharpness: None,
            max_overexposed: None,
            max_underexposed: None,
        }
    }
}

/// A TorchScript classifier and the rules by which it rejects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Names the model in scores and rejections.
    pub name: String,
    /// Where the TorchScript file is: a file path, or `blob:KEY` for an
    /// object in the blob store (the S3 bucket in the cluster).
    pub source: String,
    /// Input size in pixels (RGB, channels first).
    pub width: u32,
    /// Input height in pixels.
    pub height: u32,
    /// Per-channel mean subtracted after scaling pixels to 0–1.
    #[serde(default = "zero3")]
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after the mean.
    #[serde(default = "one3")]
    pub std: [f32; 3],
    /// How the image is fitted to the input size.
    #[serde(default)]
    pub fit: Fit,
    /// What the model's output `[batch, labels]` means.
    pub output: Output,
    /// The output's labels, in order.
    pub labels: Vec<String>,
    /// Reject when any of these labels scores at or above its threshold.
    #[serde(default)]
    pub reject: Vec<RejectRule>,
    /// The only batch size the model runs at (a trace that fixed it);
    /// smaller batches are padded.
    #[serde(
        default,
        alias = "fixed_batch",
        skip_serializing_if = "Option::is_none"
    )]
    pub fixed_batch: Option<usize>,
}

fn zero3() -> [f32; 3] {
    [0.0; 3]
}

fn one3() -> [f32; 3] {
    [1.0; 3]
}

/// How an image is fitted to a model's input size.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Resized to exactly the input size (aspect ratio not kept).
    #[default]
    Stretch,
    /// Resized to fit inside, keeping the aspect ratio, and padded with black.
    Pad,
}

/// What a model's raw output is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// Independent logits per label: scores are their sigmoids.
    Sigmoid,
    /// Logits of mutually exclusive classes: scores are their softmax.
    Softmax,
    /// Scores already between 0 and 1.
    Probabilities,
}

/// Reject when `label` scores at least `at_least`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectRule {
    /// One of the model's labels.
    pub label: String,
    /// The threshold, 0–1.
    #[serde(alias = "at_least")]
    pub at_least: f32,
}

/// Which entries are copied to the audit area for review.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AuditPolicy {
    /// Fraction of each batch's entries (0–1), picked deterministically from
    /// the batch id and entry index, whatever their verdict.
    #[serde(alias = "sample_rate")]
    pub sample_rate: f64,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        Self { sample_rate: 0.1 }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_formats: vec![
                Format::Jpeg,
                Format::Png,
                Format::Webp,
                Format::Heic,
                Format::Avif,
            ],
            max_entries: 10_000,
            max_upload_bytes: 8 << 30,
            max_total_uncompressed_bytes: 16 << 30,
            max_entry_bytes: 64 << 20,
            max_compression_ratio: 50,
            max_dimension: 16_384,
            max_pixels: 50_000_000,
            near_duplicate_distance: Some(crate::pdq::MATCH_DISTANCE),
            quality: QualityPolicy::default(),
            models: Vec::new(),
            audit: AuditPolicy::default(),
            dedup_scope: DedupScope::Global,
            shared_images: false,
            sanitize: Sanitize::Strip,
            gain_maps: GainMaps::Drop,
            animation: Animation::Still,
            spelling: Spelling::default(),
        }
    }
}

impl Policy {
    /// Refuses dimensions over the policy's budget, before any pixel allocation.
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<(), Rejection> {
        let pixels = u64::from(width) * u64::from(height);
        if width > self.max_dimension || height > self.max_dimension || pixels > self.max_pixels {
            return Err(Rejection::new(
                Reason::DimensionsTooLarge,
                format!(
                    "image is {width}×{height} ({pixels} pixels); the policy allows {} pixels per side and {} in all ({})",
                    self.max_dimension,
                    self.max_pixels,
                    self.spelling.name(Setting::Dimensions)
                ),
            ));
        }
        Ok(())
    }

    /// Whether `format` may be stored.
    pub fn allows(&self, format: Format) -> bool {
        self.allowed_formats.contains(&format)
    }

    /// Whether images need their pixels checked beyond decoding (quality or models).
    pub fn has_checks(&self) -> bool {
        self.quality.any() || !self.models.is_empty()
    }
}
