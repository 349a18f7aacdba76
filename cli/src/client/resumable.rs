//! `picsift upload` of a zip file that survives a bad network: straight to
//! object storage on presigned URLs when the server offers it (a cluster
//! on S3), else with tus, resumed by itself after a dropped connection and,
//! across runs, from the upload URL it remembered for the file in a small
//! state file (`$PICSIFT_STATE_DIR`, else `$XDG_STATE_HOME/picsift`, else
//! `~/.local/state/picsift`: `uploads.json`). What to do after each answer
//! is [`next`], a pure function of the status.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use indicatif::ProgressBar;
use reqwest::{Response, StatusCode, Url, header};
use serde::{Deserialize, Serialize};

use super::api::Api;

/// Bytes per `PATCH` (as the web frontend sends) and per direct part read.
const CHUNK: u64 = 16 << 20;
/// Failures in a row (each followed by a longer wait, up to 30 s) before
/// the upload gives up; the upload URL stays remembered for a later run.
const MAX_FAILURES: u32 = 12;

/// What to do after an answer to a `PATCH`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Appended; go on.
    Continue,
    /// Ask the offset again (`HEAD`) after a wait, then go on from there.
    Resync,
    /// Gone (expired, terminated, lost): start a new upload.
    Restart,
    /// Refused: stop with the server's reason.
    Fail,
}

/// The rule: 2xx goes on; 409 (another offset) and 423 (busy), 5xx and
/// 429 (wait) ask again; 404/410 start over; other 4xx are final.
pub(super) fn next(status: u16) -> Next {
    match status {
        200..=299 => Next::Continue,
        409 | 423 | 429 | 500..=599 => Next::Resync,
        404 | 410 => Next::Restart,
        _ => Next::Fail,
    }
}

/// The remembered upload URLs, by file.
#[derive(Default, Serialize, Deserialize)]
struct State {
    uploads: BTreeMap<String, String>,
}

fn state_file() -> Option<PathBuf> {
    let dir = std::env::var_os("PICSIFT_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("picsift")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/picsift"))
        })?;
    Some(dir.join("uploads.json"))
}

