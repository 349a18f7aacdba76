//! What only the PostgreSQL catalog does: connect and migrate, lock where
//! SQLite relied on having a single writer, and pass arrays. Near
//! duplicates are [`super::pg_near`]'s.
//!
//! Transactions run at PostgreSQL's default READ COMMITTED: each statement
//! sees what was committed when it started. Single-row updates guarded by
//! their own `WHERE` (first verdict wins, phase changes) are safe there,
//! because a blocked update re-checks its condition on the row's newest
//! version. A condition on *other* rows is not re-checked, so the
//! "no entry is pending" test of [`try_complete`] runs under a lock on the
//! batch row that [`record_entries`] takes too.

use super::statements::{COMPLETE, RECORD_ENTRIES_PHASE};
use super::{Db, SqlCatalog, migrations};
use crate::DriverResult;
use picsift_core::Result;
use picsift_core::model::EntryPlan;
use picsift_core::time::Millis;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

impl SqlCatalog {
    /// Connects to `url` (`postgres://user:password@host:port/database`)
    /// with a pool of at most `max_connections`, and migrates the schema.
    /// Processes starting together are safe: the migrator holds an
    /// advisory lock while it runs.
    pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            // A pool of zero connections could never serve a query.
            .max_connections(max_connections.max(1))
            // Not sqlx's 30 s: while PostgreSQL is down a request should
            // get its 503 soon, and a healthy pool hands out a connection
            // well within this even under load.
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .or_backend()?;
        migrations::postgres().run(&pool).await.or_backend()?;
        Ok(Self {
            db: Db::Postgres {
                pool,
                near: Default::default(),
            },
        })
    }
}

/// Takes the batch row's lock until the end of `tx`, to order this
/// transaction with the others that change the batch's set of pending
/// entries or decide on it (see the module comment).
async fn lock_batch(tx: &mut sqlx::PgConnection, id: &str) -> Result<()> {
    sqlx::query("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(tx)
        .await
        .or_backend()?;
    Ok(())
}

/// Records a batch's entries (one statement for all: an archive may hold
/// thousands, and each statement is a round trip) and moves it to
/// processing, under the batch's lock.
pub(super) async fn record_entries(
    pool: &PgPool,
    id: &str,
    entries: &[EntryPlan],
    now: Millis,
) -> Result<()> {
    let (mut idx, mut names, mut sizes) = (
        Vec::with_capacity(entries.len()),
        Vec::with_capacity(entries.len()),
        Vec::with_capacity(entries.len()),
    );
    for e in entries {
        idx.push(i64::from(e.index));
        names.push(e.name.as_str());
        sizes.push(e.compressed_size as i64);
    }
    let mut tx = pool.begin().await.or_backend()?;
    // Before inserting: a try_complete waiting on this lock then sees the
    // new entries as pending instead of completing without them.
    lock_batch(&mut tx, id).await?;
    sqlx::query(
        "INSERT INTO entries (batch_id, idx, name, compressed_size)
         SELECT $1, e.idx, e.name, e.size FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::BIGINT[]) AS e(idx, name, size)
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(&idx)
    .bind(&names)
    .bind(&sizes)
    .execute(&mut *tx)
    .await
    .or_backend()?;
    sqlx::query(RECORD_ENTRIES_PHASE)
        .bind(entries.len() as i64)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .or_backend()?;
    tx.commit().await.or_backend()
}

/// Completes a batch with no undecided entry; whether this call did.
pub(super) async fn try_complete(pool: &PgPool, id: &str, now: Millis) -> Result<bool> {
    let mut tx = pool.begin().await.or_backend()?;
    // The update below is a new statement, so it reads entries as
    // committed once we hold the lock: a record_entries that inserts
    // entries has either committed them or not started inserting. The lock
    // also queues concurrent callers, and each later one finds the phase
    // already completed: exactly one caller wins.
    lock_batch(&mut tx, id).await?;
    let done = sqlx::query(COMPLETE)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .or_backend()?;
    tx.commit().await.or_backend()?;
    Ok(done.rows_affected() == 1)
}

/// Which of `ids` `owner` holds.
pub(super) async fn owned_images<'c>(
    on: impl sqlx::PgExecutor<'c>,
    owner: &str,
    ids: &[String],
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT image_id FROM image_owners WHERE owner = $1 AND image_id = ANY($2) ORDER BY image_id",
    )
    .bind(owner)
    .bind(ids)
    .fetch_all(on)
    .await
    .or_backend()
}

/// Originals among `sha256s`, with their images.
pub(super) async fn known_originals(
    pool: &PgPool,
    sha256s: &[String],
    owner: Option<&str>,
) -> Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT sha256, image_id FROM originals o WHERE sha256 = ANY($1)
           AND ($2::TEXT IS NULL OR EXISTS (SELECT 1 FROM image_owners w WHERE w.image_id = o.image_id AND w.owner = $2))
         ORDER BY sha256",
    )
    .bind(sha256s)
    .bind(owner)
    .fetch_all(pool)
    .await
    .or_backend()
}
