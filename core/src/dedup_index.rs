//! The dedup index (exact-duplicate claims, in Redis for the cluster) is an
//! index of the catalog, not a second source of truth: everything it must
//! know can be rebuilt from the catalog's images and their owners. When it
//! loses its data (Redis restarted without persistence, a `FLUSHALL`), a
//! claim would answer `New` for an image already stored, and the upload
//! would be accepted twice. So the index carries a completeness marker
//! written at the end of a rebuild; a claim against an index without it
//! fails with [`crate::Error::DedupIndexIncomplete`] (checked in the same
//! atomic step as the claim), and [`ensure_complete`] rebuilds it, one
//! process at a time, before claims are answered again.

use crate::Result;
use crate::backend::{Catalog, DedupIndex};
use crate::dedup::claim_key;
use std::time::Duration;

/// How long one process may hold the right to rebuild before another takes
/// over (a rebuilder that died).
pub const REBUILD_TTL_MS: u64 = 30 * 60_000;

/// Writes every committed claim the catalog implies: one per image
/// (global scope) and one per tenant that owns it (per-tenant scope).
/// Returns how many images were written.
pub async fn rebuild(catalog: &dyn Catalog, dedup: &dyn DedupIndex) -> Result<usize> {
    let mut restored = 0;
    for id in catalog.image_ids().await? {
        let Some(img) = catalog.image(&id).await? else {
            continue;
        };
        let owner = format!("{}:{}", img.batch_id, img.entry_index);
        dedup.restore_committed(&id, &owner, &id).await?;
        for tenant in catalog.image_owners(&id).await? {
            dedup
                .restore_committed(&claim_key(Some(&tenant), &id), &owner, &id)
                .await?;
        }
        restored += 1;
    }
    Ok(restored)
}

/// Returns once the index is complete: rebuilds it here when this process
/// gets the right to, or waits for the process that has it.
pub async fn ensure_complete(
    catalog: &dyn Catalog,
    dedup: &dyn DedupIndex,
    who: &str,
) -> Result<()> {
    let mut said = false;
    loop {
        if dedup.complete().await? {
            return Ok(());
        }
        if dedup.begin_rebuild(who, REBUILD_TTL_MS).await? {
            tracing::warn!(
                who,
                "the dedup index lost its data: rebuilding it from the catalog"
            );
            let n = rebuild(catalog, dedup).await?;
            dedup.end_rebuild(who).await?;
            tracing::warn!(who, images = n, "the dedup index is rebuilt");
            return Ok(());
        }
        if !said {
            tracing::warn!(
                who,
                "the dedup index lost its data; waiting for its rebuild"
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
