//! What the benchmarks that time uploads share: a zip of a given size,
//! `cp` as the baseline, a process's memory from `/proc`.

use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Times `cp` of `from` to `to` including the flush to disk (the server
/// syncs its staged file too), then removes the copy.
pub fn time_cp(from: &Path, to: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    anyhow::ensure!(
        Command::new("cp").arg(from).arg(to).status()?.success(),
        "cp failed"
    );
    anyhow::ensure!(
        Command::new("sync").arg(to).status()?.success(),
        "sync failed"
    );
    let elapsed = t.elapsed();
    std::fs::remove_file(to)?;
    Ok(elapsed)
}

/// Writes a stored zip of about `target` bytes, cycling through `photos`.
pub fn write_zip(path: &Path, photos: &[Vec<u8>], target: u64) -> anyhow::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut written = 0u64;
    let mut i = 0;
    while written < target {
        let p = &photos[i % photos.len()];
        zip.start_file(format!("img_{i:05}.jpg"), opts)?;
        zip.write_all(p)?;
        written += p.len() as u64;
        i += 1;
    }
    zip.finish()?.flush()?;
    Ok(())
}

/// A memory figure of a process from /proc, in KiB.
pub fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts `bin serve` on a free loopback port with one decoding thread and
/// its data in `data` (see [`spawn`]).
pub fn spawn_serve(bin: &Path, data: &Path) -> anyhow::Result<(Child, String)> {
    spawn(
        Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--concurrency",
                "1",
                "--data",
            ])
            .arg(data),
    )
}

/// Starts a `picsift` server (`serve` or `gateway`) and returns it with
/// its base URL, from the line that says where it listens.
pub fn spawn(cmd: &mut Command) -> anyhow::Result<(Child, String)> {
    let mut child = cmd
        .env("PICSIFT_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let base = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("the server exited"))??;
        if line.contains("listening on")
            && let Some(a) = line.split("listening on ").nth(1)
        {
            break a.split_whitespace().next().unwrap_or_default().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok((child, base))
}
