//! The web frontend: plain HTML, CSS and JavaScript from `gateway/ui/`,
//! built into the binary. Public (the page asks for the API key itself and
//! sends it with every API call); a strict Content-Security-Policy keeps
//! every request on this origin.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Everything the page may load, and from where: only this origin, plus
/// `blob:` images (thumbnails and previews fetched with the key).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// The assets under `/ui/`, by file name: content type and bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "zip.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/zip.js"),
    ),
    (
        "tus.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/tus.min.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("../ui/icon.svg")),
];

const INDEX: &str = include_str!("../ui/index.html");

fn page(content_type: &'static str, body: &'static str, cache: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

/// `GET /`: the page.
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX, "no-cache")
}

/// `GET /ui/{file}`: a script or style sheet.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        // Revalidated each time: a new binary may carry new assets.
        Some((_, content_type, body)) => page(content_type, body, "no-cache"),
        None => crate::Problem::not_found(&format!("asset {file}")).into_response(),
    }
}

/// Whether `path` is part of the frontend (served without a key).
pub fn is_ui_path(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}
