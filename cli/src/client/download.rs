//! `picsift download`: stored images by id, by batch, or by search, each
//! checked against its id (the SHA-256 of its bytes) before it is kept.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use picsift_core::format::Format;
use picsift_core::model::is_image_id;
use sha2::{Digest, Sha256};

use super::api::{Api, ImageListed};
use super::args::DownloadArgs;
use super::folder::file_sha256;
use super::render::style;

/// Downloads every image the arguments name, skipping files already there
/// whole, and prints each file written.
pub async fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let mut wanted: Vec<ImageListed> = Vec::new();
    for id in &args.ids {
        if !is_image_id(id) {
            bail!("{id:?} is not an image id (64 lower-case hex characters)");
        }
        let listed = api.image_metadata(id).await?;
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
            .join(format!("{}.{}", image.id, extension(image.format)));
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
async fn list(api: &Api, query: &str, out: &mut Vec<ImageListed>) -> anyhow::Result<()> {
    let mut after: Option<String> = None;
    loop {
        let page = api.image_page(query, after.as_deref()).await?;
        out.extend(page.images);
        match page.next {
            Some(next) if after.as_ref() != Some(&next) => after = Some(next),
            _ => return Ok(()),
        }
    }
}

/// Streams one image to a temporary file, checks its hash, then renames
/// it; the temporary file goes on any failure.
async fn fetch(
    api: &Api,
    image: &ImageListed,
    path: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let response = api.image_bytes(&image.id).await?;
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
    image: &ImageListed,
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

/// The file extension of a stored image's format.
fn extension(format: Format) -> &'static str {
    match format {
        Format::Jpeg => "jpg",
        Format::Png => "png",
        Format::Webp => "webp",
        Format::Heic => "heic",
        Format::Avif => "avif",
    }
}
