//! Image downloads and listings.

use crate::{AppState, Problem};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use picsift_core::auth::Caller;
use picsift_core::format::Format;
use picsift_core::model::{
    ImageCursor, ImageFilter, ImageRecord, ImageSort, image_key, is_image_id,
};
use picsift_core::time::parse_rfc3339;
use serde::Deserialize;
use std::ops::Range;

/// Parses a single-range `Range` header against a length. `Ok(None)`: no
/// usable range (serve the whole object); `Err(())`: unsatisfiable.
pub fn parse_range(header: &str, len: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // Multiple ranges: the whole object is a valid answer.
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let range = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            len.saturating_sub(n)..len
        }
        (start, "") => start.parse::<u64>().map_err(|_| ())?..len,
        (start, end) => {
            let (s, e): (u64, u64) = (start.parse().map_err(|_| ())?, end.parse().map_err(|_| ())?);
            if e < s {
                return Err(());
            }
            s..e.saturating_add(1).min(len)
        }
    };
    if range.start >= len {
        Err(())
    } else {
        Ok(Some(range))
    }
}

/// `GET` and `HEAD /v1/images/{id}`: the stored bytes, with ranges.
pub async fn download(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let image = stored_image(&s, &caller, &id).await?;
    let key = image_key(&id);
    let len = s.blobs.size(&key).await?.ok_or_else(|| {
        Problem::unavailable(format!(
            "image {id} is in the catalog but its bytes are missing"
        ))
    })?;
    let etag = format!("\"{id}\"");
    let mut h = HeaderMap::new();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(|_| Problem::not_found("image"))?,
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(image.format.mime()),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    // Stored images never change: when they were stored is when they last did.
    let stored = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(image.created_ms / 1000).unwrap_or(0));
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(stored)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let not_modified = match inm {
        Some(v) => v.split(',').any(|t| t.trim() == etag || t.trim() == "*"),
        // If-Modified-Since counts only without If-None-Match (RFC 9110 13.1.3).
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| stored <= since),
    };
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(r) => match parse_range(r, len) {
            Ok(r) => r,
            Err(()) => {
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}"))
                        .unwrap_or(HeaderValue::from_static("bytes */0")),
                );
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, h).into_response());
            }
        },
    };
    let status = match &range {
        Some(r) => {
            let cr = format!("bytes {}-{}/{len}", r.start, r.end - 1);
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&cr).unwrap_or(HeaderValue::from_static("bytes */0")),
            );
            StatusCode::PARTIAL_CONTENT
        }
        None => StatusCode::OK,
    };
    if let Some(url) = s.blobs.presigned_get(&key).await? {
        // The presigned URL expires: the redirect must not be cached as
        // the image is.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.remove(header::CONTENT_RANGE);
        h.remove(header::LAST_MODIFIED);
        h.insert(
            header::LOCATION,
            HeaderValue::from_str(&url)
                .map_err(|_| Problem::unavailable("presigned URL is not a valid header"))?,
        );
        return Ok((StatusCode::TEMPORARY_REDIRECT, h).into_response());
    }
    let n = range.as_ref().map_or(len, |r| r.end - r.start);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    let body = s.blobs.get_stream(&key, range).await?;
    Ok((status, h, Body::from_stream(body)).into_response())
}

/// Listing filters.
#[derive(Deserialize, Default)]
pub struct ListQuery {
    /// Images stored by this tenant (admins; a tenant sees its own only).
    owner: Option<String>,
    /// Images stored by this batch.
    batch: Option<String>,
    /// Of this format (`jpeg`, `png`, `webp`).
    format: Option<String>,
    /// Stored at or after this time (RFC 3339).
    from: Option<String>,
    /// Stored before this time (RFC 3339).
    to: Option<String>,
    /// Width at least.
    min_width: Option<u32>,
    /// Width at most.
    max_width: Option<u32>,
    /// Height at least.
    min_height: Option<u32>,
    /// Height at most.
    max_height: Option<u32>,
    /// `MODEL:LABEL:VALUE`: the model scored the label above the value.
    score: Option<String>,
    /// `-created` (default), `created`, `-size` or `size`.
    sort: Option<String>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
    /// Images per page (default 100, at most 1000).
    limit: Option<u32>,
}

impl ListQuery {
    /// Only `batch` (and paging): a batch's images in entry order.
    fn is_batch_listing(&self) -> bool {
        self.batch.is_some()
            && self.format.is_none()
            && self.from.is_none()
            && self.to.is_none()
            && self.min_width.is_none()
            && self.max_width.is_none()
            && self.min_height.is_none()
            && self.max_height.is_none()
            && self.score.is_none()
            && self.sort.is_none()
    }

    fn filter(&self) -> Result<ImageFilter, Problem> {
        let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, Problem> {
            v.as_deref()
                .map(|t| {
                    parse_rfc3339(t).ok_or_else(|| {
                        Problem::bad_request(format!(
                            "{name}={t:?} is not an RFC 3339 time (2026-11-26T10:00:00Z)"
                        ))
                    })
                })
                .transpose()
        };
        let format = self
            .format
            .as_deref()
            .map(|f| {
                Format::parse(f).ok_or_else(|| {
                    Problem::bad_request(format!("format={f:?}: use jpeg, png or webp"))
                })
            })
            .transpose()?;
        let min_score = self
            .score
            .as_deref()
            .map(|s| s.parse().map_err(Problem::bad_request))
            .transpose()?;
        Ok(ImageFilter {
            owner: self.owner.clone(),
            min_score,
            batch: self.batch.clone(),
            format,
            created_from: time("from", &self.from)?,
            created_to: time("to", &self.to)?,
            min_width: self.min_width,
            max_width: self.max_width,
            min_height: self.min_height,
            max_height: self.max_height,
        })
    }
}

