//! `Catalog` over SQL, written once for both dialects ([`with_db!`] runs
//! each query against the catalog's pool). Where PostgreSQL needs a lock
//! or an array that SQLite does not, the method hands over to
//! [`super::sqlite`] or [`super::postgres`].
//!
//! Casts are spelt `CAST(x AS T)`, which both dialects read, where
//! PostgreSQL must know a parameter's type (`CAST($1 AS TEXT) IS NULL`).

use super::quotas;
use super::rows::{
    Arg, IMAGE_COLUMNS, api_key_from_row, batch_from_row, counts_from_rows, image_from_row,
    image_search_sql, index_from_row, pending_from_row, report_entry_from_row,
};
use super::statements::{COMPLETE, record_verdict};
use super::{Db, SqlCatalog, pg_near, postgres, sqlite, with_db};
use crate::DriverResult;
use async_trait::async_trait;
use picsift_core::Result;
use picsift_core::auth::ApiKey;
use picsift_core::backend::{
    Catalog, Delivery, NewBatch, QuotaCheck, Reservation, Similar, Stored,
};
use picsift_core::model::{
    BatchRecord, Counts, EntryPlan, ImageCursor, ImageFilter, ImageRecord, ImageSort, Phase,
    ReportEntry,
};
use picsift_core::pdq::Hash;
use picsift_core::time::Millis;
use picsift_core::verdict::{Scores, Verdict};

#[async_trait]
impl Catalog for SqlCatalog {
    async fn create_batch(&self, b: &NewBatch) -> Result<()> {
        with_db!(&self.db, pool => sqlx::query(
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
        .execute(pool)
        .await
        .or_backend().map(drop))?;
        Ok(())
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>> {
        with_db!(&self.db, pool => {
            let row = sqlx::query("SELECT * FROM batches WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
                .or_backend()?;
            row.as_ref().map(batch_from_row).transpose()
        })
    }

    async fn counts(&self, id: &str) -> Result<Counts> {
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT verdict, COUNT(*) AS n FROM entries WHERE batch_id = $1 GROUP BY verdict",
            )
            .bind(id)
            .fetch_all(pool)
            .await
            .or_backend()?;
            counts_from_rows(&rows)
        })
    }

    async fn record_entries(&self, id: &str, entries: &[EntryPlan], now: Millis) -> Result<()> {
        match &self.db {
            Db::Sqlite { pool, .. } => sqlite::record_entries(pool, id, entries, now).await,
            Db::Postgres { pool, .. } => postgres::record_entries(pool, id, entries, now).await,
        }
    }

    async fn end_batch(&self, id: &str, phase: Phase, error: &str, now: Millis) -> Result<()> {
        with_db!(&self.db, pool => sqlx::query(
            "UPDATE batches SET phase = $4, error = $1, completed_at = $2, updated_at = $2,
                    notify_next_at = CASE WHEN notify_state = 'pending' THEN $2 ELSE notify_next_at END
             WHERE id = $3 AND phase IN ('received', 'processing')",
        )
        .bind(error)
        .bind(now)
        .bind(id)
        .bind(phase.as_str())
        .execute(pool)
        .await
        .or_backend().map(drop))?;
        Ok(())
    }

