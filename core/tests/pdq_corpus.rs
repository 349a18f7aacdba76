//! PDQ against the ThreatExchange reference images in tests/data/pdq
//! (see its README): the reference's own hashes, benign edits, unrelated
//! photos, EXIF rotations and the 8 dihedral variants.
//!
//! Measured distances are printed (run with `--nocapture`) so they can be
//! written down.

use std::fs;
use std::path::{Path, PathBuf};

use image::RgbImage;
use picsift_core::pdq::{self, Hash, MATCH_DISTANCE, MIN_MATCH_QUALITY};

/// How far from the reference's hash ours may be: independent correct
/// implementations differ by a few bits (the JPEG decoders differ), and the
/// reference's own Python port is tested with this tolerance.
const REFERENCE_TOLERANCE: u32 = 16;

fn corpus() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/pdq"));
    assert!(
        dir.join("expected-pdq-hashes.csv").is_file(),
        "the PDQ reference corpus is missing: expected {} with expected-pdq-hashes.csv \
         (the ThreatExchange pdq test images, committed in the repository)",
        dir.display()
    );
    dir
}

fn load(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("cannot decode {}: {e}", path.display()))
        .to_rgb8()
}

fn jpegs_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn summary(distances: &[u32]) -> (u32, f64) {
    let max = distances.iter().copied().max().unwrap_or(0);
    let mean = distances.iter().map(|&d| f64::from(d)).sum::<f64>() / distances.len() as f64;
    (max, mean)
}

#[test]
fn every_csv_file_is_within_16_bits_of_the_reference_hash() {
    let root = corpus();
    let csv = fs::read_to_string(root.join("expected-pdq-hashes.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().map(str::trim), Some("FilePath,Hash"));
    let mut distances = Vec::new();
    let mut too_far = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (file, expected) = line.split_once(',').expect("FilePath,Hash");
        let expected: Hash = expected.trim().parse().unwrap();
        let ours = pdq::hash(&load(&root.join(file)));
        let d = pdq::distance(&ours.hash, &expected);
        eprintln!(
            "pdq csv: {file}: {d} bits (quality {}) ours {} reference {expected}",
            ours.quality, ours.hash
        );
        if d > REFERENCE_TOLERANCE {
            too_far.push(format!("{file}: {d} bits"));
        }
        distances.push(d);
    }
    assert!(distances.len() >= 15, "CSV lists {} files", distances.len());
    let (max, mean) = summary(&distances);
    eprintln!(
        "pdq csv: {} files, max {max} bits, mean {mean:.2} bits from the reference",
        distances.len()
    );
    assert!(
        too_far.is_empty(),
        "more than {REFERENCE_TOLERANCE} bits from the reference: {too_far:?}"
    );
}

#[test]
fn every_bridge_edit_matches_the_original() {
    let dir = corpus().join("bridge-mods");
    let original = pdq::hash(&load(&dir.join("aaa-orig.jpg")));
    let mut distances = Vec::new();
    for path in jpegs_in(&dir)
        .into_iter()
        .filter(|p| name(p) != "aaa-orig.jpg")
    {
        let d = pdq::distance(&pdq::hash(&load(&path)).hash, &original.hash);
        eprintln!(
            "pdq bridge-mods: {}: {d} bits from aaa-orig.jpg",
            name(&path)
        );
        assert!(
            d <= MATCH_DISTANCE,
            "{} is {d} bits from the original",
            name(&path)
        );
        distances.push(d);
    }
    assert_eq!(distances.len(), 11, "bridge-mods edits");
    let (max, mean) = summary(&distances);
    eprintln!("pdq bridge-mods: max {max} bits, mean {mean:.2} bits");
}

#[test]
fn labelme_photos_are_pairwise_far_apart() {
    let files = jpegs_in(&corpus().join("reg-test-input/labelme-subset"));
    assert!(
        files.len() >= 2,
        "labelme-subset has {} photos",
        files.len()
    );
    let hashes: Vec<(String, Hash)> = files
        .iter()
        .map(|p| (name(p), pdq::hash(&load(p)).hash))
        .collect();
    let mut distances = Vec::new();
    for (i, (a, ha)) in hashes.iter().enumerate() {
        for (b, hb) in &hashes[i + 1..] {
            let d = pdq::distance(ha, hb);
            assert!(d > MATCH_DISTANCE, "{a} and {b} are only {d} bits apart");
            distances.push(d);
        }
    }
    let min = distances.iter().copied().min().unwrap_or(0);
    let (max, mean) = summary(&distances);
    eprintln!(
        "pdq labelme-subset: {} photos, {} pairs, min {min} max {max} mean {mean:.2} bits",
        files.len(),
        distances.len()
    );
}

/// The orientation tag via our JPEG walker. These Samsung files carry a
/// trailer after the end-of-image marker, which the strict walker rejects,
/// so the walk is given the file up to the first end-of-image marker that
/// closes a valid structure.
fn exif_orientation(bytes: &[u8]) -> Option<u16> {
    let ends = bytes
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w == &[0xFF, 0xD9])
        .map(|(i, _)| i + 2);
    for end in ends {
        if let Ok(structure) = picsift_core::jpeg::parse(&bytes[..end]) {
            return structure.orientation;
        }
    }
    panic!("no prefix of the file is a valid JPEG")
}

