//! Setting names of earlier releases. Every setting now has one name: its
//! configuration-file key, `PICSIFT_<SECTION>_<KEY>` in the environment and
//! `--<key>` on `picsift serve` (docs/configuration.md). The old spellings
//! below still work for one release, with a warning on stderr.

/// `picsift serve` flags that were renamed: (old, new). clap accepts the
/// old ones as hidden aliases; this table only words the warning.
const FLAGS: &[(&str, &str)] = &[
    ("--workers", "--concurrency"),
    ("--ml-batch", "--ml-batch-size"),
    ("--rate-limit", "--requests-per-second"),
    ("--rate-burst", "--burst"),
    ("--header-read-timeout-secs", "--header-timeout-secs"),
];

/// Environment variables that were renamed: (old, new).
const ENV: &[(&str, &str)] = &[
    ("PICSIFT_FORMATS", "PICSIFT_POLICY_FORMATS"),
    (
        "PICSIFT_MAX_UPLOAD_BYTES",
        "PICSIFT_POLICY_MAX_UPLOAD_BYTES",
    ),
    ("PICSIFT_NEAR_DISTANCE", "PICSIFT_POLICY_NEAR_DISTANCE"),
    ("PICSIFT_WORKERS", "PICSIFT_WORKER_CONCURRENCY"),
    ("PICSIFT_ML_BATCH", "PICSIFT_ML_BATCH_SIZE"),
    ("PICSIFT_RATE_LIMIT", "PICSIFT_LIMITS_REQUESTS_PER_SECOND"),
    ("PICSIFT_RATE_BURST", "PICSIFT_LIMITS_BURST"),
    (
        "PICSIFT_MAX_OPEN_BATCHES",
        "PICSIFT_LIMITS_MAX_OPEN_BATCHES",
    ),
    (
        "PICSIFT_MAX_BYTES_PER_MONTH",
        "PICSIFT_LIMITS_MAX_BYTES_PER_MONTH",
    ),
    (
        "PICSIFT_HEADER_READ_TIMEOUT_SECS",
        "PICSIFT_LIMITS_HEADER_TIMEOUT_SECS",
    ),
    (
        "PICSIFT_BODY_IDLE_TIMEOUT_SECS",
        "PICSIFT_LIMITS_BODY_IDLE_TIMEOUT_SECS",
    ),
    ("PICSIFT_MAX_CONNECTIONS", "PICSIFT_LIMITS_MAX_CONNECTIONS"),
    ("PICSIFT_MAX_REQUESTS", "PICSIFT_LIMITS_MAX_REQUESTS"),
];

/// What to do about old names: the warnings to print, and the environment
/// variables to set (new name, value) because only their old name is set.
/// Pure: `args` are the command line, `env` reads a variable.
pub fn translate(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> (Vec<String>, Vec<(&'static str, String)>) {
    let mut warnings = Vec::new();
    for (old, new) in FLAGS {
        if args
            .iter()
            .any(|a| a == old || a.strip_prefix(old).is_some_and(|r| r.starts_with('=')))
        {
            warnings.push(format!("{old} is deprecated; use {new}"));
        }
    }
    let mut set = Vec::new();
    for (old, new) in ENV {
        if let Some(v) = env(old) {
            warnings.push(format!("{old} is deprecated; use {new}"));
            if env(new).is_none() {
                set.push((*new, v));
            }
        }
    }
    (warnings, set)
}

/// Applies [`translate`] to this process. Runs first thing in `main`, while
/// the process has one thread, which is what makes setting variables sound.
pub fn apply() {
    let args: Vec<String> = std::env::args().collect();
    let (warnings, set) = translate(&args, |k| std::env::var(k).ok());
    for w in warnings {
        eprintln!("picsift: warning: {w}");
    }
    for (k, v) in set {
        // SAFETY: called at the start of `main`, before any other thread
        // (the tokio runtime included) exists.
        unsafe { std::env::set_var(k, v) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn old_names_warn_and_carry_their_values_to_the_new_ones() {
        let args: Vec<String> = ["picsift", "serve", "--workers", "2", "--rate-burst=5"]
            .map(String::from)
            .into();
        let env: HashMap<&str, &str> = HashMap::from([
            ("PICSIFT_RATE_LIMIT", "3"),
            ("PICSIFT_FORMATS", "png"),
            ("PICSIFT_POLICY_FORMATS", "jpeg"),
        ]);
        let (warnings, set) = translate(&args, |k| env.get(k).map(|v| v.to_string()));
        assert_eq!(
            warnings,
            [
                "--workers is deprecated; use --concurrency",
                "--rate-burst is deprecated; use --burst",
                "PICSIFT_FORMATS is deprecated; use PICSIFT_POLICY_FORMATS",
                "PICSIFT_RATE_LIMIT is deprecated; use PICSIFT_LIMITS_REQUESTS_PER_SECOND",
            ]
        );
        // The new name wins when both are set.
        assert_eq!(
            set,
            [("PICSIFT_LIMITS_REQUESTS_PER_SECOND", "3".to_string())]
        );
    }

    #[test]
    fn new_names_say_nothing() {
        let args: Vec<String> = ["picsift", "serve", "--concurrency", "2", "--workers-file"]
            .map(String::from)
            .into();
        let (warnings, set) = translate(&args, |_| None);
        assert!(warnings.is_empty() && set.is_empty(), "{warnings:?}");
    }
}
