//! The HTTP client commands: `upload`, `status` and `report`.
//!
//! They speak only the public API (`/v1/batches`), so they work the same
//! against the standalone server and a cluster. Their own types are
//! deliberately loose copies of the server's documents: an older client
//! keeps working when the server adds fields.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url, header};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use zip::CompressionMethod;
use zip::result::ZipError;
use zip::write::SimpleFileOptions;

/// Bytes per chunk handed to the HTTP body: large enough that the channel
/// costs nothing per byte, small enough that the progress bar moves.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the reading thread and the request; with
/// [`CHUNK`] this bounds the upload's memory to a few MiB, whatever its size.
const CHANNEL_DEPTH: usize = 8;
/// How long to wait for the reading thread once the request has ended. It
/// stops as soon as the request drops its body; this only guards against a
/// thread stuck on a slow disk hiding the request's own error.
const PRODUCER_GRACE: Duration = Duration::from_secs(5);
/// Zip bookkeeping per entry besides its name (local header, data
/// descriptor, central directory record): only feeds the progress estimate.
const ZIP_ENTRY_OVERHEAD: u64 = 128;
/// Files from this size on need ZIP64 records, which must be chosen before
/// the file's data is written because a streamed zip cannot go back.
const ZIP64_THRESHOLD: u64 = u32::MAX as u64;
/// Limit on the small JSON requests; uploads and the NDJSON report have none
/// because their length is the user's data, not the server's health.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Report entries asked for per page.
const REPORT_PAGE: &str = "1000";
/// Polls that may fail in a row (server restarting) before `--wait` gives up.
const MAX_POLL_FAILURES: u32 = 10;

/// Where the server is; every client command takes it.
#[derive(clap::Args)]
pub(crate) struct ServerArgs {
    /// Base URL of the picsift server.
    #[arg(
        long,
        env = "PICSIFT_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub(crate) server: Url,
    /// API key (default: the key in DATA/admin.key, which `picsift serve`
    /// creates on first start; DATA is PICSIFT_DATA or `.data`).
    #[arg(
        long,
        env = "PICSIFT_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub(crate) api_key: Option<String>,
}

impl ServerArgs {
    /// The API key: given, or the standalone server's admin key.
    fn key(&self) -> Option<String> {
        self.api_key.clone().or_else(|| {
            let data = std::env::var_os("PICSIFT_DATA").unwrap_or_else(|| ".data".into());
            let text =
                std::fs::read_to_string(std::path::Path::new(&data).join("admin.key")).ok()?;
            Some(text.trim().to_string())
        })
    }
}

