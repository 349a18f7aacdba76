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
//! or a cut-off file. Pictures repeat within and across batches and across
//! the two tenants that upload. Duplicates count per tenant
//! (`dedup_scope = "tenant"`; `PICSIFT_CHAOS_SCOPE=global` for one scope),
//! so the same bytes are stored for both tenants under one content-addressed
//! key, the case where one tenant's upload could delete another's image.
//! Every upload asks for a completion webhook, to a receiver in this test
//! that fails one delivery in four.
//!
//! The processes reach Redis, PostgreSQL and Garage through fault-injecting
//! proxies (`common/proxy.rs`); Redis persists (append-only file, fsync
//! always) so that it can restart with its data as well as without.

mod common;

use common::cluster::*;
use common::proxy::FaultProxy;
use picsift_backends::cluster::S3BlobStore;
use picsift_backends::sql::SqlCatalog;
use picsift_core::backend::{BlobStore, Catalog};
use picsift_core::webhook::Secret;
use picsift_tests::{ZipBuilder, encode_jpeg, photo};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A batch that was received: its id, its tenant, its entries' names.
type Batch = (String, &'static str, Vec<String>);

const TENANTS: [&str; 2] = ["acme", "bravo"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillWorker,
    PauseWorker,
    KillGateway,
    RedisLosesData,
    RedisRestartsWithData,
    PostgresRestart,
    GarageRestart,
    /// 250 ms on every chunk of bytes to one backend, for 6 s.
    SlowNetwork(&'static str),
    /// Every open connection to one backend closed.
    CutConnections(&'static str),
}

const FAULTS: [Fault; 13] = [
    Fault::KillWorker,
    Fault::PauseWorker,
    Fault::KillGateway,
    Fault::RedisLosesData,
    Fault::RedisRestartsWithData,
    Fault::PostgresRestart,
    Fault::GarageRestart,
    Fault::SlowNetwork("redis"),
    Fault::SlowNetwork("postgres"),
    Fault::SlowNetwork("garage"),
    Fault::CutConnections("redis"),
    Fault::CutConnections("postgres"),
    Fault::CutConnections("garage"),
];

/// The webhook receiver: what it was sent (headers and body) for each
/// attempt it accepted; it answers 500 to every fourth attempt.
type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

async fn webhook_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (log, attempts) = (log.clone(), attempts.clone());
                async move {
                    use std::sync::atomic::Ordering;
                    if attempts.fetch_add(1, Ordering::SeqCst) % 4 == 3 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    log.lock().unwrap().push((headers, body.to_vec()));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    common::proxy::background().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, app).await
    });
    (url, received)
}

/// Runs `op` with a 30 s limit, again until it answers: the checks end
/// even when a request hangs (and say so).
async fn patiently<T, F: std::future::Future<Output = T>>(
    what: &str,
    mut op: impl FnMut() -> F,
) -> T {
    let mut attempt = 1;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), op()).await {
            Ok(v) => return v,
            Err(_) => {
                eprintln!("chaos: {what}: no answer within 30 s (attempt {attempt}); asking again")
            }
        }
        attempt += 1;
    }
}

/// The batch ids whose completion event arrived with a valid signature.
fn signed_completions(received: &Received) -> HashSet<String> {
    let secret = Secret::parse(WEBHOOK_SECRET);
    let mut done = HashSet::new();
    for (headers, body) in received.lock().unwrap().iter() {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(id), Some(ts), Some(sig)) = (
            header("webhook-id"),
            header("webhook-timestamp").and_then(|t| t.parse().ok()),
            header("webhook-signature"),
        ) else {
            continue;
        };
        if !secret.verify(id, ts, body, sig) {
            continue;
        }
        if let Ok(event) = serde_json::from_slice::<Value>(body)
            && let Some(batch) = event["data"]["id"].as_str()
        {
            done.insert(batch.to_string());
        }
    }
    done
}

fn proxy<'a>(c: &'a Cluster, name: &str) -> &'a FaultProxy {
    &c.proxies.iter().find(|(n, _)| *n == name).unwrap().1
}

