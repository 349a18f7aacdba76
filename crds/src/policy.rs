//! `ValidationPolicy`: what a batch may contain and the limits it is held to.

use kube::{CustomResource, KubeSchema};
use picsift_core::format::Format;
use picsift_core::policy::{
    Animation, AuditPolicy, DedupScope, GainMaps, ModelSpec, Policy, QualityPolicy, Sanitize,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What uploads referencing this policy may contain, and their limits.
/// Batches name it in `spec.policyRef`; the gateway uses `default` unless
/// the upload names another.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "picsift.io",
    version = "v1alpha1",
    kind = "ValidationPolicy",
    doc = "What uploads that reference it may contain, and the limits they are held to.",
    namespaced,
    shortname = "vp",
    category = "picsift",
    printcolumn = r#"{"name":"Formats","type":"string","jsonPath":".spec.formats"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ValidationPolicySpec {
    /// Image formats that may be stored; anything else is rejected with
    /// `format_not_allowed`. Defaults to JPEG, PNG, WebP, HEIC and AVIF.
    #[serde(default = "default_formats")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("allow at least one format"))]
    pub formats: Vec<ImageFormat>,
    /// Size and count limits; unset limits take picsift's defaults.
    #[serde(default)]
    pub limits: Limits,
    /// Near-duplicate matching by PDQ perceptual hash (across all of
    /// picsift's stored images).
    #[serde(default)]
    pub near_duplicates: NearDuplicates,
    /// Quality checks on a 256×256 grey thumbnail: blank (minContrast),
    /// blur (minSharpness), over- and under-exposure. An unset threshold
    /// turns its check off; defaults: minContrast 2, maxOverexposed 0.9,
    /// maxUnderexposed 0.9, blur off.
    #[serde(default)]
    pub quality: QualityPolicy,
    /// TorchScript models every image must pass. Sources are `blob:KEY`
    /// (an object in picsift's bucket) or a path inside the worker pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelSpec>,
    /// The audit sample: the fraction of each batch's entries copied, with
    /// their verdicts and scores, for review. Default 0.1.
    #[serde(default)]
    pub audit: AuditPolicy,
    /// Among whose images an upload is a duplicate (exact and near):
    /// `global` (default) stores each image once, but a duplicate verdict
    /// tells an uploader that another tenant has the image (its id is
    /// shown to admins only); `tenant` compares with the uploader's own
    /// images only, so nothing leaks, at the cost of storing an image once
    /// per tenant that uploads it.
    #[serde(default)]
    pub dedup_scope: DedupScope,
    /// Whether every tenant may list and download every stored image.
    /// Default false: a tenant sees the images it stored.
    #[serde(default)]
    pub shared_images: bool,
    /// How images are made safe to store: `strip` (default: metadata
    /// removed losslessly, EXIF and GPS included; the orientation is kept
    /// alone and an ICC profile only when it parses, so photos display
    /// upright and in their colours) or `reencode` (a fresh encoding of
    /// the decoded, upright pixels: nothing of the upload's bytes is kept
    /// but a valid ICC profile).
    #[serde(default)]
    pub sanitize: Sanitize,
    /// An HDR photo's gain map (an Ultra HDR JPEG's second image): `drop`
    /// (default: the primary is stored alone) or `keep` (kept when it
    /// decodes strictly and its metadata parses; both images' metadata
    /// written anew).
    #[serde(default)]
    pub gain_maps: GainMaps,
    /// An animated PNG: `still` (default: its default image, decoded and
    /// checked, is stored without the animation) or `refuse`. Animated
    /// WebP and HEIF sequences are refused either way.
    #[serde(default)]
    pub animation: Animation,
}

/// Near-duplicate matching: an image whose PDQ hash is within
/// `maxDistance` bits of a stored image's gets verdict duplicate, kind
/// near. Hashes of quality 49 or less (blank, nearly uniform images) never
/// match.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NearDuplicates {
    /// Whether near duplicates are refused. Default true.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Most PDQ bits apart that still count as the same picture. Default 31
    /// (ThreatExchange's threshold); at most 31.
    #[serde(default = "default_near_distance")]
    #[schemars(range(min = 0, max = 31))]
    pub max_distance: i32,
}

