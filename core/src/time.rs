//! Time as plain numbers. Decisions take the current time as an argument;
//! only adapters call [`now_ms`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
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
/// time: the wall clock in production, a set one in tests, so that no test
/// depends on the calendar date it runs on.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the wall clock; otherwise the time tests set, shared by clones.
    set: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The wall clock ([`now_ms`]).
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands at `ms` until [`Clock::set`] moves it.
    pub fn fixed(ms: Millis) -> Self {
        Self {
            set: Some(Arc::new(AtomicI64::new(ms))),
        }
    }

    /// The current time in milliseconds since the Unix epoch.
    pub fn now(&self) -> Millis {
        match &self.set {
            Some(t) => t.load(Ordering::Relaxed),
            None => now_ms(),
        }
    }

    /// Moves a fixed clock (and its clones) to `ms`; the wall clock ignores it.
    pub fn set(&self, ms: Millis) {
        if let Some(t) = &self.set {
            t.store(ms, Ordering::Relaxed);
        }
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
