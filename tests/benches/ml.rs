//! The quality and ML checks' cost, each next to its baseline in the same run:
//!
//! 1. Pipeline images/s on one core: strict decode + sanitise + PDQ (the
//!    pipeline without ML), then the same plus model-input resizing, the
//!    quality measurements and the two demo models, for each device:batch
//!    in `PICSIFT_BENCH_DEVICES` (default `cpu:32`; the GPU check passes
//!    `cpu:32,cuda:1,cuda:32,cuda:128`).
//! 2. PDQ hashes per second on the decoded pixels.
//! 3. Model input from a full-resolution decode versus a reduced-size
//!    (DCT-scaled) decode: time, and how far the inputs and scores differ.
//!
//! Run: `cargo bench -p picsift-tests --bench ml` (after `scripts/models.sh`).
//! Sizes: PICSIFT_BENCH_IMAGES (default 48), 1600×1200 photo-like JPEGs.

use image::RgbImage;
use picsift_core::pipeline::prepare_with_pixels;
use picsift_core::policy::{ModelSpec, Policy, QualityPolicy};
use picsift_ml::{DeviceChoice, Options, Runtime};
use picsift_tests::ml::demo_model;
use picsift_tests::{encode_jpeg, photo};
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;

fn models() -> Vec<ModelSpec> {
    vec![
        demo_model("pattern", "pattern", 0.8),
        demo_model("watermark", "watermark", 0.8),
    ]
}

