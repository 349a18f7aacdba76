//! The crate's error type.

use std::io;

/// Errors of backend operations and other I/O. Per-image problems are not
/// errors: they become [`crate::verdict::Reason`]s.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or stream operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The SQL catalog failed.
    #[error("catalog error: {0}")]
    Sql(#[source] Source),
    /// A catalog migration failed.
    #[error("catalog migration failed: {0}")]
    Migrate(#[source] Source),
    /// An object key that the blob store refuses (it would escape its root).
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// The object does not exist.
    #[error("object {0:?} not found")]
    NotFound(String),
    /// The staged archive cannot be read as a zip.
    #[error("archive unreadable: {0}")]
    Archive(#[from] zip::result::ZipError),
    /// A stored record is not what this version expects.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A remote backend (S3, Redis) failed.
    #[error("backend error: {0}")]
    Backend(String),
    /// A value given by an operator is not acceptable (a tenant name, say).
    #[error("{0}")]
    Invalid(String),
    /// Redis (dedup claims, work queue) failed or is unreachable.
    #[error("Redis error: {0}")]
    Redis(#[source] Source),
    /// The dedup index lost its data (Redis restarted empty) and must be
    /// rebuilt from the catalog before it answers claims
    /// ([`crate::dedup_index::ensure_complete`]).
    #[error("the dedup index lost its data and is being rebuilt from the catalog")]
    DedupIndexIncomplete,
}

/// The error of a backend's driver (sqlx, redis), kept whole as the source:
/// the core names the failing role without depending on the driver.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
