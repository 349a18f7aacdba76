//! The HTTP API client: one `reqwest` client carrying the API key, URLs
//! built from percent-encoded segments, transport failures and
//! `application/problem+json` answers turned into messages that say what
//! to do, and the API's documents read into the types the gateway writes.
//!
//! The batch status and report lines are `picsift_core::model` types, the
//! very ones the gateway serialises, so the client cannot drift from the
//! server. Unknown fields are ignored, so a newer server that adds fields
//! still works with this client; the small wrappers below exist only
//! because the gateway builds those documents with `json!`.

use std::io;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use picsift_core::format::Format;
use picsift_core::model::{BatchView, ReportEntry};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url, header};
use serde::Deserialize;

use super::args::ServerArgs;
use super::render::{clean, truncate_end};

/// Limit on the small JSON requests; uploads and the NDJSON report have none
/// because their length is the user's data, not the server's health.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Report entries asked for per page.
const REPORT_PAGE: &str = "1000";

/// The answer to an upload (`202 Accepted`), as far as the client uses it.
#[derive(Deserialize)]
pub(super) struct Created {
    /// The new batch's id.
    pub(super) id: String,
}

/// One page of `GET /v1/batches/{id}/report`.
#[derive(Deserialize)]
pub(super) struct ReportPage {
    /// The page's lines, as the gateway serialised them.
    pub(super) entries: Vec<ReportEntry>,
    /// The cursor of the next page; `None` on the last.
    pub(super) next: Option<String>,
}

/// One page of `GET /v1/images`.
#[derive(Deserialize)]
pub(super) struct ImagePage {
    /// The page's images.
    pub(super) images: Vec<ImageListed>,
    /// The cursor of the next page; `None` on the last.
    pub(super) next: Option<String>,
}

/// What the client needs of a stored image's description.
#[derive(Deserialize)]
pub(super) struct ImageListed {
    /// The image id: the SHA-256 of its stored bytes.
    pub(super) id: String,
    /// Its true format.
    pub(super) format: Format,
    /// Its stored bytes.
    pub(super) size: u64,
}

/// The answer of `POST /v1/images/lookup`.
#[derive(Deserialize)]
struct Known {
    known: Vec<KnownFile>,
}

#[derive(Deserialize)]
struct KnownFile {
    sha256: String,
}

/// An `application/problem+json` body; only what the user is shown.
#[derive(Deserialize)]
struct Problem {
    title: Option<String>,
    detail: Option<String>,
}

/// The server's base URL and a client for it.
pub(super) struct Api {
    http: Client,
    base: Url,
}

impl Api {
    /// The HTTP client (with the API key).
    pub(super) fn http(&self) -> &Client {
        &self.http
    }

    /// The server's base URL.
    pub(super) fn base(&self) -> &Url {
        &self.base
    }

