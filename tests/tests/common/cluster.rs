//! The cluster shape on this machine, for the multi-process tests
//! (`cluster.rs`, `chaos.rs`): Garage (S3), PostgreSQL and Redis started
//! as real servers on loopback ports, and `picsift gateway` / `worker`
//! processes against them, with their logs kept.

use super::proxy::FaultProxy;
use super::{picsift_bin, sha256_hex};
use picsift_backends::cluster::{RedisDedup, S3BlobStore, S3Config};
use picsift_core::backend::{BlobStore, DedupIndex};
use picsift_tests::services::garage::{self, Garage};
use picsift_tests::services::postgres::Postgres;
use picsift_tests::services::redis::RedisServer;
use picsift_tests::{ZipBuilder, jpeg};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub garage: Garage,
    pub postgres: Postgres,
    pub redis: RedisServer,
    pub config: PathBuf,
    /// How the test itself reaches Garage (directly, not through a proxy).
    pub s3: S3Config,
    /// With [`Setup::proxied`], the proxies the picsift processes reach the
    /// backends through: Redis, PostgreSQL, Garage.
    pub proxies: Vec<(&'static str, FaultProxy)>,
    _dir: tempfile::TempDir,
}

/// How [`Cluster::start_with`] sets the cluster up.
#[derive(Default)]
pub struct Setup {
    /// The picsift processes reach each backend through a [`FaultProxy`]
    /// (needs a tokio runtime).
    pub proxied: bool,
    /// Redis keeps its data across [`RedisServer::restart_keeping_data`].
    pub persistent_redis: bool,
    /// More configuration, appended to the file (top-level keys first).
    pub top_level: String,
    /// `[policy]` settings.
    pub policy: String,
    /// More sections, appended at the end (`[limits]`, ...).
    pub sections: String,
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(Setup::default())
    }

    pub fn start_with(setup: Setup) -> Cluster {
        let garage = Garage::start();
        let bucket = garage.bucket("picsift");
        let postgres = Postgres::start();
        let redis = if setup.persistent_redis {
            RedisServer::start_persistent()
        } else {
            RedisServer::start()
        };
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("picsift.toml");
        let mut proxies = Vec::new();
        let (mut s3_endpoint, mut redis_url, mut postgres_url) = (
            garage.endpoint.clone(),
            redis.url.clone(),
            postgres.url.clone(),
        );
        if setup.proxied {
            let via = |what: &'static str, url: &str, port: u16, proxies: &mut Vec<_>| {
                let proxy = FaultProxy::start(port);
                let url = url.replace(&format!(":{port}"), &format!(":{}", proxy.port));
                proxies.push((what, proxy));
                url
            };
            redis_url = via("redis", &redis_url, redis.port, &mut proxies);
            postgres_url = via("postgres", &postgres_url, postgres.port, &mut proxies);
            s3_endpoint = via("garage", &s3_endpoint, garage.port, &mut proxies);
        }
        let s3 = S3Config {
            endpoint: garage.endpoint.clone(),
            region: garage::REGION.into(),
            bucket: bucket.clone(),
            access_key_id: garage::ACCESS_KEY.into(),
            secret_access_key: garage::SECRET_KEY.into(),
            part_size: 5 << 20,
            ..S3Config::default()
        };
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n{}\n\
                 [policy]\n{}\n\
                 [s3]\nendpoint = \"{}\"\nregion = \"{}\"\nbucket = \"{bucket}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\npart_size = 5242880\n\
                 [redis]\nurl = \"{}\"\nvisibility_timeout_ms = 3000\n\
                 [postgres]\nurl = \"{}\"\nmax_connections = 4\n\
                 [worker]\nconcurrency = 1\nlease_ms = 5000\nchunk_entries = 4\nmax_deliveries = 30\n{}",
                setup.top_level,
                setup.policy,
                s3_endpoint,
                garage::REGION,
                garage::ACCESS_KEY,
                garage::SECRET_KEY,
                redis_url,
                postgres_url,
                setup.sections,
            ),
        )
        .unwrap();
        Cluster {
            garage,
            postgres,
            redis,
            config,
            s3,
            proxies,
            _dir: dir,
        }
    }

    /// Creates an API key for `tenant` in the cluster's catalog.
    pub fn tenant_key(&self, tenant: &str) -> String {
        super::picsift_admin(
            &["keys", "create", "--tenant", tenant],
            ("--config", &self.config),
        )
    }

    /// Starts `picsift ROLE` and waits for the line that says it is up; returns it with that line.
    pub fn spawn(&self, role: &str, ready: &str) -> (Proc, String) {
        self.spawn_env(role, ready, &[])
    }

    /// [`Self::spawn`] with settings overridden by environment variables.
    pub fn spawn_env(&self, role: &str, ready: &str, env: &[(&str, &str)]) -> (Proc, String) {
        let mut child = Command::new(picsift_bin())
            .args([role, "--config"])
            .arg(&self.config)
            // Never ask the cloud's metadata endpoint for credentials.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("PICSIFT_LOG", "warn,picsift_worker=info")
            .env("PICSIFT_ADMIN_KEY", ADMIN_KEY)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (tag, ready) = (role.to_string(), ready.to_string());
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    let _ = tx.send(line.clone());
                }
                eprintln!("[{tag}] {line}");
                kept.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{role} did not start"));
        (Proc(child, log), line)
    }
}

