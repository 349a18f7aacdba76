//! `picsift admin bucket`: makes a cluster's bucket ready, once, by the
//! admin who sets it up: checks that picsift's key may write, read and
//! delete there, and sets the lifecycle rule that aborts multipart
//! uploads left incomplete (a gateway that died mid-upload leaves parts
//! that are billed and seen by no one). The processes never change bucket
//! settings themselves: their key needs no such right.

use crate::startup::{Dependency, classify};
use anyhow::bail;
use bytes::Bytes;
use picsift_backends::cluster::S3BlobStore;
use picsift_core::backend::BlobStore;

/// The object written, read back and deleted.
const CHECK_KEY: &str = "health/admin-bucket-check";

/// Checks the bucket of `cfg` and sets its lifecycle rule.
pub async fn setup(cfg: &crate::config::Config, abort_after_days: i32) -> anyhow::Result<()> {
    if abort_after_days < 1 {
        bail!("--abort-incomplete-after-days must be 1 or more");
    }
    let s3 = cfg.s3();
    let explain = |e: picsift_core::Error| {
        let text = format!("{e:#}");
        match classify(Dependency::S3, &text) {
            Some(fix) => anyhow::anyhow!("{fix}"),
            None => anyhow::anyhow!("{text}"),
        }
    };
    let store = S3BlobStore::connect(s3.clone()).await.map_err(explain)?;
    store
        .put(CHECK_KEY, Bytes::from_static(b"picsift"))
        .await
        .map_err(explain)?;
    let read = store.get_range(CHECK_KEY, 0..7).await.map_err(explain)?;
    if read.as_ref() != b"picsift" {
        bail!(
            "the object written to bucket {} reads back differently",
            s3.bucket
        );
    }
    store.delete(CHECK_KEY).await.map_err(explain)?;
    println!(
        "bucket {}: picsift's key may write, read and delete",
        s3.bucket
    );
    store
        .abort_incomplete_uploads_after(abort_after_days)
        .await
        .map_err(explain)?;
    match store
        .incomplete_uploads_aborted_after()
        .await
        .map_err(explain)?
    {
        Some(days) if days == abort_after_days => println!(
            "bucket {}: multipart uploads left incomplete are aborted after {days} day(s)",
            s3.bucket
        ),
        other => bail!(
            "the lifecycle rule was set but reads back as {other:?}: does this object store apply lifecycle rules?"
        ),
    }
    Ok(())
}
