//! The cluster's near-duplicate check, the image insert it guards, and
//! similar-image search, with no lock the whole cluster queues on.
//!
//! Each process keeps the stored images' PDQ hashes in memory
//! ([`MemoryIndex`], multi-index hashing: 3–5 ms p99 at 10M hashes, where
//! PostgreSQL's `pdq_mih` table took 40 ms at 1M), loaded from the catalog
//! on first use and caught up before each answer. PostgreSQL stays the one
//! source of truth; the copy is rebuilt from it at every start.
//!
//! **Catching up.** Every image row carries the id of the transaction that
//! inserted it (`images.xid`, migration 0013). Ids are handed out at a
//! transaction's start, not its commit, so "the rows after the last one
//! read" would miss a slow transaction. Instead a catch-up reads, in one
//! statement, the oldest transaction still running (`xmin` of its
//! snapshot) and every row from a transaction at or above the last such
//! `xmin`: everything below it had finished, so was read before. Rows of
//! the window read twice are recognised by id ([`Replica::recent`]).
//!
//! **Two near duplicates in flight are never both accepted.** A
//! check-and-insert first locks the rows of `pdq_locks` its hash names
//! (`pdq_index::lock_keys`: any two hashes within 31 bits name one in
//! common; random hashes one pair in 50), in key order, then catches up
//! and checks. A conflicting insert either committed before the locks were
//! granted (the catch-up, a later statement, sees it) or waits for this
//! transaction to end. Inserts that cannot conflict take disjoint locks
//! and run side by side: throughput grows with workers. Row locks, not
//! advisory ones: about 144 locks per insert would exhaust PostgreSQL's
//! shared lock table (64 × connections) at a few dozen concurrent inserts,
//! while row locks live in the rows.

use super::rows::{matchable_hash, owned_only};
use super::statements::{insert_image_rows, record_verdict};
use crate::DriverResult;
use futures_util::TryStreamExt;
use picsift_core::Result;
use picsift_core::backend::{Similar, Stored};
use picsift_core::model::ImageRecord;
use picsift_core::pdq::{Hash, MIN_MATCH_QUALITY};
use picsift_core::pdq_index;
use picsift_core::pdq_memory::MemoryIndex;
use picsift_core::time::Millis;
use picsift_core::verdict::Verdict;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The stored images' hashes in this process, and how far they reach.
#[derive(Default)]
pub(crate) struct Replica {
    index: MemoryIndex,
    /// Every image inserted by a transaction older than this is held;
    /// `None` until the first load.
    from: Option<i64>,
    /// Images held that a transaction at or above `from` inserted, with
    /// that transaction: the next catch-up reads them again.
    recent: HashMap<String, i64>,
}

/// One process's replica, shared by its tasks.
pub(crate) type SharedReplica = Arc<Mutex<Replica>>;

/// The first load: every matchable image, and the snapshot's `xmin`.
const LOAD: &str = "WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::TEXT::BIGINT AS x)
    SELECT s.x, i.id, i.pdq, COALESCE(i.xid::TEXT::BIGINT, 0) FROM s
    LEFT JOIN images i ON i.pdq IS NOT NULL AND i.pdq_quality >= $1";

/// A catch-up: images of transactions from `$2` on, and the new `xmin`.
const SINCE: &str = "WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::TEXT::BIGINT AS x)
    SELECT s.x, i.id, i.pdq, i.xid::TEXT::BIGINT FROM s
    LEFT JOIN images i ON i.xid >= $2::TEXT::XID8 AND i.pdq IS NOT NULL AND i.pdq_quality >= $1";

type Row = (i64, Option<String>, Option<String>, Option<i64>);

impl Replica {
    /// Adds what a catch-up read, unless held already.
    fn apply(&mut self, id: String, pdq: &str, xid: i64, xmin: i64) {
        if self.recent.contains_key(&id) {
            return;
        }
        if let Ok(hash) = pdq.parse::<Hash>() {
            self.index.insert(&id, &hash);
        }
        if xid >= xmin {
            self.recent.insert(id, xid);
        }
    }
}