    async fn unfinished_batches(&self) -> Result<Vec<BatchRecord>> {
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT * FROM batches WHERE phase IN ('received', 'processing') ORDER BY created_at",
            )
            .fetch_all(pool)
            .await
            .or_backend()?;
            rows.iter().map(batch_from_row).collect()
        })
    }

    async fn pending_entries(&self, id: &str) -> Result<Vec<(u32, u64)>> {
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT idx, compressed_size FROM entries WHERE batch_id = $1 AND verdict IS NULL ORDER BY idx",
            )
            .bind(id)
            .fetch_all(pool)
            .await
            .or_backend()?;
            rows.iter().map(pending_from_row).collect()
        })
    }

    async fn undecided_between(&self, id: &str, first: u32, last: u32) -> Result<Vec<u32>> {
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT idx FROM entries WHERE batch_id = $1 AND idx BETWEEN $2 AND $3 AND verdict IS NULL ORDER BY idx",
            )
            .bind(id)
            .bind(i64::from(first))
            .bind(i64::from(last))
            .fetch_all(pool)
            .await
            .or_backend()?;
            rows.iter().map(index_from_row).collect()
        })
    }

    async fn report(&self, id: &str, after: Option<u32>, limit: u32) -> Result<Vec<ReportEntry>> {
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT * FROM entries WHERE batch_id = $1 AND idx > $2 ORDER BY idx LIMIT $3",
            )
            .bind(id)
            .bind(after.map_or(-1, i64::from))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .or_backend()?;
            rows.iter().map(report_entry_from_row).collect()
        })
    }

    async fn record_verdict(&self, id: &str, index: u32, v: &Verdict, now: Millis) -> Result<bool> {
        Ok(with_db!(&self.db, pool => record_verdict!(pool, id, index, v, now)))
    }

    async fn correct_verdict(
        &self,
        id: &str,
        index: u32,
        accepted_image: &str,
        v: &Verdict,
        now: Millis,
    ) -> Result<bool> {
        Ok(
            with_db!(&self.db, pool => record_verdict!(pool, id, index, v, now, replacing accepted_image)),
        )
    }

    async fn record_scores(&self, image_id: &str, scores: &Scores) -> Result<()> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin().await.or_backend()?;
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
                    .await
                    .or_backend()?;
                }
            }
            tx.commit().await.or_backend()
        })
    }

    async fn insert_image(&self, i: &ImageRecord) -> Result<()> {
        match &self.db {
            Db::Sqlite { pool, pdq } => sqlite::insert_image(pool, pdq, i, None, None)
                .await
                .map(drop),
            Db::Postgres { pool, near: r } => pg_near::insert_image(pool, r, i, None, None)
                .await
                .map(drop),
        }
    }

    async fn insert_image_unless_near(
        &self,
        i: &ImageRecord,
        max_distance: u32,
        scope: Option<&str>,
    ) -> Result<Option<Similar>> {
        let near = Some((max_distance, scope));
        let stored = match &self.db {
            Db::Sqlite { pool, pdq } => sqlite::insert_image(pool, pdq, i, near, None).await?,
            Db::Postgres { pool, near: r } => pg_near::insert_image(pool, r, i, near, None).await?,
        };
        Ok(match stored {
            Stored::Near(m) => Some(m),
            _ => None,
        })
    }

    async fn record_stored(
        &self,
        i: &ImageRecord,
        verdict: &Verdict,
        near: Option<(u32, Option<&str>)>,
        now: Millis,
    ) -> Result<Stored> {
        let entry = Some((verdict, now));
        match &self.db {
            Db::Sqlite { pool, pdq } => sqlite::insert_image(pool, pdq, i, near, entry).await,
            Db::Postgres { pool, near: r } => pg_near::insert_image(pool, r, i, near, entry).await,
        }
    }

    async fn similar(
        &self,
        hash: &Hash,
        max_distance: u32,
        limit: u32,
        owner: Option<&str>,
    ) -> Result<Vec<Similar>> {
        match &self.db {
            Db::Sqlite { pool, pdq } => {
                let index = pdq.lock().await;
                sqlite::near(pool, &index, hash, max_distance, limit, owner).await
            }
            Db::Postgres { pool, near } => {
                let mut conn = pool.acquire().await.or_backend()?;
                pg_near::near(&mut conn, near, hash, max_distance, limit, owner).await
            }
        }
    }

    async fn image_owners(&self, id: &str) -> Result<Vec<String>> {
        with_db!(&self.db, pool => sqlx::query_scalar(
            "SELECT owner FROM image_owners WHERE image_id = $1 ORDER BY owner",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .or_backend())
    }

    async fn owned_images(&self, owner: &str, ids: &[String]) -> Result<Vec<String>> {
        match &self.db {
            Db::Sqlite { pool, .. } => sqlite::owned_images(pool, owner, ids).await,
            Db::Postgres { pool, .. } => postgres::owned_images(pool, owner, ids).await,
        }
    }

    async fn create_api_key(&self, k: &ApiKey, hash: &str) -> Result<()> {
        with_db!(&self.db, pool => sqlx::query(
            "INSERT INTO api_keys (id, hash, tenant, role, label, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&k.id)
        .bind(hash)
        .bind(&k.tenant)
        .bind(k.role.as_str())
        .bind(&k.label)
        .bind(k.created_at)
        .execute(pool)
        .await
        .or_backend().map(drop))?;
        Ok(())
    }

    async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        with_db!(&self.db, pool => {
            let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
                .fetch_all(pool)
                .await
                .or_backend()?;
            rows.iter().map(api_key_from_row).collect()
        })
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        with_db!(&self.db, pool => {
            let row = sqlx::query("SELECT * FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
                .bind(hash)
                .fetch_optional(pool)
                .await
                .or_backend()?;
            row.as_ref().map(api_key_from_row).transpose()
        })
    }

    async fn revoke_api_key(&self, id: &str, now: Millis) -> Result<bool> {
        let done = with_db!(&self.db, pool => sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(pool)
        .await
        .or_backend()?
        .rows_affected());
        Ok(done == 1)
    }

    async fn list_batches(
        &self,
        owner: Option<&str>,
        after: Option<(Millis, String)>,
        limit: u32,
    ) -> Result<Vec<BatchRecord>> {
        let (at, id) = after.unwrap_or((Millis::MAX, String::new()));
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT * FROM batches WHERE (CAST($1 AS TEXT) IS NULL OR owner = $1)
                   AND ((created_at, id) < ($2, $3) OR $3 = '')
                 ORDER BY created_at DESC, id DESC LIMIT $4",
            )
            .bind(owner)
            .bind(at)
            .bind(&id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .or_backend()?;
            rows.iter().map(batch_from_row).collect()
        })
    }

    async fn reserve_upload(&self, r: &Reservation, q: &QuotaCheck) -> Result<bool> {
        quotas::reserve(self, r, q).await
    }

    async fn settle_upload(&self, r: &Reservation, q: &QuotaCheck) -> Result<bool> {
        quotas::settle(self, r, q).await
    }

    async fn release_upload(&self, id: &str) -> Result<()> {
        quotas::release(self, id).await
    }

    async fn open_batches(&self, owner: &str) -> Result<u64> {
        let n: i64 = with_db!(&self.db, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM batches WHERE owner = $1 AND phase IN ('received', 'processing')",
        )
        .bind(owner)
        .fetch_one(pool)
        .await
        .or_backend())?;
        Ok(n as u64)
    }

    async fn uploaded_bytes_since(&self, owner: &str, since: Millis) -> Result<u64> {
        let n: i64 = with_db!(&self.db, pool => sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(upload_bytes), 0) AS BIGINT) FROM batches WHERE owner = $1 AND created_at >= $2",
        )
        .bind(owner)
        .bind(since)
        .fetch_one(pool)
        .await
        .or_backend())?;
        Ok(n as u64)
    }

    async fn end_attempt(&self, batch: &str, index: u32) -> Result<()> {
        with_db!(&self.db, pool => sqlx::query(
            "UPDATE entries SET attempts = attempts - 1 WHERE batch_id = $1 AND idx = $2 AND attempts > 0",
        )
        .bind(batch)
        .bind(i64::from(index))
        .execute(pool)
        .await
        .or_backend().map(drop))?;
        Ok(())
    }

    async fn begin_attempt(&self, batch: &str, index: u32) -> Result<u32> {
        let n: Option<i64> = with_db!(&self.db, pool => sqlx::query_scalar(
            "UPDATE entries SET attempts = attempts + 1
             WHERE batch_id = $1 AND idx = $2 AND verdict IS NULL RETURNING CAST(attempts AS BIGINT)",
        )
        .bind(batch)
        .bind(i64::from(index))
        .fetch_optional(pool)
        .await
        .or_backend())?;
        Ok(n.unwrap_or(0) as u32)
    }

    async fn image(&self, id: &str) -> Result<Option<ImageRecord>> {
        with_db!(&self.db, pool => {
            let sql = sqlx::AssertSqlSafe(format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = $1"));
            let row = sqlx::query(sql).bind(id).fetch_optional(pool).await.or_backend()?;
            row.as_ref().map(image_from_row).transpose()
        })
    }

    async fn note_orphan_blob(&self, image_id: &str, now: Millis) -> Result<()> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO orphan_blobs (image_id, since) VALUES ($1, $2)
                 ON CONFLICT (image_id) DO UPDATE SET since = excluded.since
                 WHERE NOT orphan_blobs.deleting",
            )
            .bind(image_id)
            .bind(now)
            .execute(pool)
            .await
            .or_backend()?;
            Ok(())
        })
    }

    async fn claim_blob_for_put(&self, image_id: &str) -> Result<bool> {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM orphan_blobs WHERE image_id = $1 AND NOT deleting")
                .bind(image_id)
                .execute(pool)
                .await
                .or_backend()?;
            let deleting: Option<String> =
                sqlx::query_scalar("SELECT image_id FROM orphan_blobs WHERE image_id = $1")
                    .bind(image_id)
                    .fetch_optional(pool)
                    .await
                    .or_backend()?;
            Ok(deleting.is_none())
        })
    }

    async fn orphan_blobs_to_delete(&self, before: Millis, limit: u32) -> Result<Vec<String>> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "DELETE FROM orphan_blobs WHERE since <= $1 AND NOT deleting
                   AND EXISTS (SELECT 1 FROM images i WHERE i.id = orphan_blobs.image_id)",
            )
            .bind(before)
            .execute(pool)
            .await
            .or_backend()?;
            sqlx::query_scalar(
                "UPDATE orphan_blobs SET deleting = TRUE WHERE image_id IN (
                   SELECT o.image_id FROM orphan_blobs o
                    WHERE (o.since <= $1 OR o.deleting)
                      AND NOT EXISTS (SELECT 1 FROM images i WHERE i.id = o.image_id)
                    ORDER BY o.since LIMIT $2)
                 RETURNING image_id",
            )
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .or_backend()
        })
    }

    async fn forget_orphan_blob(&self, image_id: &str) -> Result<()> {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM orphan_blobs WHERE image_id = $1")
                .bind(image_id)
                .execute(pool)
                .await
                .or_backend()?;
            Ok(())
        })
    }

    async fn batch_images(
        &self,
        batch: &str,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>> {
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT i.id, i.format, i.width, i.height, i.size, i.orientation, i.owner, e.batch_id, e.idx AS entry_idx, e.name AS entry_name, i.created_at, i.pdq, i.pdq_quality
                 FROM entries e JOIN images i ON i.id = e.image_id
                 WHERE e.batch_id = $1 AND e.verdict = 'accepted' AND e.idx > $2 ORDER BY e.idx LIMIT $3",
            )
            .bind(batch)
            .bind(after.map_or(-1, i64::from))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .or_backend()?;
            rows.iter().map(image_from_row).collect()
        })
    }

    async fn record_original(&self, sha256: &str, image_id: &str) -> Result<()> {
        with_db!(&self.db, pool => sqlx::query(
            "INSERT INTO originals (sha256, image_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(sha256)
        .bind(image_id)
        .execute(pool)
        .await
        .or_backend().map(drop))?;
        Ok(())
    }

    async fn known_originals(
        &self,
        sha256s: &[String],
        owner: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        match &self.db {
            Db::Sqlite { pool, .. } => sqlite::known_originals(pool, sha256s, owner).await,
            Db::Postgres { pool, .. } => postgres::known_originals(pool, sha256s, owner).await,
        }
    }

    async fn search_images(
        &self,
        filter: &ImageFilter,
        sort: ImageSort,
        after: Option<&ImageCursor>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>> {
        let (sql, args) = image_search_sql(filter, sort, after, limit);
        with_db!(&self.db, pool => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for a in args {
                q = match a {
                    Arg::Int(v) => q.bind(v),
                    Arg::Float(v) => q.bind(v),
                    Arg::Text(t) => q.bind(t),
                };
            }
            let rows = q.fetch_all(pool).await.or_backend()?;
            rows.iter().map(image_from_row).collect()
        })
    }

    async fn stored_claims(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<picsift_core::model::StoredClaims>> {
        // Two range reads per page, both on primary keys: the images, then
        // the owners of exactly those ids.
        let after = after.unwrap_or("");
        with_db!(&self.db, pool => {
            let images: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT id, batch_id, entry_idx FROM images WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .or_backend()?;
            let Some(last) = images.last().map(|i| i.0.clone()) else {
                return Ok(Vec::new());
            };
            let owners: Vec<(String, String)> = sqlx::query_as(
                "SELECT image_id, owner FROM image_owners
                 WHERE image_id > $1 AND image_id <= $2 ORDER BY image_id, owner",
            )
            .bind(after)
            .bind(&last)
            .fetch_all(pool)
            .await
            .or_backend()?;
            Ok(crate::sql::rows::stored_claims(images, owners))
        })
    }

    async fn image_ids(&self) -> Result<Vec<String>> {
        with_db!(&self.db, pool => sqlx::query_scalar("SELECT id FROM images ORDER BY id")
            .fetch_all(pool)
            .await
            .or_backend())
    }

    async fn try_complete(&self, id: &str, now: Millis) -> Result<bool> {
        match &self.db {
            // One writer at a time: the update's own check is enough.
            Db::Sqlite { pool, .. } => Ok(sqlx::query(COMPLETE)
                .bind(now)
                .bind(id)
                .execute(pool)
                .await
                .or_backend()?
                .rows_affected()
                == 1),
            Db::Postgres { pool, .. } => postgres::try_complete(pool, id, now).await,
        }
    }

    async fn due_notifications(&self, now: Millis) -> Result<Vec<BatchRecord>> {
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT * FROM batches WHERE notify_state = 'pending' AND notify_next_at <= $1 ORDER BY notify_next_at LIMIT 64",
            )
            .bind(now)
            .fetch_all(pool)
            .await
            .or_backend()?;
            rows.iter().map(batch_from_row).collect()
        })
    }

    async fn record_delivery(&self, id: &str, d: &Delivery, now: Millis) -> Result<()> {
        with_db!(&self.db, pool => {
            let q = match d {
                Delivery::Delivered { at } => sqlx::query(
                    "UPDATE batches SET notify_state = 'delivered', notify_attempts = notify_attempts + 1, notify_delivered_at = $1,
                            notify_last_error = NULL, notify_next_at = NULL, updated_at = $2 WHERE id = $3",
                )
                .bind(*at)
                .bind(now)
                .bind(id),
                Delivery::Failed { error, next_at } => sqlx::query(
                    "UPDATE batches SET notify_state = CASE WHEN CAST($1 AS BIGINT) IS NULL THEN 'failed' ELSE 'pending' END,
                            notify_attempts = notify_attempts + 1, notify_last_error = $2, notify_next_at = $1, updated_at = $3 WHERE id = $4",
                )
                .bind(*next_at)
                .bind(error)
                .bind(now)
                .bind(id),
            };
            q.execute(pool).await.or_backend()?;
            Ok(())
        })
    }
}
