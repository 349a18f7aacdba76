//! The pre-upload lookup: files the server already has (by the SHA-256 of
//! the file as it is on disk) are left out of a folder upload.

use std::collections::HashSet;

use anyhow::Context;

use super::api::Api;
use super::folder::{FolderFile, file_sha256};

/// Hashes asked about per request (the server's limit).
const PER_REQUEST: usize = 10_000;

/// `files` without those the server already stored or found duplicate.
/// `keep_all` skips the lookup. A server without the lookup (an older
/// one) leaves the list as it is.
pub(super) async fn leave_out_known(
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
            .map(|p| file_sha256(p))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .context("hashing the folder stopped unexpectedly")?
    .context("cannot read a file of the folder")?;
    let mut known = HashSet::new();
    for chunk in hashes.chunks(PER_REQUEST) {
        let Some(answer) = api.lookup(chunk).await? else {
            return Ok(files);
        };
        known.extend(answer);
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
