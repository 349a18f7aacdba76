//! picsift core: the domain model, the per-image pipeline (a pure core), the
//! pure decisions the processes share, and the backend traits.
//!
//! Nothing here knows HTTP, Kubernetes, SQL, Redis, S3 or libtorch: the
//! adapters live in `picsift-backends`, and the gateway, the worker and the
//! operator are thin shells around these pieces.

pub mod archive;
pub mod auth;
pub mod backend;
pub mod backoff;
pub mod blob_gc;
pub mod blob_reader;
pub mod callback_address;
pub mod chunk;
pub mod decode;
pub mod dedup;
pub mod dedup_index;
pub mod error;
pub mod exif;
pub mod format;
pub mod gain_map;
pub mod heif;
pub mod icc;
pub mod intake;
pub mod isobmff;
pub mod jpeg;
pub mod model;
pub mod orientation;
pub mod pdq;
pub mod pdq_index;
pub mod pdq_memory;
pub mod pipeline;
pub mod pixels;
pub mod png_webp;
pub mod policy;
pub mod progress;
pub mod rate;
pub mod resumable;
pub mod setting;
pub mod time;
pub mod trailer;
pub mod verdict;
pub mod webhook;

pub use error::{Error, Result};