/// Options of `picsift upload`.
#[derive(clap::Args)]
pub struct UploadArgs {
    /// A .zip file (sent as is), or a folder (zipped on the fly, sub-folders included).
    path: PathBuf,
    /// URL the server POSTs the final batch status to when the batch is finished.
    #[arg(long, value_name = "URL")]
    callback: Option<Url>,
    /// Send a folder's files even when the server already has them (by
    /// default they are left out after asking `POST /v1/images/lookup`).
    #[arg(long)]
    send_known: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Options of `picsift status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The batch id that `picsift upload` printed.
    id: String,
    /// Poll until the batch is completed or failed, showing progress on stderr.
    #[arg(long)]
    wait: bool,
    /// Time between polls with --wait, in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS", value_parser = clap::value_parser!(u64).range(50..))]
    interval_ms: u64,
    /// Print the server's JSON status document instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Options of `picsift report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The batch id that `picsift upload` printed.
    id: String,
    /// Print one JSON object per entry (NDJSON) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `picsift upload`: streams a zip file, or a folder zipped on the fly, to
/// the server and prints the new batch id alone on stdout.
pub async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let path = args.path;
    let meta = tokio::fs::metadata(&path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let source = if meta.is_dir() {
        let root = path.clone();
        let listing = tokio::task::spawn_blocking(move || list_folder(&root))
            .await
            .context("the folder walk stopped unexpectedly")??;
        if listing.files.is_empty() {
            bail!(
                "{} contains no regular files; there is nothing to upload",
                path.display()
            );
        }
        if listing.skipped > 0 {
            eprintln!(
                "note: skipped {} entries of {} that are not regular files (symbolic links, devices, ...)",
                listing.skipped,
                path.display()
            );
        }
        let files = crate::lookup::leave_out_known(&api, listing.files, args.send_known).await?;
        if files.is_empty() {
            eprintln!(
                "every file of {} is already stored; nothing to upload",
                path.display()
            );
            return Ok(());
        }
        Source::Folder(files)
    } else if meta.is_file() {
        Source::ZipFile {
            path,
            len: meta.len(),
        }
    } else {
        bail!(
            "{} is neither a file nor a folder; give a .zip file or a folder of images",
            path.display()
        );
    };

    let bar = ProgressBar::new(source.estimated_len());
    bar.set_style(style(
        "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta})",
        ProgressStyle::default_bar,
    ));

    let mut request = api
        .http
        .post(api.url(&["v1", "batches"])?)
        .header(header::CONTENT_TYPE, "application/zip");
    if let Some(callback) = &args.callback {
        request = request.query(&[("callback", callback.as_str())]);
    }
    // A known length lets the server refuse an oversized upload before it is sent.
    if let Source::ZipFile { len, .. } = &source {
        request = request.header(header::CONTENT_LENGTH, *len);
    }
    let (chunks, produced) = byte_pipe(move |out| source.write_to(out))?;
    let counted = bar.clone();
    let chunks = chunks.inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            counted.inc(bytes.len() as u64);
        }
    });
    let sent = request
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    let produced = match tokio::time::timeout(PRODUCER_GRACE, produced).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(io::Error::other(
            "the thread reading the upload stopped unexpectedly",
        )),
        Err(_) => Ok(()),
    };
    bar.finish_and_clear();
    // A local read failure explains a failed request better than the
    // request's own "body error", so it is reported first.
    produced.context("the upload was cut off")?;
    let sent = sent.map_err(|e| {
        let cut = closed_mid_upload(&e);
        let err = api.transport_error(e);
        if cut {
            // hyper reports the broken pipe, not the answer the server may
            // have sent before hanging up; say what usually causes it.
            err.context("the server closed the connection during the upload; it may have refused it early (too large?), see its logs")
        } else {
            err
        }
    })?;
    let response = api.check(sent, None).await?;
    let created: Created = response
        .json()
        .await
        .context("the server accepted the upload but its answer is not the expected JSON")?;
    print_stdout(&format!("{}\n", created.id))
}

/// `picsift status`: prints a batch's status; with `--wait`, follows it to
/// its final phase. Fails when the batch failed, so scripts can test it.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let id = batch_id(&args.id)?;
    let (status, raw) = if args.wait {
        wait_for_end(&api, id, Duration::from_millis(args.interval_ms)).await?
    } else {
        api.batch_status(id).await?
    };
    if args.json {
        print_stdout(&format!("{}\n", raw.trim_end()))?;
    } else {
        print_stdout(&describe(&status))?;
    }
    if matches!(status.phase.as_str(), "failed" | "expired") {
        match &status.error {
            Some(error) => bail!("batch {} failed: {error}", status.id),
            None => bail!("batch {} failed", status.id),
        }
    }
    Ok(())
}

/// `picsift report`: prints every entry's verdict as an aligned table, or
/// as NDJSON with `--json`.
pub async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let id = batch_id(&args.id)?;
    let url = api.url(&["v1", "batches", id, "report"])?;
    if args.json {
        return stream_ndjson(&api, id, url).await;
    }
    let mut rows = vec![["INDEX", "ENTRY", "VERDICT", "REASON", "DETAIL/IMAGE"].map(String::from)];
    let mut after: Option<String> = None;
    loop {
        let mut request = api
            .http
            .get(url.clone())
            .timeout(REQUEST_TIMEOUT)
            .query(&[("limit", REPORT_PAGE)]);
        if let Some(cursor) = &after {
            request = request.query(&[("after", cursor.as_str())]);
        }
        let response = api.check(api.send(request).await?, Some(id)).await?;
        let page: ReportPage = response
            .json()
            .await
            .context("the server's report page is not the expected JSON")?;
        rows.extend(page.entries.iter().map(row_cells));
        match page.next {
            None => break,
            Some(next) if after.as_ref() == Some(&next) => {
                bail!("the server gave the same report cursor {next:?} twice; stopping")
            }
            Some(next) => after = Some(next),
        }
    }
    print_stdout(&render_table(&rows))
}

