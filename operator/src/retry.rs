//! Reconcile errors back off per object: the first retry after a few
//! seconds, each further one twice as late, at most five minutes, so an
//! object that keeps failing (an API server that refuses, a backend that
//! is down) is not hammered while the others go on at their own pace.

use picsift_core::backoff;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The wait after the first failed reconcile.
pub const FIRST_MS: u64 = 5_000;
/// The longest wait.
pub const MAX_MS: u64 = 300_000;

/// The wait before reconciling again after `failures` failed reconciles in a row.
pub fn delay(failures: u32) -> Duration {
    Duration::from_millis(backoff::delay_ms(failures, FIRST_MS, MAX_MS))
}

/// Failed reconciles in a row, per object (kind/namespace/name).
#[derive(Debug, Default)]
pub struct Retries(Mutex<HashMap<String, u32>>);

impl Retries {
    /// Counts a failed reconcile of `key`; returns the wait before the next.
    pub fn failed(&self, key: &str) -> Duration {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        delay(*n)
    }

    /// A reconcile of `key` succeeded: its next failure starts over.
    pub fn succeeded(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_back_off_per_object_and_reset_on_success() {
        let r = Retries::default();
        let waits: Vec<u64> = (0..9).map(|_| r.failed("a").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        // Another object keeps its own count.
        assert_eq!(r.failed("b"), Duration::from_secs(5));
        r.succeeded("a");
        assert_eq!(r.failed("a"), Duration::from_secs(5));
        assert_eq!(r.failed("b"), Duration::from_secs(10));
    }
}
