//! The benchmarks' 12-megapixel photos, as a phone writes them, made once
//! per file name and seed so that every bench times the same pictures.
//! Included with `#[path]`.

use std::path::{Path, PathBuf};

/// Writes `n` photo-like 4000×3000 JPEGs (`photo_{i}.jpg`, seeds from
/// 50,000) into `dir`, on every core, and returns their paths. As a phone
/// writes them: EXIF with GPS and orientation 6 and a Display P3 profile,
/// so that the orientation and ICC steps are in what is timed; `plain`
/// leaves both out (as the pipeline bench did before 2026-12-06).
pub fn phone_photos(dir: &Path, n: u64, plain: bool) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let p3 = moxcms::ColorProfile::new_display_p3().encode()?;
    let make = |i: u64| -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("photo_{i}.jpg"));
        let photo = picsift_tests::jpeg(50_000 + i, 4000, 3000);
        if plain {
            std::fs::write(&path, photo)?;
            return Ok(path);
        }
        let phone = picsift_tests::with_metadata(&photo, 6);
        let mut app2 = b"ICC_PROFILE\0\x01\x01".to_vec();
        app2.extend_from_slice(&p3);
        let mut file = phone[..2].to_vec();
        file.extend_from_slice(&[0xFF, 0xE2]);
        file.extend_from_slice(&((app2.len() + 2) as u16).to_be_bytes());
        file.extend_from_slice(&app2);
        file.extend_from_slice(&phone[2..]);
        std::fs::write(&path, file)?;
        Ok(path)
    };
    let threads = std::thread::available_parallelism().map_or(2, |t| t.get()) as u64;
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t..n).step_by(threads as usize).map(make).collect()))
            .collect();
        let mut paths = parts
            .into_iter()
            .map(|p| p.join().expect("a photo thread panicked"))
            .collect::<anyhow::Result<Vec<Vec<PathBuf>>>>()?
            .concat();
        paths.sort_by_key(|p| photo_number(p));
        Ok(paths)
    })
}

fn photo_number(p: &Path) -> u64 {
    p.file_stem()
        .and_then(|s| s.to_str()?.strip_prefix("photo_")?.parse().ok())
        .unwrap_or(u64::MAX)
}
