//! HTTP errors as `application/problem+json` (RFC 9457) with stable types.
//!
//! A backend's own error text (an SDK's `Debug` output with response
//! headers, a driver's message with SQL) never reaches a client: a failure
//! gets a fixed sentence and an `error_id`, and the log line with the full
//! error carries the same id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API error.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable slug: the `type` is `https://picsift.io/problems/{slug}`.
    pub slug: &'static str,
    /// Short summary, the same for every occurrence of this type.
    pub title: &'static str,
    /// What happened this time and what to do.
    pub detail: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// Names the log line with the full error (a failure's problems only).
    pub error_id: Option<String>,
}

impl Problem {
    /// A problem without Retry-After.
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            retry_after: None,
            error_id: None,
        }
    }

    /// A backend failed: 503 with Retry-After. `what` (which may hold a
    /// driver's or an SDK's error text) goes to the log only, under the
    /// `error_id` the client gets.
    pub fn unavailable(what: impl std::fmt::Display) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        tracing::error!(error_id = id, error = %what, "backend unavailable");
        Self {
            retry_after: Some(5),
            error_id: Some(id.clone()),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                format!(
                    "a backend is unavailable; retry later (error id {id} in the server's log)"
                ),
            )
        }
    }

    /// Too busy right now: 503 with Retry-After and a detail of our own
    /// wording (safe to show).
    pub fn busy(detail: &'static str) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                detail,
            )
        }
    }

    /// An unknown resource.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("{what} not found"),
        )
    }

    /// A bad query or path parameter.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }
}

/// Parses a pagination cursor this API gave out (an entry index).
pub fn parse_cursor(cursor: Option<&str>) -> Result<Option<u32>, Problem> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => c.parse::<u32>().map(Some).map_err(|_| {
            Problem::bad_request(format!("cursor {c:?} is not one this API gave out"))
        }),
    }
}

impl From<picsift_core::Error> for Problem {
    fn from(e: picsift_core::Error) -> Self {
        Self::unavailable(e)
    }
}

impl Problem {
    /// The RFC 9457 document.
    pub fn document(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "type": format!("https://picsift.io/problems/{}", self.slug),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(id) = &self.error_id {
            body["error_id"] = id.as_str().into();
        }
        body
    }

    /// A problem answered before and kept (its status and [`Self::document`]),
    /// answered again.
    pub fn replay(status: StatusCode, document: String) -> Response {
        let mut resp = (status, document).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut resp = Problem::replay(self.status, self.document().to_string());
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
