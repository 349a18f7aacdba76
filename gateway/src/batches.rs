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
        let lines = picsift_core::backend::report_ndjson(s.catalog.clone(), id, after, viewer);
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
        picsift_core::backend::hide_foreign_images(s.catalog.as_ref(), tenant, &mut entries)
            .await?;
    }
    let next = (entries.len() as u32 == limit)
        .then(|| entries.last().map(|e| e.index.to_string()))
        .flatten();
    Ok(Json(serde_json::json!({ "entries": entries, "next": next })).into_response())
}

/// `GET /readyz`: each dependency answers; the object store also takes a
/// write. 503 names the ones that do not, with an error id for the log
/// line that has the error (this endpoint is public: no error text).
pub async fn ready(State(s): State<AppState>) -> Response {
    // Each check within a probe's patience: a dependency that hangs (or a
    // pool still trying to connect) is unavailable, not a hung probe.
    async fn within<T>(
        check: impl std::future::Future<Output = picsift_core::Result<T>>,
    ) -> picsift_core::Result<()> {
        match tokio::time::timeout(READY_CHECK_TIMEOUT, check).await {
            Ok(r) => r.map(drop),
            Err(_) => Err(picsift_core::Error::Backend(format!(
                "no answer within {READY_CHECK_TIMEOUT:?}"
            ))),
        }
    }
    let queue = async {
        match &s.queue {
            Some(q) => Some(within(q.backlog()).await),
            None => None,
        }
    };
    let (catalog, blobs, queue) = tokio::join!(
        within(s.catalog.batch("readiness-probe")),
        within(s.blobs.probe()),
        queue
    );
    let mut checks = serde_json::Map::new();
    let mut ok = true;
    let mut record = |name: &str, r: picsift_core::Result<()>| {
        let v = match r {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                ok = false;
                let id = uuid::Uuid::now_v7();
                tracing::warn!(error_id = %id, dependency = name, error = %e, "not ready");
                format!("unavailable (error id {id} in the server's log)")
            }
        };
        checks.insert(name.into(), v.into());
    };
    record("catalog", catalog);
    record("blobs", blobs);
    if let Some(q) = queue {
        record("queue", q);
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

/// How long `/readyz` waits for each dependency.
const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// How often the event stream reads the catalog.
const EVENTS_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Longest life of one event stream: a client reconnects after it (and a
/// stopping server is not held up by streams of slow batches for long).
const EVENTS_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

/// `GET /v1/batches/{id}/events`: server-sent events, one `status` event
/// (the [`BatchView`] as JSON) at once and on every change, read from the
/// catalog every 500 ms; the stream ends after the event of a final phase,
/// or after five minutes (the client reconnects).
pub async fn events(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    s.visible_batch(&caller, &id).await?;
    let until = tokio::time::Instant::now() + EVENTS_LIFETIME;
    // State: the last view sent, and whether the stream is over.
    let stream = futures_util::stream::unfold((None::<String>, false), move |(last, done)| {
        let s = s.clone();
        let id = id.clone();
        async move {
            if done {
                return None;
            }
            let mut first = last.is_none();
            loop {
                if !first {
                    if tokio::time::Instant::now() >= until {
                        return None;
                    }
                    tokio::time::sleep(EVENTS_POLL).await;
                }
                first = false;
                let view = match (s.catalog.batch(&id).await, s.catalog.counts(&id).await) {
                    (Ok(Some(b)), Ok(counts)) => BatchView::new(&b, counts),
                    (Ok(None), _) => return None,
                    // A backend hiccup: try again at the next tick.
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(batch = %id, error = %e, "batch events: catalog read failed");
                        continue;
                    }
                };
                let json = serde_json::to_string(&view).unwrap_or_default();
                if last.as_deref() == Some(json.as_str()) {
                    continue;
                }
                let event = Event::default().event("status").data(&json);
                let final_ = view.phase.is_final();
                return Some((
                    Ok::<_, std::convert::Infallible>(event),
                    (Some(json), final_),
                ));
            }
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /v1/batches` options.
#[derive(Deserialize)]
pub struct ListQuery {
    /// A tenant's batches (admins; a tenant lists its own).
    owner: Option<String>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
    /// Batches per page (default 50, at most 500).
    limit: Option<u32>,
}

/// `GET /v1/batches`: batches, newest first; a tenant's own, or any
/// tenant's for an admin.
pub async fn list(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    let owner = match (caller.scope(), q.owner) {
        (Some(own), Some(asked)) if asked != own => {
            return Err(Problem::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "only admins may list another tenant's batches",
            ));
        }
        (Some(own), _) => Some(own.to_string()),
        (None, asked) => asked.filter(|o| !o.is_empty()),
    };
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(c) => {
            let parsed = c
                .split_once('.')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())));
            Some(parsed.ok_or_else(|| {
                Problem::bad_request(format!("after={c:?} is not a cursor this API gave out"))
            })?)
        }
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let batches = s
        .catalog
        .list_batches(owner.as_deref(), after, limit)
        .await?;
    let next = (batches.len() as u32 == limit)
        .then(|| batches.last().map(|b| format!("{}.{}", b.created_at, b.id)))
        .flatten();
    let mut views = Vec::with_capacity(batches.len());
    for b in &batches {
        views.push(BatchView::new(b, s.catalog.counts(&b.id).await?));
    }
    Ok(Json(serde_json::json!({ "batches": views, "next": next })))
}
