//! The catalog in PostgreSQL: the queries of the SQLite catalog
//! ([`crate::embedded::SqliteCatalog`]) in PostgreSQL's dialect, with
//! explicit row locks where SQLite relied on having a single writer.
//!
//! Transactions run at PostgreSQL's default READ COMMITTED: each statement
//! sees what was committed when it started. Single-row updates guarded by
//! their own `WHERE` (first verdict wins, phase changes) are safe there,
//! because a blocked update re-checks its condition on the row's newest
//! version. A condition on *other* rows is not re-checked, so the
//! "no entry is pending" test of [`Catalog::try_complete`] runs under a lock
//! on the batch row that [`Catalog::plan_batch`] takes too.

use crate::Result;
use crate::auth::ApiKey;
use crate::catalog_rows::{
    Arg, IMAGE_COLUMNS, api_key_from_row, batch_from_row, checks_json, counts_from_rows,
    duplicate_kind_code, image_from_row, image_search_sql, index_from_row, matchable_hash,
    mih_keys, pending_from_row, rank_similar, report_entry_from_row,
};
use crate::model::{
    BatchRecord, Counts, EntryPlan, ImageCursor, ImageFilter, ImageRecord, ImageSort, Phase,
    ReportEntry,
};
use crate::pdq::Hash;
use crate::pdq_index;
use crate::store::{Catalog, Delivery, NewBatch, Similar};
use crate::time::Millis;
use crate::verdict::{Reason, Verdict};
use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The catalog in PostgreSQL, shared by every gateway and worker.
#[derive(Clone, Debug)]
pub struct PgCatalog {
    pool: PgPool,
}

