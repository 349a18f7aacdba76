//! Catalog and dedup index in one SQLite file (WAL mode).

use crate::Result;
use crate::auth::ApiKey;
use crate::catalog_rows::{
    Arg, IMAGE_COLUMNS, api_key_from_row, batch_from_row, checks_json, counts_from_rows,
    duplicate_kind_code, image_from_row, image_search_sql, index_from_row, matchable_hash,
    pending_from_row, report_entry_from_row,
};
use crate::dedup::{self, ClaimOutcome, ClaimRecord, ClaimState, CommitOutcome};
use crate::model::{
    BatchRecord, Counts, EntryPlan, ImageCursor, ImageFilter, ImageRecord, ImageSort, Phase,
    ReportEntry,
};
use crate::pdq::Hash;
use crate::pdq_memory::MemoryIndex;
use crate::store::{Catalog, DedupIndex, Delivery, NewBatch, Similar};
use crate::time::Millis;
use crate::verdict::{Reason, Verdict};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The standalone catalog and dedup index.
///
/// One process owns the file, so the PDQ index lives in its memory
/// ([`MemoryIndex`], loaded at open, updated with every image inserted):
/// near-duplicate checks and similar-image searches never read `pdq_mih`,
/// so this catalog does not write it (the table stays, empty, from
/// migration 0002).
#[derive(Clone)]
pub struct SqliteCatalog {
    pool: SqlitePool,
    /// The stored images' matchable PDQ hashes. Its lock is also what
    /// serializes image inserts, so a near-duplicate check sees every image
    /// recorded before it.
    pdq: Arc<tokio::sync::Mutex<MemoryIndex>>,
}

impl SqliteCatalog {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let mut index = MemoryIndex::default();
        let rows =
            sqlx::query("SELECT id, pdq FROM images WHERE pdq IS NOT NULL AND pdq_quality >= ?")
                .bind(i64::from(crate::pdq::MIN_MATCH_QUALITY))
                .fetch_all(&pool)
                .await?;
        for r in &rows {
            let (id, pdq): (String, String) = (r.try_get("id")?, r.try_get("pdq")?);
            if let Ok(hash) = pdq.parse::<Hash>() {
                index.insert(&id, &hash);
            }
        }
        Ok(Self {
            pool,
            pdq: Arc::new(tokio::sync::Mutex::new(index)),
        })
    }

    /// Images near `hash` from the memory index, checked against `owner`'s
    /// images when given.
    async fn near(
        &self,
        index: &MemoryIndex,
        hash: &Hash,
        max_distance: u32,
        limit: u32,
        owner: Option<&str>,
    ) -> Result<Vec<Similar>> {
        let mut found = index.search(hash, max_distance, usize::MAX, |_| true);
        if let Some(owner) = owner {
            let ids: Vec<String> = found.iter().map(|(id, _)| id.clone()).collect();
            let own: std::collections::HashSet<String> =
                self.owned_images(owner, &ids).await?.into_iter().collect();
            found.retain(|(id, _)| own.contains(id));
        }
        found.truncate(limit as usize);
        Ok(found
            .into_iter()
            .map(|(image_id, distance)| Similar { image_id, distance })
            .collect())
    }
}

