//! The pre-upload lookup: files the server already has (by the SHA-256 of
//! the file as it is on disk) are left out of a folder upload.

use crate::client::{Api, FolderFile, REQUEST_TIMEOUT};
use anyhow::Context;
use serde::Deserialize;
use std::collections::HashSet;

/// Hashes asked about per request (the server's limit).
const PER_REQUEST: usize = 10_000;

#[derive(Deserialize)]
struct Known {
    known: Vec<KnownFile>,
}

#[derive(Deserialize)]
struct KnownFile {
    sha256: String,
}

/// `files` without those the server already stored or found duplicate.
/// `keep_all` skips the lookup. A server without the lookup (an older
/// one) leaves the list as it is.
pub async fn leave_out_known(
    api: &Api,
    files: Vec<FolderFile>,
    keep_all: bool,
) -> anyhow::Result<Vec<FolderFile>> {
    if keep_all {
        return Ok(files);
    }
    let paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
    let hashes = tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .map(|p| crate::download::file_sha256(p))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .context("hashing the folder stopped unexpectedly")?
    .context("cannot read a file of the folder")?;
    let mut known = HashSet::new();
    for chunk in hashes.chunks(PER_REQUEST) {
        let request = api
            .http
            .post(api.url(&["v1", "images", "lookup"])?)
            .timeout(REQUEST_TIMEOUT)
            .json(&serde_json::json!({ "sha256": chunk }));
        let response = api.send(request).await?;
        // A server without the lookup answers 404, or 405 (its
        // `/v1/images/{id}` route takes only GET).
        if matches!(
            response.status(),
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::METHOD_NOT_ALLOWED
        ) {
            return Ok(files);
        }
        let answer: Known = api
            .check(response, None)
            .await?
            .json()
            .await
            .context("the lookup answer is not the expected JSON")?;
        known.extend(answer.known.into_iter().map(|k| k.sha256));
    }
    let before = files.len();
    let left: Vec<FolderFile> = files
        .into_iter()
        .zip(hashes)
        .filter(|(_, h)| !known.contains(h))
        .map(|(f, _)| f)
        .collect();
    if left.len() < before {
        eprintln!(
            "leaving out {} of {before} files the server already has (--send-known sends them)",
            before - left.len()
        );
    }
    Ok(left)
}
