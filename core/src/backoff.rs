//! Exponential backoff, written once: webhook deliveries, the operator's
//! reconcile retries and failed worker Jobs all wait by this rule, each
//! with its own first delay and cap.

/// The wait before try number `attempt + 1` after `attempt` consecutive
/// failures (1-based): `first_ms`, doubled per further failure, at most
/// `cap_ms`. No failure yet (`attempt == 0`) waits nothing.
pub fn delay_ms(attempt: u32, first_ms: u64, cap_ms: u64) -> u64 {
    match attempt {
        0 => 0,
        n => first_ms
            .checked_shl((n - 1).min(63))
            .filter(|d| d >> (n - 1).min(63) == first_ms)
            .unwrap_or(u64::MAX)
            .min(cap_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_from_the_first_and_stops_at_the_cap() {
        let cases = [
            // (attempt, first, cap, wait)
            (0, 1_000, 300_000, 0),
            (1, 1_000, 300_000, 1_000),
            (2, 1_000, 300_000, 2_000),
            (7, 1_000, 300_000, 64_000),
            (9, 1_000, 300_000, 256_000),
            (10, 1_000, 300_000, 300_000),
            (64, 1_000, 300_000, 300_000),
            (u32::MAX, 1_000, 300_000, 300_000),
            (3, 10_000, 600_000, 40_000),
            (1, 0, 5, 0),
        ];
        for (attempt, first, cap, want) in cases {
            assert_eq!(
                delay_ms(attempt, first, cap),
                want,
                "attempt {attempt}, first {first} ms, cap {cap} ms"
            );
        }
    }
}
