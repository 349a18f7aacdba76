//! Who may call: every route but health, readiness, metrics and the web
//! frontend's page and assets needs
//! `Authorization: Bearer KEY`. The key's tenant goes into the request as a
//! [`Caller`]; then the tenant's request rate is checked (admins are not
//! limited). Batch quotas are checked by the upload itself.

use crate::{AppState, Problem};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use picsift_core::auth::{self, Caller, Role};
use picsift_core::backend::{QuotaCheck, Reservation};
use picsift_core::rate::Rate;
use picsift_core::time::{Millis, now_ms};

/// Routes anyone may call.
const PUBLIC: [&str; 4] = ["/healthz", "/livez", "/readyz", "/metrics"];

/// Per-tenant limits (admins are exempt).
#[derive(Clone, Debug, PartialEq)]
pub struct TenantLimits {
    /// Requests a second, on average, per tenant; `None`: unlimited.
    pub requests: Option<Rate>,
    /// Batches a tenant may have received or processing at once.
    pub max_open_batches: Option<u64>,
    /// Bytes a tenant may upload per calendar month (UTC).
    pub max_bytes_per_month: Option<u64>,
    /// How long an unfinished resumable upload is kept.
    pub upload_ttl_ms: Millis,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            requests: Some(Rate {
                per_second: 20.0,
                burst: 100.0,
            }),
            max_open_batches: Some(16),
            max_bytes_per_month: None,
            upload_ttl_ms: picsift_core::resumable::UPLOAD_TTL_MS,
        }
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut resp = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"picsift\""),
    );
    resp
}

/// Too many requests, come back in `wait_ms`.
pub fn too_many(
    slug: &'static str,
    title: &'static str,
    detail: String,
    wait_ms: Millis,
) -> Problem {
    Problem {
        retry_after: Some(((wait_ms.max(1) + 999) / 1000) as u64),
        ..Problem::new(StatusCode::TOO_MANY_REQUESTS, slug, title, detail)
    }
}

