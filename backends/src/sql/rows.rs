//! Row → model mapping for both SQL dialects (SQLite and PostgreSQL).
//!
//! Both schemas use the same column names and store every number as a
//! 64-bit integer and every enum as its stable text, so one mapping serves
//! both.

use crate::DriverResult;
use picsift_core::format::Format;
use picsift_core::model::{BatchRecord, Counts, ImageRecord, NotifyState, Phase, ReportEntry};
use picsift_core::verdict::{DuplicateKind, Reason, Verdict, VerdictKind};
use picsift_core::{Error, Result};
use sqlx::{ColumnIndex, Decode, Row, Type};

/// Image columns in the order [`image_from_row`] expects them named.
pub(crate) const IMAGE_COLUMNS: &str = "id, format, width, height, size, orientation, owner, batch_id, entry_idx, entry_name, created_at, pdq, pdq_quality";

/// The column reads the mapping needs, for any sqlx row whose driver
/// decodes text and 64-bit integers by column name.
pub(crate) trait CatalogRow {
    /// A non-null text column.
    fn text(&self, col: &str) -> Result<String>;
    /// A nullable text column.
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    /// A non-null integer column.
    fn int(&self, col: &str) -> Result<i64>;
    /// A nullable integer column.
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
}

impl<R> CatalogRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, col: &str) -> Result<String> {
        self.try_get(col).or_backend()
    }

    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.try_get(col).or_backend()
    }

    fn int(&self, col: &str) -> Result<i64> {
        self.try_get(col).or_backend()
    }

    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        self.try_get(col).or_backend()
    }
}

/// A `batches` row.
pub(crate) fn batch_from_row(r: &impl CatalogRow) -> Result<BatchRecord> {
    let phase = r.text("phase")?;
    Ok(BatchRecord {
        id: r.text("id")?,
        phase: Phase::parse(&phase)
            .ok_or_else(|| Error::Corrupt(format!("batch phase {phase:?}")))?,
        owner: r.text("owner")?,
        staged_key: r.text("staged_key")?,
        upload_bytes: r.int("upload_bytes")? as u64,
        total_entries: r.int("total_entries")? as u64,
        error: r.opt_text("error")?,
        callback_url: r.opt_text("callback_url")?,
        notify_state: NotifyState::parse(&r.text("notify_state")?),
        notify_attempts: r.int("notify_attempts")? as u32,
        notify_last_error: r.opt_text("notify_last_error")?,
        notify_next_at: r.opt_int("notify_next_at")?,
        notify_delivered_at: r.opt_int("notify_delivered_at")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
        started_at: r.opt_int("started_at")?,
        completed_at: r.opt_int("completed_at")?,
    })
}

/// An `api_keys` row.
pub(crate) fn api_key_from_row(r: &impl CatalogRow) -> Result<picsift_core::auth::ApiKey> {
    let role = r.text("role")?;
    Ok(picsift_core::auth::ApiKey {
        id: r.text("id")?,
        tenant: r.text("tenant")?,
        role: picsift_core::auth::Role::parse(&role)
            .ok_or_else(|| Error::Corrupt(format!("key role {role:?}")))?,
        label: r.text("label")?,
        created_at: r.int("created_at")?,
        revoked_at: r.opt_int("revoked_at")?,
    })
}

/// An image row with the columns of [`IMAGE_COLUMNS`].
pub(crate) fn image_from_row(r: &impl CatalogRow) -> Result<ImageRecord> {
    let format = r.text("format")?;
    Ok(ImageRecord {
        id: r.text("id")?,
        format: Format::parse(&format)
            .ok_or_else(|| Error::Corrupt(format!("image format {format:?}")))?,
        width: r.int("width")? as u32,
        height: r.int("height")? as u32,
        size: r.int("size")? as u64,
        orientation: r.opt_int("orientation")?.map(|o| o as u16),
        owner: r.text("owner")?,
        batch_id: r.text("batch_id")?,
        entry_index: r.int("entry_idx")? as u32,
        entry_name: r.text("entry_name")?,
        pdq: r.opt_text("pdq")?,
        pdq_quality: r.opt_int("pdq_quality")?.map(|q| q.clamp(0, 100) as u8),
        created_ms: r.int("created_at")?,
    })
}

