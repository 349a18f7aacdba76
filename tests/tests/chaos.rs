//! Fault injection with invariants: the cluster processes (one gateway,
//! workers) over real Redis, PostgreSQL and Garage, a stream of uploads with
//! a known ground truth, and a seeded schedule of faults; afterwards the
//! reports and the stores are checked against the truth. See
//! docs/reliability.md for the long run's table.
//!
//! Short run (in `scripts/test.sh`): 45 s of uploads. Long run:
//! `PICSIFT_CHAOS_SECS=1800 PICSIFT_CHAOS_SEED=7 cargo test -p picsift-tests --test chaos -- --nocapture`
//! (`PICSIFT_CHAOS_WORKERS`, default 2).
//!
//! Ground truth: every entry is a picture (a seed) in one of two encodings
//! (quality 92, or quality 60: a near duplicate of the first, other bytes),
//! or a cut-off file. Pictures repeat within and across batches.

mod common;

use common::cluster::*;
use picsift_backends::cluster::S3BlobStore;
use picsift_backends::sql::SqlCatalog;
use picsift_core::backend::{BlobStore, Catalog};
use picsift_tests::{ZipBuilder, encode_jpeg, photo};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: the schedule and the uploads replay from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One entry's truth, encoded in its name: `p<seed>-<q92|q60>-<i>.jpg` or
/// `bad-<i>.jpg`.
fn entry(rng: &mut Rng, pictures: u64, i: usize) -> (String, Vec<u8>) {
    let seed = 9000 + rng.below(pictures);
    match rng.below(10) {
        0 => {
            let mut cut = encode_jpeg(&photo(seed, 320, 240), 92);
            cut.truncate(cut.len() / 2);
            (format!("bad-{i}.jpg"), cut)
        }
        1..=3 => (
            format!("p{seed}-q60-{i}.jpg"),
            encode_jpeg(&photo(seed, 320, 240), 60),
        ),
        _ => (
            format!("p{seed}-q92-{i}.jpg"),
            encode_jpeg(&photo(seed, 320, 240), 92),
        ),
    }
}

fn picture_of(name: &str) -> Option<&str> {
    name.strip_prefix('p')?.split('-').next()
}

/// A batch that was received: its id and its entries' names.
type Batch = (String, Vec<String>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillWorker,
    PauseWorker,
    KillGateway,
    RedisLosesData,
    PostgresRestart,
    GarageRestart,
}

const FAULTS: [Fault; 6] = [
    Fault::KillWorker,
    Fault::PauseWorker,
    Fault::KillGateway,
    Fault::RedisLosesData,
    Fault::PostgresRestart,
    Fault::GarageRestart,
];

