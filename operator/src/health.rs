//! Whether a WorkerPool's workers keep failing, and how long it waits
//! before it starts another. Pure; table-tested.
//!
//! A worker Job that fails (its pod crashed, was evicted or never started)
//! used to be deleted and recreated every round: a broken image or a bad
//! configuration made a new failing pod every ten seconds, and each
//! deletion took the failed pod's logs with it. Now consecutive failures
//! are counted in the pool's status, each one doubles the wait before the
//! next worker starts (capped), the failed Jobs are kept while the pool
//! waits, and a condition and events say what happens. A worker that ends
//! well (idle exit) resets the count; so does a long calm.

use crate::autoscale::{JobState, WorkerJob};
use picsift_core::backoff;
use picsift_core::time::{Millis, rfc3339};

/// The wait after the first failure; it doubles with each further one.
pub const FIRST_BACKOFF_MS: u64 = 10_000;
/// The longest wait between two attempts.
pub const MAX_BACKOFF_MS: u64 = 600_000;
/// With no failure for this long the count starts again at zero.
pub const CALM_MS: Millis = 2 * MAX_BACKOFF_MS as Millis;
/// The condition type this module sets on a WorkerPool.
pub const CONDITION: &str = "WorkersHealthy";

/// What the pool's status remembers between rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Failures {
    /// Worker Jobs that failed in a row.
    pub consecutive: u32,
    /// When the last one failed.
    pub last_at: Option<Millis>,
}

/// This round's view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// What the status records now.
    pub failures: Failures,
    /// Slots whose Job failed since the last round (each gets an event).
    pub newly_failed: Vec<u32>,
    /// The count went back to zero this round.
    pub recovered: bool,
    /// No new worker before this time; `None` when not backing off.
    pub retry_at: Option<Millis>,
}

impl Health {
    /// Whether the pool waits (no new Jobs, failed Jobs kept) at `now`.
    pub fn holds(&self, now: Millis) -> bool {
        self.retry_at.is_some_and(|t| now < t)
    }

    /// The `WorkersHealthy` condition: status, reason and message.
    pub fn condition(&self, now: Millis) -> (bool, &'static str, String) {
        let n = self.failures.consecutive;
        match (n, self.retry_at) {
            (0, _) => (true, "NoFailures", "no worker Job failed lately".into()),
            (_, Some(at)) if now < at => (
                false,
                "BackOff",
                format!(
                    "{n} worker Job(s) failed in a row; no new worker before {} (the failed Jobs are kept: kubectl logs job/<name>)",
                    rfc3339(at)
                ),
            ),
            _ => (
                false,
                "Retrying",
                format!("{n} worker Job(s) failed in a row; trying again"),
            ),
        }
    }
}

