//! Verdicts and the reason codes behind them. `docs/verdicts.md` documents
//! every code; a test keeps the two in step.

use serde::{Deserialize, Serialize};

/// The outcome for one archive entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// Passed every check and is stored.
    Accepted,
    /// Same image as one already stored (`duplicate_of`).
    Duplicate,
    /// Refused for a stable [`Reason`].
    Rejected,
    /// Could not be processed for a reason that is not the image's fault.
    Failed,
}

impl VerdictKind {
    /// The stable lower-case name used in the API and the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    /// Parses [`Self::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accepted" => Self::Accepted,
            "duplicate" => Self::Duplicate,
            "rejected" => Self::Rejected,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// How a duplicate matched its original.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateKind {
    /// Byte-identical after sanitising (same SHA-256).
    Exact,
    /// The same picture by its PDQ perceptual hash, within the policy's distance.
    Near,
}

impl DuplicateKind {
    /// The stable lower-case name used in the API and the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Near => "near",
        }
    }
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $kind:ident, $remedy:literal; )*) => {
        /// Why an entry was rejected or failed. Codes are stable API.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Reason { $( $(#[$doc])* $variant, )* }

        impl Reason {
            /// Every reason, in documentation order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The stable snake_case code.
            pub fn code(self) -> &'static str { match self { $(Reason::$variant => $code,)* } }

            /// Whether this reason rejects the image or reports a failure
            /// that is not the image's fault.
            pub fn kind(self) -> VerdictKind { match self { $(Reason::$variant => VerdictKind::$kind,)* } }

            /// What the uploader can do about it.
            pub fn remedy(self) -> &'static str { match self { $(Reason::$variant => $remedy,)* } }

            /// Parses [`Self::code`] back.
            pub fn parse(code: &str) -> Option<Self> {
                match code { $($code => Some(Reason::$variant),)* _ => None }
            }
        }
    };
}

