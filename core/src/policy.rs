//! The validation policy: what is allowed and the limits. In standalone mode
//! it comes from the command line; in the cluster from a `ValidationPolicy`.

use crate::format::Format;
use serde::{Deserialize, Serialize};

/// Limits and allow-lists applied to every batch and image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Policy {
    /// Image formats accepted (JPEG only by default).
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
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_formats: vec![Format::Jpeg],
            max_entries: 10_000,
            max_upload_bytes: 8 << 30,
            max_total_uncompressed_bytes: 16 << 30,
            max_entry_bytes: 64 << 20,
            max_compression_ratio: 50,
            max_dimension: 16_384,
            max_pixels: 50_000_000,
            near_duplicate_distance: Some(crate::pdq::MATCH_DISTANCE),
        }
    }
}

impl Policy {
    /// Whether `format` may be stored.
    pub fn allows(&self, format: Format) -> bool {
        self.allowed_formats.contains(&format)
    }
}