/// The verdict columns of an `entries` row; `None` while undecided.
fn verdict_from_row(r: &impl CatalogRow) -> Result<Option<Verdict>> {
    let Some(kind) = r.opt_text("verdict")? else {
        return Ok(None);
    };
    let kind =
        VerdictKind::parse(&kind).ok_or_else(|| Error::Corrupt(format!("verdict {kind:?}")))?;
    Ok(Some(Verdict {
        kind,
        reason: r.opt_text("reason")?.and_then(|c| Reason::parse(&c)),
        detail: r.opt_text("detail")?,
        image_id: r.opt_text("image_id")?,
        duplicate_of: r.opt_text("duplicate_of")?,
        duplicate_kind: r.opt_text("duplicate_kind")?.map(|k| match k.as_str() {
            "near" => DuplicateKind::Near,
            _ => DuplicateKind::Exact,
        }),
        distance: r.opt_int("distance")?.map(|d| d.clamp(0, 256) as u32),
        checks: match r.opt_text("checks")? {
            Some(json) => Some(
                serde_json::from_str(&json)
                    .map_err(|e| Error::Corrupt(format!("entry checks: {e}")))?,
            ),
            None => None,
        },
    }))
}

/// The `checks` column of a verdict: its measurements as JSON.
pub(crate) fn checks_json(v: &Verdict) -> Option<String> {
    v.checks
        .as_ref()
        .map(|c| serde_json::to_string(c).expect("checks serialise"))
}

/// The text stored for a duplicate kind.
pub(crate) fn duplicate_kind_code(kind: DuplicateKind) -> &'static str {
    match kind {
        DuplicateKind::Exact => "exact",
        DuplicateKind::Near => "near",
    }
}

/// A report line from an `entries` row.
pub(crate) fn report_entry_from_row(r: &impl CatalogRow) -> Result<ReportEntry> {
    Ok(ReportEntry::new(
        r.int("idx")? as u32,
        r.text("name")?,
        verdict_from_row(r)?,
    ))
}

/// An undecided entry's index and compressed size.
pub(crate) fn pending_from_row(r: &impl CatalogRow) -> Result<(u32, u64)> {
    Ok((r.int("idx")? as u32, r.int("compressed_size")? as u64))
}

/// An entry index.
pub(crate) fn index_from_row(r: &impl CatalogRow) -> Result<u32> {
    Ok(r.int("idx")? as u32)
}

/// Counts from rows of `verdict, COUNT(*) AS n ... GROUP BY verdict`.
pub(crate) fn counts_from_rows<R: CatalogRow>(rows: &[R]) -> Result<Counts> {
    let mut c = Counts::default();
    for r in rows {
        let n = r.int("n")? as u64;
        match r
            .opt_text("verdict")?
            .as_deref()
            .and_then(VerdictKind::parse)
        {
            Some(VerdictKind::Accepted) => c.accepted = n,
            Some(VerdictKind::Duplicate) => c.duplicate = n,
            Some(VerdictKind::Rejected) => c.rejected = n,
            Some(VerdictKind::Failed) => c.failed = n,
            None => c.pending += n,
        }
    }
    Ok(c)
}

/// An image's PDQ hash, when it is good enough to match.
pub(crate) fn matchable_hash(i: &ImageRecord) -> Option<picsift_core::pdq::Hash> {
    let quality_ok = i
        .pdq_quality
        .is_some_and(|q| q >= picsift_core::pdq::MIN_MATCH_QUALITY);
    quality_ok.then(|| i.pdq.as_deref()?.parse().ok()).flatten()
}

/// What an index search found (`(id, distance)`, nearest first), keeping
/// only the images in `own` when given, at most `limit`.
pub(crate) fn owned_only(
    found: Vec<(String, u32)>,
    own: Option<Vec<String>>,
    limit: u32,
) -> Vec<picsift_core::backend::Similar> {
    let own: Option<std::collections::HashSet<String>> = own.map(|o| o.into_iter().collect());
    found
        .into_iter()
        .filter(|(id, _)| own.as_ref().is_none_or(|o| o.contains(id)))
        .take(limit as usize)
        .map(|(image_id, distance)| picsift_core::backend::Similar { image_id, distance })
        .collect()
}

