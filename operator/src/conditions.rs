//! Status conditions as the API conventions want them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use picsift_core::time::Millis;

/// A Kubernetes timestamp from milliseconds since the epoch.
pub fn to_time(ms: Millis) -> Time {
    Time(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Milliseconds since the epoch of a Kubernetes timestamp.
pub fn from_time(t: &Time) -> Millis {
    t.0.as_millisecond()
}

/// Sets condition `type_`, keeping `lastTransitionTime` when its status
/// did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Millis,
) {
    let status = if ok { "True" } else { "False" };
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| to_time(now));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: transition,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let mut c = Vec::new();
        set_condition(&mut c, "Ready", true, "Accepted", "ok", Some(1), 1_000);
        set_condition(
            &mut c,
            "Ready",
            true,
            "Accepted",
            "still ok",
            Some(2),
            5_000,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(from_time(&c[0].last_transition_time), 1_000);
        assert_eq!(c[0].message, "still ok");
        set_condition(
            &mut c,
            "Ready",
            false,
            "PolicyNotFound",
            "gone",
            Some(3),
            9_000,
        );
        assert_eq!(from_time(&c[0].last_transition_time), 9_000);
    }
}