// ---------------------------------------------------------------- HTTP

/// The server's base URL and a client for it.
pub(crate) struct Api {
    pub(crate) http: Client,
    base: Url,
}

impl Api {
    pub(crate) fn new(args: &ServerArgs) -> anyhow::Result<Self> {
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
    pub(crate) fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow!("--server {} cannot take a path", self.base))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    pub(crate) async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        request.send().await.map_err(|e| self.transport_error(e))
    }

    /// Keeps the `reqwest::Error` inside so callers can tell a transient
    /// failure (see [`is_transient`]) from the server's answer.
    fn transport_error(&self, err: reqwest::Error) -> anyhow::Error {
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
    pub(crate) async fn check(
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
                "{}\n(give an API key with --api-key or PICSIFT_API_KEY; `picsift serve` writes its admin key to DATA/admin.key, and `picsift admin keys create` makes more)",
                problem_message(status, &body)
            );
        }
        bail!("{}", problem_message(status, &body))
    }

    async fn batch_status(&self, id: &str) -> anyhow::Result<(BatchStatus, String)> {
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

fn is_transient(err: &anyhow::Error) -> bool {
    err.downcast_ref::<reqwest::Error>()
        .is_some_and(|e| e.is_connect() || e.is_timeout())
}

fn batch_id(id: &str) -> anyhow::Result<&str> {
    let id = id.trim();
    if id.is_empty() {
        bail!("the batch id is empty; give the id that `picsift upload` printed");
    }
    Ok(id)
}

/// An `application/problem+json` body; only what the user is shown.
#[derive(Deserialize)]
struct Problem {
    title: Option<String>,
    detail: Option<String>,
}

/// The answer to an upload.
#[derive(Deserialize)]
struct Created {
    id: String,
}

/// The batch status document, as far as this client shows it.
#[derive(Deserialize)]
struct BatchStatus {
    id: String,
    phase: String,
    #[serde(default)]
    counts: Counts,
    total_entries: Option<u64>,
    upload_bytes: Option<u64>,
    error: Option<String>,
    notification: Option<Notification>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Counts {
    accepted: u64,
    duplicate: u64,
    rejected: u64,
    failed: u64,
    pending: u64,
}

#[derive(Deserialize)]
struct Notification {
    url: String,
    state: String,
    #[serde(default)]
    attempts: u32,
    last_error: Option<String>,
    delivered_at: Option<String>,
}

#[derive(Deserialize)]
struct ReportPage {
    entries: Vec<ReportEntry>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct ReportEntry {
    index: u64,
    entry: String,
    verdict: String,
    reason: Option<String>,
    detail: Option<String>,
    image_id: Option<String>,
    duplicate_of: Option<String>,
    duplicate_kind: Option<String>,
    distance: Option<u32>,
}

// ---------------------------------------------------------------- status

fn is_final(phase: &str) -> bool {
    matches!(phase, "completed" | "failed" | "expired")
}

/// Polls until the batch reaches a final phase, with a bar of decided
/// entries on stderr.
async fn wait_for_end(
    api: &Api,
    id: &str,
    interval: Duration,
) -> anyhow::Result<(BatchStatus, String)> {
    let bar = ProgressBar::new(0);
    bar.set_style(style(
        "{spinner} {msg:<10} [{wide_bar}] {pos}/{len} entries ({eta})",
        ProgressStyle::default_bar,
    ));
    let mut failures = 0;
    loop {
        match api.batch_status(id).await {
            Ok((status, raw)) => {
                failures = 0;
                bar.set_message(status.phase.clone());
                if let Some(total) = status.total_entries {
                    bar.set_length(total);
                    bar.set_position(total.saturating_sub(status.counts.pending));
                }
                if is_final(&status.phase) {
                    bar.finish_and_clear();
                    return Ok((status, raw));
                }
            }
            Err(err) if is_transient(&err) && failures < MAX_POLL_FAILURES => {
                failures += 1;
                bar.set_message(format!("retrying ({failures}/{MAX_POLL_FAILURES}): {err}"));
            }
            Err(err) => {
                bar.finish_and_clear();
                return Err(err);
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// The human summary of a status document.
fn describe(s: &BatchStatus) -> String {
    let c = &s.counts;
    let mut out = format!("batch {}: {}\n", clean(&s.id), clean(&s.phase));
    out += &format!(
        "  accepted {}  duplicate {}  rejected {}  failed {}  pending {}\n",
        c.accepted, c.duplicate, c.rejected, c.failed, c.pending
    );
    if let (Some(entries), Some(bytes)) = (s.total_entries, s.upload_bytes) {
        out += &format!("  {entries} entries in {} uploaded\n", HumanBytes(bytes));
    }
    if let Some(error) = &s.error {
        out += &format!("  error: {}\n", clean(error));
    }
    if let Some(n) = &s.notification {
        let mut line = format!(
            "  notification to {}: {} after {} attempt(s)",
            clean(&n.url),
            clean(&n.state),
            n.attempts
        );
        if let Some(at) = &n.delivered_at {
            line += &format!(" at {}", clean(at));
        }
        if let Some(error) = &n.last_error {
            line += &format!("; last error: {}", clean(error));
        }
        out += &line;
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------- report

/// Column limits in characters; the last column is the widest because a
/// rejection's detail is what the user reads to fix the entry.
const ENTRY_WIDTH: usize = 60;
const REASON_WIDTH: usize = 28;
const DETAIL_WIDTH: usize = 80;

fn row_cells(e: &ReportEntry) -> [String; 5] {
    let detail = match (e.verdict.as_str(), &e.image_id, &e.duplicate_of) {
        ("accepted", Some(image), _) => image.clone(),
        ("duplicate", _, Some(original)) => match (&e.duplicate_kind, e.distance) {
            (Some(kind), Some(d)) => format!("{kind} dup ({d} bits) of {original}"),
            (Some(kind), None) => format!("{kind} dup of {original}"),
            _ => format!("dup of {original}"),
        },
        _ => e.detail.clone().unwrap_or_else(|| "-".into()),
    };
    [
        e.index.to_string(),
        // The end of a path names the file; its start is the shared folder.
        truncate_start(&clean(&e.entry), ENTRY_WIDTH),
        clean(&e.verdict),
        truncate_end(&clean(e.reason.as_deref().unwrap_or("-")), REASON_WIDTH),
        truncate_end(&clean(&detail), DETAIL_WIDTH),
    ]
}

/// Left-aligned columns two spaces apart, the first row being the header.
/// Widths count characters, which is right for the ids and codes and close
/// enough for entry names.
fn render_table(rows: &[[String; 5]]) -> String {
    let mut widths = [0; 5];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line += cell;
            } else {
                line += &format!("{cell:<width$}  ", width = widths[i]);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// Entry names come from the uploaded archive: control characters could
/// rewrite the user's terminal, so they are shown as `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn truncate_end(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn truncate_start(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_owned();
    }
    let mut out = String::from('…');
    out.extend(s.chars().skip(count - max.saturating_sub(1)));
    out
}

/// The whole report as the server streams it, one entry per line.
async fn stream_ndjson(api: &Api, id: &str, url: Url) -> anyhow::Result<()> {
    let request = api
        .http
        .get(url)
        .header(header::ACCEPT, "application/x-ndjson");
    let response = api.check(api.send(request).await?, Some(id)).await?;
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
    let mut body = response.bytes_stream();
    // Plain blocking writes: tokio's stdout is not among the features this
    // workspace enables, and a CLI blocking on its own stdout is harmless.
    let mut stdout = io::stdout();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| api.transport_error(e))?;
        match stdout.write_all(&chunk) {
            // The reader (`| head`) has all it wants.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("cannot write to stdout")?,
        }
    }
    match stdout.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// Writes to stdout without the panic `println!` has when the reader went away.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

pub(crate) fn style(template: &str, fallback: fn() -> ProgressStyle) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| fallback())
}

// ---------------------------------------------------------------- upload body

/// What `picsift upload` sends.
enum Source {
    /// A zip file, sent byte for byte.
    ZipFile { path: PathBuf, len: u64 },
    /// Files of a folder, zipped while they are sent.
    Folder(Vec<FolderFile>),
}

impl Source {
    /// The bytes the upload will have; exact for a zip file.
    fn estimated_len(&self) -> u64 {
        match self {
            Self::ZipFile { len, .. } => *len,
            Self::Folder(files) => files
                .iter()
                .map(|f| f.len + ZIP_ENTRY_OVERHEAD + 2 * f.name.len() as u64)
                .sum(),
        }
    }

    /// Runs on a blocking thread: the zip writer and file reads are synchronous.
    fn write_to(self, out: &mut ChannelWriter) -> io::Result<()> {
        match self {
            Self::ZipFile { path, len } => {
                let file = File::open(&path).map_err(|e| with_path("cannot open", &path, e))?;
                // `take` keeps the body to the Content-Length already sent
                // if the file grows meanwhile.
                io::copy(&mut file.take(len), out)
                    .map_err(|e| with_path("cannot read", &path, e))?;
                Ok(())
            }
            Self::Folder(files) => write_zip(&files, out).map(drop),
        }
    }
}

/// A regular file found in the uploaded folder.
pub(crate) struct FolderFile {
    /// Where it is on disk.
    pub(crate) path: PathBuf,
    /// Its name in the zip: relative to the folder, `/`-separated.
    pub(crate) name: String,
    /// Its size when the folder was walked.
    len: u64,
}

/// The regular files under a folder, sorted by zip name so the same folder
/// always gives the same archive.
struct FolderListing {
    files: Vec<FolderFile>,
    /// Symbolic links and special files, which are left out.
    skipped: usize,
}

fn list_folder(root: &Path) -> io::Result<FolderListing> {
    let mut listing = FolderListing {
        files: Vec::new(),
        skipped: 0,
    };
    // An explicit stack: deep trees cannot overflow the thread's stack.
    let mut folders = vec![(root.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = folders.pop() {
        let entries = fs::read_dir(&folder).map_err(|e| with_path("cannot list", &folder, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| with_path("cannot list", &folder, e))?;
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} has a name that is not valid UTF-8, which a zip cannot carry portably; rename it",
                        path.display()
                    ),
                ));
            };
            let name = format!("{prefix}{file_name}");
            // `file_type` does not follow symbolic links, so a link cannot
            // pull in files outside the folder or loop forever.
            let file_type = entry
                .file_type()
                .map_err(|e| with_path("cannot inspect", &path, e))?;
            if file_type.is_dir() {
                folders.push((path, format!("{name}/")));
            } else if file_type.is_file() {
                let len = entry
                    .metadata()
                    .map_err(|e| with_path("cannot inspect", &path, e))?
                    .len();
                listing.files.push(FolderFile { path, name, len });
            } else {
                listing.skipped += 1;
            }
        }
    }
    listing.files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listing)
}

/// Zips `files` into `out` as a stream: entries are stored (images do not
/// compress) and sized in data descriptors, so nothing is ever rewritten
/// and memory does not grow with the files' sizes.
fn write_zip<W: Write>(files: &[FolderFile], out: W) -> io::Result<W> {
    let mut zip = zip::ZipWriter::new_stream(out);
    for file in files {
        // Fixed metadata (the default 1980 timestamp, 0644) keeps the
        // archive a function of the files' names and contents.
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .unix_permissions(0o644)
            .large_file(file.len >= ZIP64_THRESHOLD);
        zip.start_file(file.name.as_str(), options)
            .map_err(zip_error)?;
        let source = File::open(&file.path).map_err(|e| with_path("cannot open", &file.path, e))?;
        // `take` keeps the entry to the size that chose the ZIP64 option
        // above if the file grows meanwhile.
        io::copy(&mut source.take(file.len), &mut zip)
            .map_err(|e| with_path("cannot add", &file.path, e))?;
    }
    Ok(zip.finish().map_err(zip_error)?.into_inner())
}

fn zip_error(err: ZipError) -> io::Error {
    match err {
        ZipError::Io(e) => e,
        other => io::Error::other(other),
    }
}

fn with_path(what: &str, path: &Path, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{what} {}: {err}", path.display()))
}

/// A `Write` that hands its bytes to the async side in [`CHUNK`]s, blocking
/// while the channel is full: the request's pace sets the reading's pace.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    /// The receiving side (the request body) is gone.
    disconnected: bool,
}

