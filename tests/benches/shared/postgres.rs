//! Loading many images into a PostgreSQL catalog at once, for the
//! near-duplicate benches (inserting them one by one through the catalog
//! would take hours at millions). Included with `#[path]`.

use picsift_core::pdq::Hash;

/// Inserts `images` (id, hash) into a migrated PostgreSQL catalog's
/// `images` table, a thousand per statement.
pub async fn load_postgres(pool: &sqlx::PgPool, images: &[(String, Hash)]) -> sqlx::Result<()> {
    for chunk in images.chunks(1000) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|(image_id, hash)| serde_json::json!([image_id, hash.to_string()]))
            .collect();
        sqlx::query(
            "INSERT INTO images (id, format, width, height, size, orientation, batch_id, entry_idx, entry_name, created_at, pdq, pdq_quality)
             SELECT x->>0, 'jpeg', 1, 1, 1, NULL, 'bench', 0, 'x.jpg', 0, x->>1, 90
             FROM jsonb_array_elements($1::jsonb) AS x",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(pool)
        .await?;
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}