/// Brings `replica` up to every image committed before this statement
/// (loading it all the first time, streamed).
pub(crate) async fn catch_up(conn: &mut PgConnection, replica: &mut Replica) -> Result<()> {
    let min_quality = i64::from(MIN_MATCH_QUALITY);
    let (first, started) = (replica.from.is_none(), std::time::Instant::now());
    let mut rows = match replica.from {
        None => sqlx::query_as::<_, Row>(LOAD)
            .bind(min_quality)
            .fetch(&mut *conn),
        Some(from) => sqlx::query_as::<_, Row>(SINCE)
            .bind(min_quality)
            .bind(from.to_string())
            .fetch(&mut *conn),
    };
    let mut xmin = None;
    while let Some((x, id, pdq, xid)) = rows.try_next().await.or_backend()? {
        xmin = Some(x);
        if let (Some(id), Some(pdq), Some(xid)) = (id, pdq, xid) {
            replica.apply(id, &pdq, xid, x);
        }
    }
    if let Some(x) = xmin {
        replica.from = Some(x);
        replica.recent.retain(|_, xid| *xid >= x);
    }
    if first {
        tracing::info!(
            hashes = replica.index.len(),
            seconds = started.elapsed().as_secs_f64(),
            "near-duplicate index loaded from the catalog"
        );
    }
    Ok(())
}

/// Locks the `pdq_locks` rows `hash` names until the end of the
/// transaction on `conn`, in key order (so two inserts never wait for each
/// other both ways).
pub(crate) async fn lock_candidates(conn: &mut PgConnection, hash: &Hash) -> Result<()> {
    sqlx::query("SELECT k FROM pdq_locks WHERE k = ANY($1) ORDER BY k FOR NO KEY UPDATE")
        .bind(pdq_index::lock_keys(hash))
        .execute(conn)
        .await
        .or_backend()?;
    Ok(())
}

/// Images within `max_distance` of `hash` that `owner` holds (any owner
/// when `None`), nearest first, at most `limit`, after a catch-up.
pub(crate) async fn near(
    conn: &mut PgConnection,
    replica: &SharedReplica,
    hash: &Hash,
    max_distance: u32,
    limit: u32,
    owner: Option<&str>,
) -> Result<Vec<Similar>> {
    let found = {
        let mut r = replica.lock().await;
        catch_up(conn, &mut r).await?;
        r.index.search(hash, max_distance, usize::MAX, |_| true)
    };
    let own = match owner {
        Some(owner) if !found.is_empty() => {
            let ids: Vec<String> = found.iter().map(|(id, _)| id.clone()).collect();
            Some(super::postgres::owned_images(&mut *conn, owner, &ids).await?)
        }
        _ => None,
    };
    Ok(owned_only(found, own, limit))
}

/// Checks `i` against the stored images under its candidate locks: the
/// nearest other image within `max_distance` (of `scope`'s when given), or
/// `None` with the locks held until `conn`'s transaction ends, so that it
/// records `i` before any near duplicate of it is checked.
pub(crate) async fn check_locked(
    conn: &mut PgConnection,
    replica: &SharedReplica,
    i: &ImageRecord,
    max_distance: u32,
    scope: Option<&str>,
) -> Result<Option<Similar>> {
    let Some(hash) = matchable_hash(i) else {
        // Never matched, never indexed: nothing to order it with.
        return Ok(None);
    };
    // Most of the catching up (all of a first load) before taking locks.
    catch_up(conn, &mut *replica.lock().await).await?;
    lock_candidates(conn, &hash).await?;
    let found = near(conn, replica, &hash, max_distance, 2, scope).await?;
    Ok(found.into_iter().find(|m| m.image_id != i.id))
}

/// Records an image (and, with `entry`, its entry's verdict, only while
/// the entry is undecided), unless `near_within` finds a stored image that
/// near ([`check_locked`]: only inserts that could be near
/// duplicates of each other wait for each other).
pub(super) async fn insert_image(
    pool: &PgPool,
    replica: &SharedReplica,
    i: &ImageRecord,
    near_within: Option<(u32, Option<&str>)>,
    entry: Option<(&Verdict, Millis)>,
) -> Result<Stored> {
    let mut tx = pool.begin().await.or_backend()?;
    if let Some((max_distance, scope)) = near_within
        && let Some(m) = check_locked(&mut tx, replica, i, max_distance, scope).await?
    {
        tx.rollback().await.or_backend()?;
        return Ok(Stored::Near(m));
    }
    // The entry's row lock orders this with an Expire or Cancel deciding it.
    if let Some((verdict, now)) = entry
        && !record_verdict!(&mut *tx, &i.batch_id, i.entry_index, verdict, now)
    {
        tx.rollback().await.or_backend()?;
        return Ok(Stored::EntryDecided);
    }
    insert_image_rows!(tx, i);
    tx.commit().await.or_backend()?;
    Ok(Stored::Recorded)
}
