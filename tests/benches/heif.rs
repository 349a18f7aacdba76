//! HEIC and AVIF pipeline throughput on 12-megapixel photos, one core, next
//! to libheif's own command-line decoder (`heif-convert`, Debian's
//! libheif-examples) and libavif's (`avifdec`, libavif-bin) decoding the
//! same files in the same run. The files are encoded here from a generated
//! 4000×3000 photo with `heif-enc` (x265) and `avifenc` (libaom). The
//! decoders run pinned to one core (`taskset`); picsift decodes with one
//! thread (`core/src/heif.rs`).
//!
//! Run: `cargo bench -p picsift-tests --bench heif`
//! (needs `apt-get install libheif-examples libavif-bin`).
//! Size: PICSIFT_BENCH_IMAGES (default 4).

use picsift_core::pipeline::prepare;
use picsift_core::policy::Policy;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The median of three rounds of `f` over every item.
fn timed<T>(items: &[T], mut f: impl FnMut(&T) -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        for item in items {
            f(item)?;
        }
        rounds.push(t.elapsed());
    }
    rounds.sort();
    Ok(rounds[1])
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return Ok(()); // `cargo test --benches` probes bench binaries this way.
    }
    for tool in ["heif-enc", "heif-convert", "avifenc", "avifdec"] {
        if Command::new(tool).arg("--help").output().is_err() {
            anyhow::bail!("{tool} is missing: apt-get install libheif-examples libavif-bin");
        }
    }
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-heif");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let n: u64 = std::env::var("PICSIFT_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    eprintln!("encoding {n} photo-like 4000x3000 HEIC and AVIF files ...");
    let mut heic = Vec::new();
    let mut avif = Vec::new();
    for i in 0..n {
        let jpeg = work.join(format!("photo_{i}.jpg"));
        std::fs::write(&jpeg, picsift_tests::jpeg(60_000 + i, 4000, 3000))?;
        let h = work.join(format!("photo_{i}.heic"));
        run(Command::new("heif-enc")
            .args(["-q", "60", "-o"])
            .arg(&h)
            .arg(&jpeg))?;
        let a = work.join(format!("photo_{i}.avif"));
        run(Command::new("avifenc")
            // About 2 MB, like the HEIC and a phone's AVIF.
            .args(["-s", "8", "--min", "8", "--max", "12", "-j", "2"])
            .arg(&jpeg)
            .arg(&a))?;
        heic.push(h);
        avif.push(a);
    }
    let policy = Policy::default();
    let out = work.join("out.y4m");
    println!("## HEIC and AVIF pipeline, 12 MP ({n} files each), one core\n");
    println!(
        "| files | what | images/s | ms/image | ratio to the CLI decoder |\n|---|---|---|---|---|"
    );
    for (kind, files) in [("HEIC", &heic), ("AVIF", &avif)] {
        let datas: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
        let mb = datas.iter().map(|d| d.len() as f64).sum::<f64>() / n as f64 / 1e6;
        let ours = timed(&datas, |d| {
            prepare(d, &policy)
                .map(drop)
                .map_err(|r| anyhow::anyhow!("{}", r.detail))
        })?;
        let cli = timed(files, |f| {
            run(Command::new("taskset")
                .args(["-c", "0", "heif-convert"])
                .arg(f)
                .arg(&out))
        })?;
        let ips = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "| {kind}, {mb:.1} MB average | heif-convert (libheif 1.15 CLI, to Y4M) | {:.2} | {:.0} | 1.00 |",
            ips(cli),
            1000.0 / ips(cli)
        );
        if kind == "AVIF" {
            let avifdec = timed(files, |f| {
                run(Command::new("taskset")
                    .args(["-c", "0", "avifdec", "-j", "1"])
                    .arg(f)
                    .arg(&out))
            })?;
            println!(
                "| | avifdec (libavif 0.11, to Y4M) | {:.2} | {:.0} | {:.2} |",
                ips(avifdec),
                1000.0 / ips(avifdec),
                ips(avifdec) / ips(cli)
            );
        }
        println!(
            "| | picsift prepare (container check + blanking + strict decode + SHA-256 + PDQ) | {:.2} | {:.0} | {:.2} |",
            ips(ours),
            1000.0 / ips(ours),
            ips(ours) / ips(cli)
        );
    }
    Ok(())
}
