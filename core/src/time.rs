//! Time as plain numbers. Decisions take the current time as an argument;
//! only adapters call [`now_ms`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Where a long-running adapter (a controller, a sweep) reads the current
/// time: the wall clock in production, a fixed one in tests, so that no
/// test depends on the calendar date it runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// `None`: the wall clock; otherwise the time it stands at.
    fixed: Option<Millis>,
}

impl Clock {
    /// The wall clock ([`now_ms`]).
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that always reads `ms`.
    pub fn fixed(ms: Millis) -> Self {
        Self { fixed: Some(ms) }
    }

    /// The current time in milliseconds since the Unix epoch.
    pub fn now(&self) -> Millis {
        self.fixed.unwrap_or_else(now_ms)
    }
}

/// RFC 3339 text (UTC, milliseconds) for a timestamp.
pub fn rfc3339(ms: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses RFC 3339 text (as [`rfc3339`] writes it, or with another
/// precision or a `Z` offset) back to milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    Millis::try_from(d.as_millis()).ok()
}
