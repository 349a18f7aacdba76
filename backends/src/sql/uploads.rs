//! `UploadStore` over SQL, for both dialects: resumable uploads in
//! progress. Every step that moves an upload is one conditional statement
//! on its row (the lock token in the `WHERE`), so whichever gateway takes a
//! request, two requests never both append, and one that lost its lock
//! saves nothing.

use super::rows::CatalogRow;
use super::{SqlCatalog, with_db};
use crate::DriverResult;
use async_trait::async_trait;
use picsift_core::backend::UploadStore;
use picsift_core::resumable::{Finished, Progress, UploadKind, UploadOptions, UploadRecord};
use picsift_core::time::Millis;
use picsift_core::{Error, Result};

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(format!("upload {what} {s:?}: {e}")))
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `resumable_uploads` row.
fn upload_from_row(r: &impl CatalogRow) -> Result<UploadRecord> {
    let kind = r.text("kind")?;
    let tail = match (r.opt_text("tail_key")?, r.int("tail_len")?) {
        (Some(key), n) => Some((key, n.max(0) as u64)),
        (None, _) => None,
    };
    Ok(UploadRecord {
        id: r.text("id")?,
        owner: r.text("owner")?,
        kind: UploadKind::parse(&kind)
            .ok_or_else(|| Error::Corrupt(format!("upload kind {kind:?}")))?,
        length: r.opt_int("length")?.map(|n| n.max(0) as u64),
        offset: r.int("upload_offset")?.max(0) as u64,
        options: parse::<UploadOptions>("options", &r.text("options")?)?,
        multipart_id: r.text("multipart_id")?,
        parts: parse("parts", &r.text("parts")?)?,
        tail,
        created_at: r.int("created_at")?,
        expires_at: r.int("expires_at")?,
        lock: r
            .opt_text("lock_token")?
            .map(|t| (t, r.int("lock_until").unwrap_or(0))),
        finished: r
            .opt_text("finished")?
            .map(|f| parse::<Finished>("outcome", &f))
            .transpose()?,
    })
}

#[async_trait]
impl UploadStore for SqlCatalog {
    async fn create_upload(&self, u: &UploadRecord) -> Result<()> {
        let (tail_key, tail_len) = u.tail.clone().unwrap_or_default();
        with_db!(&self.db, pool => sqlx::query(
            "INSERT INTO resumable_uploads (id, owner, kind, length, upload_offset, options, multipart_id, parts, tail_key, tail_len, created_at, expires_at, lock_token, lock_until, finished)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, 0, NULL)",
        )
        .bind(&u.id)
        .bind(&u.owner)
        .bind(u.kind.as_str())
        .bind(u.length.map(int))
        .bind(int(u.offset))
        .bind(json(&u.options))
        .bind(&u.multipart_id)
        .bind(json(&u.parts))
        .bind(u.tail.as_ref().map(|_| tail_key))
        .bind(int(tail_len))
        .bind(u.created_at)
        .bind(u.expires_at)
        .execute(pool)
        .await
        .or_backend()
        .map(drop))
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        with_db!(&self.db, pool => {
            let row = sqlx::query("SELECT * FROM resumable_uploads WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
                .or_backend()?;
            row.as_ref().map(upload_from_row).transpose()
        })
    }

    async fn lock_upload(
        &self,
        id: &str,
        token: &str,
        offset: u64,
        now: Millis,
        until: Millis,
    ) -> Result<bool> {
        with_db!(&self.db, pool => Ok(sqlx::query(
            "UPDATE resumable_uploads SET lock_token = $2, lock_until = $5
              WHERE id = $1 AND upload_offset = $3 AND finished IS NULL AND expires_at > $4
                AND (lock_token IS NULL OR lock_until <= $4)",
        )
        .bind(id)
        .bind(token)
        .bind(int(offset))
        .bind(now)
        .bind(until)
        .execute(pool)
        .await
        .or_backend()?
        .rows_affected() == 1))
    }

    async fn save_upload(
        &self,
        id: &str,
        token: &str,
        p: &Progress,
        until: Millis,
    ) -> Result<bool> {
        let (tail_key, tail_len) = p.tail.clone().unwrap_or_default();
        with_db!(&self.db, pool => Ok(sqlx::query(
            "UPDATE resumable_uploads SET upload_offset = $3, parts = $4, tail_key = $5, tail_len = $6, length = $7, lock_until = $8
              WHERE id = $1 AND lock_token = $2 AND finished IS NULL",
        )
        .bind(id)
        .bind(token)
        .bind(int(p.offset))
        .bind(json(&p.parts))
        .bind(p.tail.as_ref().map(|_| tail_key))
        .bind(int(tail_len))
        .bind(p.length.map(int))
        .bind(until)
        .execute(pool)
        .await
        .or_backend()?
        .rows_affected() == 1))
    }

    async fn unlock_upload(&self, id: &str, token: &str) -> Result<()> {
        with_db!(&self.db, pool => sqlx::query(
            "UPDATE resumable_uploads SET lock_token = NULL, lock_until = 0 WHERE id = $1 AND lock_token = $2",
        )
        .bind(id)
        .bind(token)
        .execute(pool)
        .await
        .or_backend()
        .map(drop))
    }

    async fn finish_upload(&self, id: &str, token: &str, how: &Finished) -> Result<bool> {
        with_db!(&self.db, pool => Ok(sqlx::query(
            "UPDATE resumable_uploads SET finished = $3, lock_token = NULL, lock_until = 0
              WHERE id = $1 AND lock_token = $2 AND finished IS NULL",
        )
        .bind(id)
        .bind(token)
        .bind(json(how))
        .execute(pool)
        .await
        .or_backend()?
        .rows_affected() == 1))
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        with_db!(&self.db, pool => sqlx::query("DELETE FROM resumable_uploads WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .or_backend()
            .map(drop))
    }

    async fn expired_uploads(&self, now: Millis, limit: u32) -> Result<Vec<UploadRecord>> {
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT * FROM resumable_uploads WHERE expires_at <= $1 ORDER BY expires_at, id LIMIT $2",
            )
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .or_backend()?;
            rows.iter().map(upload_from_row).collect()
        })
    }
}
