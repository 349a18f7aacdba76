//! When a batch has stopped making progress and must be planned again.
//!
//! Tasks can be lost (a Redis that restarted empty, a gateway that died
//! between recording a batch and planning it). Whoever watches batches —
//! the operator under Kubernetes, the cluster worker's sweep outside it —
//! applies these rules; planning again is harmless because decided entries
//! are skipped.

use crate::time::Millis;

/// A batch left `received` for this long was never planned (its gateway
/// died between accepting and planning it).
pub const UNPLANNED_AFTER_MS: Millis = 30_000;

/// What a watcher last saw of a processing batch: its pending count and
/// when that count last changed (or when the batch was last re-planned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Entries without a verdict.
    pub pending: u64,
    /// When `pending` last moved.
    pub at: Millis,
}

/// Whether a batch `received` at `created_at` should have been planned by `now`.
pub fn unplanned(created_at: Millis, now: Millis) -> bool {
    now - created_at > UNPLANNED_AFTER_MS
}

/// Watches a processing batch: given what was seen before (`None` for a
/// batch not seen yet), its pending count now and whether the queue is
/// empty, answers what to remember and whether to plan it again.
///
/// A batch is stalled when its pending count has not moved for more than
/// `stall_ms` while the queue is empty: under a deep backlog a batch may
/// wait its turn for long, and only an empty queue says its tasks are gone.
/// Re-planning counts as progress, so a stalled batch is re-planned once
/// per `stall_ms`, not on every look.
pub fn watch(
    last: Option<Progress>,
    pending: u64,
    queue_idle: bool,
    now: Millis,
    stall_ms: Millis,
) -> (Progress, bool) {
    let fresh = Progress { pending, at: now };
    match last {
        Some(p) if p.pending == pending => {
            if queue_idle && now - p.at > stall_ms {
                (fresh, true)
            } else {
                (p, false)
            }
        }
        _ => (fresh, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 1_000_000;
    const STALL: Millis = 60_000;

    #[test]
    fn watch_decides_when_a_batch_is_stalled() {
        let seen = |pending, at| Some(Progress { pending, at });
        // (last, pending, queue idle, now) -> (remembered, replan)
        let cases = [
            ("first look remembers now", None, 5, true, T, (5, T), false),
            (
                "progress resets the clock",
                seen(6, T),
                5,
                true,
                T + 2 * STALL,
                (5, T + 2 * STALL),
                false,
            ),
            (
                "no progress, within the stall time",
                seen(5, T),
                5,
                true,
                T + STALL,
                (5, T),
                false,
            ),
            (
                "no progress past it, queue idle: replan",
                seen(5, T),
                5,
                true,
                T + STALL + 1,
                (5, T + STALL + 1),
                true,
            ),
            (
                "no progress past it, queue busy: wait",
                seen(5, T),
                5,
                false,
                T + 10 * STALL,
                (5, T),
                false,
            ),
        ];
        for (name, last, pending, idle, now, (p, at), replan) in cases {
            assert_eq!(
                watch(last, pending, idle, now, STALL),
                (Progress { pending: p, at }, replan),
                "{name}"
            );
        }
    }

    #[test]
    fn a_received_batch_is_unplanned_after_thirty_seconds() {
        assert!(!unplanned(T, T + UNPLANNED_AFTER_MS));
        assert!(unplanned(T, T + UNPLANNED_AFTER_MS + 1));
    }
}
