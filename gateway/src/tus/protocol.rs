//! The tus 1.0 protocol's headers (<https://tus.io/protocols/resumable-upload>),
//! read and written as pure functions: what a request asks, and the
//! headers every answer carries. The handlers in [`super`] apply them.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use picsift_core::resumable::UploadOptions;
use picsift_core::time::Millis;

/// The one protocol version spoken.
pub const VERSION: &str = "1.0.0";
/// The extensions implemented (`Tus-Extension`).
pub const EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum";
/// The checksum algorithms `Upload-Checksum` may name.
pub const CHECKSUMS: &str = "sha256";
/// The content type of a `PATCH` body.
pub const OFFSET_STREAM: &str = "application/offset+octet-stream";
/// tus's status for a checksum that does not match the body.
pub const CHECKSUM_MISMATCH: u16 = 460;

/// The batch an upload became, in the answer to its last `PATCH` (and to a
/// `HEAD` after it).
pub const BATCH_ID: HeaderName = HeaderName::from_static("picsift-batch-id");
/// The batch's status URL, beside [`BATCH_ID`].
pub const BATCH_URL: HeaderName = HeaderName::from_static("picsift-batch-url");

/// Why a request is not a valid tus request: the status and the detail.
pub type Refusal = (StatusCode, String);

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn bad(detail: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, detail.into())
}

/// `Tus-Resumable` must name the version spoken (412 otherwise).
pub fn check_version(h: &HeaderMap) -> Result<(), Refusal> {
    match header(h, "tus-resumable") {
        Some(VERSION) => Ok(()),
        Some(v) => Err((
            StatusCode::PRECONDITION_FAILED,
            format!("tus version {v:?} is not supported; this server speaks {VERSION}"),
        )),
        None => Err((
            StatusCode::PRECONDITION_FAILED,
            format!("send Tus-Resumable: {VERSION}"),
        )),
    }
}

/// A non-negative integer header.
fn number(h: &HeaderMap, name: &str) -> Result<Option<u64>, Refusal> {
    header(h, name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("{name} must be a non-negative integer, not {v:?}")))
        })
        .transpose()
}

/// The length a creation declares: `Upload-Length`, or none with
/// `Upload-Defer-Length: 1`; exactly one of the two.
pub fn creation_length(h: &HeaderMap) -> Result<Option<u64>, Refusal> {
    let length = number(h, "upload-length")?;
    let deferred = header(h, "upload-defer-length");
    match (length, deferred) {
        (Some(n), None) => Ok(Some(n)),
        (None, Some("1")) => Ok(None),
        (None, Some(v)) => Err(bad(format!("Upload-Defer-Length must be 1, not {v:?}"))),
        (Some(_), Some(_)) => Err(bad("send Upload-Length or Upload-Defer-Length, not both")),
        (None, None) => Err(bad("send Upload-Length (or Upload-Defer-Length: 1)")),
    }
}

/// A `PATCH`'s offset (required) and the length it declares late (optional).
pub fn patch_offset(h: &HeaderMap) -> Result<(u64, Option<u64>), Refusal> {
    let offset = number(h, "upload-offset")?.ok_or_else(|| bad("send Upload-Offset"))?;
    Ok((offset, number(h, "upload-length")?))
}

/// The body's content type must be tus's (415 otherwise).
pub fn check_content_type(h: &HeaderMap) -> Result<(), Refusal> {
    match header(h, "content-type") {
        Some(t) if t.eq_ignore_ascii_case(OFFSET_STREAM) => Ok(()),
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a tus body is {OFFSET_STREAM}, not {other:?}"),
        )),
    }
}

/// Whether a creation request carries bytes (creation-with-upload).
pub fn has_body(h: &HeaderMap) -> bool {
    header(h, "content-type").is_some_and(|t| t.eq_ignore_ascii_case(OFFSET_STREAM))
        && number(h, "content-length").ok().flatten() != Some(0)
}

/// `Upload-Checksum: sha256 BASE64`: the SHA-256 the body must have.
pub fn checksum(h: &HeaderMap) -> Result<Option<[u8; 32]>, Refusal> {
    let Some(v) = header(h, "upload-checksum") else {
        return Ok(None);
    };
    let (alg, sum) = v.split_once(' ').ok_or_else(|| {
        bad(format!(
            "Upload-Checksum is \"ALGORITHM BASE64\", not {v:?}"
        ))
    })?;
    if !alg.eq_ignore_ascii_case("sha256") {
        return Err(bad(format!(
            "checksum algorithm {alg:?} is not supported; use one of {CHECKSUMS}"
        )));
    }
    let bytes = STANDARD
        .decode(sum.trim())
        .map_err(|_| bad("the Upload-Checksum value is not base64"))?;
    bytes
        .try_into()
        .map(Some)
        .map_err(|_| bad("a sha256 checksum is 32 bytes"))
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (a value may
/// be absent). Keys read: `policy`, `callback`, `strict`; others (such as
/// `filename`) are accepted and ignored.
pub fn options(h: &HeaderMap) -> Result<UploadOptions, Refusal> {
    let mut o = UploadOptions::default();
    let Some(v) = header(h, "upload-metadata") else {
        return Ok(o);
    };
    let mut seen = std::collections::HashSet::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) || !seen.insert(key) {
            return Err(bad(format!(
                "Upload-Metadata has a bad or repeated key {key:?}"
            )));
        }
        let value = STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad(format!("Upload-Metadata's {key:?} is not base64 of UTF-8")))?;
        match key {
            "policy" => o.policy = Some(value).filter(|v| !v.is_empty()),
            "callback" => o.callback = Some(value).filter(|v| !v.is_empty()),
            "strict" => {
                o.strict = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    _ => return Err(bad(format!("strict is true or false, not {value:?}"))),
                }
            }
            _ => {}
        }
    }
    Ok(o)
}

