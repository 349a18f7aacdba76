//! TODO

/// Dedup claims in Redis.
#[derive(Clone)]
pub struct RedisDedup;

/// The work queue on Redis Streams.
#[derive(Clone)]
pub struct RedisQueue;