    pub(super) fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let base = args.server.clone();
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--server {base} is not an http(s) URL like http://127.0.0.1:8080");
        }
        let mut headers = header::HeaderMap::new();
        if let Some(key) = args.key() {
            let mut value = header::HeaderValue::from_str(&format!("Bearer {key}"))
                .context("the API key has characters a header cannot carry")?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let http = Client::builder()
            .default_headers(headers)
            .user_agent(concat!("picsift/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self { http, base })
    }

    /// `base` + segments, each percent-encoded, so an odd batch id cannot
    /// reach another endpoint.
    pub(super) fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow!("--server {} cannot take a path", self.base))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    pub(super) async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        request.send().await.map_err(|e| self.transport_error(e))
    }

    /// Keeps the `reqwest::Error` inside so callers can tell a transient
    /// failure (see [`is_transient`]) from the server's answer.
    pub(super) fn transport_error(&self, err: reqwest::Error) -> anyhow::Error {
        let what = if err.is_connect() {
            format!("cannot reach the server at {}", self.base)
        } else if err.is_timeout() {
            format!("the server at {} did not answer in time", self.base)
        } else {
            format!("the request to the server at {} failed", self.base)
        };
        anyhow::Error::new(err).context(what)
    }

    /// Passes a 2xx response through; turns anything else into an error
    /// saying what the server said. `batch` names the batch a 404 is about.
    pub(super) async fn check(
        &self,
        response: Response,
        batch: Option<&str>,
    ) -> anyhow::Result<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if let (StatusCode::NOT_FOUND, Some(id)) = (status, batch) {
            bail!("batch {id} not found on the server at {}", self.base);
        }
        let body = response.text().await.unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "{}\n(give an API key with --api-key or PICSIFT_API_KEY: `picsift serve` writes its admin key to DATA/admin.key, a cluster's first admin key is the gateway's PICSIFT_ADMIN_KEY, and `picsift admin keys create` makes more)",
                problem_message(status, &body)
            );
        }
        bail!("{}", problem_message(status, &body))
    }

    /// `POST /v1/batches` of a zip, still without its body; `len` when it
    /// is known lets the server refuse an oversized upload before it is sent.
    pub(super) fn upload_request(
        &self,
        len: Option<u64>,
        callback: Option<&Url>,
    ) -> anyhow::Result<RequestBuilder> {
        let mut request = self
            .http
            .post(self.url(&["v1", "batches"])?)
            .header(header::CONTENT_TYPE, "application/zip");
        if let Some(callback) = callback {
            request = request.query(&[("callback", callback.as_str())]);
        }
        if let Some(len) = len {
            request = request.header(header::CONTENT_LENGTH, len);
        }
        Ok(request)
    }

    /// The server's answer to [`Self::upload_request`], or why there is none.
    pub(super) async fn upload_answer(
        &self,
        sent: Result<Response, reqwest::Error>,
    ) -> anyhow::Result<Created> {
        let sent = sent.map_err(|e| {
            let cut = closed_mid_upload(&e);
            let err = self.transport_error(e);
            if cut {
                // hyper reports the broken pipe, not the answer the server may
                // have sent before hanging up; say what usually causes it.
                err.context("the server closed the connection during the upload; it may have refused it early (too large?), see its logs")
            } else {
                err
            }
        })?;
        let response = self.check(sent, None).await?;
        response
            .json()
            .await
            .context("the server accepted the upload but its answer is not the expected JSON")
    }

    /// `GET /v1/batches/{id}`: the status document, and its raw text for `--json`.
    pub(super) async fn batch_status(&self, id: &str) -> anyhow::Result<(BatchView, String)> {
        let request = self
            .http
            .get(self.url(&["v1", "batches", id])?)
            .timeout(REQUEST_TIMEOUT);
        let response = self.check(self.send(request).await?, Some(id)).await?;
        let raw = response.text().await.map_err(|e| self.transport_error(e))?;
        let status = serde_json::from_str(&raw)
            .context("the server's batch status is not the expected JSON")?;
        Ok((status, raw))
    }

    /// One page of a batch's report, from the cursor `after`.
    pub(super) async fn report_page(
        &self,
        id: &str,
        after: Option<&str>,
    ) -> anyhow::Result<ReportPage> {
        let mut request = self
            .http
            .get(self.url(&["v1", "batches", id, "report"])?)
            .timeout(REQUEST_TIMEOUT)
            .query(&[("limit", REPORT_PAGE)]);
        if let Some(cursor) = after {
            request = request.query(&[("after", cursor)]);
        }
        let response = self.check(self.send(request).await?, Some(id)).await?;
        response
            .json()
            .await
            .context("the server's report page is not the expected JSON")
    }

    /// The whole report of a batch as NDJSON, still to be read.
    pub(super) async fn report_ndjson(&self, id: &str) -> anyhow::Result<Response> {
        let request = self
            .http
            .get(self.url(&["v1", "batches", id, "report"])?)
            .header(header::ACCEPT, "application/x-ndjson");
        let response = self.check(self.send(request).await?, Some(id)).await?;
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.contains("ndjson") {
            bail!(
                "the server answered {content_type:?} instead of application/x-ndjson; is it an older picsift?"
            );
        }
        Ok(response)
    }

    /// `GET /v1/images/{id}/metadata`.
    pub(super) async fn image_metadata(&self, id: &str) -> anyhow::Result<ImageListed> {
        let url = self.url(&["v1", "images", id, "metadata"])?;
        let request = self.http.get(url).timeout(REQUEST_TIMEOUT);
        self.check(self.send(request).await?, None)
            .await
            .with_context(|| format!("image {id}"))?
            .json()
            .await
            .context("the image metadata is not the expected JSON")
    }

    /// One page of `GET /v1/images?QUERY`, from the cursor `after`.
    pub(super) async fn image_page(
        &self,
        query: &str,
        after: Option<&str>,
    ) -> anyhow::Result<ImagePage> {
        let mut url = self.url(&["v1", "images"])?;
        url.set_query(Some(query));
        let mut request = self.http.get(url).timeout(REQUEST_TIMEOUT);
        if let Some(a) = after {
            request = request.query(&[("after", a)]);
        }
        self.check(self.send(request).await?, None)
            .await?
            .json()
            .await
            .context("the image list is not the expected JSON")
    }

    /// `GET /v1/images/{id}`: the stored bytes, still to be read.
    pub(super) async fn image_bytes(&self, id: &str) -> anyhow::Result<Response> {
        let url = self.url(&["v1", "images", id])?;
        self.check(self.send(self.http.get(url)).await?, None).await
    }

    /// `POST /v1/images/lookup`: which of these file hashes the server
    /// already has. `None` from a server without the lookup (an older one).
    pub(super) async fn lookup(&self, sha256: &[String]) -> anyhow::Result<Option<Vec<String>>> {
        let request = self
            .http
            .post(self.url(&["v1", "images", "lookup"])?)
            .timeout(REQUEST_TIMEOUT)
            .json(&serde_json::json!({ "sha256": sha256 }));
        let response = self.send(request).await?;
        // A server without the lookup answers 404, or 405 (its
        // `/v1/images/{id}` route takes only GET).
        if matches!(
            response.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) {
            return Ok(None);
        }
        let answer: Known = self
            .check(response, None)
            .await?
            .json()
            .await
            .context("the lookup answer is not the expected JSON")?;
        Ok(Some(answer.known.into_iter().map(|k| k.sha256).collect()))
    }
}