fn checked_policy() -> Policy {
    Policy {
        models: models(),
        quality: QualityPolicy {
            min_sharpness: Some(20.0),
            ..QualityPolicy::default()
        },
        near_duplicate_distance: None,
        ..Policy::default()
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// The pipeline without ML, one image after another on this thread.
fn baseline(jpegs: &[Vec<u8>], policy: &Policy) -> Duration {
    let t = Instant::now();
    for j in jpegs {
        let (p, pixels) = prepare_with_pixels(j, policy).unwrap();
        std::hint::black_box((p, pixels));
    }
    t.elapsed()
}

/// The pipeline with the checks: this thread decodes and prepares inputs
/// and queues them; the models' threads batch them, as in the worker.
fn with_checks(jpegs: &[Vec<u8>], policy: &Policy, rt: &Runtime) -> Duration {
    let checker = rt.checker(policy).unwrap();
    let t = Instant::now();
    let mut pending = Vec::with_capacity(jpegs.len());
    for j in jpegs {
        let (p, pixels) = prepare_with_pixels(j, policy).unwrap();
        std::hint::black_box(p);
        let rgb = pixels.unwrap();
        pending.push(checker.submit(checker.inputs(&rgb)));
    }
    for p in pending {
        std::hint::black_box(p.wait_blocking().unwrap());
    }
    t.elapsed()
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return Ok(()); // `cargo test --benches` probes bench binaries this way.
    }
    // One core for libtorch's own threads too: figures are per core.
    picsift_ml::set_cpu_threads(1);
    let n: usize = picsift_tests::env_or("PICSIFT_BENCH_IMAGES", 48);
    eprintln!("generating {n} photo-like 1600x1200 JPEGs ...");
    let jpegs: Vec<Vec<u8>> = (0..n as u64)
        .map(|i| encode_jpeg(&photo(40_000 + i, 1600, 1200), 88))
        .collect();
    let plain = Policy {
        quality: QualityPolicy::off(),
        near_duplicate_distance: None,
        ..Policy::default()
    };
    let checked = checked_policy();

    // Warm-up (page cache, allocator, model weights).
    baseline(&jpegs[..2.min(n)], &plain);

    println!("## Pipeline images/s, one core ({n} images, 1600x1200)\n");
    println!(
        "Best of {ROUNDS} rounds, each round timing the pipeline without ML and then each device in turn (this machine is shared: alternating keeps the comparison fair).\n"
    );
    println!("| pipeline | device:batch | images/s | vs without ML |");
    println!("|---|---|---|---|");
    let devices = std::env::var("PICSIFT_BENCH_DEVICES").unwrap_or_else(|_| "cpu:32".into());
    let mut runtimes = Vec::new();
    for item in devices.split(',') {
        let (device, batch) = item.split_once(':').unwrap_or((item, "32"));
        let device: DeviceChoice = device.parse().map_err(anyhow::Error::msg)?;
        let rt = Runtime::new(Options {
            device,
            batch_size: batch.parse()?,
            ..Options::default()
        })?;
        for m in &checked.models {
            rt.load(m, picsift_ml::read_model_file(m)?)?;
        }
        with_checks(&jpegs[..4.min(n)], &checked, &rt); // warm-up
        runtimes.push((rt, batch.to_string()));
    }
    let mut base = 0f64;
    let mut best = vec![0f64; runtimes.len()];
    for _ in 0..ROUNDS {
        base = base.max(rate(n, baseline(&jpegs, &plain)));
        for (b, (rt, _)) in best.iter_mut().zip(&runtimes) {
            *b = b.max(rate(n, with_checks(&jpegs, &checked, rt)));
        }
    }
    println!("| decode + sanitise + PDQ (no ML) | — | {base:.1} | 1.00 |");
    for (r, (rt, batch)) in best.iter().zip(&runtimes) {
        println!(
            "| + resize + quality + 2 demo models | {}:{batch} | {r:.1} | {:.2} |",
            rt.device_name(),
            r / base
        );
    }

    // PDQ alone, on decoded pixels.
    let pixels: Vec<RgbImage> = jpegs
        .iter()
        .take(16)
        .map(|j| {
            prepare_with_pixels(j, &plain)
                .unwrap()
                .1
                .unwrap()
                .into_upright()
        })
        .collect();
    let t = Instant::now();
    let rounds = 4;
    for _ in 0..rounds {
        for p in &pixels {
            std::hint::black_box(picsift_core::pdq::hash(p));
        }
    }
    let pdq = rate(rounds * pixels.len(), t.elapsed());
    println!(
        "\n## PDQ\n\n{pdq:.1} hashes/s on one core (1600x1200 decoded RGB, including its own downscale)"
    );

    // Model input: full decode vs DCT-scaled decode.
    let spec = &checked.models[0];
    let rt = Runtime::new(Options {
        device: DeviceChoice::Cpu,
        ..Options::default()
    })?;
    rt.load(spec, picsift_ml::read_model_file(spec)?)?;
    let one = Policy {
        models: vec![spec.clone()],
        quality: QualityPolicy::off(),
        ..Policy::default()
    };
    let checker = rt.checker(&one)?;
    let t = Instant::now();
    let full: Vec<RgbImage> = jpegs
        .iter()
        .map(|j| picsift_core::decode::strict_jpeg(j, &plain).unwrap())
        .map(|d| RgbImage::from_raw(d.width, d.height, d.rgb.unwrap()).unwrap())
        .collect();
    let full_inputs: Vec<_> = full
        .iter()
        .map(|i| picsift_ml::model_input(i, spec))
        .collect();
    let full_time = t.elapsed();
    let t = Instant::now();
    let reduced: Vec<RgbImage> = jpegs
        .iter()
        .map(|j| picsift_core::decode::scaled_rgb(j, spec.width * 2, spec.height * 2).unwrap())
        .collect();
    let reduced_inputs: Vec<_> = reduced
        .iter()
        .map(|i| picsift_ml::model_input(i, spec))
        .collect();
    let reduced_time = t.elapsed();
    let mut max_input = 0f32;
    let mut mean_input = 0f64;
    let mut max_score = 0f64;
    for (i, (a, b)) in full_inputs.iter().zip(&reduced_inputs).enumerate() {
        for (x, y) in a.iter().zip(b) {
            max_input = max_input.max((x - y).abs());
            mean_input += f64::from((x - y).abs());
        }
        let sa = checker.check_blocking(&full[i]).unwrap().checks.scores;
        let sb = checker.check_blocking(&reduced[i]).unwrap().checks.scores;
        for (label, s) in &sa[&spec.name] {
            max_score = max_score.max((s - sb[&spec.name][label]).abs());
        }
    }
    mean_input /= (full_inputs.len() * full_inputs[0].len()) as f64;
    println!(
        "\n## Model input ({}x{}): full-resolution vs reduced-size decode\n",
        spec.width, spec.height
    );
    println!(
        "| source | images/s (decode + resize) | input differs by (mean / max, normalised units) | score differs by (max) |"
    );
    println!("|---|---|---|---|");
    println!(
        "| full decode + area resize | {:.1} | — | — |",
        rate(n, full_time)
    );
    println!(
        "| DCT-scaled decode (1/8 here) + area resize | {:.1} | {mean_input:.4} / {max_input:.3} | {max_score:.4} |",
        rate(n, reduced_time)
    );
    Ok(())
}