impl ChannelWriter {
    fn send(&mut self, item: io::Result<Bytes>) -> io::Result<()> {
        self.tx.blocking_send(item).map_err(|_| {
            self.disconnected = true;
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the request stopped taking the upload",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(CHUNK)).freeze();
            self.send(Ok(chunk))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.send(Ok(chunk))
    }
}

/// Runs `produce` on its own thread, writing into a bounded channel, and
/// returns the channel as a stream of chunks plus the thread's outcome.
///
/// A failure of `produce` is also sent down the stream, so the HTTP body
/// is aborted rather than ended early: the server must never take a
/// truncated upload for a whole one. The outcome is `Ok` when the stream's
/// consumer went away first, since the consumer then knows why.
fn byte_pipe<F>(
    produce: F,
) -> io::Result<(
    impl Stream<Item = io::Result<Bytes>>,
    oneshot::Receiver<io::Result<()>>,
)>
where
    F: FnOnce(&mut ChannelWriter) -> io::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let (done_tx, done_rx) = oneshot::channel();
    // A plain thread, not `spawn_blocking`: the runtime's shutdown waits for
    // blocking tasks, and this one may sit on a full channel.
    std::thread::Builder::new()
        .name("picsift-upload".into())
        .spawn(move || {
            let mut out = ChannelWriter {
                tx,
                buf: BytesMut::with_capacity(CHUNK),
                disconnected: false,
            };
            let result = match produce(&mut out).and_then(|()| out.flush()) {
                Err(_) if out.disconnected => Ok(()),
                Err(err) => {
                    // Ignored: if the receiver is gone, the request failed anyway.
                    let _ = out.send(Err(io::Error::new(err.kind(), err.to_string())));
                    Err(err)
                }
                Ok(()) => Ok(()),
            };
            let _ = done_tx.send(result);
        })?;
    let chunks = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((chunks, done_rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A fresh folder under the system's temp folder, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let path = std::env::temp_dir()
                .join(format!("picsift-cli-{tag}-{}-{nanos}", std::process::id()));
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn sample_folder(tag: &str) -> TempDir {
        let dir = TempDir::new(tag);
        fs::create_dir_all(dir.0.join("b/deeper")).unwrap();
        fs::write(dir.0.join("z.jpg"), b"zzz").unwrap();
        fs::write(dir.0.join("a.png"), vec![7u8; 3 * CHUNK + 17]).unwrap();
        fs::write(dir.0.join("b/deeper/c.webp"), b"").unwrap();
        fs::write(dir.0.join("b/x.jpg"), b"xx").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.0.join("z.jpg"), dir.0.join("link.jpg")).unwrap();
        dir
    }

    fn read_back(zip_bytes: Vec<u8>) -> Vec<(String, Vec<u8>)> {
        let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut file = archive.by_index(i).unwrap();
                let mut data = Vec::new();
                file.read_to_end(&mut data).unwrap();
                (file.name().unwrap().into_owned(), data)
            })
            .collect()
    }

