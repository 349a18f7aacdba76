//! End to end (issue 20, item 3): 12-megapixel photos uploaded as zips to
//! a release `picsift serve`, and to the cluster processes (a gateway and
//! one worker per core over real Redis, PostgreSQL and Garage on
//! loopback), each next to the pipeline's `prepare` rate measured in the
//! same run on the same photos: on one core (the baseline, times
//! the number of cores) and on every core at once (what this machine's
//! cores give together).
//!
//! Each shape runs twice on a fresh server: all photos in one zip (the
//! time to `202`, receiving and syncing the zip, comes before any
//! decoding), and the same photos in `PICSIFT_BENCH_UPLOADS` zips sent
//! back to back (each upload overlaps the processing of those before it,
//! as under steady load). The clock runs from the first upload's first
//! byte to the last batch's completion; CPU is the whole machine's, then
//! split by process (`shared/cpu.rs`): picsift's own (the serve process or
//! gateway, and its decoders or workers) against `prepare`'s per image
//! is the overhead the issue bounds, whatever the client and the stand-in
//! stores beside it cost.
//!
//! Run: `cargo bench -p picsift-tests --bench e2e`
//! Settings: PICSIFT_BENCH_IMAGES (default 80), PICSIFT_BENCH_UPLOADS
//! (default 4), PICSIFT_BENCH_MODELS=nudenet (the demo policy's NudeNet
//! model on the CPU, from `scripts/models.sh`), PICSIFT_BENCH_SHAPES
//! (default `serve,cluster`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/cpu.rs"]
mod cpu;
#[path = "shared/photos.rs"]
mod photos;

use common::cluster::{ADMIN_KEY, Cluster, Setup, base_of};
use picsift_core::policy::Policy;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return Ok(()); // `cargo test --benches` probes bench binaries this way.
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let n: u64 = picsift_tests::env_or("PICSIFT_BENCH_IMAGES", 80);
    let uploads: usize = picsift_tests::env_or("PICSIFT_BENCH_UPLOADS", 4);
    let models = std::env::var("PICSIFT_BENCH_MODELS").unwrap_or_default();
    let shapes = std::env::var("PICSIFT_BENCH_SHAPES").unwrap_or("serve,cluster".into());
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());

    let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "picsift"])
        .status()?;
    anyhow::ensure!(built.success(), "building the release picsift failed");

    let work = root.join("target/bench-e2e");
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("generating {n} photo-like 4000x3000 JPEGs ...");
    let files = photos::phone_photos(&work.join("photos"), n, false)?;
    let datas: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let policy_file = match models.as_str() {
        "" => None,
        "nudenet" => Some(nudenet_policy(&root, &work)?),
        other => anyhow::bail!("PICSIFT_BENCH_MODELS={other}: only nudenet is known"),
    };

    // The baseline: `prepare` on one core, and on every core at once.
    let policy = Policy::default();
    let one = (0..3)
        .map(|_| {
            let t = Instant::now();
            for d in &datas {
                picsift_core::pipeline::prepare(d, &policy).expect("the photos pass");
            }
            t.elapsed()
        })
        .min()
        .expect("three rounds");
    let one_ips = n as f64 / one.as_secs_f64();
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                while let Some(d) = datas.get(next.fetch_add(1, Ordering::Relaxed)) {
                    picsift_core::pipeline::prepare(d, &policy).expect("the photos pass");
                }
            });
        }
    });
    let all_ips = n as f64 / t.elapsed().as_secs_f64();
    let target = 0.9 * cores as f64 * one_ips;

    let mb = datas.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    println!(
        "## End to end, {n} photos ({mb:.0} MB), {cores} cores{}\n",
        if models.is_empty() {
            ", default checks".to_string()
        } else {
            format!(", default checks + {models} on the CPU")
        }
    );
    println!(
        "Baseline, same run: `prepare` on one core {one_ips:.2} images/s \
         ({cores} × = {:.2}; the target, 0.9 ×, is {target:.2}); on {cores} cores at once \
         {all_ips:.2} images/s ({:.2} × one core).\n",
        cores as f64 * one_ips,
        all_ips / one_ips
    );
    println!(
        "| shape | zips | to first 202 | to completion | images/s | CPU ms/image | ratio to {cores} × one core | ratio to {cores} cores at once |\n|---|---|---|---|---|---|---|---|"
    );
    let rt = tokio::runtime::Runtime::new()?;
    let prepare_ms = 1000.0 / one_ips;
    let ms_per = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
    let mut split_rows = Vec::new();
    for shape in shapes.split(',') {
        for zips in [1, uploads.max(1)] {
            let parts = split_zips(&datas, zips);
            let run = match shape {
                "serve" => rt.block_on(run_serve(&work, &parts, policy_file.as_deref()))?,
                "cluster" => rt.block_on(run_cluster(&parts, policy_file.as_deref(), cores))?,
                other => anyhow::bail!("unknown shape {other}: serve or cluster"),
            };
            let ips = n as f64 / run.complete.as_secs_f64();
            println!(
                "| {shape} | {zips} | {:.2} s | {:.2} s | {ips:.2} | {:.0} | {:.2} | {:.2} |",
                run.first_202.as_secs_f64(),
                run.complete.as_secs_f64(),
                ms_per(run.cpu),
                ips / (cores as f64 * one_ips),
                ips / all_ips
            );
            let per = |part: &str| run.parts.get(part).map_or(0.0, |&d| ms_per(d));
            let picsift = per(API) + per(DECODING);
            let rest: Vec<String> = run
                .rest
                .iter()
                .take(3)
                .map(|(name, d)| format!("{name} {:.0}", ms_per(*d)))
                .collect();
            split_rows.push(format!(
                "| {shape} | {zips} | {:.0} | {:.0} | {picsift:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} ({}) |",
                per(API),
                per(DECODING),
                picsift / prepare_ms,
                per(GARAGE),
                per(POSTGRES),
                per(REDIS),
                per(CLIENT),
                per(REST),
                rest.join(", "),
            ));
        }
    }
    println!(
        "\nWhere the CPU went, ms per image (from `/proc`, per process); `prepare` on one core \
         took {prepare_ms:.1} ms per image:\n\n\
         | shape | zips | API process (serve, gateway) | decoders (serve) or workers (cluster) | picsift in all | picsift over `prepare` | Garage | PostgreSQL | Redis | the bench's client | the rest |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for row in split_rows {
        println!("{row}");
    }
    println!();
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// The photos split into `k` stored zips, in order.
fn split_zips(datas: &[Vec<u8>], k: usize) -> Vec<Vec<u8>> {
    let per = datas.len().div_ceil(k);
    datas
        .chunks(per)
        .enumerate()
        .map(|(z, part)| {
            let mut zip = picsift_tests::ZipBuilder::new();
            for (i, d) in part.iter().enumerate() {
                zip = zip.stored(&format!("photo_{}.jpg", z * per + i), d);
            }
            zip.finish()
        })
        .collect()
}

