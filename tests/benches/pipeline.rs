//! picsift benchmarks, each next to a baseline measured in the same run:
//!
//! 1. Pipeline throughput on 12-megapixel JPEGs (strict decode + sanitise +
//!    SHA-256), one core, next to `djpeg` decoding the same files.
//!    1b. The same through a decoder child process, as `picsift serve`
//!    decodes, next to it in this process: what isolation costs.
//! 2. Upload ingest of a large zip through a real `picsift serve` (release
//!    build), next to `cp` of the same file, with the server's peak RSS.
//!
//! Run: `cargo bench -p picsift-tests --bench pipeline`
//! Sizes: PICSIFT_BENCH_IMAGES (default 8), PICSIFT_BENCH_ZIP_MB (default 2048).

use picsift_core::pipeline::prepare;
use picsift_core::policy::Policy;
use picsift_tests::bench::{rss_kb, spawn_serve, time_cp, write_zip};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "shared/photos.rs"]
mod photos;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // Section 1b starts this binary again as a decoder child.
    if std::env::var_os(picsift_worker::isolated::CHILD_ENV).is_some() {
        picsift_worker::isolated::child_main();
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return Ok(()); // `cargo test --benches` probes bench binaries this way.
    }
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let n: u64 = picsift_tests::env_or("PICSIFT_BENCH_IMAGES", 8);
    eprintln!("generating {n} photo-like 4000x3000 JPEGs ...");
    // PICSIFT_BENCH_PLAIN=1: without EXIF and ICC, as before 2026-12-06.
    let plain_only = std::env::var("PICSIFT_BENCH_PLAIN").is_ok_and(|v| v == "1");
    let files = photos::phone_photos(&work, n, plain_only)?;
    let datas: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let mb: f64 = datas.iter().map(|d| d.len() as f64).sum::<f64>() / n as f64 / 1e6;

    // 1. Pipeline vs djpeg, one core: five rounds each, taken in turn (so
    // that this shared machine's drifts in speed fall on both alike),
    // medians.
    let policy = Policy::default();
    let (mut ours, mut djpeg) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        for d in &datas {
            prepare(d, &policy).expect("generated photos pass");
        }
        ours.push(t.elapsed());
        let t = Instant::now();
        for f in &files {
            let ok = Command::new("djpeg")
                .arg("-outfile")
                .arg("/dev/null")
                .arg(f)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "djpeg failed (install libjpeg-turbo-progs)");
        }
        djpeg.push(t.elapsed());
    }
    // Each round's ratio, djpeg's time over ours in the same round.
    let mut ratios: Vec<f64> = ours
        .iter()
        .zip(&djpeg)
        .map(|(o, d)| d.as_secs_f64() / o.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let (ours, djpeg) = (median(ours), median(djpeg));
    let ours_ips = n as f64 / ours.as_secs_f64();
    let djpeg_ips = n as f64 / djpeg.as_secs_f64();
    println!("## Pipeline, 12 MP JPEGs ({n} files, {mb:.1} MB average), one core\n");
    println!("| what | images/s | ms/image | ratio to djpeg |\n|---|---|---|---|");
    println!(
        "| djpeg (decode to /dev/null) | {djpeg_ips:.2} | {:.0} | 1.00 |",
        1000.0 / djpeg_ips
    );
    println!(
        "| picsift prepare (structure + sanitise, orientation and ICC kept + strict decode + SHA-256 + PDQ) | {ours_ips:.2} | {:.0} | {:.2} |\n",
        1000.0 / ours_ips,
        ours_ips / djpeg_ips
    );
    println!(
        "Ratio round by round (djpeg's time over prepare's, the two run in turn): median {:.2}, {:.2}–{:.2}.\n",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );

    // 1b. What isolating the decoder costs (`picsift serve` decodes in
    // child processes): the pipeline in this process, with the pixels
    // shrunk for the default quality checks' 256-pixel input, against the
    // same through a child (the bytes and the shrunk pixels cross pipes).
    let largest = 256;
    let time = |f: &dyn Fn(&[u8])| {
        median(
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    for d in &datas {
                        f(d);
                    }
                    t.elapsed()
                })
                .collect(),
        )
    };
    let in_process = time(&|d: &[u8]| {
        let (_, pixels) = picsift_core::pipeline::prepare_with_pixels(d, &policy).unwrap();
        std::hint::black_box(picsift_ml::reduced(&pixels.unwrap().stored, largest));
    });
    let pool = picsift_worker::isolated::DecoderPool::new(
        picsift_worker::isolated::DecoderCommand::this_executable()?,
        picsift_worker::isolated::DEFAULT_TIMEOUT,
    );
    // The child starts (and loads its libraries) once, before timing.
    pool.prepare(&datas[0], &policy, largest).unwrap();
    let isolated = time(&|d: &[u8]| {
        std::hint::black_box(pool.prepare(d, &policy, largest).unwrap());
    });
    let per = |t: Duration| t.as_secs_f64() * 1000.0 / n as f64;
    println!(
        "## Decoder isolation, the same files, one core
"
    );
    println!(
        "| what | ms/image | cost |
|---|---|---|"
    );
    println!(
        "| in this process (prepare + shrink for the checks) | {:.1} | — |",
        per(in_process)
    );
    println!(
        "| in a decoder child (`picsift serve`) | {:.1} | {:+.1} ms ({:+.1}%) |\n",
        per(isolated),
        per(isolated) - per(in_process),
        (per(isolated) / per(in_process) - 1.0) * 100.0
    );

    // 2. Ingest (PICSIFT_BENCH_ZIP_MB=0 skips it).
    if picsift_tests::env_or("PICSIFT_BENCH_ZIP_MB", 2048u64) == 0 {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--release", "-p", "picsift"])
        .status()?;
    anyhow::ensure!(
        built.success(),
        "building the release picsift binary failed"
    );
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/picsift");
    let target_mb: u64 = picsift_tests::env_or("PICSIFT_BENCH_ZIP_MB", 2048);
    println!("## Upload ingest through `picsift serve` (release), loopback\n");
    println!(
        "| zip | cp + sync MB/s (best of 2) | upload to 202 MB/s | ratio to cp | server RSS before | server peak RSS |\n|---|---|---|---|---|---|"
    );
    for size_mb in [target_mb / 10, target_mb] {
        let zip = work.join(format!("upload_{size_mb}.zip"));
        write_zip(&zip, &datas, size_mb << 20)?;
        let bytes = std::fs::metadata(&zip)?.len();
        // Dirty pages of the fresh zip would slow whichever copy runs first.
        anyhow::ensure!(Command::new("sync").status()?.success(), "sync failed");
        let cp_before = time_cp(&zip, &work.join("copy.zip"))?;

        let data = work.join(format!("server-{size_mb}"));
        let (mut server, addr) = spawn_serve(&bin, &data)?;
        let before = rss_kb(server.id(), "VmRSS");
        let t = Instant::now();
        let out = Command::new("curl")
            .args([
                "-sS",
                "-X",
                "POST",
                "-H",
                "content-type: application/zip",
                "-H",
                "Expect:",
                "-T",
            ])
            .arg(&zip)
            .arg(format!("{addr}/v1/batches"))
            .output()?;
        let upload = t.elapsed();
        let peak = rss_kb(server.id(), "VmHWM");
        let _ = server.kill();
        let _ = server.wait();
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stdout).contains("\"id\""),
            "upload failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cp = cp_before.min(time_cp(&zip, &work.join("copy.zip"))?);
        let cp_mbs = bytes as f64 / 1e6 / cp.as_secs_f64();
        let up_mbs = bytes as f64 / 1e6 / upload.as_secs_f64();
        println!(
            "| {:.0} MB | {cp_mbs:.0} | {up_mbs:.0} | {:.2} | {:.0} MB | {:.0} MB |",
            bytes as f64 / 1e6,
            up_mbs / cp_mbs,
            before as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        std::fs::remove_file(&zip)?;
        let _ = std::fs::remove_dir_all(&data);
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