    #[test]
    fn folder_listing_is_sorted_relative_and_skips_links() {
        let dir = sample_folder("listing");
        let listing = list_folder(&dir.0).unwrap();
        let names: Vec<_> = listing.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.png", "b/deeper/c.webp", "b/x.jpg", "z.jpg"]);
        assert_eq!(listing.skipped, usize::from(cfg!(unix)));
    }

    #[test]
    fn streamed_folder_zip_reads_back_with_the_same_files() {
        let dir = sample_folder("zip");
        let listing = list_folder(&dir.0).unwrap();
        let entries = read_back(write_zip(&listing.files, Vec::new()).unwrap());
        let names: Vec<_> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.png", "b/deeper/c.webp", "b/x.jpg", "z.jpg"]);
        assert_eq!(entries[0].1, vec![7u8; 3 * CHUNK + 17]);
        assert_eq!(entries[3].1, b"zzz");
    }

    #[test]
    fn same_folder_gives_the_same_archive() {
        let dir = sample_folder("determinism");
        let listing = list_folder(&dir.0).unwrap();
        assert_eq!(
            write_zip(&listing.files, Vec::new()).unwrap(),
            write_zip(&listing.files, Vec::new()).unwrap()
        );
    }

    #[tokio::test]
    async fn folder_through_the_pipe_arrives_whole_in_bounded_chunks() {
        let dir = sample_folder("pipe");
        let files = list_folder(&dir.0).unwrap().files;
        let expected = write_zip(&files, Vec::new()).unwrap();
        let (chunks, done) = byte_pipe(move |out| Source::Folder(files).write_to(out)).unwrap();
        let chunks: Vec<Bytes> = chunks.map(|c| c.unwrap()).collect().await;
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
        assert_eq!(chunks.concat(), expected);
        done.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn failed_read_aborts_the_stream_instead_of_ending_it() {
        let (chunks, done) = byte_pipe(|out| {
            out.write_all(b"PK partial")?;
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "cannot open photo.jpg",
            ))
        })
        .unwrap();
        let items: Vec<io::Result<Bytes>> = chunks.collect().await;
        assert!(items.last().is_some_and(|last| last.is_err()));
        assert_eq!(
            done.await.unwrap().unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
    }

