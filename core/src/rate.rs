//! Per-tenant request rate limits: a token bucket per tenant, refilled at
//! `rate` tokens a second up to `burst`. The decision is a pure function of
//! the bucket and the time ([`take`]); the standalone server keeps buckets
//! in memory ([`MemoryRateLimiter`]), the cluster in Redis (one Lua script
//! mirroring [`take`], so every gateway replica shares them).

use crate::Result;
use crate::time::Millis;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// A bucket: tokens left as of `at`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens left.
    pub tokens: f64,
    /// When they were counted (ms).
    pub at: Millis,
}

/// A tenant's rate: `rate` requests a second on average, bursts of `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens a bucket holds.
    pub burst: f64,
}

/// Takes one token from `bucket` (a full bucket when `None`) at `now`:
/// the bucket after, and `None` when the request may go, or how many
/// milliseconds until a token is there.
pub fn take(bucket: Option<Bucket>, rate: Rate, now: Millis) -> (Bucket, Option<Millis>) {
    let b = bucket.unwrap_or(Bucket {
        tokens: rate.burst,
        at: now,
    });
    let elapsed = (now - b.at).max(0) as f64 / 1000.0;
    let tokens = (b.tokens + elapsed * rate.per_second).min(rate.burst);
    if tokens >= 1.0 {
        (
            Bucket {
                tokens: tokens - 1.0,
                at: now,
            },
            None,
        )
    } else {
        let wait = ((1.0 - tokens) / rate.per_second * 1000.0).ceil() as Millis;
        (Bucket { tokens, at: now }, Some(wait.max(1)))
    }
}

/// Where the buckets are kept.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes a token of `tenant`'s bucket: `None` when the request may go,
    /// or the milliseconds to wait.
    async fn take(&self, tenant: &str, rate: Rate, now: Millis) -> Result<Option<Millis>>;
}

/// Buckets in this process's memory (the standalone server).
#[derive(Default)]
pub struct MemoryRateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn take(&self, tenant: &str, rate: Rate, now: Millis) -> Result<Option<Millis>> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (bucket, wait) = take(buckets.get(tenant).copied(), rate, now);
        buckets.insert(tenant.to_string(), bucket);
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_the_rate() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3.0,
        };
        let mut b = None;
        for _ in 0..3 {
            let (next, wait) = take(b, rate, 1000);
            assert_eq!(wait, None);
            b = Some(next);
        }
        let (next, wait) = take(b, rate, 1000);
        assert_eq!(wait, Some(500), "one token comes every 500 ms");
        let (next, wait) = take(Some(next), rate, 1500);
        assert_eq!(wait, None);
        // A long pause refills to the burst, not beyond.
        let (next, _) = take(Some(next), rate, 100_000);
        assert!((next.tokens - 2.0).abs() < 1e-9, "{next:?}");
    }

    #[tokio::test]
    async fn tenants_have_their_own_buckets() {
        let l = MemoryRateLimiter::default();
        let rate = Rate {
            per_second: 1.0,
            burst: 1.0,
        };
        assert_eq!(l.take("a", rate, 0).await.unwrap(), None);
        assert!(l.take("a", rate, 0).await.unwrap().is_some());
        assert_eq!(l.take("b", rate, 0).await.unwrap(), None);
    }
}
