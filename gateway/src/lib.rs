//! The picsift HTTP API: streaming uploads, batch status and reports,
//! image downloads. The same router serves the standalone server and the
//! cluster gateway; only the backends behind [`AppState`] differ.

mod audit;
pub mod auth;
mod batches;
mod dedup_gate;
mod direct;
mod images;
pub mod kube_scheduler;
mod metrics;
mod policy;
mod problem;
mod search;
pub mod server;
pub mod starting;
pub mod sweep;
mod thumbnail;
mod tus;
pub mod ui;
mod upload;

pub use auth::TenantLimits;
pub use kube_scheduler::KubeScheduler;
pub use metrics::Metrics;
pub use problem::Problem;
pub use server::{Transport, serve};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, head, post};
use picsift_core::auth::Caller;
use picsift_core::backend::{BlobStore, Catalog, DedupIndex, Scheduler, UploadStore, WorkQueue};
use picsift_core::policy::Policy;
use picsift_core::rate::RateLimiter;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Staged uploads and images.
    pub blobs: Arc<dyn BlobStore>,
    /// Batches, verdicts and images.
    pub catalog: Arc<dyn Catalog>,
    /// Where received batches go.
    pub scheduler: Arc<dyn Scheduler>,
    /// Limits applied to uploads.
    pub policy: Policy,
    /// The work queue, for readiness checks.
    pub queue: Option<Arc<dyn WorkQueue>>,
    /// Per-tenant request rates and quotas.
    pub limits: TenantLimits,
    /// Where the tenants' request buckets are kept.
    pub rate: Arc<dyn RateLimiter>,
    /// The exact-dedup index: uploads wait while it is rebuilt.
    pub dedup: Arc<dyn DedupIndex>,
    /// Whether this process is rebuilding the dedup index now.
    pub rebuilding: Arc<std::sync::atomic::AtomicBool>,
    /// Resumable uploads in progress (tus, direct).
    pub uploads: Arc<dyn UploadStore>,
    /// The gateway's counters (`/metrics`).
    pub metrics: Arc<metrics::Metrics>,
}

impl AppState {
    /// Whether `caller` may read the stored image `id`: its own, every
    /// image when the policy shares them, or any for an admin.
    pub async fn may_read_image(&self, caller: &Caller, id: &str) -> Result<bool, Problem> {
        if caller.admin || self.policy.shared_images {
            return Ok(true);
        }
        let owned = self
            .catalog
            .owned_images(&caller.tenant, &[id.to_string()])
            .await?;
        Ok(!owned.is_empty())
    }

    /// The tenant whose images `caller` searches: none for admins and
    /// when images are shared.
    pub fn image_scope<'a>(&self, caller: &'a Caller) -> Option<&'a str> {
        if self.policy.shared_images {
            None
        } else {
            caller.scope()
        }
    }

    /// The policy an upload naming `name` (or none) is checked against;
    /// an unknown one is a problem with `status` (400 for an upload that
    /// names it, 404 for a lookup of it).
    pub async fn named_policy(
        &self,
        name: Option<&str>,
        status: axum::http::StatusCode,
    ) -> Result<Policy, Problem> {
        self.scheduler
            .policy(name)
            .await
            .map_err(|e| Problem::unavailable(format!("the policy cannot be read: {e}")))?
            .ok_or_else(|| {
                Problem::new(
                    status,
                    "unknown-policy",
                    "Unknown policy",
                    format!(
                        "there is no policy named {:?}; name an existing ValidationPolicy with ?policy=, or leave it out",
                        name.unwrap_or("default")
                    ),
                )
            })
    }

    /// A batch `caller` may see, or 404 (never 403: the id of another
    /// tenant's batch is not confirmed to exist).
    pub async fn visible_batch(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<picsift_core::model::BatchRecord, Problem> {
        match self.catalog.batch(id).await? {
            Some(b) if caller.may_see(&b.owner) => Ok(b),
            _ => Err(Problem::not_found(&format!("batch {id}"))),
        }
    }
}

/// The OpenAPI document of every route below (a test keeps them in step).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

async fn live() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `POST /v1/uploads`: a tus creation when the request says it speaks tus
/// (`Tus-Resumable`), else a direct upload's start (JSON).
async fn create_upload(
    axum::extract::State(s): axum::extract::State<AppState>,
    axum::extract::Extension(caller): axum::extract::Extension<Caller>,
    req: axum::extract::Request,
) -> axum::response::Response {
    if req.headers().contains_key("tus-resumable") {
        tus::create(s, caller, req).await
    } else {
        direct::start(s, caller, req).await
    }
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let upload_limit = usize::try_from(state.policy.max_upload_bytes).unwrap_or(usize::MAX);
    let search_limit = usize::try_from(state.policy.max_entry_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route(
            "/v1/batches",
            post(upload::create_batch)
                .layer(DefaultBodyLimit::max(upload_limit))
                .get(batches::list),
        )
        .route(
            "/v1/uploads",
            post(create_upload)
                .options(tus::discover)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/uploads/{id}",
            head(tus::head)
                .patch(tus::patch)
                .delete(tus::terminate)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/uploads/{id}/complete", post(direct::complete))
        .route("/v1/batches/{id}", get(batches::status))
        .route("/v1/batches/{id}/report", get(batches::report))
        .route("/v1/batches/{id}/events", get(batches::events))
        .route("/v1/policy", get(policy::show))
        .route("/v1/images", get(images::list))
        .route("/v1/images/{id}", get(images::download))
        .route("/v1/images/{id}/metadata", get(images::metadata))
        .route("/v1/images/{id}/thumbnail", get(thumbnail::thumbnail))
        .route("/v1/images/lookup", post(search::lookup))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/{batch}/{index}/content", get(audit::content))
        .route(
            "/v1/search/similar",
            post(search::similar).layer(DefaultBodyLimit::max(search_limit)),
        )
        // `/livez` is the Kubernetes convention; `/healthz` stays for compatibility.
        .route("/healthz", get(live))
        .route("/livez", get(live))
        .route("/readyz", get(batches::ready))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics::show))
        // The web frontend (public: the page asks for the key).
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .fallback(|| async {
            Problem::new(
                axum::http::StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "no such endpoint",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    /// Every route of the router is in the OpenAPI document, and every
    /// documented path is routed.
    #[test]
    fn openapi_covers_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let documented: std::collections::BTreeSet<String> =
            doc["paths"].as_object().unwrap().keys().cloned().collect();
        let source = include_str!("lib.rs");
        let source = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let routed: std::collections::BTreeSet<String> = source
            .split(".route(")
            .skip(1)
            .filter_map(|r| r.split('"').nth(1).map(str::to_string))
            .collect();
        assert_eq!(routed, documented);
    }
}
