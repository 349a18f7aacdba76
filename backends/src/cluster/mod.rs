//! The cluster backends: S3 (aws-sdk-s3) for blobs, Redis for dedup claims,
//! the work queue and rate limits (the catalog is PostgreSQL, in
//! [`crate::sql`]). They implement the same traits as [`crate::embedded`]
//! and pass the same conformance suites.

mod redis;
mod s3;

pub use self::redis::{RedisDedup, RedisQueue, RedisRateLimiter};
pub use self::s3::{S3BlobStore, S3Config};