reasons! {
    /// The entry name is absolute, climbs out with `..`, holds control
    /// characters or is too long.
    UnsafeName = "unsafe_name", Rejected, "Use plain relative file names inside the archive.";
    /// The entry is a directory, not a file.
    DirectoryEntry = "directory_entry", Rejected, "Nothing to do: directories carry no image. Zip files only to avoid the entry.";
    /// The entry is a symbolic link.
    Symlink = "symlink", Rejected, "Put the image itself in the archive, not a link to it.";
    /// The entry is encrypted.
    Encrypted = "encrypted", Rejected, "Upload archives without a password.";
    /// The entry uses a compression method other than stored or deflate.
    UnsupportedCompression = "unsupported_compression", Rejected, "Use stored or deflate compression (what every zip tool makes by default).";
    /// The entry is itself an archive (zip, gzip, tar, 7z, rar ...).
    NestedArchive = "nested_archive", Rejected, "Unpack nested archives and upload their images directly.";
    /// The entry inflates to a size other than the one it declares.
    SizeMismatch = "size_mismatch", Rejected, "Re-create the archive with a standard zip tool.";
    /// The entry's compression ratio is above the policy's limit (a zip bomb).
    CompressionRatio = "compression_ratio", Rejected, "Images barely compress; an entry this compressible is not an image.";
    /// The entry is larger than the policy allows for one image.
    EntryTooLarge = "entry_too_large", Rejected, "Upload smaller files, or ask for a policy with a higher limit per entry (the detail names the setting).";
    /// The bytes are not any image format picsift knows.
    NotAnImage = "not_an_image", Rejected, "Upload only image files; the name's extension does not matter, the bytes do.";
    /// The bytes are an image format the policy does not allow.
    FormatNotAllowed = "format_not_allowed", Rejected, "Convert the image to an allowed format (JPEG, PNG, WebP, HEIC or AVIF by default).";
    /// The image header cannot be parsed.
    InvalidHeader = "invalid_header", Rejected, "Re-export the image with a standard tool.";
    /// Width, height or pixel count is above the policy's limits.
    DimensionsTooLarge = "dimensions_too_large", Rejected, "Downscale the image below the policy's limits.";
    /// The image data ends before the image does.
    Truncated = "truncated", Rejected, "Upload the complete file; it was cut off.";
    /// There are bytes after the image's end marker (for example an appended archive).
    TrailingData = "trailing_data", Rejected, "Remove what follows the image, or re-export it.";
    /// The image is an animation picsift cannot store as a checked still.
    Animated = "animated", Rejected, "Upload a still image (one frame); animations are not accepted.";
    /// The full decode failed.
    DecodeError = "decode_error", Rejected, "Re-export the image with a standard tool.";
    /// The image is blank or almost uniform (grey-level contrast below the policy's minimum).
    Blank = "blank", Rejected, "Upload a picture with content; this one is (nearly) a single colour.";
    /// The image is blurred (variance of the Laplacian below the policy's minimum).
    Blurry = "blurry", Rejected, "Upload a sharper picture.";
    /// Too many pixels are blown out to white.
    Overexposed = "overexposed", Rejected, "Upload a correctly exposed picture.";
    /// Too many pixels are crushed to black.
    Underexposed = "underexposed", Rejected, "Upload a correctly exposed picture.";
    /// A model of the policy scored one of its reject labels at or above the threshold.
    ModelRejected = "model_rejected", Rejected, "The content is not allowed by the policy's models; the detail names the model, label, score and threshold.";
    /// The policy has ML models and the image's colour space (CMYK) cannot be checked.
    Uncheckable = "uncheckable", Rejected, "Convert the image to RGB (sRGB) so its content can be checked.";
    /// Decoding the entry crashed: it panicked, or it killed its worker
    /// (an abort, out of memory) on two deliveries of its task.
    DecoderCrash = "decoder_crash", Rejected, "Re-export the image with a standard tool; this file crashes image decoders.";
    /// Decoding the entry ran past the wall-clock limit in its decoder
    /// process (`picsift serve`), which was stopped.
    DecodeTimeout = "decode_timeout", Rejected, "Re-export the image with a standard tool; this file takes a decoder far too long.";
    /// Processing the entry failed inside picsift; retrying may help.
    InternalError = "internal_error", Failed, "Upload the image again; report the batch id if it keeps failing.";
    /// The entry's chunk failed on every delivery and was dead-lettered.
    RetriesExhausted = "retries_exhausted", Failed, "Upload the image again; report the batch id if it keeps failing.";
    /// A storage backend failed while storing the image; retrying may help.
    StorageError = "storage_error", Failed, "Upload the image again later.";
    /// The batch's deadline (UploadBatch.spec.deadlineSeconds, at most 7 days) passed before the entry was checked.
    DeadlineExceeded = "deadline_exceeded", Failed, "Upload the image again in a new batch; ask the cluster admins about worker capacity if batches expire.";
    /// The batch was deleted (its UploadBatch removed) before the entry was checked.
    Cancelled = "cancelled", Failed, "Upload the image again if it is still wanted.";
}

/// The verdict of one entry: what the report shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Accepted, duplicate, rejected or failed.
    pub kind: VerdictKind,
    /// Set for rejected and failed entries.
    pub reason: Option<Reason>,
    /// Human-readable detail.
    pub detail: Option<String>,
    /// The stored image (accepted entries).
    pub image_id: Option<String>,
    /// The image this entry duplicates.
    pub duplicate_of: Option<String>,
    /// How the duplicate matched.
    pub duplicate_kind: Option<DuplicateKind>,
    /// PDQ distance to the original, for near duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<u32>,
    /// What the quality and ML checks measured (every score, whether the
    /// entry passed or not); absent when the checks did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
}

/// The measurements of the quality and ML checks for one image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// The quality measurements (`None` when the policy turns them off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// Every model's score for every label: model name → label → score.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub scores: Scores,
}

/// Model name → label → score (0–1).
pub type Scores = std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>;

