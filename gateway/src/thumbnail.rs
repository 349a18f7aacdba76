//! `GET /v1/images/{id}/thumbnail?size=N`: a small JPEG of a stored image,
//! upright, its longer side N pixels (never enlarged), made once per size
//! and kept in the blob store under `thumbnails/{size}/{id}.jpg`.

use crate::{AppState, Problem};
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use picsift_core::auth::Caller;
use picsift_core::format::Format;
use picsift_core::model::{ImageRecord, image_key};
use serde::Deserialize;

/// Smallest and largest thumbnail, and the default.
pub const MIN_SIZE: u32 = 32;
/// See [`MIN_SIZE`].
pub const MAX_SIZE: u32 = 512;
/// See [`MIN_SIZE`].
pub const DEFAULT_SIZE: u32 = 256;

/// Thumbnails being made at once in this process: each decodes a whole
/// image. The rest wait their turn (a page of thumbnails asks for many).
static MAKING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The size asked for.
#[derive(Deserialize, Default)]
pub struct ThumbQuery {
    /// Longer side in pixels.
    size: Option<u32>,
}

/// The size served for `asked`: clamped to [`MIN_SIZE`]..=[`MAX_SIZE`] and
/// rounded up to a multiple of 32, so that at most 16 sizes of an image
/// are ever cached.
pub fn served_size(asked: Option<u32>) -> u32 {
    let s = asked.unwrap_or(DEFAULT_SIZE).clamp(MIN_SIZE, MAX_SIZE);
    s.div_ceil(32) * 32
}

/// The blob key of an image's thumbnail of `size`.
pub fn thumbnail_key(id: &str, size: u32) -> String {
    format!("thumbnails/{size}/{id}.jpg")
}

/// The dimensions of a `width`×`height` image scaled so its longer side
/// is at most `size`, keeping the aspect ratio (at least 1×1).
pub fn fit(width: u32, height: u32, size: u32) -> (u32, u32) {
    let long = width.max(height).max(1);
    if long <= size {
        return (width.max(1), height.max(1));
    }
    let scale = |v: u32| {
        ((u64::from(v) * u64::from(size) + u64::from(long) / 2) / u64::from(long)).max(1) as u32
    };
    (scale(width), scale(height))
}

/// Makes the thumbnail of a stored image's bytes: decode, turn upright,
/// scale, encode as JPEG (quality 80).
pub fn make(bytes: &[u8], image: &ImageRecord, size: u32) -> Result<Vec<u8>, String> {
    let rgb = match image.format {
        // libjpeg-turbo's DCT scaling does most of the shrinking for free.
        Format::Jpeg => {
            picsift_core::decode::scaled_rgb(bytes, size.min(image.width), size.min(image.height))
                .ok_or("the stored JPEG could not be decoded (CMYK?)")
                .or_else(|_| {
                    image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
                        .map(|i| i.to_rgb8())
                        .map_err(|e| e.to_string())
                })?
        }
        Format::Png => image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
            .map_err(|e| e.to_string())?
            .to_rgb8(),
        Format::Webp => image::load_from_memory_with_format(bytes, image::ImageFormat::WebP)
            .map_err(|e| e.to_string())?
            .to_rgb8(),
        // libheif applies the container's rotation: already upright.
        Format::Heic | Format::Avif => picsift_core::heif::decode_rgb(bytes, image.format)?,
    };
    let upright = picsift_core::orientation::apply_orientation(rgb, image.orientation.unwrap_or(1));
    let (w, h) = fit(upright.width(), upright.height(), size);
    let small = if (w, h) == upright.dimensions() {
        upright
    } else {
        image::imageops::resize(&upright, w, h, image::imageops::FilterType::Triangle)
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&small)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// `GET /v1/images/{id}/thumbnail`: visible to whoever may download the image.
pub async fn thumbnail(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<ThumbQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let image = crate::images::stored_image(&s, &caller, &id).await?;
    let size = served_size(q.size);
    let etag = format!("\"{id}-{size}\"");
    let mut h = HeaderMap::new();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(|_| Problem::not_found("image"))?,
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    let revalidated = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if revalidated {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    let key = thumbnail_key(&id, size);
    let jpeg = match s.blobs.size(&key).await? {
        Some(len) => s.blobs.get_range(&key, 0..len).await?,
        None => {
            let _permit = MAKING
                .acquire()
                .await
                .map_err(|_| Problem::busy("the thumbnail maker is closed"))?;
            let source = image_key(&id);
            let len = s.blobs.size(&source).await?.ok_or_else(|| {
                Problem::unavailable(format!(
                    "image {id} is in the catalog but its bytes are missing"
                ))
            })?;
            let bytes = s.blobs.get_range(&source, 0..len).await?;
            let record = image.clone();
            let made = tokio::task::spawn_blocking(move || make(&bytes, &record, size))
                .await
                .map_err(|e| Problem::unavailable(format!("making the thumbnail: {e}")))?
                .map_err(|e| Problem::unavailable(format!("making the thumbnail of {id}: {e}")))?;
            let made = Bytes::from(made);
            // Another request may be making the same one: both write the
            // same bytes, so the last write wins harmlessly.
            s.blobs.put(&key, made.clone()).await?;
            made
        }
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(jpeg.len()));
    Ok((StatusCode::OK, h, jpeg).into_response())
}

#[cfg(test)]
mod tests {
    use super::{fit, served_size};

    #[test]
    fn sizes_are_clamped_and_rounded_up_to_multiples_of_32() {
        for (asked, want) in [
            (None, 256),
            (Some(0), 32),
            (Some(1), 32),
            (Some(33), 64),
            (Some(256), 256),
            (Some(500), 512),
            (Some(100_000), 512),
        ] {
            assert_eq!(served_size(asked), want, "{asked:?}");
        }
    }

    #[test]
    fn fitting_keeps_the_aspect_and_never_enlarges() {
        for ((w, h, s), want) in [
            ((1000, 500, 256), (256, 128)),
            ((500, 1000, 256), (128, 256)),
            ((100, 50, 256), (100, 50)),
            ((4000, 1, 256), (256, 1)),
            ((333, 333, 32), (32, 32)),
        ] {
            assert_eq!(fit(w, h, s), want, "{w}x{h} in {s}");
        }
    }
}