impl PgCatalog {
    /// Connects to `url` (`postgres://user:password@host:port/database`)
    /// with a pool of at most `max_connections`, and migrates the schema.
    /// Processes starting together are safe: the migrator holds an
    /// advisory lock while it runs.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            // A pool of zero connections could never serve a query.
            .max_connections(max_connections.max(1))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Takes the batch row's lock until the end of `tx`, to order this
    /// transaction with the others that change the batch's set of pending
    /// entries or decide on it (see the module comment).
    async fn lock_batch(tx: &mut sqlx::PgConnection, id: &str) -> Result<()> {
        sqlx::query("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(tx)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn create_batch(&self, b: &NewBatch) -> Result<()> {
        sqlx::query(
            "INSERT INTO batches (id, phase, staged_key, upload_bytes, total_entries, callback_url, notify_state, created_at, updated_at, owner)
             VALUES ($1, 'received', $2, $3, $4, $5, $6, $7, $7, $8)",
        )
        .bind(&b.id)
        .bind(&b.staged_key)
        .bind(b.upload_bytes as i64)
        .bind(b.total_entries as i64)
        .bind(&b.callback_url)
        .bind(if b.callback_url.is_some() { "pending" } else { "none" })
        .bind(b.now)
        .bind(&b.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>> {
        let row = sqlx::query("SELECT * FROM batches WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(batch_from_row).transpose()
    }

    async fn counts(&self, id: &str) -> Result<Counts> {
        let rows = sqlx::query(
            "SELECT verdict, COUNT(*) AS n FROM entries WHERE batch_id = $1 GROUP BY verdict",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        counts_from_rows(&rows)
    }

    async fn plan_batch(&self, id: &str, entries: &[EntryPlan], now: Millis) -> Result<()> {
        // One statement for all entries instead of SQLite's row-by-row
        // inserts: an archive may hold thousands of entries, and each
        // statement is a network round trip here.
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
        let mut tx = self.pool.begin().await?;
        // Before inserting: a try_complete waiting on this lock then sees
        // the new entries as pending instead of completing without them.
        Self::lock_batch(&mut tx, id).await?;
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
        .await?;
        sqlx::query(
            "UPDATE batches SET phase = 'processing', total_entries = $1, started_at = COALESCE(started_at, $2), updated_at = $2
             WHERE id = $3 AND phase IN ('received', 'processing')",
        )
        .bind(entries.len() as i64)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn end_batch(&self, id: &str, phase: Phase, error: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE batches SET phase = $4, error = $1, completed_at = $2, updated_at = $2,
                    notify_next_at = CASE WHEN notify_state = 'pending' THEN $2 ELSE notify_next_at END
             WHERE id = $3 AND phase IN ('received', 'processing')",
        )
        .bind(error)
        .bind(now)
        .bind(id)
        .bind(phase.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unfinished_batches(&self) -> Result<Vec<BatchRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM batches WHERE phase IN ('received', 'processing') ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_from_row).collect()
    }

    async fn pending_entries(&self, id: &str) -> Result<Vec<(u32, u64)>> {
        let rows = sqlx::query(
            "SELECT idx, compressed_size FROM entries WHERE batch_id = $1 AND verdict IS NULL ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pending_from_row).collect()
    }

    async fn undecided_between(&self, id: &str, first: u32, last: u32) -> Result<Vec<u32>> {
        let rows = sqlx::query(
            "SELECT idx FROM entries WHERE batch_id = $1 AND idx BETWEEN $2 AND $3 AND verdict IS NULL ORDER BY idx",
        )
        .bind(id)
        .bind(i64::from(first))
        .bind(i64::from(last))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(index_from_row).collect()
    }

    async fn report(&self, id: &str, after: Option<u32>, limit: u32) -> Result<Vec<ReportEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM entries WHERE batch_id = $1 AND idx > $2 ORDER BY idx LIMIT $3",
        )
        .bind(id)
        .bind(after.map_or(-1, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(report_entry_from_row).collect()
    }

    async fn record_verdict(&self, id: &str, index: u32, v: &Verdict, now: Millis) -> Result<bool> {
        // A concurrent writer of the same entry blocks on its row lock and
        // then re-checks `verdict IS NULL` on the committed row: one wins.
        let done = sqlx::query(
            "UPDATE entries SET verdict = $1, reason = $2, detail = $3, image_id = $4, duplicate_of = $5, duplicate_kind = $6, decided_at = $7, distance = $10, checks = $11
             WHERE batch_id = $8 AND idx = $9 AND verdict IS NULL",
        )
        .bind(v.kind.as_str())
        .bind(v.reason.map(Reason::code))
        .bind(&v.detail)
        .bind(&v.image_id)
        .bind(&v.duplicate_of)
        .bind(v.duplicate_kind.map(duplicate_kind_code))
        .bind(now)
        .bind(id)
        .bind(i64::from(index))
        .bind(v.distance.map(i64::from))
        .bind(checks_json(v))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_scores(&self, image_id: &str, scores: &crate::verdict::Scores) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (model, labels) in scores {
            for (label, score) in labels {
                sqlx::query(
                    "INSERT INTO image_scores (image_id, model, label, score) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                )
                .bind(image_id)
                .bind(model)
                .bind(label)
                .bind(score)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_image(&self, i: &ImageRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_image_on(&mut tx, i).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_image_unless_near(
        &self,
        i: &ImageRecord,
        max_distance: u32,
        scope: Option<&str>,
    ) -> Result<Option<Similar>> {
        let mut tx = self.pool.begin().await?;
        // One transaction at a time runs this check and insert: near
        // duplicates are not keyed, so no row lock could serialize them.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(NEAR_LOCK)
            .execute(&mut *tx)
            .await?;
        if let Some(hash) = matchable_hash(i) {
            let found = similar_on(&mut tx, &hash, max_distance, 2, scope).await?;
            if let Some(m) = found.into_iter().find(|m| m.image_id != i.id) {
                tx.rollback().await?;
                return Ok(Some(m));
            }
        }
        insert_image_on(&mut tx, i).await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn similar(
        &self,
        hash: &Hash,
        max_distance: u32,
        limit: u32,
        owner: Option<&str>,
    ) -> Result<Vec<Similar>> {
        let mut conn = self.pool.acquire().await?;
        similar_on(&mut conn, hash, max_distance, limit, owner).await
    }

    async fn image_owners(&self, id: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT owner FROM image_owners WHERE image_id = $1 ORDER BY owner")
                .bind(id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn owned_images(&self, owner: &str, ids: &[String]) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT image_id FROM image_owners WHERE owner = $1 AND image_id = ANY($2) ORDER BY image_id",
        )
        .bind(owner)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn create_api_key(&self, k: &ApiKey, hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, hash, tenant, role, label, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&k.id)
        .bind(hash)
        .bind(&k.tenant)
        .bind(k.role.as_str())
        .bind(&k.label)
        .bind(k.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn revoke_api_key(&self, id: &str, now: Millis) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_batches(
        &self,
        owner: Option<&str>,
        after: Option<(Millis, String)>,
        limit: u32,
    ) -> Result<Vec<BatchRecord>> {
        let (at, id) = after.unwrap_or((Millis::MAX, String::new()));
        let rows = sqlx::query(
            "SELECT * FROM batches WHERE ($1::TEXT IS NULL OR owner = $1)
               AND ((created_at, id) < ($2, $3) OR $3 = '')
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(owner)
        .bind(at)
        .bind(&id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_from_row).collect()
    }

    async fn open_batches(&self, owner: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM batches WHERE owner = $1 AND phase IN ('received', 'processing')",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn uploaded_bytes_since(&self, owner: &str, since: Millis) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(upload_bytes), 0)::BIGINT FROM batches WHERE owner = $1 AND created_at >= $2",
        )
        .bind(owner)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn end_attempt(&self, batch: &str, index: u32) -> Result<()> {
        sqlx::query(
            "UPDATE entries SET attempts = attempts - 1 WHERE batch_id = $1 AND idx = $2 AND attempts > 0",
        )
        .bind(batch)
        .bind(i64::from(index))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn begin_attempt(&self, batch: &str, index: u32) -> Result<u32> {
        let n: Option<i64> = sqlx::query_scalar(
            "UPDATE entries SET attempts = attempts + 1
             WHERE batch_id = $1 AND idx = $2 AND verdict IS NULL RETURNING attempts::BIGINT",
        )
        .bind(batch)
        .bind(i64::from(index))
        .fetch_optional(&self.pool)
        .await?;
        Ok(n.unwrap_or(0) as u32)
    }

    async fn image(&self, id: &str) -> Result<Option<ImageRecord>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = $1"));
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(image_from_row).transpose()
    }

    async fn batch_images(
        &self,
        batch: &str,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>> {
        let rows = sqlx::query(
            "SELECT i.id, i.format, i.width, i.height, i.size, i.orientation, i.owner, e.batch_id, e.idx AS entry_idx, e.name AS entry_name, i.created_at, i.pdq, i.pdq_quality
             FROM entries e JOIN images i ON i.id = e.image_id
             WHERE e.batch_id = $1 AND e.verdict = 'accepted' AND e.idx > $2 ORDER BY e.idx LIMIT $3",
        )
        .bind(batch)
        .bind(after.map_or(-1, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(image_from_row).collect()
    }

    async fn record_original(&self, sha256: &str, image_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO originals (sha256, image_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(sha256)
        .bind(image_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn known_originals(
        &self,
        sha256s: &[String],
        owner: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT sha256, image_id FROM originals o WHERE sha256 = ANY($1)
               AND ($2::TEXT IS NULL OR EXISTS (SELECT 1 FROM image_owners w WHERE w.image_id = o.image_id AND w.owner = $2))
             ORDER BY sha256",
        )
        .bind(sha256s)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    sqlx::Row::try_get(r, "sha256")?,
                    sqlx::Row::try_get(r, "image_id")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn search_images(
        &self,
        filter: &ImageFilter,
        sort: ImageSort,
        after: Option<&ImageCursor>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>> {
        let (sql, args) = image_search_sql(filter, sort, after, limit, true);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in args {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::Float(v) => q.bind(v),
                Arg::Text(t) => q.bind(t),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(image_from_row).collect()
    }

    async fn image_ids(&self) -> Result<Vec<String>> {
        let ids = sqlx::query_scalar("SELECT id FROM images ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(ids)
    }

    async fn try_complete(&self, id: &str, now: Millis) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The update below is a new statement, so it reads entries as
        // committed once we hold the lock: a plan_batch that inserts
        // entries has either committed them or not started inserting. The
        // lock also queues concurrent callers, and each later one finds
        // the phase already completed: exactly one caller wins.
        Self::lock_batch(&mut tx, id).await?;
        let done = sqlx::query(
            "UPDATE batches SET phase = 'completed', completed_at = $1, updated_at = $1,
                    notify_next_at = CASE WHEN notify_state = 'pending' THEN $1 ELSE notify_next_at END
             WHERE id = $2 AND phase = 'processing'
               AND NOT EXISTS (SELECT 1 FROM entries WHERE batch_id = $2 AND verdict IS NULL)",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn due_notifications(&self, now: Millis) -> Result<Vec<BatchRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM batches WHERE notify_state = 'pending' AND notify_next_at <= $1 ORDER BY notify_next_at LIMIT 64",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_from_row).collect()
    }

    async fn record_delivery(&self, id: &str, d: &Delivery, now: Millis) -> Result<()> {
        let q = match d {
            Delivery::Delivered { at } => sqlx::query(
                "UPDATE batches SET notify_state = 'delivered', notify_attempts = notify_attempts + 1, notify_delivered_at = $1,
                        notify_last_error = NULL, notify_next_at = NULL, updated_at = $2 WHERE id = $3",
            )
            .bind(*at)
            .bind(now)
            .bind(id),
            Delivery::Failed { error, next_at } => sqlx::query(
                "UPDATE batches SET notify_state = CASE WHEN $1::BIGINT IS NULL THEN 'failed' ELSE 'pending' END,
                        notify_attempts = notify_attempts + 1, notify_last_error = $2, notify_next_at = $1, updated_at = $3 WHERE id = $4",
            )
            .bind(*next_at)
            .bind(error)
            .bind(now)
            .bind(id),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }
}

/// The advisory lock key of the near-duplicate check ("picsift" in ASCII).
const NEAR_LOCK: i64 = 0x0070_6963_7369_6674;

async fn insert_image_on(conn: &mut sqlx::PgConnection, i: &ImageRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO images (id, format, width, height, size, orientation, batch_id, entry_idx, entry_name, created_at, pdq, pdq_quality, owner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&i.id)
    .bind(i.format.as_str())
    .bind(i64::from(i.width))
    .bind(i64::from(i.height))
    .bind(i.size as i64)
    .bind(i.orientation.map(i64::from))
    .bind(&i.batch_id)
    .bind(i64::from(i.entry_index))
    .bind(&i.entry_name)
    .bind(i.created_ms)
    .bind(&i.pdq)
    .bind(i.pdq_quality.map(i64::from))
    .bind(&i.owner)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO image_owners (image_id, owner) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(&i.id)
    .bind(&i.owner)
    .execute(&mut *conn)
    .await?;
    let keys = mih_keys(i);
    if !keys.is_empty() {
        sqlx::query(
            "INSERT INTO pdq_mih (k, image_id) SELECT k, $2 FROM UNNEST($1::BIGINT[]) AS k
             ON CONFLICT DO NOTHING",
        )
        .bind(&keys)
        .bind(&i.id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn similar_on(
    conn: &mut sqlx::PgConnection,
    hash: &Hash,
    max_distance: u32,
    limit: u32,
    owner: Option<&str>,
) -> Result<Vec<Similar>> {
    let probes = pdq_index::probes(hash, max_distance);
    let rows = sqlx::query(
        "SELECT DISTINCT i.id, i.pdq FROM pdq_mih m JOIN images i ON i.id = m.image_id
         WHERE m.k = ANY($1)
           AND ($2::TEXT IS NULL OR EXISTS (SELECT 1 FROM image_owners o WHERE o.image_id = i.id AND o.owner = $2))",
    )
    .bind(&probes)
    .bind(owner)
    .fetch_all(&mut *conn)
    .await?;
    let candidates = rows
        .iter()
        .map(|r| Ok((sqlx::Row::try_get(r, "id")?, sqlx::Row::try_get(r, "pdq")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(rank_similar(hash, max_distance, limit, candidates))
}