fn load_state() -> State {
    state_file()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Remembers (or forgets, with `None`) the upload URL of file `key`.
fn remember(key: &str, url: Option<&str>) {
    let Some(file) = state_file() else { return };
    let mut state = load_state();
    match url {
        Some(u) => state.uploads.insert(key.to_string(), u.to_string()),
        None => state.uploads.remove(key),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
        std::fs::rename(tmp, &file)
    };
    if let Err(e) = write() {
        eprintln!(
            "note: cannot write {}: {e} (an interrupted upload will start over)",
            file.display()
        );
    }
}

/// The key a file's upload is remembered under: the server, the file's
/// full path, size and modification time (another file, or the same one
/// changed, starts a new upload).
fn file_key(api: &Api, path: &Path, meta: &std::fs::Metadata) -> String {
    let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{} {} {} {mtime}", api.base(), full.display(), meta.len())
}

/// Reads `len` bytes of `path` at `offset`.
fn read_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A line on stderr, above the progress bar (indicatif's own `println`
/// says nothing when stderr is not a terminal).
fn note(bar: &ProgressBar, line: impl AsRef<str>) {
    bar.suspend(|| eprintln!("{}", line.as_ref()));
}

async fn pause(failures: u32) {
    let ms = picsift_core::backoff::delay_ms(failures, 1_000, 30_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The options of a resumable upload.
pub(super) struct Options<'a> {
    pub path: &'a Path,
    pub callback: Option<&'a Url>,
    pub resume: bool,
    pub bar: &'a ProgressBar,
}

/// Uploads the zip at `o.path`; the batch id, or `None` when the server
/// speaks neither direct uploads nor tus (the caller uploads in one request).
pub(super) async fn upload(api: &Api, o: &Options<'_>) -> anyhow::Result<Option<String>> {
    let meta =
        std::fs::metadata(o.path).with_context(|| format!("cannot open {}", o.path.display()))?;
    let key = file_key(api, o.path, &meta);
    let remembered = o
        .resume
        .then(|| load_state().uploads.get(&key).cloned())
        .flatten();
    if remembered.is_none()
        && let Some(id) = direct(api, o, meta.len()).await?
    {
        return Ok(Some(id));
    }
    if !speaks_tus(api).await? {
        return Ok(None);
    }
    tus(api, o, meta.len(), &key, remembered).await.map(Some)
}

async fn speaks_tus(api: &Api) -> anyhow::Result<bool> {
    let r = api
        .send(
            api.http()
                .request(reqwest::Method::OPTIONS, api.url(&["v1", "uploads"])?),
        )
        .await?;
    Ok(r.headers()
        .get("tus-version")
        .is_some_and(|v| v.as_bytes() == b"1.0.0"))
}

fn batch_of(r: &Response) -> Option<String> {
    r.headers()
        .get("picsift-batch-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn offset_of(r: &Response) -> Option<u64> {
    r.headers()
        .get("upload-offset")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn tus_request(api: &Api, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
    api.http()
        .request(method, url.clone())
        .header("Tus-Resumable", "1.0.0")
}

/// Creates a tus upload; its absolute URL.
async fn create(api: &Api, o: &Options<'_>, len: u64) -> anyhow::Result<Url> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let name = o
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut meta = format!("filename {}", b64(&name));
    if let Some(cb) = o.callback {
        meta.push_str(&format!(",callback {}", b64(cb.as_str())));
    }
    let r = api
        .send(
            tus_request(api, reqwest::Method::POST, &api.url(&["v1", "uploads"])?)
                .header("Upload-Length", len)
                .header("Upload-Metadata", meta),
        )
        .await?;
    let r = api.check(r, None).await?;
    let location = r
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the server created an upload but named no Location")?;
    api.url(&[])?
        .join(location)
        .context("the upload's Location is not a URL")
}

async fn tus(
    api: &Api,
    o: &Options<'_>,
    len: u64,
    key: &str,
    remembered: Option<String>,
) -> anyhow::Result<String> {
    let mut url = match remembered.as_deref().map(Url::parse) {
        Some(Ok(u)) => u,
        _ => {
            let u = create(api, o, len).await?;
            if o.resume {
                remember(key, Some(u.as_str()));
            }
            u
        }
    };
    let mut failures = 0;
    let mut offset: Option<u64> = None;
    loop {
        // Where the upload is (first, and after anything went wrong).
        let at = match offset {
            Some(at) => at,
            None => {
                let r = match api
                    .send(tus_request(api, reqwest::Method::HEAD, &url))
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        failures += 1;
                        if failures > MAX_FAILURES {
                            return Err(e.context("the upload could not go on; run the same command again to resume it"));
                        }
                        pause(failures).await;
                        continue;
                    }
                };
                if let Some(id) = batch_of(&r) {
                    remember(key, None);
                    return Ok(id);
                }
                match next(r.status().as_u16()) {
                    Next::Continue => {
                        let at = offset_of(&r)
                            .context("the server answered HEAD without Upload-Offset")?;
                        if at > 0 && o.bar.position() == 0 {
                            note(o.bar, format!("resuming at {at} of {len} bytes"));
                        }
                        at
                    }
                    Next::Restart => {
                        o.bar
                            .println("the server no longer has this upload; starting it again");
                        url = create(api, o, len).await?;
                        if o.resume {
                            remember(key, Some(url.as_str()));
                        }
                        continue;
                    }
                    Next::Resync => {
                        failures += 1;
                        pause(failures).await;
                        continue;
                    }
                    Next::Fail => {
                        remember(key, None);
                        api.check(r, None).await?;
                        unreachable!("check fails on a refusal");
                    }
                }
            }
        };
        o.bar.set_position(at);
        let n = CHUNK.min(len - at);
        let path = o.path.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || read_range(&path, at, n))
            .await
            .context("reading the file stopped unexpectedly")?
            .with_context(|| format!("cannot read {}", o.path.display()))?;
        let sent = api
            .send(
                tus_request(api, reqwest::Method::PATCH, &url)
                    .header(header::CONTENT_TYPE, "application/offset+octet-stream")
                    .header("Upload-Offset", at)
                    .body(bytes),
            )
            .await;
        let r = match sent {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                if failures > MAX_FAILURES {
                    return Err(e.context(
                        "the upload could not go on; run the same command again to resume it",
                    ));
                }
                o.bar
                    .println(format!("the connection dropped at {at} bytes; resuming"));
                pause(failures).await;
                offset = None;
                continue;
            }
        };
        if let Some(id) = batch_of(&r) {
            o.bar.set_position(len);
            remember(key, None);
            return Ok(id);
        }
        match next(r.status().as_u16()) {
            Next::Continue => {
                failures = 0;
                offset =
                    Some(offset_of(&r).context("the server answered PATCH without Upload-Offset")?);
                if offset == Some(len) {
                    offset = None; // complete: HEAD names the batch
                }
            }
            Next::Resync | Next::Restart => {
                failures += 1;
                pause(failures).await;
                offset = None;
            }
            Next::Fail => {
                remember(key, None);
                api.check(r, None).await?;
                bail!("the server refused the upload");
            }
        }
    }
}

/// A direct upload's start, as the server answers it.
#[derive(Deserialize)]
struct Direct {
    id: String,
    part_size: u64,
    parts: Vec<DirectPart>,
    complete_url: String,
}

#[derive(Deserialize)]
struct DirectPart {
    number: u64,
    url: String,
}

/// Sends the zip straight to object storage when the server offers
/// presigned URLs: `None` when it does not (501, or an older server).
async fn direct(api: &Api, o: &Options<'_>, len: u64) -> anyhow::Result<Option<String>> {
    let mut body = serde_json::json!({ "size": len });
    if let Some(cb) = o.callback {
        body["callback"] = cb.as_str().into();
    }
    let r = api
        .send(api.http().post(api.url(&["v1", "uploads"])?).json(&body))
        .await?;
    if matches!(
        r.status(),
        StatusCode::NOT_IMPLEMENTED
            | StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::PRECONDITION_FAILED
            | StatusCode::BAD_REQUEST
    ) {
        return Ok(None);
    }
    let started: Direct = api
        .check(r, None)
        .await?
        .json()
        .await
        .context("the direct upload's answer is not the expected JSON")?;
    let plain = reqwest::Client::new();
    let mut tags = Vec::new();
    for p in &started.parts {
        let start = p.number.saturating_sub(1) * started.part_size;
        let n = started.part_size.min(len - start);
        let mut failures = 0;
        let etag = loop {
            let path = o.path.to_path_buf();
            let bytes = tokio::task::spawn_blocking(move || read_range(&path, start, n)).await??;
            match plain.put(&p.url).body(bytes).send().await {
                Ok(r) if r.status().is_success() => {
                    break r
                        .headers()
                        .get(header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                }
                other => {
                    failures += 1;
                    if failures > MAX_FAILURES {
                        bail!(
                            "sending part {} to object storage failed: {:?}",
                            p.number,
                            other.map(|r| r.status())
                        );
                    }
                    pause(failures).await;
                }
            }
        };
        o.bar.set_position(start + n);
        tags.push(serde_json::json!({"number": p.number, "etag": etag}));
    }
    let complete = api.url(&[])?.join(&started.complete_url)?;
    let r = api
        .send(
            api.http()
                .post(complete)
                .json(&serde_json::json!({"parts": tags})),
        )
        .await?;
    let created: super::api::Created = api
        .check(r, None)
        .await?
        .json()
        .await
        .context("the server's answer is not the expected JSON")?;
    debug_assert_eq!(created.id, started.id);
    Ok(Some(created.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_after_each_answer() {
        let cases = [
            ("appended", 204, Next::Continue),
            ("another offset: ask again", 409, Next::Resync),
            ("busy: ask again", 423, Next::Resync),
            ("rate-limited: wait and ask again", 429, Next::Resync),
            ("the server failed: ask again", 503, Next::Resync),
            ("gone: start over", 404, Next::Restart),
            ("expired: start over", 410, Next::Restart),
            ("too large: final", 413, Next::Fail),
            ("checksum mismatch: final", 460, Next::Fail),
            ("not a zip: final", 400, Next::Fail),
        ];
        for (name, status, want) in cases {
            assert_eq!(next(status), want, "{name}");
        }
    }

    #[test]
    fn ranges_read_what_a_part_needs() {
        let f = std::env::temp_dir().join(format!("picsift-range-{}", std::process::id()));
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(read_range(&f, 3, 4).unwrap(), b"3456");
        assert_eq!(read_range(&f, 8, 10).unwrap(), b"89");
        std::fs::remove_file(&f).unwrap();
    }
}
