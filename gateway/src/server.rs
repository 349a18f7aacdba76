//! The HTTP server loop, with the transport limits a public endpoint
//! needs: a client must send its request head within
//! [`Transport::header_timeout`] and keep its body moving (no gap over
//! [`Transport::body_idle_timeout`]), at most [`Transport::max_connections`]
//! connections are served at once (the rest wait in the listen backlog)
//! and at most [`Transport::max_requests`] requests run at once (the rest
//! get 503 at once).

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// Transport limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    /// Time a client has to send a request's head (line and headers).
    pub header_timeout: Duration,
    /// Longest gap between two pieces of a request body.
    pub body_idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Requests handled at once.
    pub max_requests: usize,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_requests: 512,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// requests under way finish (30 s at most).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Transport,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let idle = limits.body_idle_timeout;
    let app = app
        .layer(axum::middleware::from_fn(
            move |req: Request<Body>, next: axum::middleware::Next| {
                next.run(req.map(|b| Body::new(TimeoutBody::new(idle, b))))
            },
        ))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |_: tower::BoxError| async { overloaded() },
                ))
                .load_shed()
                .concurrency_limit(limits.max_requests),
        );
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = TowerToHyperService::new(tower::service_fn(move |req: Request<Incoming>| {
            app.clone().oneshot(req.map(Body::new))
        }));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still under way after 30 s; stopping anyway");
    }
    Ok(())
}

/// What a request gets while the server is at [`Transport::max_requests`].
fn overloaded() -> Response {
    crate::Problem {
        retry_after: Some(1),
        ..crate::Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            "the server is handling as many requests as it may; retry in a moment",
        )
    }
    .into_response()
}