    #[tokio::test]
    async fn dropped_request_body_stops_the_reader_quietly() {
        let (chunks, done) = byte_pipe(|out| {
            loop {
                out.write_all(&[0; 4096])?;
            }
        })
        .unwrap();
        drop(chunks);
        done.await.unwrap().unwrap();
    }

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

    #[test]
    fn report_rows_show_image_duplicate_or_detail() {
        let entry = |verdict: &str,
                     image: Option<&str>,
                     dup: Option<&str>,
                     detail: Option<&str>| ReportEntry {
            index: 3,
            entry: "photos/a\nb.jpg".into(),
            verdict: verdict.into(),
            reason: detail.map(|_| "truncated".into()),
            detail: detail.map(String::from),
            image_id: image.map(String::from),
            duplicate_of: dup.map(String::from),
            duplicate_kind: dup.map(|_| "exact".into()),
            distance: None,
        };
        assert_eq!(
            row_cells(&entry("accepted", Some("img1"), None, None))[4],
            "img1"
        );
        assert_eq!(
            row_cells(&entry("duplicate", None, Some("img1"), None))[4],
            "exact dup of img1"
        );
        let mut near = entry("duplicate", None, Some("img2"), None);
        near.duplicate_kind = Some("near".into());
        near.distance = Some(12);
        assert_eq!(row_cells(&near)[4], "near dup (12 bits) of img2");
        let rejected = row_cells(&entry("rejected", None, None, Some("file ends early")));
        assert_eq!(
            rejected,
            [
                "3",
                "photos/a?b.jpg",
                "rejected",
                "truncated",
                "file ends early"
            ]
            .map(String::from)
        );
    }

    #[test]
    fn table_columns_align_and_long_cells_are_cut() {
        let rows = [
            ["INDEX", "ENTRY", "VERDICT", "REASON", "DETAIL/IMAGE"].map(String::from),
            ["10", "a.jpg", "accepted", "-", "img"].map(String::from),
        ];
        assert_eq!(
            render_table(&rows),
            "INDEX  ENTRY  VERDICT   REASON  DETAIL/IMAGE\n10     a.jpg  accepted  -       img\n"
        );
        assert_eq!(truncate_start("folder/sub/name.jpg", 9), "…name.jpg");
        assert_eq!(truncate_end("a long detail", 6), "a lon…");
        assert_eq!(truncate_end("short", 6), "short");
    }
}