/// `GET /v1/images`: stored images by filters, sorted, with cursor
/// pagination. With only `batch`, a batch's images in entry order.
pub async fn list(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    if !q.is_batch_listing() {
        return search(&s, &caller, &q).await;
    }
    let Some(batch) = q.batch else {
        return Err(Problem::bad_request(
            "the batch query parameter is required",
        ));
    };
    s.visible_batch(&caller, &batch).await?;
    let after = crate::problem::parse_cursor(q.after.as_deref())?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let images = s.catalog.batch_images(&batch, after, limit).await?;
    let next = (images.len() as u32 == limit)
        .then(|| images.last().map(|i| i.entry_index.to_string()))
        .flatten();
    // These are the batch's own entries: shown as this batch's.
    let items: Vec<_> = images.iter().map(|i| image_json(i, None)).collect();
    Ok(Json(serde_json::json!({ "images": items, "next": next })))
}

async fn search(
    s: &AppState,
    caller: &Caller,
    q: &ListQuery,
) -> Result<Json<serde_json::Value>, Problem> {
    let mut filter = q.filter()?;
    match (s.image_scope(caller), &filter.owner) {
        (Some(own), Some(asked)) if asked != own => {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "only admins may search another tenant's images",
            ));
        }
        (Some(own), _) => filter.owner = Some(own.to_string()),
        (None, _) => {}
    }
    let sort = match q.sort.as_deref() {
        None => ImageSort::default(),
        Some(v) => ImageSort::parse(v).ok_or_else(|| {
            Problem::bad_request(format!("sort={v:?}: use -created, created, -size or size"))
        })?,
    };
    let after = q
        .after
        .as_deref()
        .map(|c| {
            ImageCursor::decode(c, sort).ok_or_else(|| {
                Problem::bad_request(format!(
                    "after={c:?} is not a cursor this API gave out for this sort order"
                ))
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let images = s
        .catalog
        .search_images(&filter, sort, after.as_ref(), limit)
        .await?;
    let next = (images.len() as u32 == limit)
        .then(|| {
            images
                .last()
                .map(|i| ImageCursor::after(sort, i).encode(sort))
        })
        .flatten();
    let items: Vec<_> = images.iter().map(|i| image_json(i, Some(caller))).collect();
    Ok(Json(serde_json::json!({ "images": items, "next": next })))
}

/// What the API shows of a stored image to `caller` (`None`: in a listing
/// of the batch it came in). Where it came from (batch, entry name, owner)
/// is shown to the tenant that first stored it and to admins only.
pub fn image_json(i: &ImageRecord, caller: Option<&Caller>) -> serde_json::Value {
    let origin = caller.is_none_or(|c| c.may_see(&i.owner));
    let mut v = serde_json::json!({
        "id": i.id, "format": i.format, "width": i.width, "height": i.height, "size": i.size,
        "orientation": i.orientation, "pdq": i.pdq, "pdq_quality": i.pdq_quality,
        "batch": null, "entry": null, "entry_index": null,
        "created_at": picsift_core::time::rfc3339(i.created_ms),
        "url": format!("/v1/images/{}", i.id),
    });
    if origin {
        v["batch"] = i.batch_id.clone().into();
        v["entry"] = i.entry_name.clone().into();
        v["entry_index"] = i.entry_index.into();
        v["owner"] = i.owner.clone().into();
    }
    v
}

/// `GET /v1/images/{id}/metadata`: the catalog's record of an image.
pub async fn metadata(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let image = stored_image(&s, &caller, &id).await?;
    Ok(Json(image_json(&image, Some(&caller))))
}

/// A stored image's record that `caller` may read, or 404.
pub async fn stored_image(s: &AppState, caller: &Caller, id: &str) -> Result<ImageRecord, Problem> {
    let image = match is_image_id(id) && s.may_read_image(caller, id).await? {
        true => s.catalog.image(id).await?,
        false => None,
    };
    image.ok_or_else(|| Problem::not_found(&format!("image {id}")))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        type Case<'a> = (&'a str, Result<Option<std::ops::Range<u64>>, ()>);
        let cases: &[Case] = &[
            ("bytes=0-9", Ok(Some(0..10))),
            ("bytes=5-", Ok(Some(5..100))),
            ("bytes=-10", Ok(Some(90..100))),
            ("bytes=-1000", Ok(Some(0..100))),
            ("bytes=90-200", Ok(Some(90..100))),
            ("bytes=100-", Err(())),
            ("bytes=9-3", Err(())),
            ("bytes=0-1,5-6", Ok(None)),
            ("items=0-1", Ok(None)),
            ("bytes=x-1", Err(())),
            ("bytes=0-18446744073709551615", Ok(Some(0..100))),
        ];
        for (h, want) in cases {
            assert_eq!(&parse_range(h, 100), want, "{h}");
        }
    }
}
