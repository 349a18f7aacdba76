//! Replays the fuzz seeds (fuzz/seeds/) and every recorded fuzz finding
//! (tests/fuzz/<target>/) through the fuzz targets' own checks, which are
//! included from fuzz/src/lib.rs: a finding stays fixed, and the harness
//! keeps compiling with the ordinary test run. See docs/fuzzing.md.

#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("sniff", harness::sniff),
    ("jpeg_strip", harness::jpeg_strip),
    ("decode_jpeg", harness::decode_jpeg),
    ("prepare", harness::prepare),
    ("archive_light_check", harness::archive_light_check),
    ("archive_entries", harness::archive_entries),
    ("jpeg_trailer", harness::jpeg_trailer),
    ("chunked_strip", harness::chunked_strip),
    ("heif_container", harness::heif_container),
    ("gain_map_xmp", harness::gain_map_xmp),
];

/// Files one level below each folder of `dir`, sorted; none when `dir` is missing.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(folders) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = folders
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "sh" && x != "md"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn seeds() -> Vec<PathBuf> {
    files_below(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds"))
}

#[test]
fn every_seed_passes_every_fuzz_target() {
    let seeds = seeds();
    assert!(seeds.len() >= 10, "fuzz/seeds/ is missing its files");
    for path in &seeds {
        let data = read(path);
        for (name, target) in TARGETS {
            eprintln!("{name} <- {}", path.display());
            target(&data);
        }
    }
}

#[test]
fn image_seeds_pass_the_pipeline() {
    // Seeds that are rejected would only test the rejection paths (zips
    // and XMP packets are not images).
    let policy = harness::small_policy();
    for path in seeds() {
        let kind = path.parent().unwrap().file_name().unwrap();
        if kind == "zip" || kind == "xmp" {
            continue;
        }
        if let Err(r) = picsift_core::pipeline::prepare(&read(&path), &policy) {
            panic!("{} is rejected: {r:?}", path.display());
        }
    }
}

#[test]
fn recorded_fuzz_findings_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    for path in files_below(&dir) {
        let target = path.parent().unwrap().file_name().unwrap();
        let (_, run) = TARGETS
            .iter()
            .find(|(name, _)| target == *name)
            .unwrap_or_else(|| panic!("{}: no fuzz target of that name", path.display()));
        run(&read(&path));
    }
}
