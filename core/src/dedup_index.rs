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
use crate::model::StoredClaims;
use std::time::Duration;

/// How long the right to rebuild lasts unless renewed: a rebuilder that
/// died (or stalls this long) is taken over after this. The holder renews
/// it every third of it while the rebuild runs ([`rebuild_holding`]), so
/// a rebuild may take as long as it needs.
pub const REBUILD_TTL_MS: u64 = 15_000;

/// Images read from the catalog, and claims written to the index, per step
/// of a rebuild.
const REBUILD_PAGE: u32 = 2_000;

/// Writes every committed claim the catalog implies: one per image
/// (global scope) and one per tenant that owns it (per-tenant scope), a
/// page of images at a time. Returns how many images were written.
pub async fn rebuild(catalog: &dyn Catalog, dedup: &dyn DedupIndex) -> Result<usize> {
    let mut restored = 0;
    let mut after: Option<String> = None;
    loop {
        let page = catalog
            .stored_claims(after.as_deref(), REBUILD_PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(restored);
        };
        after = Some(last.image_id.clone());
        dedup.restore_committed_many(&claims_of(&page)).await?;
        restored += page.len();
    }
}

/// The `(key, owner, image_id)` claims a page of stored images implies.
fn claims_of(page: &[StoredClaims]) -> Vec<(String, String, String)> {
    let mut claims = Vec::new();
    for img in page {
        let id = &img.image_id;
        claims.push((id.clone(), img.owner.clone(), id.clone()));
        for tenant in &img.tenants {
            claims.push((claim_key(Some(tenant), id), img.owner.clone(), id.clone()));
        }
    }
    claims
}

/// Rebuilds the index while holding the right to (taken by the caller
/// with [`DedupIndex::begin_rebuild`]), renewing it as the rebuild goes,
/// then marks the index complete: returns how many images it restored.
/// Returns `None` when the right was lost on the way — the holder stalled
/// past its lease and another process took over (that one marks it
/// complete), or the index lost its data again mid-rebuild (the right went
/// with it, and what was restored before is gone): the index is then not
/// marked complete by this rebuild.
pub async fn rebuild_holding(
    catalog: &dyn Catalog,
    dedup: &dyn DedupIndex,
    who: &str,
) -> Result<Option<usize>> {
    let n = tokio::select! {
        n = rebuild(catalog, dedup) => n?,
        never = renew_lease(dedup, who) => match never {},
    };
    Ok(dedup.end_rebuild(who).await?.then_some(n))
}

/// Renews `who`'s right to rebuild every third of its lease, until the
/// rebuild it guards is done (the future is dropped).
async fn renew_lease(dedup: &dyn DedupIndex, who: &str) -> std::convert::Infallible {
    let mut lost = false;
    loop {
        tokio::time::sleep(Duration::from_millis(REBUILD_TTL_MS / 3)).await;
        match dedup.renew_rebuild(who, REBUILD_TTL_MS).await {
            Ok(true) => {}
            Ok(false) if !lost => {
                tracing::warn!(
                    who,
                    "the right to rebuild the dedup index is lost (another process took over, or the index lost its data again)"
                );
                lost = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(who, error = %e, "renewing the dedup rebuild lease failed"),
        }
    }
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
            match rebuild_holding(catalog, dedup, who).await? {
                Some(n) => {
                    tracing::warn!(who, images = n, "the dedup index is rebuilt");
                    return Ok(());
                }
                None => {
                    tracing::warn!(
                        who,
                        "the dedup index rebuild lost its right midway; checking again"
                    );
                    continue;
                }
            }
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
