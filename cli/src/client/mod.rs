//! The HTTP client commands: `upload`, `status`, `report` and `download`.
//!
//! They speak only the public API (`/v1/...`), so they work the same
//! against the standalone server and a cluster. This module is the glue of
//! the commands; each job has its own module, and they depend only
//! downward, never on this one or on each other in a circle: `args`,
//! `render` and `folder` on nothing here; `api` on `args` and `render`;
//! `zip_stream` on `folder`; `lookup` on `api` and `folder`; `download` on
//! `api`, `args`, `folder` and `render`; `resumable` on `api`.

mod api;
mod args;
mod download;
mod folder;
mod lookup;
mod render;
mod resumable;
#[cfg(test)]
mod test_folder;
mod zip_stream;

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use picsift_core::model::{BatchView, Phase};

use api::{Api, is_transient};
pub use args::{DownloadArgs, ReportArgs, StatusArgs, UploadArgs};
pub use download::download;
use folder::list_folder;
use render::{describe, print_stdout, render_table, report_header, row_cells, style};
use zip_stream::{Source, byte_pipe};

/// How long to wait for the reading thread once the request has ended. It
/// stops as soon as the request drops its body; this only guards against a
/// thread stuck on a slow disk hiding the request's own error.
const PRODUCER_GRACE: Duration = Duration::from_secs(5);
/// Polls that may fail in a row (server restarting) before `--wait` gives up.
const MAX_POLL_FAILURES: u32 = 10;

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
        let files = lookup::leave_out_known(&api, listing.files, args.send_known).await?;
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

    // A zip file goes resumably (direct to S3, or tus) when the server
    // offers it; a folder zipped on the fly, or an older server, in one request.
    if let Source::ZipFile { path, .. } = &source {
        let options = resumable::Options {
            path,
            callback: args.callback.as_ref(),
            resume: !args.no_resume,
            bar: &bar,
        };
        if let Some(id) = resumable::upload(&api, &options).await? {
            bar.finish_and_clear();
            return print_stdout(&format!("{id}\n"));
        }
    }
    let request = api.upload_request(source.known_len(), args.callback.as_ref())?;
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
    let created = api.upload_answer(sent).await?;
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
    if matches!(status.phase, Phase::Failed | Phase::Expired) {
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
    if args.json {
        return stream_ndjson(&api, id).await;
    }
    let mut rows = vec![report_header()];
    let mut after: Option<String> = None;
    loop {
        let page = api.report_page(id, after.as_deref()).await?;
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

fn batch_id(id: &str) -> anyhow::Result<&str> {
    let id = id.trim();
    if id.is_empty() {
        bail!("the batch id is empty; give the id that `picsift upload` printed");
    }
    Ok(id)
}

/// Polls until the batch reaches a final phase, with a bar of decided
/// entries on stderr; a server that cannot be reached for a while (a
/// restart) is polled again, up to [`MAX_POLL_FAILURES`] times in a row.
async fn wait_for_end(
    api: &Api,
    id: &str,
    interval: Duration,
) -> anyhow::Result<(BatchView, String)> {
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
                bar.set_message(status.phase.as_str());
                bar.set_length(status.total_entries);
                bar.set_position(status.total_entries.saturating_sub(status.counts.pending));
                if status.phase.is_final() {
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

/// The whole report as the server streams it, one entry per line.
async fn stream_ndjson(api: &Api, id: &str) -> anyhow::Result<()> {
    let response = api.report_ndjson(id).await?;
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
