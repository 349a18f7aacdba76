//! The cluster backends: S3 (aws-sdk-s3) for blobs, PostgreSQL for the
//! catalog, Redis for dedup claims and the work queue. They implement the
//! same traits as [`crate::embedded`] and pass the same conformance suites.

mod postgres;
mod redis;
mod s3;

pub use self::postgres::PgCatalog;
pub use self::redis::{RedisDedup, RedisQueue, RedisRateLimiter};
pub use self::s3::{S3BlobStore, S3Config};
