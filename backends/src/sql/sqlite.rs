//! What only the SQLite catalog does: open the file (WAL mode), keep the
//! near-duplicate index in memory, pass id lists as JSON, and hold the
//! standalone server's dedup claims ([`SqliteDedup`]).

use super::rows::matchable_hash;
use super::{Db, SqlCatalog, migrations};
use crate::DriverResult;
use async_trait::async_trait;
use picsift_core::Result;
use picsift_core::backend::{DedupIndex, Similar, Stored};
use picsift_core::dedup::{self, ClaimOutcome, ClaimRecord, ClaimState, CommitOutcome};
use picsift_core::model::{EntryPlan, ImageRecord};
use picsift_core::pdq::Hash;
use picsift_core::pdq_memory::MemoryIndex;
use picsift_core::time::Millis;
use picsift_core::verdict::Verdict;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

impl SqlCatalog {
    /// Opens (creating if needed) and migrates the SQLite file at `path`,
    /// and loads its stored images' PDQ hashes into memory.
    ///
    /// One process owns the file, so near-duplicate checks and similar
    /// searches are answered from memory and never read `pdq_mih` (the
    /// table stays, empty, from migration 0002).
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: every commit is synced to the WAL before it returns, so
            // a recorded batch (its 202) or verdict (`accepted`) survives a
            // power cut. NORMAL would only keep the file consistent, losing
            // the last commits. Documented in docs/reliability.md.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .or_backend()?;
        migrations::sqlite().run(&pool).await.or_backend()?;
        let mut index = MemoryIndex::default();
        let rows =
            sqlx::query("SELECT id, pdq FROM images WHERE pdq IS NOT NULL AND pdq_quality >= $1")
                .bind(i64::from(picsift_core::pdq::MIN_MATCH_QUALITY))
                .fetch_all(&pool)
                .await
                .or_backend()?;
        for r in &rows {
            let (id, pdq): (String, String) = (
                r.try_get("id").or_backend()?,
                r.try_get("pdq").or_backend()?,
            );
            if let Ok(hash) = pdq.parse::<Hash>() {
                index.insert(&id, &hash);
            }
        }
        Ok(Self {
            db: Db::Sqlite {
                pool,
                pdq: Arc::new(Mutex::new(index)),
            },
        })
    }
}

/// Records a batch's entries and moves it to processing, in one transaction.
pub(super) async fn record_entries(
    pool: &SqlitePool,
    id: &str,
    entries: &[EntryPlan],
    now: Millis,
) -> Result<()> {
    let mut tx = pool.begin().await.or_backend()?;
    for e in entries {
        sqlx::query(
            "INSERT OR IGNORE INTO entries (batch_id, idx, name, compressed_size) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(i64::from(e.index))
        .bind(&e.name)
        .bind(e.compressed_size as i64)
        .execute(&mut *tx)
        .await
        .or_backend()?;
    }
    sqlx::query(super::statements::RECORD_ENTRIES_PHASE)
        .bind(entries.len() as i64)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .or_backend()?;
    tx.commit().await.or_backend()
}

/// Records an image, unless `near` (most distance, tenant scope) is given
/// and a stored image is that close: then that image. The index's lock
/// makes the check and the insert one step among this process's inserts
/// (the only writer of the file).
pub(super) async fn insert_image(
    pool: &SqlitePool,
    pdq: &Mutex<MemoryIndex>,
    i: &ImageRecord,
    near_within: Option<(u32, Option<&str>)>,
    entry: Option<(&Verdict, Millis)>,
) -> Result<Stored> {
    let mut index = pdq.lock().await;
    let hash = matchable_hash(i);
    if let (Some(hash), Some((max_distance, scope))) = (&hash, near_within) {
        let found = near(pool, &index, hash, max_distance, 2, scope).await?;
        if let Some(m) = found.into_iter().find(|m| m.image_id != i.id) {
            return Ok(Stored::Near(m));
        }
    }
    let mut tx = pool.begin().await.or_backend()?;
    if let Some((verdict, now)) = entry
        && !super::statements::record_verdict!(&mut *tx, &i.batch_id, i.entry_index, verdict, now)
    {
        tx.rollback().await.or_backend()?;
        return Ok(Stored::EntryDecided);
    }
    let new = super::statements::insert_image_rows!(tx, i);
    tx.commit().await.or_backend()?;
    if let (true, Some(hash)) = (new, hash) {
        index.insert(&i.id, &hash);
    }
    Ok(Stored::Recorded)
}

/// Images near `hash` from the memory index, checked against `owner`'s
/// images when given.
pub(super) async fn near(
    pool: &SqlitePool,
    index: &MemoryIndex,
    hash: &Hash,
    max_distance: u32,
    limit: u32,
    owner: Option<&str>,
) -> Result<Vec<Similar>> {
    let found = index.search(hash, max_distance, usize::MAX, |_| true);
    let own = match owner {
        Some(owner) if !found.is_empty() => {
            let ids: Vec<String> = found.iter().map(|(id, _)| id.clone()).collect();
            Some(owned_images(pool, owner, &ids).await?)
        }
        _ => None,
    };
    Ok(super::rows::owned_only(found, own, limit))
}

/// Which of `ids` `owner` holds (the list travels as JSON).
pub(super) async fn owned_images(
    pool: &SqlitePool,
    owner: &str,
    ids: &[String],
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT image_id FROM image_owners
         WHERE owner = $1 AND image_id IN (SELECT value FROM json_each($2)) ORDER BY image_id",
    )
    .bind(owner)
    .bind(serde_json::to_string(ids).unwrap_or_default())
    .fetch_all(pool)
    .await
    .or_backend()
}