/// A policy file with the demo policy's NudeNet model alone (its path
/// made absolute), for `--policy` and, as `[[policy.models]]`, a cluster.
fn nudenet_policy(root: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    let model = root
        .join("models/nudenet.pt")
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("models/nudenet.pt: {e} (scripts/models.sh makes it)"))?;
    let demo = std::fs::read_to_string(root.join("policies/demo.toml"))?;
    let block = &demo[demo
        .find("[[models]]")
        .ok_or_else(|| anyhow::anyhow!("the demo policy names no model"))?..];
    let block = block.replace("\"../models/nudenet.pt\"", &format!("{model:?}"));
    let path = work.join("nudenet.toml");
    std::fs::write(&path, block)?;
    Ok(path)
}

/// What one run measured.
struct Run {
    first_202: Duration,
    complete: Duration,
    cpu: Duration,
    /// The CPU by part ([`API`], [`DECODING`], ...).
    parts: HashMap<&'static str, Duration>,
    /// The largest users in [`REST`], by process name.
    rest: Vec<(String, Duration)>,
}

/// The parts of the machine a run's CPU is split into.
const API: &str = "api";
const DECODING: &str = "decoding";
const GARAGE: &str = "garage";
const POSTGRES: &str = "postgres";
const REDIS: &str = "redis";
const CLIENT: &str = "client";
const REST: &str = "rest";

/// The part of processes common to both shapes: the stand-in stores, this
/// bench (the HTTP client), and the rest of the machine.
fn other_part(pid: u32, p: &cpu::Proc) -> &'static str {
    match p.comm.as_str() {
        _ if pid == std::process::id() => CLIENT,
        "garage" => GARAGE,
        "postgres" => POSTGRES,
        "redis-server" => REDIS,
        _ => REST,
    }
}

