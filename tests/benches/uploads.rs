//! Upload throughput to `202` of one large zip, each way a client can send
//! it, next to `cp` of the same file, in one run:
//!
//! - `picsift serve`: one request (`POST /v1/batches`), tus in 16 MiB
//!   `PATCH`es (parts to its staging folder);
//! - `picsift gateway` over Garage, PostgreSQL and Redis (no worker, so
//!   nothing else runs): one request, tus (parts to an S3 multipart
//!   upload), and a direct upload (the client PUTs 8 MiB parts to
//!   presigned Garage URLs; the gateway only completes it).
//!
//! The server's RSS is sampled every 100 ms during each upload (first and
//! highest sample). Uses the `picsift` binary next to this one
//! (`target/debug`, built optimized with debug info by the workspace's
//! dev profile).
//!
//! Run: `cargo bench -p picsift-tests --bench uploads --profile dev`
//! Size: PICSIFT_BENCH_UPLOAD_MB (default 2048). The gateway's binary:
//! PICSIFT_BENCH_GATEWAY_BIN (default the same `picsift`; the gateway image
//! ships the slim one, `cargo build -p picsift --no-default-features`,
//! without libtorch, whose RSS is the gateway's).

use picsift_tests::bench::{rss_kb, spawn, spawn_serve, time_cp, write_zip};
use picsift_tests::services::garage::{self, Garage};
use picsift_tests::services::postgres::Postgres;
use picsift_tests::services::redis::RedisServer;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TUS_CHUNK: u64 = 16 << 20;
const KEY: &str = "psk_0123456789abcdef_bootstrapKeyForTheUploadBenchmark-0123456789";

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return Ok(());
    }
    let mb: u64 = picsift_tests::env_or("PICSIFT_BENCH_UPLOAD_MB", 2048);
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let zip = work.path().join("upload.zip");
    let photos: Vec<Vec<u8>> = (0..4)
        .map(|s| picsift_tests::jpeg(9000 + s, 2400, 1800))
        .collect();
    write_zip(&zip, &photos, mb << 20)?;
    let bytes = std::fs::metadata(&zip)?.len();
    // Dirty pages of the fresh zip would slow whichever write runs first.
    anyhow::ensure!(Command::new("sync").status()?.success(), "sync failed");
    let bin = bin();
    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();

    let cp = time_cp(&zip, &work.path().join("copy.zip"))?;
    rows.push(("cp + sync".to_string(), cp, None));

    // The standalone server (PICSIFT_BENCH_UPLOAD_SERVE=0 skips it).
    let data = work.path().join("serve");
    if picsift_tests::env_or("PICSIFT_BENCH_UPLOAD_SERVE", 1u32) == 1 {
        let (mut serve, base) = spawn_serve(&bin, &data)?;
        let key = std::fs::read_to_string(data.join("admin.key"))?
            .trim()
            .to_string();
        for way in [Way::OneShot, Way::Tus] {
            let (t, rss) = measure(serve.id(), || {
                rt.block_on(way.send(&base, &key, &zip, bytes))
            })?;
            rows.push((way.label("serve"), t, Some(rss)));
            // Let its worker finish the batch before the next upload.
            rt.block_on(wait_idle(&base, &key))?;
        }
        let _ = serve.kill();
        let _ = serve.wait();
        let _ = std::fs::remove_dir_all(&data);
    }

    // The cluster gateway.
    let g = Garage::start();
    let bucket = g.bucket("bench");
    let pg = Postgres::start();
    let redis = RedisServer::start();
    let config = work.path().join("picsift.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nwebhook_secret = \"whsec_dGVzdA==\"\n\
             [s3]\nendpoint = \"{}\"\nregion = \"{}\"\nbucket = \"{bucket}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n\
             [redis]\nurl = \"{}\"\n[postgres]\nurl = \"{}\"\n[limits]\nrequests_per_second = 0\n",
            g.endpoint,
            garage::REGION,
            garage::ACCESS_KEY,
            garage::SECRET_KEY,
            redis.url,
            pg.url
        ),
    )?;
    let gateway_bin =
        std::env::var_os("PICSIFT_BENCH_GATEWAY_BIN").map_or(bin.clone(), PathBuf::from);
    let (mut gateway, base) = spawn(
        Command::new(&gateway_bin)
            .args(["gateway", "--config"])
            .arg(&config)
            .env("PICSIFT_ADMIN_KEY", KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true"),
    )?;
    for way in [Way::OneShot, Way::Tus, Way::Direct] {
        let (t, rss) = measure(gateway.id(), || {
            rt.block_on(way.send(&base, KEY, &zip, bytes))
        })?;
        rows.push((way.label("gateway + Garage"), t, Some(rss)));
    }
    let _ = gateway.kill();
    let _ = gateway.wait();

    println!(
        "## Upload throughput to 202, {:.0} MB zip, loopback (`cargo bench -p picsift-tests --bench uploads --profile dev`)\n",
        bytes as f64 / 1e6
    );
    println!(
        "| how | seconds | MB/s | ratio to the one-shot upload on the same server | server RSS first / peak |\n|---|---|---|---|---|"
    );
    let one_shot = |server: &str| {
        rows.iter()
            .find(|(l, _, _)| l.starts_with(server) && l.ends_with("one request"))
            .map(|r| r.1)
    };
    for (label, t, rss) in &rows {
        let base = one_shot(label.split(':').next().unwrap_or(""));
        println!(
            "| {label} | {:.1} | {:.0} | {} | {} |",
            t.as_secs_f64(),
            bytes as f64 / 1e6 / t.as_secs_f64(),
            base.map_or("".into(), |b| format!(
                "{:.2}x",
                b.as_secs_f64() / t.as_secs_f64()
            )),
            rss.map_or("".into(), |(first, peak)| format!(
                "{:.0} / {:.0} MB",
                first as f64 / 1024.0,
                peak as f64 / 1024.0
            )),
        );
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Way {
    OneShot,
    Tus,
    Direct,
}

impl Way {
    fn label(self, server: &str) -> String {
        format!(
            "{server}: {}",
            match self {
                Way::OneShot => "one request",
                Way::Tus => "tus, 16 MiB PATCHes",
                Way::Direct => "direct to S3, 8 MiB parts",
            }
        )
    }

    async fn send(self, base: &str, key: &str, zip: &Path, len: u64) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        match self {
            Way::OneShot => {
                let file = tokio::fs::File::open(zip).await?;
                let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                    file,
                    256 << 10,
                ));
                let r = http
                    .post(format!("{base}/v1/batches"))
                    .bearer_auth(key)
                    .header("content-type", "application/zip")
                    .header("content-length", len)
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(
                    r.status() == 202,
                    "one-shot: {} {}",
                    r.status(),
                    r.text().await?
                );
            }
            Way::Tus => {
                let r = http
                    .post(format!("{base}/v1/uploads"))
                    .bearer_auth(key)
                    .header("Tus-Resumable", "1.0.0")
                    .header("Upload-Length", len)
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 201, "tus creation: {}", r.status());
                let url = format!("{base}{}", r.headers()["location"].to_str()?);
                let mut offset = 0;
                while offset < len {
                    let n = TUS_CHUNK.min(len - offset);
                    let chunk = read_range(zip, offset, n)?;
                    let r = http
                        .patch(&url)
                        .bearer_auth(key)
                        .header("Tus-Resumable", "1.0.0")
                        .header("Upload-Offset", offset)
                        .header("Content-Type", "application/offset+octet-stream")
                        .body(chunk)
                        .send()
                        .await?;
                    anyhow::ensure!(
                        r.status() == 204,
                        "PATCH at {offset}: {} {}",
                        r.status(),
                        r.text().await?
                    );
                    offset += n;
                    if offset == len {
                        anyhow::ensure!(r.headers().contains_key("picsift-batch-id"), "no batch");
                    }
                }
            }
            Way::Direct => {
                let started: serde_json::Value = http
                    .post(format!("{base}/v1/uploads"))
                    .bearer_auth(key)
                    .json(&serde_json::json!({"size": len}))
                    .send()
                    .await?
                    .json()
                    .await?;
                let size = started["part_size"]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("{started}"))?;
                let mut tags = Vec::new();
                for p in started["parts"].as_array().unwrap() {
                    let n = p["number"].as_u64().unwrap();
                    let start = n.saturating_sub(1) * size;
                    let chunk = read_range(zip, start, size.min(len - start))?;
                    let r = http
                        .put(p["url"].as_str().unwrap())
                        .body(chunk)
                        .send()
                        .await?;
                    anyhow::ensure!(r.status() == 200, "part {n}: {}", r.status());
                    tags.push(
                        serde_json::json!({"number": n, "etag": r.headers()["etag"].to_str()?}),
                    );
                }
                let r = http
                    .post(format!(
                        "{base}{}",
                        started["complete_url"].as_str().unwrap()
                    ))
                    .bearer_auth(key)
                    .json(&serde_json::json!({"parts": tags}))
                    .send()
                    .await?;
                anyhow::ensure!(
                    r.status() == 202,
                    "complete: {} {}",
                    r.status(),
                    r.text().await?
                );
            }
        }
        Ok(())
    }
}

/// Runs `f`, sampling `pid`'s RSS every 100 ms: the time, and the first
/// and highest sample (KiB).
fn measure(
    pid: u32,
    f: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<(Duration, (u64, u64))> {
    let stop = Arc::new(AtomicBool::new(false));
    let (first, peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (stop, first, peak) = (stop.clone(), first.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let kb = rss_kb(pid, "VmRSS");
                let _ = first.compare_exchange(0, kb, Ordering::SeqCst, Ordering::SeqCst);
                peak.fetch_max(kb, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let t = Instant::now();
    let result = f();
    let elapsed = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    result?;
    Ok((
        elapsed,
        (first.load(Ordering::SeqCst), peak.load(Ordering::SeqCst)),
    ))
}

/// Waits until the standalone server has no batch in progress.
async fn wait_idle(base: &str, key: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..3000 {
        let page: serde_json::Value = http
            .get(format!("{base}/v1/batches"))
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        let busy = page["batches"].as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b["phase"] == "received" || b["phase"] == "processing")
        });
        if !busy {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the server never finished its batches")
}

fn bin() -> PathBuf {
    let mut p = std::env::current_exe().expect("the bench's path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("picsift")
}

fn read_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}