/// Originals among `sha256s` (the list travels as JSON), with their images.
pub(super) async fn known_originals(
    pool: &SqlitePool,
    sha256s: &[String],
    owner: Option<&str>,
) -> Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT sha256, image_id FROM originals o
         WHERE sha256 IN (SELECT value FROM json_each($1))
           AND (CAST($2 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM image_owners w WHERE w.image_id = o.image_id AND w.owner = $2))
         ORDER BY sha256",
    )
    .bind(serde_json::to_string(sha256s).unwrap_or_default())
    .bind(owner)
    .fetch_all(pool)
    .await
    .or_backend()
}

/// The standalone server's exact-dedup claims, in the catalog's SQLite file
/// (table `dedup_claims`): each claim read, decided by the pure
/// `picsift_core::dedup` rules and written in one IMMEDIATE transaction.
#[derive(Clone)]
pub struct SqliteDedup {
    pool: SqlitePool,
}

impl SqliteDedup {
    /// The claims kept in `catalog`'s file; `None` for a catalog that is
    /// not SQLite.
    pub fn of(catalog: &SqlCatalog) -> Option<Self> {
        match &catalog.db {
            Db::Sqlite { pool, .. } => Some(Self { pool: pool.clone() }),
            Db::Postgres { .. } => None,
        }
    }

    /// Reads the claim, decides, and writes the decision in one
    /// transaction. IMMEDIATE takes the write lock up front, so no other
    /// writer can slip between the read and the write.
    async fn decide_atomically<T: Send>(
        &self,
        key: &str,
        decide: impl FnOnce(Option<&ClaimRecord>) -> (T, Option<ClaimRecord>) + Send,
    ) -> Result<T> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.or_backend()?;
        let row =
            sqlx::query("SELECT owner, image_id, lease_until FROM dedup_claims WHERE key = $1")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .or_backend()?;
        let existing = row.as_ref().map(claim_from_row).transpose()?;
        let (outcome, write) = decide(existing.as_ref());
        if let Some(rec) = write {
            write_claim(&mut tx, key, &rec).await?;
        }
        tx.commit().await.or_backend()?;
        Ok(outcome)
    }
}

fn claim_from_row(r: &SqliteRow) -> Result<ClaimRecord> {
    let image_id: Option<String> = r.try_get("image_id").or_backend()?;
    Ok(ClaimRecord {
        owner: r.try_get("owner").or_backend()?,
        state: match image_id {
            Some(image_id) => ClaimState::Committed { image_id },
            None => ClaimState::Pending {
                lease_until: r.try_get("lease_until").or_backend()?,
            },
        },
    })
}

async fn write_claim(tx: &mut sqlx::SqliteConnection, key: &str, rec: &ClaimRecord) -> Result<()> {
    let (image_id, lease) = match &rec.state {
        ClaimState::Pending { lease_until } => (None, *lease_until),
        ClaimState::Committed { image_id } => (Some(image_id.as_str()), 0),
    };
    sqlx::query(
        "INSERT INTO dedup_claims (key, owner, image_id, lease_until) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, image_id = excluded.image_id, lease_until = excluded.lease_until",
    )
    .bind(key)
    .bind(&rec.owner)
    .bind(image_id)
    .bind(lease)
    .execute(tx)
    .await
    .or_backend()?;
    Ok(())
}

#[async_trait]
impl DedupIndex for SqliteDedup {
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
        let mut conn = self.pool.acquire().await.or_backend()?;
        write_claim(&mut conn, key, &rec).await
    }

    async fn release(&self, key: &str, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM dedup_claims WHERE key = $1 AND owner = $2 AND image_id IS NULL")
            .bind(key)
            .bind(owner)
            .execute(&self.pool)
            .await
            .or_backend()?;
        Ok(())
    }

    async fn pending_claims(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dedup_claims WHERE image_id IS NULL")
            .fetch_one(&self.pool)
            .await
            .or_backend()?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_are_durable_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqlCatalog::open_sqlite(&dir.path().join("c.db"))
            .await
            .unwrap();
        let Db::Sqlite { pool, .. } = &catalog.db else {
            unreachable!("a SQLite catalog")
        };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        // 2 = FULL: each commit synced before it returns.
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!((mode.as_str(), sync), ("wal", 2));
    }
}
