//! picsift core: the domain model, the per-image pipeline (a pure core), the
//! backend traits and their embedded (standalone) implementations.
//!
//! Nothing here knows HTTP or Kubernetes: the gateway, the worker and (later)
//! the operator are thin shells around these pieces.

pub mod archive;
pub mod auth;
pub mod blob_reader;
mod catalog_rows;
pub mod chunk;
pub mod chunks;
pub mod cluster;
pub mod decode;
pub mod dedup;
pub mod embedded;
pub mod error;
pub mod format;
pub mod jpeg;
pub mod model;
pub mod pdq;
pub mod pdq_index;
pub mod pdq_memory;
pub mod pipeline;
pub mod policy;
pub mod rate;
pub mod store;
pub mod time;
pub mod verdict;
pub mod webhook;

pub use error::{Error, Result};
