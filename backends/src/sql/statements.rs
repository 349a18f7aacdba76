//! The statements the shared catalog ([`super::catalog`]) and a dialect
//! module ([`super::sqlite`], [`super::postgres`]) both run: the dialects
//! call them inside their own transactions or locks. Kept apart so the
//! catalog calls the dialects and the dialects call this, never the
//! catalog (no import cycle between the three).

/// Moves a processing batch with no undecided entry to completed (binds:
/// now, id); one row changed says this call did. PostgreSQL runs it under
/// the batch row's lock ([`super::postgres::try_complete`]).
pub(crate) const COMPLETE: &str =
    "UPDATE batches SET phase = 'completed', completed_at = $1, updated_at = $1,
        notify_next_at = CASE WHEN notify_state = 'pending' THEN $1 ELSE notify_next_at END
 WHERE id = $2 AND phase = 'processing'
   AND NOT EXISTS (SELECT 1 FROM entries WHERE batch_id = $2 AND verdict IS NULL)";

/// Moves a batch whose entries were just recorded to processing (binds:
/// the entry count, now, id).
pub(crate) const RECORD_ENTRIES_PHASE: &str = "UPDATE batches SET phase = 'processing', total_entries = $1, started_at = COALESCE(started_at, $2), updated_at = $2
 WHERE id = $3 AND phase IN ('received', 'processing')";

/// Records an image and its owner on `$conn` (a transaction of either
/// dialect); evaluates to whether the image was new.
macro_rules! insert_image_rows {
    ($conn:expr, $i:expr) => {{
        let i: &picsift_core::model::ImageRecord = $i;
        let new = sqlx::query(
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
        .execute(&mut *$conn)
        .await
        .or_backend()?
        .rows_affected()
            == 1;
        sqlx::query("INSERT INTO image_owners (image_id, owner) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&i.id)
            .bind(&i.owner)
            .execute(&mut *$conn)
            .await
            .or_backend()?;
        new
    }};
}
pub(crate) use insert_image_rows;

/// Records an entry's verdict unless it already has one, on `$conn` (a
/// pool or a transaction of either dialect); evaluates to whether it wrote.
/// The first verdict wins: in PostgreSQL a concurrent writer of the same
/// entry blocks on its row lock and then re-checks `verdict IS NULL` on the
/// committed row; SQLite has one writer at a time.
/// With a `replacing` image id, it instead replaces an `accepted` verdict
/// for that image ([`picsift_core::backend::Catalog::correct_verdict`]).
macro_rules! record_verdict {
    ($conn:expr, $id:expr, $index:expr, $v:expr, $now:expr) => {
        $crate::sql::statements::record_verdict!(@run $conn, $id, $index, $v, $now,
            "verdict IS NULL AND CAST($12 AS TEXT) IS NULL", None::<&str>)
    };
    ($conn:expr, $id:expr, $index:expr, $v:expr, $now:expr, replacing $image:expr) => {
        $crate::sql::statements::record_verdict!(@run $conn, $id, $index, $v, $now,
            "verdict = 'accepted' AND image_id = $12", Some($image))
    };
    (@run $conn:expr, $id:expr, $index:expr, $v:expr, $now:expr, $condition:literal, $image:expr) => {{
        let v: &picsift_core::verdict::Verdict = $v;
        let index: u32 = $index;
        let now: picsift_core::time::Millis = $now;
        sqlx::query(concat!(
            "UPDATE entries SET verdict = $1, reason = $2, detail = $3, image_id = $4, duplicate_of = $5, duplicate_kind = $6, decided_at = $7, distance = $10, checks = $11
             WHERE batch_id = $8 AND idx = $9 AND ",
            $condition
        ))
        .bind(v.kind.as_str())
        .bind(v.reason.map(picsift_core::verdict::Reason::code))
        .bind(&v.detail)
        .bind(&v.image_id)
        .bind(&v.duplicate_of)
        .bind(v.duplicate_kind.map(super::rows::duplicate_kind_code))
        .bind(now)
        .bind($id)
        .bind(i64::from(index))
        .bind(v.distance.map(i64::from))
        .bind(super::rows::checks_json(v))
        .bind($image)
        .execute($conn)
        .await
        .or_backend()?
        .rows_affected()
            == 1
    }};
}
pub(crate) use record_verdict;