/// A bind value of a built query.
pub(crate) enum Arg {
    Int(i64),
    Float(f64),
    Text(String),
}

/// The SQL of an image search (either dialect), with its bind values in
/// order.
pub(crate) fn image_search_sql(
    f: &picsift_core::model::ImageFilter,
    sort: picsift_core::model::ImageSort,
    after: Option<&picsift_core::model::ImageCursor>,
    limit: u32,
) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    let ph = |a: Arg, args: &mut Vec<Arg>| {
        args.push(a);
        format!("${}", args.len())
    };
    if let Some(o) = &f.owner {
        conds.push(format!(
            "EXISTS (SELECT 1 FROM image_owners o WHERE o.image_id = images.id AND o.owner = {})",
            ph(Arg::Text(o.clone()), &mut args)
        ));
    }
    if let Some(b) = &f.batch {
        conds.push(format!(
            "batch_id = {}",
            ph(Arg::Text(b.clone()), &mut args)
        ));
    }
    if let Some(fmt) = f.format {
        conds.push(format!(
            "format = {}",
            ph(Arg::Text(fmt.as_str().into()), &mut args)
        ));
    }
    let ints: [(&str, &str, Option<i64>); 6] = [
        ("created_at", ">=", f.created_from),
        ("created_at", "<", f.created_to),
        ("width", ">=", f.min_width.map(i64::from)),
        ("width", "<=", f.max_width.map(i64::from)),
        ("height", ">=", f.min_height.map(i64::from)),
        ("height", "<=", f.max_height.map(i64::from)),
    ];
    for (col, op, v) in ints {
        if let Some(v) = v {
            conds.push(format!("{col} {op} {}", ph(Arg::Int(v), &mut args)));
        }
    }
    if let Some(s) = &f.min_score {
        let (m, l, v) = (
            ph(Arg::Text(s.model.clone()), &mut args),
            ph(Arg::Text(s.label.clone()), &mut args),
            ph(Arg::Float(s.above), &mut args),
        );
        conds.push(format!(
            "EXISTS (SELECT 1 FROM image_scores s WHERE s.image_id = images.id AND s.model = {m} AND s.label = {l} AND s.score > {v})"
        ));
    }
    let (col, cmp, dir) = if sort.descending() {
        (sort.column(), "<", "DESC")
    } else {
        (sort.column(), ">", "ASC")
    };
    if let Some(c) = after {
        let k = ph(Arg::Int(c.key), &mut args);
        let i = ph(Arg::Text(c.id.clone()), &mut args);
        conds.push(format!("({col}, id) {cmp} ({k}, {i})"));
    }
    let lim = ph(Arg::Int(i64::from(limit)), &mut args);
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (
        format!(
            "SELECT {IMAGE_COLUMNS} FROM images {filter} ORDER BY {col} {dir}, id {dir} LIMIT {lim}"
        ),
        args,
    )
}

/// Joins a page of images (`id, batch_id, entry_idx`, in id order) with
/// their owners (`image_id, owner`, in the same order).
pub(crate) fn stored_claims(
    images: Vec<(String, String, i64)>,
    owners: Vec<(String, String)>,
) -> Vec<picsift_core::model::StoredClaims> {
    let mut owners = owners.into_iter().peekable();
    images
        .into_iter()
        .map(|(image_id, batch, entry)| {
            // Owner rows of ids not in the page (none, normally) are skipped.
            while owners.next_if(|(id, _)| *id < image_id).is_some() {}
            let mut tenants = Vec::new();
            while let Some((_, owner)) = owners.next_if(|(id, _)| *id == image_id) {
                tenants.push(owner);
            }
            picsift_core::model::StoredClaims {
                owner: format!("{batch}:{entry}"),
                image_id,
                tenants,
            }
        })
        .collect()
}