/// `title: detail` of an RFC 9457 problem, or the start of whatever else
/// the server (or a proxy in front of it) answered.
fn problem_message(status: StatusCode, body: &str) -> String {
    match serde_json::from_str::<Problem>(body) {
        Ok(Problem {
            title: Some(title),
            detail: Some(detail),
        }) => format!("{title}: {detail}"),
        Ok(Problem {
            title: Some(title),
            detail: None,
        }) => title,
        _ if body.trim().is_empty() => format!("the server answered {status}"),
        _ => format!(
            "the server answered {status}: {}",
            truncate_end(&clean(body.trim()), 300)
        ),
    }
}

/// Whether the connection broke while the request body was still being sent.
fn closed_mid_upload(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            )
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether a failed request is worth retrying: the server could not be
/// reached or did not answer in time (it may be restarting).
pub(super) fn is_transient(err: &anyhow::Error) -> bool {
    err.downcast_ref::<reqwest::Error>()
        .is_some_and(|e| e.is_connect() || e.is_timeout())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_bodies_read_as_title_and_detail() {
        let body = r#"{"type":"https://picsift.io/problems/not-a-zip","title":"Not a zip archive","status":400,"detail":"no end of central directory"}"#;
        assert_eq!(
            problem_message(StatusCode::BAD_REQUEST, body),
            "Not a zip archive: no end of central directory"
        );
        assert_eq!(
            problem_message(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>"),
            "the server answered 502 Bad Gateway: <html>bad gateway</html>"
        );
        assert_eq!(
            problem_message(StatusCode::SERVICE_UNAVAILABLE, ""),
            "the server answered 503 Service Unavailable"
        );
    }
}
