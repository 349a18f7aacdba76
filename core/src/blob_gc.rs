//! Image bytes that no record names, and how they go without ever taking
//! bytes a record does name.
//!
//! Blob keys are content-addressed (`images/<sha256>`) and shared by every
//! tenant, while dedup claims may be per tenant: a worker that puts an
//! image and then loses a near-duplicate race must not delete the bytes,
//! because another tenant's record may point at the very same key. So it
//! only notes them ([`crate::backend::Catalog::note_orphan_blob`]), and
//! [`sweep`] deletes a noted image's bytes after [`GRACE_MS`], and only
//! while no image row names it. Against a worker putting the same bytes
//! at that moment, the note is a lock: [`before_put`] forgets a note (so
//! the sweep cannot take it) or waits while the sweep is deleting; and a
//! worker whose put and record were far apart checks again
//! ([`after_record`]) and puts once more if the bytes went.

use crate::Result;
use crate::backend::{Backends, Catalog};
use crate::model::image_key;
use crate::time::Millis;
use bytes::Bytes;
use std::time::Duration;

/// How long noted bytes stay before the sweep may delete them: far longer
/// than any worker takes between its put and its record.
pub const GRACE_MS: Millis = 3_600_000;
/// Notes handled per sweep.
pub const SWEEP_LIMIT: u32 = 1_000;
/// How long a put waits for a sweep that is deleting the same bytes.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Call before putting `image_id`'s bytes: returns once no sweep is
/// deleting them (and none will: a note about them is forgotten).
pub async fn before_put(catalog: &dyn Catalog, image_id: &str) -> Result<()> {
    let start = std::time::Instant::now();
    while !catalog.claim_blob_for_put(image_id).await? {
        if start.elapsed() > WAIT_LIMIT {
            return Err(crate::Error::Backend(format!(
                "the orphan sweep has been deleting {} for over a minute",
                image_key(image_id)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Call after recording an image whose bytes were put at `put_at`: when
/// more than half the grace went by in between, a sweep may have taken
/// them, so they are put again if missing.
pub async fn after_record(
    b: &Backends,
    image_id: &str,
    bytes: &Bytes,
    put_at: Millis,
    now: Millis,
) -> Result<()> {
    if now - put_at <= GRACE_MS / 2 {
        return Ok(());
    }
    before_put(b.catalog.as_ref(), image_id).await?;
    let key = image_key(image_id);
    if b.blobs.size(&key).await?.is_none() {
        tracing::warn!(key, "bytes swept while their record was written: put again");
        b.blobs.put(&key, bytes.clone()).await?;
    }
    Ok(())
}

/// Deletes the bytes of noted images that no row names, noted before
/// `now - GRACE_MS`; returns how many went.
pub async fn sweep(b: &Backends, now: Millis) -> Result<usize> {
    let due = b
        .catalog
        .orphan_blobs_to_delete(now - GRACE_MS, SWEEP_LIMIT)
        .await?;
    for id in &due {
        b.blobs.delete(&image_key(id)).await?;
        b.catalog.forget_orphan_blob(id).await?;
        tracing::info!(image = id, "deleted bytes no image record names");
    }
    Ok(due.len())
}
