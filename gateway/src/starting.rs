//! The gateway while it waits for its dependencies. It opens its port
//! first, so that an orchestrator or an operator asking `/readyz` learns
//! which dependency it is waiting for (a 503 naming it) instead of a
//! refused connection; `/livez` says the process is alive, and every other
//! request gets a 503 with `Retry-After`. Once the backends answer, the
//! real router takes over on the same port ([`Startup::ready`]).

use crate::Problem;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use tower::ServiceExt;

/// What a dependency is doing at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepState {
    /// Not tried yet (another one is being waited for).
    Pending,
    /// A first connection is being tried.
    Connecting,
    /// Tried, not reachable yet; retried with backoff.
    Waiting,
    /// Connected and checked.
    Ok,
}

impl DepState {
    fn text(self) -> &'static str {
        match self {
            DepState::Pending => "not checked yet",
            DepState::Connecting => "connecting",
            DepState::Waiting => {
                "waiting: not reachable yet, retrying (the server's log has the error)"
            }
            DepState::Ok => "ok",
        }
    }
}

/// The dependencies' states, and the router once they are all up.
#[derive(Default)]
pub struct Startup {
    deps: Mutex<BTreeMap<&'static str, DepState>>,
    app: OnceLock<Router>,
}

impl Startup {
    /// Waiting for `deps`, none tried yet.
    pub fn new(deps: &[&'static str]) -> Arc<Self> {
        let s = Self::default();
        s.deps
            .lock()
            .unwrap()
            .extend(deps.iter().map(|d| (*d, DepState::Pending)));
        Arc::new(s)
    }

    /// Records what `dep` is doing.
    pub fn set(&self, dep: &'static str, state: DepState) {
        self.deps.lock().unwrap().insert(dep, state);
    }

    /// Hands requests to `app` from now on.
    pub fn ready(&self, app: Router) {
        let _ = self.app.set(app);
    }

    /// The `/readyz` answer while starting.
    fn readiness(&self) -> Response {
        let checks: serde_json::Map<String, serde_json::Value> = self
            .deps
            .lock()
            .unwrap()
            .iter()
            .map(|(d, s)| (d.to_string(), s.text().into()))
            .collect();
        let body = serde_json::json!({"status": "starting", "checks": checks});
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(body),
        )
            .into_response()
    }

    /// The dependencies not up yet, for a problem's detail.
    fn waiting_for(&self) -> String {
        let deps = self.deps.lock().unwrap();
        let names: Vec<&str> = deps
            .iter()
            .filter(|(_, s)| **s != DepState::Ok)
            .map(|(d, _)| *d)
            .collect();
        names.join(", ")
    }
}

/// The router to serve from the start: [`Startup`]'s answers until
/// [`Startup::ready`], then the real router's.
pub fn router(startup: Arc<Startup>) -> Router {
    Router::new().fallback_service(tower::service_fn(move |req: Request<Body>| {
        let startup = startup.clone();
        async move {
            if let Some(app) = startup.app.get() {
                return app.clone().oneshot(req).await;
            }
            Ok::<_, Infallible>(match req.uri().path() {
                "/livez" | "/healthz" => {
                    axum::Json(serde_json::json!({"status": "ok"})).into_response()
                }
                "/readyz" => startup.readiness(),
                _ => Problem {
                    retry_after: Some(5),
                    ..Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "starting",
                        "Starting",
                        format!(
                            "the server is starting and waits for {}; retry in a moment",
                            startup.waiting_for()
                        ),
                    )
                }
                .into_response(),
            })
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(app: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let r = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn readiness_names_the_dependency_waited_for_then_the_real_router_answers() {
        let startup = Startup::new(&["postgres", "redis", "s3"]);
        let app = router(startup.clone());
        startup.set("s3", DepState::Ok);
        startup.set("postgres", DepState::Waiting);
        let (status, body) = get(&app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "starting");
        assert_eq!(body["checks"]["s3"], "ok");
        assert!(
            body["checks"]["postgres"]
                .as_str()
                .unwrap()
                .starts_with("waiting")
        );
        assert_eq!(body["checks"]["redis"], "not checked yet");
        assert_eq!(get(&app, "/livez").await.0, StatusCode::OK);
        let (status, problem) = get(&app, "/v1/batches").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            problem["detail"],
            "the server is starting and waits for postgres, redis; retry in a moment"
        );

        startup.ready(Router::new().route(
            "/readyz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ready"})) }),
        ));
        assert_eq!(
            get(&app, "/readyz").await,
            (StatusCode::OK, serde_json::json!({"status": "ready"}))
        );
    }
}
