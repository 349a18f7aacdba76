//! Fixtures for the quality and ML checks: the models `scripts/models.sh`
//! makes, as policy entries, and images they were not trained on.

use image::{Rgb, RgbImage};
use picsift_core::policy::{ModelSpec, RejectRule};
use std::path::{Path, PathBuf};

/// Where `scripts/models.sh` puts the models (`PICSIFT_MODELS`, default
/// `<repo>/models`); panics with the fix when they are missing.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("PICSIFT_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    assert!(
        dir.join("pattern.pt").is_file(),
        "the demo models are missing from {}: run scripts/models.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The ThreatExchange PDQ corpus in tests/data/pdq (real photos).
pub fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pdq");
    assert!(
        dir.is_dir(),
        "the reference corpus is missing: {}",
        dir.display()
    );
    dir
}

/// The real photos of the corpus's labelme subset (no model saw them).
pub fn labelme_photos() -> Vec<PathBuf> {
    let dir = corpus_dir().join("reg-test-input/labelme-subset");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    files.sort();
    files
}

/// A model's policy entry from the sidecar JSON the scripts write
/// (`demo-models.json` lists several; `<file>.json` describes one).
fn from_sidecar(dir: &Path, meta: &serde_json::Value) -> ModelSpec {
    let get = |k: &str| meta.get(k).unwrap_or(&serde_json::Value::Null);
    let floats = |k: &str, d: f32| -> [f32; 3] {
        match get(k).as_array() {
            Some(v) => [0, 1, 2].map(|i| v[i].as_f64().unwrap() as f32),
            None => [d; 3],
        }
    };
    ModelSpec {
        name: get("name").as_str().unwrap().into(),
        source: dir
            .join(get("file").as_str().unwrap())
            .to_string_lossy()
            .into_owned(),
        width: get("input")["width"].as_u64().unwrap() as u32,
        height: get("input")["height"].as_u64().unwrap() as u32,
        mean: floats("mean", 0.0),
        std: floats("std", 1.0),
        fit: serde_json::from_value(get("fit").clone()).unwrap_or_default(),
        output: serde_json::from_value(get("output").clone()).unwrap(),
        labels: serde_json::from_value(get("labels").clone()).unwrap(),
        reject: Vec::new(),
        fixed_batch: get("fixedBatch").as_u64().map(|n| n as usize),
    }
}

/// A demo model (`pattern` or `watermark`) rejecting `label` at `at_least`.
pub fn demo_model(name: &str, label: &str, at_least: f32) -> ModelSpec {
    let dir = models_dir();
    let text = std::fs::read_to_string(dir.join("demo-models.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = all
        .get("models")
        .unwrap_or(&all)
        .as_array()
        .unwrap()
        .clone();
    let meta = list
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no model {name} in demo-models.json"));
    let mut spec = from_sidecar(&dir, meta);
    spec.reject = vec![RejectRule {
        label: label.into(),
        at_least,
    }];
    spec
}

/// The converted NudeNet detector, rejecting each of `labels` at `at_least`.
pub fn nudenet(labels: &[&str], at_least: f32) -> ModelSpec {
    let dir = models_dir();
    let text = std::fs::read_to_string(dir.join("nudenet.pt.json")).unwrap();
    let mut spec = from_sidecar(&dir, &serde_json::from_str(&text).unwrap());
    spec.fit = picsift_core::policy::Fit::Pad;
    spec.reject = labels
        .iter()
        .map(|l| RejectRule {
            label: (*l).into(),
            at_least,
        })
        .collect();
    spec
}

/// SMPTE-like colour bars with a grey ramp below: a synthetic test pattern.
pub fn colour_bars(w: u32, h: u32) -> RgbImage {
    const BARS: [[u8; 3]; 7] = [
        [192, 192, 192],
        [192, 192, 0],
        [0, 192, 192],
        [0, 192, 0],
        [192, 0, 192],
        [192, 0, 0],
        [0, 0, 192],
    ];
    RgbImage::from_fn(w, h, |x, y| {
        if y < h * 3 / 4 {
            Rgb(BARS[(x * 7 / w) as usize])
        } else {
            let g = (x * 255 / w) as u8;
            Rgb([g, g, g])
        }
    })
}

/// A checkerboard of `cell`-pixel squares in two colours.
pub fn checkerboard(w: u32, h: u32, cell: u32, a: [u8; 3], b: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb(if (x / cell + y / cell).is_multiple_of(2) {
            a
        } else {
            b
        })
    })
}