/// Uploads one zip, retrying while the gateway is down or answers 503;
/// `None` once the run is over.
async fn upload_retrying(base: &Mutex<String>, zip: Vec<u8>, until: Instant) -> Option<String> {
    loop {
        if Instant::now() > until + Duration::from_secs(60) {
            return None;
        }
        let url = format!("{}/v1/batches", base.lock().unwrap());
        let sent = http()
            .post(url)
            .header("content-type", "application/zip")
            .body(zip.clone())
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 202 => {
                let v: Value = r.json().await.ok()?;
                return v["id"].as_str().map(str::to_string);
            }
            Ok(r) => assert_eq!(r.status(), 503, "upload refused: {:?}", r.text().await),
            Err(_) => {} // the gateway is down or restarting
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_lose_nothing_and_store_nothing_twice() {
    let secs = env_u64("PICSIFT_CHAOS_SECS", 45);
    let seed = env_u64("PICSIFT_CHAOS_SEED", 1).max(1);
    let n_workers = env_u64("PICSIFT_CHAOS_WORKERS", 2) as usize;
    eprintln!("chaos: {secs} s, seed {seed}, {n_workers} workers");
    let mut c = Cluster::start();
    let (mut gateway, line) = c.spawn("gateway", "listening on");
    let base = Arc::new(Mutex::new(base_of(&line)));
    let mut workers: Vec<Proc> = (0..n_workers)
        .map(|_| c.spawn("worker", "started").0)
        .collect();
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    // Distinct pictures the uploads draw from: about a third of the
    // entries are a picture's first upload.
    let pictures = 60 + 4 * secs;

    // The uploads: a batch every half second, 6 entries each.
    let truth: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let uploader = {
        let (base, truth) = (base.clone(), truth.clone());
        tokio::spawn(async move {
            let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
            let mut n = 0;
            while Instant::now() < until {
                let mut zip = ZipBuilder::new();
                let mut names = Vec::new();
                for i in 0..6 {
                    let (name, bytes) = entry(&mut rng, pictures, n * 6 + i);
                    zip = zip.stored(&name, &bytes);
                    names.push(name);
                }
                n += 1;
                if let Some(id) = upload_retrying(&base, zip.finish(), until).await {
                    truth.lock().unwrap().push((id, names));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // The faults, one every 3–8 s.
    let mut rng = Rng(seed);
    let mut faults: BTreeMap<Fault, u32> = BTreeMap::new();
    while Instant::now() + Duration::from_secs(8) < until {
        tokio::time::sleep(Duration::from_millis(3000 + rng.below(5000))).await;
        let fault = FAULTS[rng.below(FAULTS.len() as u64) as usize];
        eprintln!(
            "chaos: {:?} at {:.0} s",
            fault,
            start.elapsed().as_secs_f64()
        );
        match fault {
            Fault::KillWorker => {
                let i = rng.below(workers.len() as u64) as usize;
                workers[i].kill();
                workers[i] = c.spawn("worker", "started").0;
            }
            Fault::PauseWorker => {
                // Past the visibility timeout (3 s here).
                let i = rng.below(workers.len() as u64) as usize;
                workers[i].signal("STOP");
                tokio::time::sleep(Duration::from_secs(5)).await;
                workers[i].signal("CONT");
            }
            Fault::KillGateway => {
                gateway.kill();
                let (g, line) = c.spawn("gateway", "listening on");
                gateway = g;
                *base.lock().unwrap() = base_of(&line);
            }
            Fault::RedisLosesData => c.redis.restart(),
            Fault::PostgresRestart => {
                c.postgres.stop();
                tokio::time::sleep(Duration::from_secs(2)).await;
                c.postgres.resume();
            }
            Fault::GarageRestart => {
                c.garage.stop();
                tokio::time::sleep(Duration::from_secs(2)).await;
                c.garage.resume();
            }
        }
        *faults.entry(fault).or_default() += 1;
    }
    uploader.await.unwrap();
    let truth = truth.lock().unwrap().clone();
    let base = base.lock().unwrap().clone();

    // Every batch ends.
    for (id, _) in &truth {
        let wait = Instant::now();
        loop {
            let s = get_json(&format!("{base}/v1/batches/{id}")).await;
            if s["phase"] == "completed" || s["phase"] == "failed" || s["phase"] == "expired" {
                break;
            }
            assert!(
                wait.elapsed() < Duration::from_secs(600),
                "batch {id} did not end: {s}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let mut violations: Vec<String> = Vec::new();
    let catalog = SqlCatalog::connect_postgres(&c.postgres.url, 2)
        .await
        .unwrap();
    let stored_ids: HashSet<String> = catalog.image_ids().await.unwrap().into_iter().collect();
    let store = S3BlobStore::connect(c.s3.clone()).await.unwrap();

    // One final verdict per entry; the truth holds.
    let mut accepted_by_picture: HashMap<String, Vec<String>> = HashMap::new();
    let (mut entries, mut verdicts) = (0usize, BTreeMap::<String, usize>::new());
    for (id, names) in &truth {
        let lines = report(&base, id).await;
        entries += names.len();
        if lines.len() != names.len() {
            violations.push(format!(
                "batch {id}: {} lines for {} entries",
                lines.len(),
                names.len()
            ));
        }
        for l in &lines {
            let name = l["entry"].as_str().unwrap_or_default();
            let verdict = l["verdict"].as_str().unwrap_or_default();
            *verdicts.entry(verdict.to_string()).or_default() += 1;
            match verdict {
                "accepted" => {
                    let image = l["image_id"].as_str().unwrap_or_default().to_string();
                    if !stored_ids.contains(&image) {
                        violations.push(format!("{id} {name}: accepted, not in the catalog"));
                    }
                    match picture_of(name) {
                        Some(p) => accepted_by_picture.entry(p.into()).or_default().push(image),
                        None => violations.push(format!("{id} {name}: a cut-off file accepted")),
                    }
                }
                "duplicate" => {
                    let of = l["duplicate_of"].as_str().unwrap_or_default();
                    if !stored_ids.contains(of) {
                        violations.push(format!("{id} {name}: duplicate of {of}, not stored"));
                    }
                }
                "rejected" | "failed" => {}
                other => violations.push(format!("{id} {name}: verdict {other:?}")),
            }
        }
    }
    // No image accepted twice; a picture stored in both encodings only when
    // their hashes are further apart than the near distance (for a few
    // generated pictures, quality 60 moves the hash by 32-38 bits), which
    // the check of every stored pair below decides.
    let mut accepted_images: HashMap<&str, usize> = HashMap::new();
    for image in accepted_by_picture.values().flatten() {
        *accepted_images.entry(image).or_default() += 1;
    }
    for (image, n) in &accepted_images {
        if *n > 1 {
            violations.push(format!("image {image} accepted {n} times"));
        }
    }
    let both_encodings = accepted_by_picture
        .values()
        .filter(|images| images.len() > 1)
        .count();
    // Every catalog image has its bytes, hashing to its id; no two stored
    // images are near duplicates.
    let mut hashes = Vec::new();
    for id in &stored_ids {
        let key = picsift_core::model::image_key(id);
        let bytes = match store.size(&key).await {
            Ok(Some(n)) => store.get_range(&key, 0..n).await.ok(),
            _ => None,
        };
        if bytes.is_none_or(|b| common::sha256_hex(&b) != *id) {
            violations.push(format!("image {id}: its bytes are missing or differ"));
        }
        let img = catalog.image(id).await.unwrap().unwrap();
        if let (Some(h), Some(q)) = (img.pdq, img.pdq_quality)
            && q >= picsift_core::pdq::MIN_MATCH_QUALITY
        {
            hashes.push((id.clone(), h.parse::<picsift_core::pdq::Hash>().unwrap()));
        }
    }
    for (i, (a, ha)) in hashes.iter().enumerate() {
        for (b, hb) in &hashes[i + 1..] {
            let d = picsift_core::pdq::distance(ha, hb);
            if d <= picsift_core::pdq::MATCH_DISTANCE {
                violations.push(format!("{a} and {b} are both stored, {d} bits apart"));
            }
        }
    }
    let unrecorded = image_blob_ids(&store)
        .await
        .iter()
        .filter(|id| !stored_ids.contains(*id))
        .count();

    eprintln!("\n| fault | count |\n|---|---|");
    for (f, n) in &faults {
        eprintln!("| {f:?} | {n} |");
    }
    eprintln!(
        "\nchaos: seed {seed}, {:.0} s, {} batches, {entries} entries, verdicts {verdicts:?}, \
         {} images stored ({both_encodings} pictures in both encodings, their hashes further \
         apart than the near distance), {unrecorded} blobs without a record (left for the \
         orphan sweep), \
         {} invariant violations",
        start.elapsed().as_secs_f64(),
        truth.len(),
        stored_ids.len(),
        violations.len()
    );
    drop(workers);
    drop(gateway);
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(!truth.is_empty(), "no upload went through");
}
