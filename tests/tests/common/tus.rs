//! A small tus 1.0 client for the tests (the protocol's requests, one at a
//! time, answers returned as they are), so a test can send offsets,
//! lengths and checksums a well-behaved client would not.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Client, Response};
use sha2::{Digest, Sha256};

pub const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// The tus endpoints of one server, with one API key.
#[derive(Clone)]
pub struct Tus {
    pub http: Client,
    pub base: String,
    pub key: String,
}

impl Tus {
    pub fn new(base: &str, key: &str) -> Tus {
        Tus {
            // A connection per request: an answer given before the body was
            // read (a 409, a 415) closes its connection, and a pooled one
            // could be picked for the next request as it closes.
            http: Client::builder().pool_max_idle_per_host(0).build().unwrap(),
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
        }
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        self.http
            .request(method, url)
            .bearer_auth(&self.key)
            .header("Tus-Resumable", "1.0.0")
    }

    /// Creates an upload of `length` (deferred when `None`) with metadata
    /// `pairs`; returns the answer.
    pub async fn create(&self, length: Option<u64>, pairs: &[(&str, &str)]) -> Response {
        let meta = pairs
            .iter()
            .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
            .collect::<Vec<_>>()
            .join(",");
        let mut r = self.req(reqwest::Method::POST, "/v1/uploads");
        r = match length {
            Some(n) => r.header("Upload-Length", n),
            None => r.header("Upload-Defer-Length", "1"),
        };
        if !meta.is_empty() {
            r = r.header("Upload-Metadata", meta);
        }
        r.send().await.unwrap()
    }

    /// Creates an upload and returns its URL (panics on a refusal).
    pub async fn create_ok(&self, length: u64) -> String {
        let r = self.create(Some(length), &[("filename", "test.zip")]).await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        r.headers()["location"].to_str().unwrap().to_string()
    }

    pub async fn head(&self, url: &str) -> Response {
        self.req(reqwest::Method::HEAD, url).send().await.unwrap()
    }

    /// The upload's offset (panics unless 200).
    pub async fn offset(&self, url: &str) -> u64 {
        let r = self.head(url).await;
        assert_eq!(r.status(), 200, "HEAD {url}");
        r.headers()["upload-offset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// `PATCH` of `bytes` at `offset`, with a checksum when `sum` is given.
    pub async fn patch(
        &self,
        url: &str,
        offset: u64,
        bytes: Vec<u8>,
        sum: Option<&[u8]>,
    ) -> Response {
        let mut r = self
            .req(reqwest::Method::PATCH, url)
            .header("Content-Type", OFFSET_STREAM)
            .header("Upload-Offset", offset);
        if let Some(data) = sum {
            r = r.header(
                "Upload-Checksum",
                format!("sha256 {}", STANDARD.encode(Sha256::digest(data))),
            );
        }
        r.body(bytes).send().await.unwrap()
    }

    pub async fn delete(&self, url: &str) -> Response {
        self.req(reqwest::Method::DELETE, url).send().await.unwrap()
    }

    /// Uploads `data` in requests of `chunk` bytes; returns the batch id.
    pub async fn upload(&self, data: &[u8], chunk: usize) -> String {
        let url = self.create_ok(data.len() as u64).await;
        let mut offset = 0;
        let mut last = None;
        for piece in data.chunks(chunk) {
            let r = self.patch(&url, offset, piece.to_vec(), None).await;
            assert_eq!(r.status(), 204, "{:?}", r.text().await);
            offset += piece.len() as u64;
            assert_eq!(r.headers()["upload-offset"], offset.to_string().as_str());
            last = Some(r);
        }
        batch_of(&last.expect("some bytes"))
    }
}

/// The batch a finished upload's answer names.
pub fn batch_of(r: &Response) -> String {
    let id = r
        .headers()
        .get("picsift-batch-id")
        .unwrap_or_else(|| panic!("no Picsift-Batch-Id in {:?}", r.headers()))
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        r.headers()["picsift-batch-url"],
        format!("/v1/batches/{id}").as_str()
    );
    id
}
