//! Per-tenant quotas enforced atomically. The gateway used to count a
//! tenant's open batches and monthly bytes, then stream the upload, then
//! create the batch: concurrent uploads all passed a check only one of
//! them fitted, and a chunked body (no length) passed the byte quota
//! whatever its size. Now an upload reserves its place first: the check and
//! the reservation are one statement (SQLite runs a write statement under
//! its write lock; PostgreSQL takes the tenant's advisory lock first), and
//! a body of unknown length settles its real size the same way once staged.

use super::{Db, SqlCatalog};
use crate::DriverResult;
use picsift_core::Result;
use picsift_core::backend::{QuotaCheck, Reservation};

/// Open batches plus live reservations of owner `$2`, at time `$4`.
const OPEN: &str =
    "(SELECT COUNT(*) FROM batches WHERE owner = $2 AND phase IN ('received', 'processing'))
  + (SELECT COUNT(*) FROM upload_reservations WHERE owner = $2 AND expires_at > $4 AND id <> $1)";
/// Bytes of owner `$2`'s batches since `$5` plus its live reservations.
const USED: &str = "CAST(COALESCE((SELECT SUM(upload_bytes) FROM batches WHERE owner = $2 AND created_at >= $5), 0) AS BIGINT)
  + CAST(COALESCE((SELECT SUM(bytes) FROM upload_reservations WHERE owner = $2 AND expires_at > $4 AND id <> $1), 0) AS BIGINT)";

/// Takes the place when the tenant's open batches and reservations leave
/// room for one more, and its bytes this month plus this upload's fit.
fn reserve_sql() -> String {
    format!(
        "INSERT INTO upload_reservations (id, owner, bytes, expires_at)
         SELECT $1, $2, CAST($3 AS BIGINT), CAST($6 AS BIGINT)
          WHERE {OPEN} < CAST($7 AS BIGINT) AND {USED} + CAST($3 AS BIGINT) <= CAST($8 AS BIGINT)"
    )
}

/// The same check with the real size, for a reservation taken with none
/// (its own place in the counts is left out, `id <> $1`).
fn settle_sql() -> String {
    format!(
        "UPDATE upload_reservations SET bytes = CAST($3 AS BIGINT), expires_at = CAST($6 AS BIGINT)
          WHERE id = $1 AND owner = $2
            AND {OPEN} < CAST($7 AS BIGINT) AND {USED} + CAST($3 AS BIGINT) <= CAST($8 AS BIGINT)"
    )
}

/// A limit as the statements compare it (no limit: far beyond any sum).
fn bound(limit: Option<u64>) -> i64 {
    limit.map_or(i64::MAX / 4, |n| i64::try_from(n).unwrap_or(i64::MAX / 4))
}

/// Runs `sql` (one of the two above) for `r` under `q`; whether a row changed.
async fn run(catalog: &SqlCatalog, sql: &str, r: &Reservation, q: &QuotaCheck) -> Result<bool> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    macro_rules! bind {
        ($query:expr) => {
            $query
                .bind(&r.id)
                .bind(&r.owner)
                .bind(i64::try_from(r.bytes).unwrap_or(i64::MAX / 4))
                .bind(q.now)
                .bind(q.month_start)
                .bind(r.expires_at)
                .bind(bound(q.max_open_batches))
                .bind(bound(q.max_bytes_per_month))
        };
    }
    let changed = match &catalog.db {
        Db::Sqlite { pool, .. } => bind!(sqlx::query(sql))
            .execute(pool)
            .await
            .or_backend()?
            .rows_affected(),
        Db::Postgres { pool, .. } => {
            let mut tx = pool.begin().await.or_backend()?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(&r.owner)
                .execute(&mut *tx)
                .await
                .or_backend()?;
            let done = bind!(sqlx::query(sql))
                .execute(&mut *tx)
                .await
                .or_backend()?;
            tx.commit().await.or_backend()?;
            done.rows_affected()
        }
    };
    Ok(changed == 1)
}

/// Takes `r` if the tenant's quotas allow it.
pub(super) async fn reserve(catalog: &SqlCatalog, r: &Reservation, q: &QuotaCheck) -> Result<bool> {
    run(catalog, &reserve_sql(), r, q).await
}

/// Sets a reservation's bytes to what was really uploaded, if the quota
/// allows it.
pub(super) async fn settle(catalog: &SqlCatalog, r: &Reservation, q: &QuotaCheck) -> Result<bool> {
    run(catalog, &settle_sql(), r, q).await
}

/// Drops a reservation (the batch exists and counts itself, or the upload failed).
pub(super) async fn release(catalog: &SqlCatalog, id: &str) -> Result<()> {
    crate::sql::with_db!(&catalog.db, pool => {
        sqlx::query("DELETE FROM upload_reservations WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .or_backend()?;
        Ok(())
    })
}