impl Default for NearDuplicates {
    fn default() -> Self {
        Self {
            enabled: true,
            max_distance: default_near_distance(),
        }
    }
}

fn enabled() -> bool {
    true
}

fn default_near_distance() -> i32 {
    picsift_core::pdq::MATCH_DISTANCE as i32
}

fn default_formats() -> Vec<ImageFormat> {
    vec![
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Webp,
        ImageFormat::Heic,
        ImageFormat::Avif,
    ]
}

/// An image format picsift can verify.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// JPEG (JFIF or Exif).
    Jpeg,
    /// PNG.
    Png,
    /// WebP.
    Webp,
    /// HEIC (HEVC in HEIF, the iPhone's default).
    Heic,
    /// AVIF (AV1 in HEIF).
    Avif,
}

impl From<ImageFormat> for Format {
    fn from(f: ImageFormat) -> Self {
        match f {
            ImageFormat::Jpeg => Format::Jpeg,
            ImageFormat::Png => Format::Png,
            ImageFormat::Webp => Format::Webp,
            ImageFormat::Heic => Format::Heic,
            ImageFormat::Avif => Format::Avif,
        }
    }
}

/// Limits on an upload and its images. Error messages name these fields.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest upload (the zip itself), in bytes. Default 8 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_upload_bytes: Option<i64>,
    /// Most entries one archive may hold. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_entries: Option<i64>,
    /// Most uncompressed bytes all entries together may declare. Default 16 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_total_uncompressed_bytes: Option<i64>,
    /// Most bytes one entry may inflate to. Default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_entry_bytes: Option<i64>,
    /// Highest uncompressed-to-compressed ratio of an entry. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_compression_ratio: Option<i64>,
    /// Widest and tallest image, in pixels. Default 16384.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_dimension: Option<i64>,
    /// Most pixels of one image (width × height). Default 50000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pixels: Option<i64>,
}

impl ValidationPolicySpec {
    /// The policy the pipeline applies: this spec over picsift's defaults.
    pub fn to_policy(&self) -> Policy {
        let d = Policy::default();
        let l = &self.limits;
        let pick =
            |v: Option<i64>, default: u64| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default);
        Policy {
            allowed_formats: self.formats.iter().map(|&f| f.into()).collect(),
            max_entries: pick(l.max_entries, d.max_entries),
            max_upload_bytes: pick(l.max_upload_bytes, d.max_upload_bytes),
            max_total_uncompressed_bytes: pick(
                l.max_total_uncompressed_bytes,
                d.max_total_uncompressed_bytes,
            ),
            max_entry_bytes: pick(l.max_entry_bytes, d.max_entry_bytes),
            max_compression_ratio: pick(l.max_compression_ratio, d.max_compression_ratio),
            max_dimension: u32::try_from(pick(l.max_dimension, d.max_dimension.into()))
                .unwrap_or(d.max_dimension),
            max_pixels: pick(l.max_pixels, d.max_pixels),
            near_duplicate_distance: self
                .near_duplicates
                .enabled
                .then(|| self.near_duplicates.max_distance.clamp(0, 31) as u32),
            quality: self.quality.clone(),
            models: self.models.clone(),
            audit: self.audit.clone(),
            dedup_scope: self.dedup_scope,
            shared_images: self.shared_images,
            sanitize: self.sanitize,
            gain_maps: self.gain_maps,
            animation: self.animation,
            spelling: picsift_core::setting::Spelling::ValidationPolicy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_is_the_default_policy() {
        let spec: ValidationPolicySpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.to_policy(), Policy::default());
    }

    #[test]
    fn set_limits_override_defaults() {
        let spec: ValidationPolicySpec = serde_json::from_value(serde_json::json!({
            "formats": ["jpeg", "png"],
            "limits": {"maxEntries": 5, "maxPixels": 1000}
        }))
        .unwrap();
        let p = spec.to_policy();
        assert_eq!(p.allowed_formats, vec![Format::Jpeg, Format::Png]);
        assert_eq!(p.max_entries, 5);
        assert_eq!(p.max_pixels, 1000);
        assert_eq!(p.max_entry_bytes, Policy::default().max_entry_bytes);
    }
}
