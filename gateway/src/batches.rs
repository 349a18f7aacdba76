//! Batch status and reports.

use crate::{AppState, Problem};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use picsift_core::auth::Caller;
use picsift_core::model::{BatchView, ReportEntry};
use serde::Deserialize;

/// `GET /v1/batches/{id}`.
pub async fn status(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<BatchView>, Problem> {
    let batch = s.visible_batch(&caller, &id).await?;
    let counts = s.catalog.counts(&id).await?;
    Ok(Json(BatchView::new(&batch, counts)))
}

/// Report paging.
#[derive(Deserialize)]
pub struct ReportQuery {
    /// The `next` cursor of the previous page.
    after: Option<String>,
    /// Entries per page (default 1000, at most 10000).
    limit: Option<u32>,
}

const PAGE: u32 = 1000;

/// `GET /v1/batches/{id}/report`: JSON pages, or the whole report as NDJSON.
pub async fn report(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    s.visible_batch(&caller, &id).await?;
    // Another tenant's image ids are shown to admins only.
    let viewer = caller.scope().map(str::to_string);
    let after = crate::problem::parse_cursor(q.after.as_deref())?;
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    if ndjson {
        let lines = picsift_core::store::report_ndjson(s.catalog.clone(), id, after, viewer);
        let mut resp = Body::from_stream(lines).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        return Ok(resp);
    }
    let limit = q.limit.unwrap_or(PAGE).clamp(1, 10_000);
    let mut entries: Vec<ReportEntry> = s.catalog.report(&id, after, limit).await?;
    if let Some(tenant) = &viewer {
        picsift_core::store::hide_foreign_images(s.catalog.as_ref(), tenant, &mut entries).await?;
    }
    let next = (entries.len() as u32 == limit)
        .then(|| entries.last().map(|e| e.index.to_string()))
        .flatten();
    Ok(Json(serde_json::json!({ "entries": entries, "next": next })).into_response())
}

/// `GET /readyz`: each dependency answers. 503 names the ones that do not.
pub async fn ready(State(s): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ok = true;
    let mut record = |name: &str, r: picsift_core::Result<()>| {
        let v = match r {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                ok = false;
                format!("unavailable: {e}")
            }
        };
        checks.insert(name.into(), v.into());
    };
    record(
        "catalog",
        s.catalog.batch("readiness-probe").await.map(drop),
    );
    record(
        "blobs",
        s.blobs.size("health/readiness-probe").await.map(drop),
    );
    if let Some(q) = &s.queue {
        record("queue", q.backlog().await.map(drop));
    }
    let status = if ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::Map::new();
    body.insert(
        "status".into(),
        (if ok { "ready" } else { "unavailable" }).into(),
    );
    body.insert("checks".into(), checks.into());
    let mut resp = (status, Json(serde_json::Value::Object(body))).into_response();
    if !ok {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}
