//! Callbacks never reach internal addresses unless allowed, never follow
//! redirects, and tell the tenant nothing about what answered. Every
//! receiver here listens on 127.0.0.1: a test never makes the server send
//! anything off this machine, not even to an address the filter stops.

mod common;

use axum::http::StatusCode;
use common::Server;
use picsift_backends::notify::delivery_error;
use picsift_tests::{ZipBuilder, jpeg};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A receiver on loopback answering `status` (with a `Location` to
/// another loopback path for redirects); counts what reaches it.
async fn receiver(status: StatusCode) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            (status, [("location", format!("http://{addr}/elsewhere"))])
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), hits)
}

/// Uploads one image with `callback` and waits for the first recorded
/// delivery attempt; returns the batch's notification.
async fn first_attempt(server: &Server, callback: &str) -> serde_json::Value {
    let zip = ZipBuilder::new()
        .stored("a.jpg", &jpeg(71, 200, 150))
        .finish();
    let (status, body, _) = server.upload(zip, &format!("?callback={callback}")).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    server.wait_done(&id).await;
    let start = Instant::now();
    loop {
        let s = server.get_json(&format!("/v1/batches/{id}")).await;
        if s["notification"]["attempts"].as_u64().unwrap_or(0) >= 1 {
            return s["notification"].clone();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no attempt: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_callback_is_refused_unless_allowed() {
    let (hook, hits) = receiver(StatusCode::NO_CONTENT).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // By IP literal, and by a name that resolves to loopback.
    let by_name = hook.replace("127.0.0.1", "localhost");
    for url in [&hook, &by_name] {
        let n = first_attempt(&server, url).await;
        assert_eq!(n["state"], "pending", "{n}");
        assert_eq!(
            n["last_error"],
            delivery_error::REFUSED_ADDRESS,
            "{url}: {n}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the refused receiver was called"
    );

    // The same receiver, allowed by the configuration, is delivered to.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--webhook-allowed-networks", "127.0.0.0/8,::1/128"],
    );
    let n = first_attempt(&server, &hook).await;
    assert_eq!(n["state"], "delivered", "{n}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_not_followed_and_answers_are_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--webhook-allowed-networks", "127.0.0.1/32"]);
    for status in [StatusCode::TEMPORARY_REDIRECT, StatusCode::NOT_FOUND] {
        let (hook, hits) = receiver(status).await;
        let n = first_attempt(&server, &hook).await;
        assert_eq!(n["last_error"], delivery_error::NOT_ACCEPTED, "{n}");
        // One request: the redirect's target was not asked.
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{status}");
        assert!(!n.to_string().contains(status.as_str()), "{n}");
    }
    // Nothing listening: a fixed sentence, no connection error text.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let n = first_attempt(&server, &format!("http://{closed}/hook")).await;
    assert_eq!(n["last_error"], delivery_error::UNREACHABLE, "{n}");
}