/// Uploads one zip as `client`, retrying while the gateway is down or
/// answers 503; `None` once the run is over.
async fn upload_retrying(
    client: &reqwest::Client,
    base: &Mutex<String>,
    query: &str,
    zip: Vec<u8>,
    until: Instant,
) -> Option<String> {
    loop {
        if Instant::now() > until + Duration::from_secs(60) {
            return None;
        }
        let url = format!("{}/v1/batches{query}", base.lock().unwrap());
        let sent = client
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
    let secs: u64 = picsift_tests::env_or("PICSIFT_CHAOS_SECS", 45);
    let seed: u64 = picsift_tests::env_or("PICSIFT_CHAOS_SEED", 1u64).max(1);
    let n_workers = picsift_tests::env_or("PICSIFT_CHAOS_WORKERS", 2) as usize;
    let global = std::env::var("PICSIFT_CHAOS_SCOPE").is_ok_and(|s| s == "global");
    let scope = if global { "global" } else { "tenant" };
    eprintln!("chaos: {secs} s, seed {seed}, {n_workers} workers, dedup scope {scope}");
    let (hook, received) = webhook_receiver().await;
    let mut c = Cluster::start_with(Setup {
        proxied: true,
        persistent_redis: true,
        top_level: "webhook_allowed_networks = [\"127.0.0.1/32\"]".into(),
        policy: format!("dedup_scope = \"{scope}\""),
        // The checks download every stored image as its tenant, far past
        // the default 20 requests/s a tenant may make (a 429 is not a lost
        // image: the first long run with tenants counted 1,704 of them).
        sections: "[limits]\nrequests_per_second = 0\n".into(),
    });
    let (mut gateway, line) = c.spawn("gateway", "listening on");
    let base = Arc::new(Mutex::new(base_of(&line)));
    let clients: Vec<(&'static str, reqwest::Client)> = TENANTS
        .iter()
        .map(|t| (*t, common::client_with(&c.tenant_key(t))))
        .collect();
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
        let (base, truth, clients) = (base.clone(), truth.clone(), clients.clone());
        let query = format!("?callback={hook}");
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
                let (tenant, client) = &clients[rng.below(2) as usize];
                if let Some(id) = upload_retrying(client, &base, &query, zip.finish(), until).await
                {
                    truth.lock().unwrap().push((id, tenant, names));
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
            Fault::RedisRestartsWithData => c.redis.restart_keeping_data(),
            Fault::SlowNetwork(backend) => {
                proxy(&c, backend).set_delay(Duration::from_millis(250));
                tokio::time::sleep(Duration::from_secs(6)).await;
                proxy(&c, backend).set_delay(Duration::ZERO);
            }
            Fault::CutConnections(backend) => proxy(&c, backend).cut(),
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
    for (id, _, _) in &truth {
        let wait = Instant::now();
        loop {
            let url = format!("{base}/v1/batches/{id}");
            let s = patiently("batch status", || get_json(&url)).await;
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
    eprintln!("chaos: every batch ended; checking reports and stores");
    let mut violations: Vec<String> = Vec::new();
    let catalog = SqlCatalog::connect_postgres(&c.postgres.url, 2)
        .await
        .unwrap();
    let stored_ids: HashSet<String> = catalog.image_ids().await.unwrap().into_iter().collect();
    let mut owners: HashMap<String, BTreeSet<String>> = HashMap::new();
    for id in &stored_ids {
        let of = catalog.image_owners(id).await.unwrap();
        owners.insert(id.clone(), of.into_iter().collect());
    }
    let store = S3BlobStore::connect(c.s3.clone()).await.unwrap();
    // Duplicates count within a scope: the uploading tenant's, or one for all.
    let scope_of = |tenant: &str| if global { "all" } else { tenant }.to_string();

    // One final verdict per entry; the truth holds.
    let mut accepted_by_picture: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut accepted_by_tenant: HashMap<&str, BTreeSet<String>> = HashMap::new();
    let (mut entries, mut verdicts) = (0usize, BTreeMap::<String, usize>::new());
    for (id, tenant, names) in &truth {
        let lines = patiently("report", || report(&base, id)).await;
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
                    if !owners.get(&image).is_some_and(|o| o.contains(*tenant)) {
                        violations.push(format!(
                            "{id} {name}: accepted for {tenant}, not in the catalog as theirs"
                        ));
                    }
                    accepted_by_tenant
                        .entry(tenant)
                        .or_default()
                        .insert(image.clone());
                    match picture_of(name) {
                        Some(p) => accepted_by_picture
                            .entry((scope_of(tenant), p.into()))
                            .or_default()
                            .push(image),
                        None => violations.push(format!("{id} {name}: a cut-off file accepted")),
                    }
                }
                "duplicate" => {
                    let of = l["duplicate_of"].as_str().unwrap_or_default();
                    match owners.get(of) {
                        None => {
                            violations.push(format!("{id} {name}: duplicate of {of}, not stored"))
                        }
                        Some(o) if !global && !o.contains(*tenant) => violations.push(format!(
                            "{id} {name}: duplicate of {of}, which {tenant} does not own"
                        )),
                        Some(_) => {}
                    }
                }
                "rejected" | "failed" => {}
                other => violations.push(format!("{id} {name}: verdict {other:?}")),
            }
        }
    }
    // No image accepted twice in a scope; a picture stored in both
    // encodings only when their hashes are further apart than the near
    // distance (for a few generated pictures, quality 60 moves the hash by
    // 32-38 bits), which the check of every stored pair below decides.
    let mut accepted_images: HashMap<(&str, &str), usize> = HashMap::new();
    for ((scope, _), images) in &accepted_by_picture {
        for image in images {
            *accepted_images.entry((scope, image)).or_default() += 1;
        }
    }
    for ((scope, image), n) in &accepted_images {
        if *n > 1 {
            violations.push(format!("image {image} accepted {n} times in scope {scope}"));
        }
    }
    let both_encodings = accepted_by_picture
        .values()
        .filter(|images| images.len() > 1)
        .count();
    // Every catalog image has its bytes, hashing to its id; no two images
    // stored in one scope are near duplicates.
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
            let shared = global || !owners[a].is_disjoint(&owners[b]);
            if d <= picsift_core::pdq::MATCH_DISTANCE && shared {
                violations.push(format!(
                    "{a} and {b} are both stored in one scope, {d} bits apart"
                ));
            }
        }
    }
    eprintln!("chaos: checking each tenant's downloads");
    // Each tenant still downloads every image it was told was accepted,
    // byte for byte: no other tenant's upload deleted or changed it.
    for (tenant, client) in &clients {
        for image in accepted_by_tenant.get(tenant).into_iter().flatten() {
            let got = patiently("download", || async {
                match client.get(format!("{base}/v1/images/{image}")).send().await {
                    Ok(r) if r.status() == 200 => Ok(r.bytes().await.unwrap_or_default()),
                    Ok(r) => Err(format!("{}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
            match got {
                Ok(b) if common::sha256_hex(&b) == *image => {}
                Ok(_) => violations.push(format!("{tenant} downloads its image {image} altered")),
                Err(e) => {
                    violations.push(format!("{tenant} cannot download its image {image}: {e}"))
                }
            }
        }
    }
    eprintln!("chaos: waiting for every batch's webhook");
    // Every batch's completion was delivered, signed (retries for a few
    // minutes: a delivery that failed waits its backoff).
    let wait = Instant::now();
    let undelivered = loop {
        let delivered = signed_completions(&received);
        let missing: Vec<&String> = truth
            .iter()
            .map(|(id, _, _)| id)
            .filter(|id| !delivered.contains(*id))
            .collect();
        if missing.is_empty() || wait.elapsed() > Duration::from_secs(300) {
            break missing;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for id in &undelivered {
        let url = format!("{base}/v1/batches/{id}");
        let s = patiently("batch status", || get_json(&url)).await;
        violations.push(format!(
            "batch {id}: no signed completion webhook ({})",
            s["notification"]
        ));
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
    let webhooks = received.lock().unwrap().len();
    eprintln!(
        "\nchaos: seed {seed}, scope {scope}, {:.0} s, {} batches, {entries} entries, verdicts {verdicts:?}, \
         {webhooks} webhook deliveries accepted (every fourth attempt answered 500), \
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