/// The middleware: checks the key, then the tenant's rate.
pub async fn require_key(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    if PUBLIC.contains(&req.uri().path()) || crate::ui::is_ui_path(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(key) = presented else {
        return unauthorized("send an API key as `Authorization: Bearer KEY`");
    };
    if !auth::looks_like_key(key) {
        return unauthorized("the API key is malformed");
    }
    let record = match s.catalog.api_key_by_hash(&auth::hash(key)).await {
        Ok(Some(k)) => k,
        Ok(None) => return unauthorized("the API key is unknown or revoked"),
        Err(e) => return Problem::unavailable(format!("the key store: {e}")).into_response(),
    };
    let caller = Caller {
        tenant: record.tenant,
        admin: record.role == Role::Admin,
        key_id: record.id,
    };
    if let (false, Some(rate)) = (caller.admin, s.limits.requests) {
        match s.rate.take(&caller.tenant, rate, now_ms()).await {
            Ok(None) => {}
            Ok(Some(wait)) => {
                return too_many(
                    "rate-limited",
                    "Too many requests",
                    format!(
                        "tenant {} is over its rate of {} requests a second (bursts of {})",
                        caller.tenant, rate.per_second, rate.burst
                    ),
                    wait,
                )
                .into_response();
            }
            Err(e) => {
                return Problem::unavailable(format!("the rate limiter: {e}")).into_response();
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// How long a quota reservation holds if its gateway dies before dropping it.
pub const RESERVATION_TTL_MS: Millis = 6 * 3_600_000;

/// The quota check for `caller` at `now`.
fn quota_check(s: &AppState, now: Millis) -> QuotaCheck {
    QuotaCheck {
        now,
        month_start: month_bounds(now).0,
        max_open_batches: s.limits.max_open_batches,
        max_bytes_per_month: s.limits.max_bytes_per_month,
    }
}

/// Reserves an upload's place in the tenant's quotas: its open-batch slot
/// and its declared bytes (`bytes`; unknown: 0 now, the real size at
/// [`settle_quota`]). `Ok(true)`: reserved, drop it with
/// `catalog.release_upload(id)`; `Ok(false)`: nothing to reserve (an
/// admin, or no limits); a 429 when the quotas do not allow it.
pub async fn reserve_quota(
    s: &AppState,
    caller: &Caller,
    id: &str,
    bytes: Option<u64>,
    ttl_ms: Millis,
) -> Result<bool, Problem> {
    if caller.admin
        || (s.limits.max_open_batches.is_none() && s.limits.max_bytes_per_month.is_none())
    {
        return Ok(false);
    }
    let now = now_ms();
    let r = Reservation {
        id: id.into(),
        owner: caller.tenant.clone(),
        bytes: bytes.unwrap_or(0),
        expires_at: now + ttl_ms,
    };
    if s.catalog.reserve_upload(&r, &quota_check(s, now)).await? {
        return Ok(true);
    }
    Err(refusal(s, caller, bytes, now).await?)
}

/// After staging: the upload's real `size` must fit the monthly quota too
/// (a body without a length reserved none).
pub async fn settle_quota(
    s: &AppState,
    caller: &Caller,
    id: &str,
    size: u64,
) -> Result<(), Problem> {
    let now = now_ms();
    let r = Reservation {
        id: id.into(),
        owner: caller.tenant.clone(),
        bytes: size,
        expires_at: now + RESERVATION_TTL_MS,
    };
    if s.catalog.settle_upload(&r, &quota_check(s, now)).await? {
        return Ok(());
    }
    Err(refusal(s, caller, Some(size), now).await?)
}

/// Why the quotas refuse an upload of `bytes` (when known), as a 429.
async fn refusal(
    s: &AppState,
    caller: &Caller,
    bytes: Option<u64>,
    now: Millis,
) -> Result<Problem, Problem> {
    let (start, next) = month_bounds(now);
    if let Some(max) = s.limits.max_open_batches {
        let open = s.catalog.open_batches(&caller.tenant).await?;
        let used = s
            .catalog
            .uploaded_bytes_since(&caller.tenant, start)
            .await?;
        let over_bytes = s
            .limits
            .max_bytes_per_month
            .is_some_and(|q| used.saturating_add(bytes.unwrap_or(0)) > q || used >= q);
        if !over_bytes {
            return Ok(too_many(
                "too-many-batches",
                "Too many batches in progress",
                format!(
                    "tenant {} has {open} batches in progress and uploads under way, the most it may have is {max}; upload again when one finishes",
                    caller.tenant
                ),
                30_000,
            ));
        }
    }
    let max = s.limits.max_bytes_per_month.unwrap_or(0);
    let used = s
        .catalog
        .uploaded_bytes_since(&caller.tenant, start)
        .await?;
    Ok(too_many(
        "quota-exceeded",
        "Monthly upload quota exceeded",
        format!(
            "tenant {} has uploaded {used} bytes this month (uploads under way count too){}; its quota is {max}",
            caller.tenant,
            bytes
                .map(|b| format!(" and this upload has {b}"))
                .unwrap_or_default()
        ),
        next - now,
    ))
}

/// The first instants (ms, UTC) of the month of `now` and of the next.
fn month_bounds(now: Millis) -> (Millis, Millis) {
    let text = picsift_core::time::rfc3339(now);
    let (year, month): (i32, u32) = (
        text[..4].parse().unwrap_or(1970),
        text[5..7].parse().unwrap_or(1),
    );
    let at = |y: i32, m: u32| {
        picsift_core::time::parse_rfc3339(&format!("{y:04}-{m:02}-01T00:00:00Z")).unwrap_or(now)
    };
    let next = if month == 12 {
        at(year + 1, 1)
    } else {
        at(year, month + 1)
    };
    (at(year, month), next)
}

#[cfg(test)]
mod tests {
    #[test]
    fn month_bounds_are_calendar_months() {
        let t = picsift_core::time::parse_rfc3339("2026-12-31T23:59:59Z").unwrap();
        let (start, next) = super::month_bounds(t);
        assert_eq!(
            picsift_core::time::rfc3339(start),
            "2026-12-01T00:00:00.000Z"
        );
        assert_eq!(
            picsift_core::time::rfc3339(next),
            "2027-01-01T00:00:00.000Z"
        );
    }
}
