//! picsift's storage adapters: one implementation of each backend trait of
//! `picsift_core::backend` per deployment.
//!
//! - [`embedded`]: the standalone server's files on disk and in-process
//!   queue;
//! - [`cluster`]: S3 and Redis, shared by every gateway and worker;
//! - [`sql`]: the catalog, in SQLite (standalone, with the dedup claims) or
//!   PostgreSQL (cluster), one implementation for both.
//!
//! Each role passes one conformance suite on every implementation
//! (`tests/tests/conformance_*`). The drivers (aws-sdk-s3, sqlx, redis) are
//! linked here and nowhere else. [`notify`] is the other way out:
//! completion webhooks, POSTed over HTTP.

pub mod cluster;
pub mod embedded;
pub mod notify;
pub mod sql;

use picsift_core::Error;

/// Turns a driver's error into the core's, named for the role that failed.
pub(crate) trait DriverResult<T> {
    /// The result with its error as a [`picsift_core::Error`].
    fn or_backend(self) -> picsift_core::Result<T>;
}

impl<T> DriverResult<T> for Result<T, sqlx::Error> {
    fn or_backend(self) -> picsift_core::Result<T> {
        self.map_err(|e| Error::Sql(Box::new(e)))
    }
}

impl<T> DriverResult<T> for Result<T, sqlx::migrate::MigrateError> {
    fn or_backend(self) -> picsift_core::Result<T> {
        self.map_err(|e| Error::Migrate(Box::new(e)))
    }
}

impl<T> DriverResult<T> for Result<T, redis::RedisError> {
    fn or_backend(self) -> picsift_core::Result<T> {
        self.map_err(|e| Error::Redis(Box::new(e)))
    }
}