/// Counts this round's failures against `prev` (from the status). A Job's
/// end counts once: only ends after `prev.last_at` are new.
pub fn assess(prev: Failures, jobs: &[WorkerJob], now: Millis) -> Health {
    let newer = |t: Option<Millis>| t.is_some_and(|t| prev.last_at.is_none_or(|last| t > last));
    let mut failed: Vec<(Millis, u32)> = jobs
        .iter()
        .filter(|j| j.state == JobState::Failed && newer(j.ended_at))
        .filter_map(|j| Some((j.ended_at?, j.slot)))
        .collect();
    failed.sort_unstable();
    let last_success = jobs
        .iter()
        .filter(|j| j.state == JobState::Succeeded && newer(j.ended_at))
        .filter_map(|j| j.ended_at)
        .max();
    let calm = prev.last_at.is_some_and(|t| now - t >= CALM_MS);
    let consecutive = match last_success {
        // A worker ended well: only failures after it count.
        Some(ok) => failed.iter().filter(|(t, _)| *t > ok).count() as u32,
        None if calm => failed.len() as u32,
        None => prev.consecutive.saturating_add(failed.len() as u32),
    };
    let last_at = failed.last().map(|f| f.0).or(prev.last_at);
    let retry_at = match (consecutive, last_at) {
        (0, _) | (_, None) => None,
        (n, Some(t)) => {
            Some(t.saturating_add(backoff::delay_ms(n, FIRST_BACKOFF_MS, MAX_BACKOFF_MS) as Millis))
        }
    };
    Health {
        failures: Failures {
            consecutive,
            last_at,
        },
        newly_failed: failed.iter().map(|f| f.1).collect(),
        recovered: prev.consecutive > 0 && consecutive == 0,
        retry_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    const T: Millis = 1_000_000_000;

    fn job(slot: u32, state: JobState, ended_at: Option<Millis>) -> WorkerJob {
        WorkerJob {
            slot,
            state,
            current: true,
            ended_at,
        }
    }

    fn prev(consecutive: u32, last_at: Option<Millis>) -> Failures {
        Failures {
            consecutive,
            last_at,
        }
    }

    #[test]
    fn failures_count_once_and_back_off_exponentially() {
        // (previous, jobs, now, consecutive, last failure, retry at, newly failed)
        let cases = [
            // Nothing failed: nothing to wait for.
            (
                prev(0, None),
                vec![job(0, Running, None)],
                T,
                0,
                None,
                None,
                vec![],
            ),
            // A first failure: wait 10 s from it.
            (
                prev(0, None),
                vec![job(0, Failed, Some(T - 1_000))],
                T,
                1,
                Some(T - 1_000),
                Some(T + 9_000),
                vec![0],
            ),
            // The same failed Job seen again is not counted twice.
            (
                prev(1, Some(T - 1_000)),
                vec![job(0, Failed, Some(T - 1_000))],
                T + 5_000,
                1,
                Some(T - 1_000),
                Some(T + 9_000),
                vec![],
            ),
            // A third and fourth failure in one round: 80 s from the last.
            (
                prev(2, Some(T - 60_000)),
                vec![
                    job(1, Failed, Some(T - 2_000)),
                    job(0, Failed, Some(T - 3_000)),
                ],
                T,
                4,
                Some(T - 2_000),
                Some(T - 2_000 + 80_000),
                vec![0, 1],
            ),
            // The wait stops growing at ten minutes.
            (
                prev(30, Some(T - 10)),
                vec![job(0, Failed, Some(T))],
                T,
                31,
                Some(T),
                Some(T + 600_000),
                vec![0],
            ),
            // A worker that ended well after the failures resets the count.
            (
                prev(3, Some(T - 60_000)),
                vec![job(0, Succeeded, Some(T - 1_000))],
                T,
                0,
                Some(T - 60_000),
                None,
                vec![],
            ),
            // ... but failures after that success still count.
            (
                prev(3, Some(T - 60_000)),
                vec![
                    job(0, Succeeded, Some(T - 5_000)),
                    job(1, Failed, Some(T - 1_000)),
                ],
                T,
                1,
                Some(T - 1_000),
                Some(T + 9_000),
                vec![1],
            ),
            // A success older than the last failure changes nothing.
            (
                prev(2, Some(T - 1_000)),
                vec![job(0, Succeeded, Some(T - 5_000))],
                T,
                2,
                Some(T - 1_000),
                Some(T - 1_000 + 20_000),
                vec![],
            ),
            // Twenty minutes without a failure: the count starts over.
            (
                prev(5, Some(T - CALM_MS)),
                vec![job(0, Running, None)],
                T,
                0,
                Some(T - CALM_MS),
                None,
                vec![],
            ),
            // A failed Job whose end time is unknown is not counted.
            (
                prev(0, None),
                vec![job(0, Failed, None)],
                T,
                0,
                None,
                None,
                vec![],
            ),
        ];
        for (i, (p, jobs, now, consecutive, last_at, retry_at, newly)) in
            cases.into_iter().enumerate()
        {
            let h = assess(p, &jobs, now);
            assert_eq!(
                (
                    h.failures.consecutive,
                    h.failures.last_at,
                    h.retry_at,
                    h.newly_failed
                ),
                (consecutive, last_at, retry_at, newly),
                "case {i}"
            );
        }
    }

    #[test]
    fn the_pool_holds_until_the_retry_time_and_says_why() {
        let h = assess(prev(0, None), &[job(3, Failed, Some(T))], T);
        assert!(h.holds(T) && h.holds(T + 9_999) && !h.holds(T + 10_000));
        let (ok, reason, message) = h.condition(T);
        assert!(!ok);
        assert_eq!(reason, "BackOff");
        assert!(
            message.contains("1 worker Job(s) failed in a row"),
            "{message}"
        );
        assert!(message.contains("kubectl logs"), "{message}");
        assert_eq!(h.condition(T + 10_000).1, "Retrying");
        let healthy = assess(prev(0, None), &[], T);
        assert!(healthy.condition(T).0);
        assert!(!healthy.holds(T));
    }

    #[test]
    fn recovery_is_reported_once() {
        let h = assess(prev(2, Some(T - 9)), &[job(0, Succeeded, Some(T))], T);
        assert!(h.recovered);
        let again = assess(h.failures, &[job(0, Succeeded, Some(T))], T + 10_000);
        assert!(!again.recovered);
    }
}