/// The cluster's webhook signing secret.
pub const WEBHOOK_SECRET: &str = "whsec_dGVzdA==";

/// The gateway's bootstrap admin key (`PICSIFT_ADMIN_KEY`).
pub const ADMIN_KEY: &str = "psk_0123456789abcdef_bootstrapKeyForTheClusterTests-0123456789ab";

/// A client with the admin key.
pub fn http() -> reqwest::Client {
    super::client_with(ADMIN_KEY)
}

/// A picsift process and the lines of its log so far.
pub struct Proc(pub Child, Arc<Mutex<Vec<String>>>);

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }

    /// Whether a line of its log so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.1.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Sends SIGTERM, as Kubernetes does when it deletes a pod, and waits
    /// up to `limit` for the process to exit.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Proc {
    /// Sends `signal` (`STOP`, `CONT`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn get_json(url: &str) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

pub async fn wait_done(base: &str, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let s = get_json(&format!("{base}/v1/batches/{id}")).await;
        if s["phase"] == "completed" || s["phase"] == "failed" {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "batch {id} not done: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn report(base: &str, id: &str) -> Vec<Value> {
    let text = http()
        .get(format!("{base}/v1/batches/{id}/report"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub async fn upload(base: &str, zip: Vec<u8>) -> String {
    let r = http()
        .post(format!("{base}/v1/batches"))
        .header("content-type", "application/zip")
        .body(zip)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// After all batches: one verdict per entry, the images bucket holds
/// exactly the accepted images, each downloads and hashes to its id, and no
/// claim is pending.
pub async fn check_invariants(
    c: &Cluster,
    base: &str,
    batches: &HashMap<String, usize>,
) -> BTreeSet<String> {
    let mut accepted = BTreeSet::new();
    for (id, entries) in batches {
        let lines = report(base, id).await;
        assert_eq!(lines.len(), *entries, "batch {id}: one line per entry");
        for l in &lines {
            match l["verdict"].as_str().unwrap() {
                "accepted" => {
                    accepted.insert(l["image_id"].as_str().unwrap().to_string());
                }
                "duplicate" => {}
                other => panic!("unexpected verdict {other}: {l}"),
            }
        }
    }
    for l in batches.keys() {
        for d in report(base, l)
            .await
            .iter()
            .filter(|l| l["verdict"] == "duplicate")
        {
            assert!(
                accepted.contains(d["duplicate_of"].as_str().unwrap()),
                "duplicate of a stored image: {d}"
            );
        }
    }
    let store = S3BlobStore::connect(c.s3.clone()).await.unwrap();
    let stored = image_blob_ids(&store).await;
    assert_eq!(
        stored, accepted,
        "the images bucket holds exactly the accepted images"
    );
    for id in &accepted {
        let bytes = http()
            .get(format!("{base}/v1/images/{id}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&sha256_hex(&bytes), id);
    }
    assert!(
        store.list("staging/").await.unwrap().is_empty(),
        "staged uploads are deleted"
    );
    let dedup = RedisDedup::connect(&c.redis.url, "picsift:").await.unwrap();
    assert_eq!(
        dedup.pending_claims().await.unwrap(),
        0,
        "no claim left pending"
    );
    accepted
}

/// The ids of the images whose bytes are in the object store.
pub async fn image_blob_ids(store: &S3BlobStore) -> BTreeSet<String> {
    store
        .list("images/")
        .await
        .unwrap()
        .iter()
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect()
}

pub fn base_of(line: &str) -> String {
    line.split("listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

pub fn batch_zip(seeds: &[u64], size: (u32, u32)) -> Vec<u8> {
    let mut z = ZipBuilder::new();
    for (i, s) in seeds.iter().enumerate() {
        z = z.stored(&format!("img_{i:02}.jpg"), &jpeg(*s, size.0, size.1));
    }
    z.finish()
}