#[async_trait]
impl Catalog for SqliteCatalog {
    async fn create_batch(&self, b: &NewBatch) -> Result<()> {
        sqlx::query(
            "INSERT INTO batches (id, owner, phase, staged_key, upload_bytes, total_entries, callback_url, notify_state, created_at, updated_at)
             VALUES (?, ?, 'received', ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&b.id)
        .bind(&b.owner)
        .bind(&b.staged_key)
        .bind(b.upload_bytes as i64)
        .bind(b.total_entries as i64)
        .bind(&b.callback_url)
        .bind(if b.callback_url.is_some() { "pending" } else { "none" })
        .bind(b.now)
        .bind(b.now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>> {
        let row = sqlx::query("SELECT * FROM batches WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(batch_from_row).transpose()
    }

    async fn counts(&self, id: &str) -> Result<Counts> {
        let rows = sqlx::query(
            "SELECT verdict, COUNT(*) AS n FROM entries WHERE batch_id = ? GROUP BY verdict",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        counts_from_rows(&rows)
    }

    async fn plan_batch(&self, id: &str, entries: &[EntryPlan], now: Millis) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for e in entries {
            sqlx::query("INSERT OR IGNORE INTO entries (batch_id, idx, name, compressed_size) VALUES (?, ?, ?, ?)")
                .bind(id)
                .bind(i64::from(e.index))
                .bind(&e.name)
                .bind(e.compressed_size as i64)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE batches SET phase = 'processing', total_entries = ?, started_at = COALESCE(started_at, ?), updated_at = ?
             WHERE id = ? AND phase IN ('received', 'processing')",
        )
        .bind(entries.len() as i64)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn end_batch(&self, id: &str, phase: Phase, error: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE batches SET phase = ?, error = ?, completed_at = ?, updated_at = ?,
                    notify_next_at = CASE WHEN notify_state = 'pending' THEN ? ELSE notify_next_at END
             WHERE id = ? AND phase IN ('received', 'processing')",
        )
        .bind(phase.as_str())
        .bind(error)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(id)
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
        let rows = sqlx::query("SELECT idx, compressed_size FROM entries WHERE batch_id = ? AND verdict IS NULL ORDER BY idx")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pending_from_row).collect()
    }

    async fn undecided_between(&self, id: &str, first: u32, last: u32) -> Result<Vec<u32>> {
        let rows = sqlx::query(
            "SELECT idx FROM entries WHERE batch_id = ? AND idx BETWEEN ? AND ? AND verdict IS NULL ORDER BY idx",
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
            "SELECT * FROM entries WHERE batch_id = ? AND idx > ? ORDER BY idx LIMIT ?",
        )
        .bind(id)
        .bind(after.map_or(-1, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(report_entry_from_row).collect()
    }

    async fn record_verdict(&self, id: &str, index: u32, v: &Verdict, now: Millis) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE entries SET verdict = ?, reason = ?, detail = ?, image_id = ?, duplicate_of = ?, duplicate_kind = ?, decided_at = ?, distance = ?, checks = ?
             WHERE batch_id = ? AND idx = ? AND verdict IS NULL",
        )
        .bind(v.kind.as_str())
        .bind(v.reason.map(Reason::code))
        .bind(&v.detail)
        .bind(&v.image_id)
        .bind(&v.duplicate_of)
        .bind(v.duplicate_kind.map(duplicate_kind_code))
        .bind(now)
        .bind(v.distance.map(i64::from))
        .bind(checks_json(v))
        .bind(id)
        .bind(i64::from(index))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_scores(&self, image_id: &str, scores: &crate::verdict::Scores) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (model, labels) in scores {
            for (label, score) in labels {
                sqlx::query(
                    "INSERT INTO image_scores (image_id, model, label, score) VALUES (?, ?, ?, ?)
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
        let mut index = self.pdq.lock().await;
        let mut tx = self.pool.begin().await?;
        let new = insert_image_on(&mut tx, i).await?;
        tx.commit().await?;
        if let (true, Some(hash)) = (new, matchable_hash(i)) {
            index.insert(&i.id, &hash);
        }
        Ok(())
    }

    async fn insert_image_unless_near(
        &self,
        i: &ImageRecord,
        max_distance: u32,
        scope: Option<&str>,
    ) -> Result<Option<Similar>> {
        // The index's lock makes the check and the insert one step among
        // this process's inserts (the only writer of the file).
        let mut index = self.pdq.lock().await;
        let hash = matchable_hash(i);
        if let Some(hash) = &hash {
            let found = self.near(&index, hash, max_distance, 2, scope).await?;
            if let Some(m) = found.into_iter().find(|m| m.image_id != i.id) {
                return Ok(Some(m));
            }
        }
        let mut tx = self.pool.begin().await?;
        let new = insert_image_on(&mut tx, i).await?;
        tx.commit().await?;
        if let (true, Some(hash)) = (new, hash) {
            index.insert(&i.id, &hash);
        }
        Ok(None)
    }

    async fn similar(
        &self,
        hash: &Hash,
        max_distance: u32,
        limit: u32,
        owner: Option<&str>,
    ) -> Result<Vec<Similar>> {
        let index = self.pdq.lock().await;
        self.near(&index, hash, max_distance, limit, owner).await
    }

    async fn image_owners(&self, id: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT owner FROM image_owners WHERE image_id = ? ORDER BY owner")
                .bind(id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn owned_images(&self, owner: &str, ids: &[String]) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT image_id FROM image_owners
             WHERE owner = ? AND image_id IN (SELECT value FROM json_each(?)) ORDER BY image_id",
        )
        .bind(owner)
        .bind(serde_json::to_string(ids).unwrap_or_default())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn create_api_key(&self, k: &ApiKey, hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, hash, tenant, role, label, created_at) VALUES (?, ?, ?, ?, ?, ?)",
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
        let row = sqlx::query("SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn revoke_api_key(&self, id: &str, now: Millis) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
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
            "SELECT * FROM batches WHERE (? IS NULL OR owner = ?)
               AND (created_at < ? OR (created_at = ? AND id < ?) OR ? = '')
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(owner)
        .bind(owner)
        .bind(at)
        .bind(at)
        .bind(&id)
        .bind(&id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_from_row).collect()
    }

    async fn open_batches(&self, owner: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM batches WHERE owner = ? AND phase IN ('received', 'processing')",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn uploaded_bytes_since(&self, owner: &str, since: Millis) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(upload_bytes), 0) FROM batches WHERE owner = ? AND created_at >= ?",
        )
        .bind(owner)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn end_attempt(&self, batch: &str, index: u32) -> Result<()> {
        sqlx::query(
            "UPDATE entries SET attempts = attempts - 1 WHERE batch_id = ? AND idx = ? AND attempts > 0",
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
             WHERE batch_id = ? AND idx = ? AND verdict IS NULL RETURNING attempts",
        )
        .bind(batch)
        .bind(i64::from(index))
        .fetch_optional(&self.pool)
        .await?;
        Ok(n.unwrap_or(0) as u32)
    }

    async fn image(&self, id: &str) -> Result<Option<ImageRecord>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?"));
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
             WHERE e.batch_id = ? AND e.verdict = 'accepted' AND e.idx > ? ORDER BY e.idx LIMIT ?",
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
            "INSERT INTO originals (sha256, image_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
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
            "SELECT sha256, image_id FROM originals o
             WHERE sha256 IN (SELECT value FROM json_each(?))
               AND (? IS NULL OR EXISTS (SELECT 1 FROM image_owners w WHERE w.image_id = o.image_id AND w.owner = ?))
             ORDER BY sha256",
        )
        .bind(serde_json::to_string(sha256s).unwrap_or_default())
        .bind(owner)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("sha256")?, r.try_get("image_id")?)))
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
        let (sql, args) = image_search_sql(filter, sort, after, limit, false);
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
        let rows = sqlx::query("SELECT id FROM images ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    async fn try_complete(&self, id: &str, now: Millis) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE batches SET phase = 'completed', completed_at = ?, updated_at = ?,
                    notify_next_at = CASE WHEN notify_state = 'pending' THEN ? ELSE notify_next_at END
             WHERE id = ? AND phase = 'processing'
               AND NOT EXISTS (SELECT 1 FROM entries WHERE batch_id = ? AND verdict IS NULL)",
        )
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn due_notifications(&self, now: Millis) -> Result<Vec<BatchRecord>> {
        let rows = sqlx::query("SELECT * FROM batches WHERE notify_state = 'pending' AND notify_next_at <= ? ORDER BY notify_next_at LIMIT 64")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(batch_from_row).collect()
    }

    async fn record_delivery(&self, id: &str, d: &Delivery, now: Millis) -> Result<()> {
        let q = match d {
            Delivery::Delivered { at } => sqlx::query(
                "UPDATE batches SET notify_state = 'delivered', notify_attempts = notify_attempts + 1, notify_delivered_at = ?,
                        notify_last_error = NULL, notify_next_at = NULL, updated_at = ? WHERE id = ?",
            )
            .bind(*at)
            .bind(now)
            .bind(id),
            Delivery::Failed { error, next_at } => sqlx::query(
                "UPDATE batches SET notify_state = CASE WHEN ? IS NULL THEN 'failed' ELSE 'pending' END,
                        notify_attempts = notify_attempts + 1, notify_last_error = ?, notify_next_at = ?, updated_at = ? WHERE id = ?",
            )
            .bind(*next_at)
            .bind(error)
            .bind(*next_at)
            .bind(now)
            .bind(id),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }
}

fn claim_from_row(r: &SqliteRow) -> Result<ClaimRecord> {
    let image_id: Option<String> = r.try_get("image_id")?;
    Ok(ClaimRecord {
        owner: r.try_get("owner")?,
        state: match image_id {
            Some(image_id) => ClaimState::Committed { image_id },
            None => ClaimState::Pending {
                lease_until: r.try_get("lease_until")?,
            },
        },
    })
}

impl SqliteCatalog {
    /// Reads the claim, decides, and writes the decision in one
    /// transaction. IMMEDIATE takes the write lock up front, so no other
    /// writer can slip between the read and the write.
    async fn decide_atomically<T: Send>(
        &self,
        key: &str,
        decide: impl FnOnce(Option<&ClaimRecord>) -> (T, Option<ClaimRecord>) + Send,
    ) -> Result<T> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row =
            sqlx::query("SELECT owner, image_id, lease_until FROM dedup_claims WHERE key = ?")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        let existing = row.as_ref().map(claim_from_row).transpose()?;
        let (outcome, write) = decide(existing.as_ref());
        if let Some(rec) = write {
            Self::write_claim(&mut tx, key, &rec).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn write_claim(
        tx: &mut sqlx::SqliteConnection,
        key: &str,
        rec: &ClaimRecord,
    ) -> Result<()> {
        let (image_id, lease) = match &rec.state {
            ClaimState::Pending { lease_until } => (None, *lease_until),
            ClaimState::Committed { image_id } => (Some(image_id.as_str()), 0),
        };
        sqlx::query(
            "INSERT INTO dedup_claims (key, owner, image_id, lease_until) VALUES (?, ?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, image_id = excluded.image_id, lease_until = excluded.lease_until",
        )
        .bind(key)
        .bind(&rec.owner)
        .bind(image_id)
        .bind(lease)
        .execute(tx)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl DedupIndex for SqliteCatalog {
    async fn claim(
        &self,
        key: &str,
        owner: &str,
        now: Millis,
        lease_ms: Millis,
    ) -> Result<ClaimOutcome> {
        self.decide_atomically(key, |existing| {
            dedup::decide_claim(existing, owner, now, lease_ms)
        })
        .await
    }

    async fn commit(&self, key: &str, owner: &str, image_id: &str) -> Result<CommitOutcome> {
        self.decide_atomically(key, |existing| {
            dedup::decide_commit(existing, owner, image_id)
        })
        .await
    }

    async fn restore_committed(&self, key: &str, owner: &str, image_id: &str) -> Result<()> {
        let rec = ClaimRecord {
            owner: owner.into(),
            state: ClaimState::Committed {
                image_id: image_id.into(),
            },
        };
        let mut conn = self.pool.acquire().await?;
        Self::write_claim(&mut conn, key, &rec).await
    }

    async fn release(&self, key: &str, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM dedup_claims WHERE key = ? AND owner = ? AND image_id IS NULL")
            .bind(key)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn pending_claims(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dedup_claims WHERE image_id IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}

/// Records the image; returns whether it was new.
async fn insert_image_on(conn: &mut sqlx::SqliteConnection, i: &ImageRecord) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO images (id, format, width, height, size, orientation, owner, batch_id, entry_idx, entry_name, created_at, pdq, pdq_quality)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&i.id)
    .bind(i.format.as_str())
    .bind(i64::from(i.width))
    .bind(i64::from(i.height))
    .bind(i.size as i64)
    .bind(i.orientation.map(i64::from))
    .bind(&i.owner)
    .bind(&i.batch_id)
    .bind(i64::from(i.entry_index))
    .bind(&i.entry_name)
    .bind(i.created_ms)
    .bind(&i.pdq)
    .bind(i.pdq_quality.map(i64::from))
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    sqlx::query("INSERT INTO image_owners (image_id, owner) VALUES (?, ?) ON CONFLICT DO NOTHING")
        .bind(&i.id)
        .bind(&i.owner)
        .execute(&mut *conn)
        .await?;
    Ok(inserted)
}