/// Each exif-rotn file decoded and turned upright by its EXIF orientation,
/// with the tag and the dihedral variant of the stored pixels that the
/// rotation corresponds to.
fn exif_rotn() -> Vec<(u16, RgbImage, pdq::Dihedral)> {
    let dir = corpus().join("reg-test-input/exif-rotn");
    [
        (1u16, pdq::Dihedral::Original),
        (3, pdq::Dihedral::Rotate180),
        // 6: turn a quarter clockwise to show; 8: counter-clockwise.
        (6, pdq::Dihedral::Rotate270),
        (8, pdq::Dihedral::Rotate90),
    ]
    .into_iter()
    .map(|(tag, variant)| {
        let path = dir.join(format!("exif-rotn-{tag}.jpg"));
        let bytes = fs::read(&path).unwrap();
        assert_eq!(exif_orientation(&bytes), Some(tag), "{}", path.display());
        let stored = load(&path);
        (tag, stored, variant)
    })
    .collect()
}

#[test]
fn exif_orientation_is_read_and_applied_as_the_matching_dihedral_turn() {
    for (tag, stored, variant) in exif_rotn() {
        let (w, h) = stored.dimensions();
        let variants = pdq::dihedral(&stored);
        let upright = picsift_core::orientation::apply_orientation(stored, tag);
        let expected_dims = if tag >= 5 { (h, w) } else { (w, h) };
        assert_eq!(upright.dimensions(), expected_dims, "orientation {tag}");
        // Turning the pixels by the EXIF orientation and taking the cheap
        // DCT-domain variant of the stored pixels must agree: the variant
        // for that turn is the closest of the 8, and a match.
        let p = pdq::hash(&upright);
        let distances = variants.map(|v| pdq::distance(&v, &p.hash));
        let d = distances[variant as usize];
        eprintln!(
            "pdq exif-rotn: exif-rotn-{tag}.jpg upright {}x{} quality {}: {d} bits from the \
             {variant:?} variant of the stored pixels (all 8: {distances:?})",
            upright.width(),
            upright.height(),
            p.quality
        );
        assert!(d <= MATCH_DISTANCE, "orientation {tag}: {d} bits");
        assert_eq!(distances.iter().min(), Some(&d), "orientation {tag}");
    }
}

// Issue 5 also asks for the four exif-rotn files within 8 bits of each
// other once upright. They are not one photo stored four ways but four
// shots of the same desk (different framing and zoom; 6 and 8 portrait,
// 1 and 3 landscape) and measure 114-138 bits apart upright, 106 at best
// under any dihedral alignment, so no PDQ implementation can meet that
// bound; the test above pins what does hold for them.

#[test]
fn dihedral_variants_match_only_with_dihedral_matching() {
    let files = jpegs_in(&corpus().join("reg-test-input/dih"));
    assert_eq!(files.len(), 8, "dih variants");
    let original = pdq::hash(&load(&files[0])).hash;
    assert_eq!(name(&files[0]), "bridge-1-original.jpg");
    let mut plain_matches = 0;
    for path in &files {
        let variants = pdq::dihedral(&load(path));
        let plain = pdq::distance(&variants[0], &original);
        let best = pdq::dihedral_distance(&variants, &original);
        let which = variants
            .iter()
            .position(|v| pdq::distance(v, &original) == best)
            .map(|i| pdq::Dihedral::ALL[i]);
        eprintln!(
            "pdq dih: {}: plain {plain} bits, dihedral {best} bits (via {which:?})",
            name(path)
        );
        assert!(
            best <= MATCH_DISTANCE,
            "{} does not match the original even with dihedral matching: {best} bits",
            name(path)
        );
        if plain <= MATCH_DISTANCE {
            plain_matches += 1;
        }
    }
    assert!(
        plain_matches < files.len(),
        "all variants matched without dihedral matching: the test shows nothing"
    );
    eprintln!(
        "pdq dih: {plain_matches} of {} match without dihedral matching, all with it",
        files.len()
    );
}

#[test]
fn blank_image_has_quality_zero_and_photo_high() {
    let blank = RgbImage::from_pixel(640, 480, image::Rgb([200, 200, 200]));
    assert_eq!(pdq::hash(&blank).quality, 0);
    let photo = pdq::hash(&load(&corpus().join("bridge-mods/aaa-orig.jpg")));
    eprintln!("pdq quality: blank 0, aaa-orig.jpg {}", photo.quality);
    assert!(
        photo.quality >= 90,
        "photo quality {} is low",
        photo.quality
    );
    assert!(photo.quality >= MIN_MATCH_QUALITY);
}
