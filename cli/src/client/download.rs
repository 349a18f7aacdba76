//! `picsift download`: stored images by id, by batch, or by search, each
//! checked against its id (the SHA-256 of its bytes) before it is kept.

use crate::client::{Api, REQUEST_TIMEOUT, ServerArgs, style};
use anyhow::{Context, bail};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use picsift_core::model::is_image_id;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Options of `picsift download`.
#[derive(clap::Args)]
pub struct DownloadArgs {
    /// Image ids to download.
    ids: Vec<String>,
    /// Every image a batch stored.
    #[arg(long, value_name = "ID")]
    batch: Option<String>,
    /// Every image a search finds: the query of `GET /v1/images`, such as
    /// `format=jpeg&min_width=1000&from=2026-11-01T00:00:00Z`.
    #[arg(long, value_name = "QUERY")]
    search: Option<String>,
    /// Where the files go (`<id>.<ext>`); created if missing.
    #[arg(long, short, default_value = ".", value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Deserialize)]
struct Page {
    images: Vec<Listed>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    id: String,
    format: String,
    size: u64,
}

/// Downloads every image the arguments name, skipping files already there
/// whole, and prints each file written.
pub async fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let mut wanted: Vec<Listed> = Vec::new();
    for id in &args.ids {
        if !is_image_id(id) {
            bail!("{id:?} is not an image id (64 lower-case hex characters)");
        }
        let meta = api.url(&["v1", "images", id, "metadata"])?;
        let request = api.http.get(meta).timeout(REQUEST_TIMEOUT);
        let listed: Listed = api
            .check(api.send(request).await?, None)
            .await
            .with_context(|| format!("image {id}"))?
            .json()
            .await
            .context("the image metadata is not the expected JSON")?;
        if &listed.id != id {
            bail!("asked for image {id}, the server described {}", listed.id);
        }
        wanted.push(listed);
    }
    let query = match (&args.batch, &args.search) {
        (Some(b), None) => {
            let mut u = api.url(&["v1", "images"])?;
            u.query_pairs_mut().append_pair("batch", b);
            u.query().map(str::to_string)
        }
        (None, Some(q)) => Some(q.trim_start_matches('?').to_string()),
        (None, None) => None,
        (Some(_), Some(_)) => bail!("give --batch or --search, not both"),
    };
    if let Some(query) = query {
        list(&api, &query, &mut wanted).await?;
    }
    if wanted.is_empty() {
        bail!("nothing to download: give image ids, --batch ID or --search QUERY");
    }
    // Names on disk come from ids: only real ids, whatever the server says.
    if let Some(bad) = wanted.iter().find(|i| !is_image_id(&i.id)) {
        bail!(
            "the server listed {:?}, which is not an image id; stopping",
            bad.id
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let total: u64 = wanted.iter().map(|i| i.size).sum();
    let bar = ProgressBar::new(total).with_style(style(
        "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
        ProgressStyle::default_bar,
    ));
    for (n, image) in wanted.iter().enumerate() {
        bar.set_message(format!("{}/{}", n + 1, wanted.len()));
        let path = args
            .out
            .join(format!("{}.{}", image.id, extension(&image.format)));
        let whole = std::fs::metadata(&path).is_ok_and(|m| m.len() == image.size)
            && file_sha256(&path).is_ok_and(|h| h == image.id);
        if whole {
            bar.inc(image.size);
            continue;
        }
        fetch(&api, image, &path, &bar).await?;
        bar.suspend(|| println!("{}", path.display()));
    }
    bar.finish_and_clear();
    Ok(())
}

/// Every page of `GET /v1/images?QUERY`.
async fn list(api: &Api, query: &str, out: &mut Vec<Listed>) -> anyhow::Result<()> {
    let mut after: Option<String> = None;
    loop {
        let mut url = api.url(&["v1", "images"])?;
        url.set_query(Some(query));
        let mut request = api.http.get(url).timeout(REQUEST_TIMEOUT);
        if let Some(a) = &after {
            request = request.query(&[("after", a.as_str())]);
        }
        let page: Page = api
            .check(api.send(request).await?, None)
            .await?
            .json()
            .await
            .context("the image list is not the expected JSON")?;
        out.extend(page.images);
        match page.next {
            Some(next) if after.as_ref() != Some(&next) => after = Some(next),
            _ => return Ok(()),
        }
    }
}

/// Streams one image to a temporary file, checks its hash, then renames
/// it; the temporary file goes on any failure.
async fn fetch(api: &Api, image: &Listed, path: &Path, bar: &ProgressBar) -> anyhow::Result<()> {
    let url = api.url(&["v1", "images", &image.id])?;
    let response = api.check(api.send(api.http.get(url)).await?, None).await?;
    let tmp = path.with_extension("part");
    let result = stream_to(response, &tmp, image, bar).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the body to `tmp` and checks that it hashes to the image's id.
async fn stream_to(
    response: reqwest::Response,
    tmp: &Path,
    image: &Listed,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut hasher = Sha256::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("downloading {} failed", image.id))?;
        hasher.update(&chunk);
        file.write_all(&chunk)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all()?;
    let got = hex::encode(hasher.finalize());
    if got != image.id {
        bail!("image {} arrived with SHA-256 {got}; not kept", image.id);
    }
    Ok(())
}

/// The file extension of a format the server names; anything else is `.bin`.
fn extension(format: &str) -> &'static str {
    match format {
        "jpeg" => "jpg",
        "png" => "png",
        "webp" => "webp",
        _ => "bin",
    }
}

/// Lower-case hex SHA-256 of a file.
pub(crate) fn file_sha256(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}