/// Headers every tus answer carries, and an upload's state ones.
pub struct State {
    /// Bytes received, when said.
    pub offset: Option<u64>,
    /// The length; `None` with `deferred` false says nothing.
    pub length: Option<u64>,
    /// Whether the length is still to come.
    pub deferred: bool,
    /// When the upload expires, when said.
    pub expires: Option<Millis>,
    /// The batch it became.
    pub batch: Option<String>,
}

/// Writes `st` (and `Tus-Resumable`) into `h`.
pub fn write_headers(h: &mut HeaderMap, st: &State) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("tus-resumable", VERSION.into());
    if let Some(o) = st.offset {
        set("upload-offset", o.to_string());
    }
    if let Some(n) = st.length {
        set("upload-length", n.to_string());
    } else if st.deferred {
        set("upload-defer-length", "1".into());
    }
    if let Some(t) = st.expires {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.max(0) as u64);
        set("upload-expires", httpdate::fmt_http_date(at));
    }
    if let Some(b) = &st.batch
        && let (Ok(id), Ok(url)) = (
            HeaderValue::from_str(b),
            HeaderValue::from_str(&format!("/v1/batches/{b}")),
        )
    {
        h.insert(BATCH_ID, id);
        h.insert(BATCH_URL, url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn creation_length_table() {
        type Case<'a> = (
            &'a str,
            &'a [(&'static str, &'a str)],
            Result<Option<u64>, StatusCode>,
        );
        let cases: [Case; 6] = [
            ("a length", &[("upload-length", "10")], Ok(Some(10))),
            ("deferred", &[("upload-defer-length", "1")], Ok(None)),
            (
                "deferred with another value",
                &[("upload-defer-length", "2")],
                Err(StatusCode::BAD_REQUEST),
            ),
            (
                "both",
                &[("upload-length", "1"), ("upload-defer-length", "1")],
                Err(StatusCode::BAD_REQUEST),
            ),
            ("neither", &[], Err(StatusCode::BAD_REQUEST)),
            (
                "a negative length",
                &[("upload-length", "-1")],
                Err(StatusCode::BAD_REQUEST),
            ),
        ];
        for (name, h, want) in cases {
            assert_eq!(
                creation_length(&headers(h)).map_err(|e| e.0),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn version_is_required_and_exact() {
        assert!(check_version(&headers(&[("tus-resumable", "1.0.0")])).is_ok());
        for h in [&[][..], &[("tus-resumable", "0.2.2")][..]] {
            assert_eq!(
                check_version(&headers(h)).unwrap_err().0,
                StatusCode::PRECONDITION_FAILED
            );
        }
    }

    #[test]
    fn metadata_gives_the_batch_options() {
        let b = |s: &str| STANDARD.encode(s);
        let h = headers(&[(
            "upload-metadata",
            &format!(
                "filename {},policy {}, callback {},strict {},empty",
                b("photos.zip"),
                b("strict-one"),
                b("https://example.test/hook"),
                b("true")
            ),
        )]);
        let o = options(&h).unwrap();
        assert_eq!(o.policy.as_deref(), Some("strict-one"));
        assert_eq!(o.callback.as_deref(), Some("https://example.test/hook"));
        assert!(o.strict);
        for bad in ["policy !!!", "policy a,policy a", "strict bWF5YmU="] {
            assert!(
                options(&headers(&[("upload-metadata", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn checksum_table() {
        let sum = STANDARD.encode([7u8; 32]);
        assert_eq!(
            checksum(&headers(&[("upload-checksum", &format!("sha256 {sum}"))])).unwrap(),
            Some([7; 32])
        );
        assert_eq!(checksum(&headers(&[])).unwrap(), None);
        for bad in [
            format!("md5 {sum}"),
            "sha256 ***".into(),
            format!("sha256 {}", STANDARD.encode([1u8; 20])),
            sum,
        ] {
            assert_eq!(
                checksum(&headers(&[("upload-checksum", &bad)]))
                    .unwrap_err()
                    .0,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_patch_needs_tus_content_type_and_an_offset() {
        assert_eq!(
            check_content_type(&headers(&[("content-type", "application/zip")]))
                .unwrap_err()
                .0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert!(check_content_type(&headers(&[("content-type", OFFSET_STREAM)])).is_ok());
        assert!(patch_offset(&headers(&[])).is_err());
        assert_eq!(
            patch_offset(&headers(&[("upload-offset", "5"), ("upload-length", "9")])).unwrap(),
            (5, Some(9))
        );
    }
}
