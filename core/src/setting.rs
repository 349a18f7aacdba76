//! Policy settings named the way the user spelt them. A rejection that
//! says which limit it hit is only useful if the reader can find that
//! limit: under Kubernetes it is a `ValidationPolicy` field
//! (`limits.maxEntryBytes`), for the cluster processes a key of the
//! configuration file (`policy.max_entry_bytes`), for `picsift serve` a
//! flag or a key of its `--policy` file. The policy carries the
//! [`Spelling`] of the deployment that made it, and every message names
//! its [`Setting`] through [`Spelling::name`].

use serde::{Deserialize, Serialize};

/// Where the policy was configured, and so how its settings are spelt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Spelling {
    /// A `ValidationPolicy` object (Kubernetes): camelCase fields.
    #[default]
    ValidationPolicy,
    /// The `[policy]` table of the cluster processes' configuration file.
    ConfigFile,
    /// `picsift serve`: its flag where there is one, else the key of its
    /// `--policy` file.
    Serve,
}

/// A policy setting a rejection can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// The accepted image formats.
    Formats,
    /// Most bytes of one upload.
    MaxUploadBytes,
    /// Most entries of one archive.
    MaxEntries,
    /// Most bytes one entry may inflate to.
    MaxEntryBytes,
    /// Most uncompressed bytes of all entries together.
    MaxTotalUncompressedBytes,
    /// Highest compression ratio of an entry.
    MaxCompressionRatio,
    /// Widest, tallest and largest image.
    Dimensions,
    /// The `blank` check.
    MinContrast,
    /// The `blurry` check.
    MinSharpness,
    /// The `overexposed` check.
    MaxOverexposed,
    /// The `underexposed` check.
    MaxUnderexposed,
    /// A model's reject rules, by the model's name.
    ModelReject,
}

/// One setting's names: (ValidationPolicy field, configuration key under
/// `[policy]`, `picsift serve` flag). A missing key is a built-in limit
/// that deployment cannot change.
fn names(setting: Setting) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    use Setting::*;
    match setting {
        Formats => ("formats", Some("formats"), Some("--formats")),
        MaxUploadBytes => (
            "limits.maxUploadBytes",
            Some("max_upload_bytes"),
            Some("--max-upload-bytes"),
        ),
        MaxEntries => ("limits.maxEntries", Some("max_entries"), None),
        MaxEntryBytes => ("limits.maxEntryBytes", Some("max_entry_bytes"), None),
        MaxTotalUncompressedBytes => ("limits.maxTotalUncompressedBytes", None, None),
        MaxCompressionRatio => ("limits.maxCompressionRatio", None, None),
        Dimensions => (
            "limits.maxDimension and limits.maxPixels",
            Some("max_pixels"),
            None,
        ),
        MinContrast => ("quality.minContrast", Some("quality.min_contrast"), None),
        MinSharpness => ("quality.minSharpness", Some("quality.min_sharpness"), None),
        MaxOverexposed => (
            "quality.maxOverexposed",
            Some("quality.max_overexposed"),
            None,
        ),
        MaxUnderexposed => (
            "quality.maxUnderexposed",
            Some("quality.max_underexposed"),
            None,
        ),
        ModelReject => ("models[].reject", Some("models[].reject"), None),
    }
}

impl Spelling {
    /// Where a user of this deployment changes `setting`.
    pub fn name(self, setting: Setting) -> String {
        let (field, key, flag) = names(setting);
        match (self, key, flag) {
            (Spelling::ValidationPolicy, ..) => format!("ValidationPolicy.{field}"),
            (Spelling::ConfigFile, Some(key), _) => format!("policy.{key}"),
            (Spelling::Serve, _, Some(flag)) => flag.to_string(),
            (Spelling::Serve, Some(key), None) => format!("{key} in the --policy file"),
            (_, None, _) => format!("built-in limit {field}, not configurable here"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Setting::*;
    use Spelling::*;

    #[test]
    fn each_deployment_names_a_setting_as_its_users_write_it() {
        let cases = [
            (
                ValidationPolicy,
                MinContrast,
                "ValidationPolicy.quality.minContrast",
            ),
            (ConfigFile, MinContrast, "policy.quality.min_contrast"),
            (
                Serve,
                MinContrast,
                "quality.min_contrast in the --policy file",
            ),
            (ValidationPolicy, Formats, "ValidationPolicy.formats"),
            (ConfigFile, Formats, "policy.formats"),
            (Serve, Formats, "--formats"),
            (Serve, MaxUploadBytes, "--max-upload-bytes"),
            (ConfigFile, MaxEntryBytes, "policy.max_entry_bytes"),
            (
                ValidationPolicy,
                MaxCompressionRatio,
                "ValidationPolicy.limits.maxCompressionRatio",
            ),
            (
                ConfigFile,
                MaxCompressionRatio,
                "built-in limit limits.maxCompressionRatio, not configurable here",
            ),
            (
                Serve,
                MaxTotalUncompressedBytes,
                "built-in limit limits.maxTotalUncompressedBytes, not configurable here",
            ),
            (ConfigFile, ModelReject, "policy.models[].reject"),
        ];
        for (spelling, setting, want) in cases {
            assert_eq!(spelling.name(setting), want, "{spelling:?} {setting:?}");
        }
    }

    /// Every configuration key named here exists in the configuration
    /// file's `[policy]` table as docs/configuration.md lists it.
    #[test]
    fn the_config_keys_named_are_documented() {
        let doc = include_str!("../../docs/configuration.md");
        let all = [
            Formats,
            MaxUploadBytes,
            MaxEntries,
            MaxEntryBytes,
            MaxTotalUncompressedBytes,
            MaxCompressionRatio,
            Dimensions,
            MinContrast,
            MinSharpness,
            MaxOverexposed,
            MaxUnderexposed,
            ModelReject,
        ];
        for setting in all {
            if let (_, Some(key), _) = names(setting) {
                let last = key.rsplit('.').next().unwrap().trim_end_matches("[]");
                let last = last.split('[').next().unwrap();
                assert!(
                    doc.contains(&format!("`{last}`")),
                    "{key} is not in docs/configuration.md"
                );
            }
        }
    }
}
