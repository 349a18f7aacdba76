//! Test harness: starts the real `picsift` binary on a free loopback port
//! with its own data folder, and talks to it over HTTP.

#![allow(dead_code)]

pub mod cluster;
pub mod proxy;
pub mod tus;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `picsift` binary built next to this test executable.
pub fn picsift_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = dir.join(format!("picsift{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A running `picsift serve`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its data folder.
    pub data: PathBuf,
    /// The admin API key it created on first start (DATA/admin.key).
    pub key: String,
    args: Vec<String>,
}

/// An HTTP client that sends `key` with every request.
pub fn client_with(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().expect("key fits a header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

impl Server {
    /// Starts a server on `data` with extra arguments and waits until it listens.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut child = Command::new(picsift_bin())
            .args(["serve", "--data"])
            .arg(data)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--webhook-secret",
                "whsec_dGVzdC1zZWNyZXQtZm9yLXBpY3NpZnQ=",
            ])
            .args(&args)
            .env("PICSIFT_LOG", "warn,picsift_worker=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start picsift serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
                }
                eprintln!("[server] {line}");
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start listening within 30 s");
        let key = std::fs::read_to_string(data.join("admin.key"))
            .expect("picsift serve writes DATA/admin.key")
            .trim()
            .to_string();
        Server {
            child,
            base,
            data: data.to_path_buf(),
            key,
            args,
        }
    }

    /// A client with the admin key.
    pub fn client(&self) -> reqwest::Client {
        client_with(&self.key)
    }

    /// Creates a key for `tenant` with `picsift admin keys create`.
    pub fn tenant_key(&self, tenant: &str) -> String {
        picsift_admin(
            &["keys", "create", "--tenant", tenant],
            ("--data", &self.data),
        )
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the server with SIGKILL (no graceful shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Uploads a zip body; returns the status and the JSON answer.
    pub async fn upload(
        &self,
        zip: Vec<u8>,
        query: &str,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self
            .client()
            .post(self.url(&format!("/v1/batches{query}")))
            .header("content-type", "application/zip")
            .body(zip)
            .send()
            .await
            .expect("upload request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, r.json().await.unwrap_or(Value::Null), headers)
    }

    /// Uploads and expects 202; returns the batch id.
    pub async fn upload_ok(&self, zip: Vec<u8>) -> String {
        let (status, body, _) = self.upload(zip, "").await;
        assert_eq!(status, 202, "upload refused: {body}");
        body["id"].as_str().expect("batch id").to_string()
    }

    /// GETs JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client()
            .get(self.url(path))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON body")
    }

    /// Polls the batch until it is completed or failed (60 s at most).
    pub async fn wait_done(&self, id: &str) -> Value {
        let start = Instant::now();
        loop {
            let s = self.get_json(&format!("/v1/batches/{id}")).await;
            if s["phase"] == "completed" || s["phase"] == "failed" {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "batch {id} not done in time: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The whole report, every page.
    pub async fn report(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .get_json(&format!("/v1/batches/{id}/report?limit=5&after={after}"))
                .await;
            out.extend(page["entries"].as_array().expect("entries").iter().cloned());
            match page["next"].as_str() {
                Some(n) => after = n.to_string(),
                None => return out,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The report line for an entry name.
pub fn line<'a>(report: &'a [Value], entry: &str) -> &'a Value {
    report
        .iter()
        .find(|l| l["entry"] == entry)
        .unwrap_or_else(|| panic!("no report line for {entry}"))
}

/// Files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Redis's `used_memory` (bytes) and its number of keys.
pub async fn redis_memory(url: &str) -> (u64, u64) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    (used, keys)
}

/// Runs `picsift admin ARGS` and returns what it printed, failing on an error.
pub fn picsift_admin(args: &[&str], place: (&str, &Path)) -> String {
    let out = Command::new(picsift_bin())
        .arg("admin")
        .args(args)
        .arg(place.0)
        .arg(place.1)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run picsift admin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
