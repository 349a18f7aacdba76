//! Uploads wait while the exact-dedup index is rebuilt. The index (Redis
//! in the cluster) is rebuildable from the catalog; after it lost its data
//! a claim would call a stored image new, so workers answer no claim until
//! it is complete again ([`picsift_core::dedup_index`]). The gateway holds
//! new uploads back meanwhile (`503` with `Retry-After`) rather than queue
//! work that cannot proceed, and starts the rebuild itself, so it happens
//! even when no worker is claiming anything.

use crate::{AppState, Problem};
use std::sync::atomic::Ordering;

/// `Ok` when the index is complete; otherwise starts its rebuild (once per
/// gateway process at a time; another process may be doing it) and answers
/// `503`.
pub(crate) async fn check(s: &AppState) -> Result<(), Problem> {
    let complete = s
        .dedup
        .complete()
        .await
        .map_err(|e| Problem::unavailable(format!("the dedup index is unavailable: {e}")))?;
    if complete {
        return Ok(());
    }
    if !s.rebuilding.swap(true, Ordering::SeqCst) {
        let (catalog, dedup, rebuilding) =
            (s.catalog.clone(), s.dedup.clone(), s.rebuilding.clone());
        tokio::spawn(async move {
            let who = format!("gateway-{}", std::process::id());
            let done =
                picsift_core::dedup_index::ensure_complete(catalog.as_ref(), dedup.as_ref(), &who)
                    .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "rebuilding the dedup index failed; the next upload tries again");
            }
            rebuilding.store(false, Ordering::SeqCst);
        });
    }
    Err(Problem::busy(
        "the duplicate index lost its data and is being rebuilt from the catalog; uploads are held back until it is complete",
    ))
}