/// Sends the zips one after another, then waits until every batch is
/// complete, polling each batch's status.
async fn upload_all(
    client: &reqwest::Client,
    base: &str,
    zips: &[Vec<u8>],
    part: &dyn Fn(u32, &cpu::Proc) -> &'static str,
) -> anyhow::Result<Run> {
    let procs = cpu::snapshot();
    let cpu0 = cpu::machine();
    let start = Instant::now();
    let mut first_202 = None;
    let mut ids = Vec::new();
    for zip in zips {
        let r = client
            .post(format!("{base}/v1/batches"))
            .header("content-type", "application/zip")
            .body(zip.clone())
            .send()
            .await?;
        anyhow::ensure!(r.status() == 202, "upload answered {}", r.status());
        first_202.get_or_insert(start.elapsed());
        let v: Value = r.json().await?;
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    for id in &ids {
        loop {
            let s: Value = client
                .get(format!("{base}/v1/batches/{id}"))
                .send()
                .await?
                .json()
                .await?;
            if s["phase"] == "completed" || s["phase"] == "failed" {
                let counts = &s["counts"];
                anyhow::ensure!(
                    s["phase"] == "completed"
                        && counts["rejected"].as_u64() == Some(0)
                        && counts["failed"].as_u64() == Some(0),
                    "batch {id} refused or failed photos: {s}"
                );
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(1800),
                "batch {id} not done after 30 minutes: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (complete, cpu) = (start.elapsed(), cpu::machine().saturating_sub(cpu0));
    let after = cpu::snapshot();
    Ok(Run {
        first_202: first_202.unwrap_or_default(),
        complete,
        cpu,
        parts: cpu::split(&procs, &after, part),
        rest: cpu::by_name(&procs, &after, part, REST),
    })
}

/// One run against a fresh release `picsift serve` (default concurrency:
/// one chunk per core).
async fn run_serve(work: &Path, zips: &[Vec<u8>], policy: Option<&Path>) -> anyhow::Result<Run> {
    let data = work.join("serve");
    let _ = std::fs::remove_dir_all(&data);
    let mut cmd = Command::new(common::picsift_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data);
    if let Some(p) = policy {
        cmd.arg("--policy").arg(p);
    }
    let (mut server, base) = picsift_tests::bench::spawn(&mut cmd)?;
    let key = std::fs::read_to_string(data.join("admin.key"))?;
    let pid = server.id();
    let part = |p: u32, proc: &cpu::Proc| match p {
        _ if p == pid => API,
        _ if proc.ppid == pid => DECODING,
        _ => other_part(p, proc),
    };
    let run = upload_all(&common::client_with(key.trim()), &base, zips, &part).await;
    let _ = server.kill();
    let _ = server.wait();
    run
}

/// One run against a fresh cluster: a gateway and `workers` workers, one
/// chunk at a time each, with the default chunk size.
async fn run_cluster(
    zips: &[Vec<u8>],
    policy: Option<&Path>,
    workers: usize,
) -> anyhow::Result<Run> {
    let policy = match policy {
        None => String::new(),
        Some(p) => std::fs::read_to_string(p)?.replace("[[models]]", "[[policy.models]]"),
    };
    let c = Cluster::start_with(Setup {
        policy,
        sections: "[limits]\nrequests_per_second = 0\nmax_open_batches = 0\n".into(),
        ..Setup::default()
    });
    let defaults = [
        ("PICSIFT_WORKER_CHUNK_ENTRIES", "16"),
        ("PICSIFT_REDIS_VISIBILITY_TIMEOUT_MS", "30000"),
    ];
    let (_gateway, line) = c.spawn_env("gateway", "listening on", &defaults);
    let _workers: Vec<_> = (0..workers)
        .map(|_| c.spawn_env("worker", "started", &defaults).0)
        .collect();
    let part = |p: u32, proc: &cpu::Proc| match proc.comm.as_str() {
        "picsift" if proc.cmdline.contains(" gateway ") => API,
        "picsift" if proc.cmdline.contains(" worker ") => DECODING,
        _ => other_part(p, proc),
    };
    upload_all(
        &common::client_with(ADMIN_KEY),
        &base_of(&line),
        zips,
        &part,
    )
    .await
}