/// Quality measurements, taken on a 256×256 grey thumbnail (0–255 scale).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Standard deviation of the grey levels: near 0 for a blank image.
    pub contrast: f64,
    /// Variance of the Laplacian: low for a blurred image.
    pub sharpness: f64,
    /// Fraction of pixels at 250 or above.
    pub overexposed: f64,
    /// Fraction of pixels at 5 or below.
    pub underexposed: f64,
}

impl Verdict {
    /// An accepted entry stored as `image_id`.
    pub fn accepted(image_id: String) -> Self {
        Self {
            kind: VerdictKind::Accepted,
            reason: None,
            detail: None,
            image_id: Some(image_id),
            duplicate_of: None,
            duplicate_kind: None,
            distance: None,
            checks: None,
        }
    }

    /// An exact duplicate of `original`.
    pub fn exact_duplicate(original: String) -> Self {
        Self {
            kind: VerdictKind::Duplicate,
            reason: None,
            detail: Some("identical to an image already stored".into()),
            image_id: None,
            duplicate_of: Some(original),
            duplicate_kind: Some(DuplicateKind::Exact),
            distance: None,
            checks: None,
        }
    }

    /// A near duplicate: the same picture as `original` by PDQ, `distance` bits apart.
    pub fn near_duplicate(original: String, distance: u32) -> Self {
        Self {
            kind: VerdictKind::Duplicate,
            reason: None,
            detail: Some(format!(
                "the same picture as an image already stored (PDQ distance {distance})"
            )),
            image_id: None,
            duplicate_of: Some(original),
            duplicate_kind: Some(DuplicateKind::Near),
            distance: Some(distance),
            checks: None,
        }
    }

    /// A rejection or failure, per the reason's kind.
    pub fn refused(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            kind: reason.kind(),
            reason: Some(reason),
            detail: Some(detail.into()),
            image_id: None,
            duplicate_of: None,
            duplicate_kind: None,
            distance: None,
            checks: None,
        }
    }
}

/// A per-image refusal produced by a pipeline step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The stable code.
    pub reason: Reason,
    /// What exactly was wrong, for the uploader.
    pub detail: String,
}

impl Rejection {
    /// A rejection with its detail.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl From<Rejection> for Verdict {
    fn from(r: Rejection) -> Self {
        Verdict::refused(r.reason, r.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_code_round_trips_and_is_documented() {
        let doc = include_str!("../../docs/verdicts.md");
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.code()), Some(*r));
            assert!(
                doc.contains(&format!("`{}`", r.code())),
                "docs/verdicts.md lacks `{}`",
                r.code()
            );
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.code()));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), *r);
        }
    }

    #[test]
    fn verdict_and_duplicate_kinds_read_back_from_their_stable_names() {
        for kind in [
            VerdictKind::Accepted,
            VerdictKind::Duplicate,
            VerdictKind::Rejected,
            VerdictKind::Failed,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<VerdictKind>(&json).unwrap(), kind);
            assert_eq!(VerdictKind::parse(kind.as_str()), Some(kind));
        }
        for kind in [DuplicateKind::Exact, DuplicateKind::Near] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<DuplicateKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn verdicts_read_back_as_written() {
        let near = Verdict {
            checks: Some(Checks {
                quality: Some(Quality {
                    contrast: 12.5,
                    sharpness: 300.0,
                    overexposed: 0.0,
                    underexposed: 0.125,
                }),
                scores: Scores::new(),
            }),
            ..Verdict::near_duplicate("c".repeat(64), 7)
        };
        for verdict in [
            Verdict::accepted("a".repeat(64)),
            Verdict::exact_duplicate("b".repeat(64)),
            near,
            Verdict::refused(Reason::DecoderCrash, "the decoder crashed twice"),
        ] {
            let json = serde_json::to_string(&verdict).unwrap();
            assert_eq!(
                serde_json::from_str::<Verdict>(&json).unwrap(),
                verdict,
                "{json}"
            );
        }
    }
}
