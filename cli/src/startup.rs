//! How the cluster processes meet their dependencies at start. A
//! dependency that is not up yet (connection refused, a timeout, a
//! restart) is waited for, with backoff. One that is misconfigured (a
//! database or bucket that does not exist, credentials that are refused or
//! missing) will not fix itself: the process stops with one line naming the
//! setting to change, instead of retrying forever.
//!
//! [`classify`] is the rule, pure and table-tested over the error texts
//! the drivers give; [`patiently`] applies it.

use picsift_gateway::starting::{DepState, Startup};
use std::future::Future;
use std::time::Duration;

/// A dependency of the cluster processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    /// The catalog.
    Postgres,
    /// Dedup claims, the work queue, rate limits.
    Redis,
    /// The object store.
    S3,
}

impl Dependency {
    /// Its name in `/readyz` and the log.
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Postgres => "postgres",
            Dependency::Redis => "redis",
            Dependency::S3 => "s3",
        }
    }
}

/// Whether an error at start will go away by waiting: `None`, or the line
/// that says what to fix.
pub fn classify(dep: Dependency, error: &str) -> Option<String> {
    let has = |needle: &str| error.contains(needle);
    let fix = |setting: &str, what: &str| Some(format!("{setting}: {what}"));
    match dep {
        Dependency::Postgres if has("database \"") && has("does not exist") => fix(
            "postgres.url (PICSIFT_POSTGRES_URL)",
            "the database does not exist; create it (createdb -O ROLE NAME) or name another in the URL",
        ),
        Dependency::Postgres if has("role \"") && has("does not exist") => fix(
            "postgres.url (PICSIFT_POSTGRES_URL)",
            "the role does not exist; create it (createuser) or name another in the URL",
        ),
        Dependency::Postgres
            if has("password authentication failed") || has("no pg_hba.conf entry") =>
        {
            fix(
                "postgres.url (PICSIFT_POSTGRES_URL)",
                "PostgreSQL refuses the role or its password",
            )
        }
        Dependency::Postgres if has("migration") => fix(
            "postgres.url (PICSIFT_POSTGRES_URL)",
            "the catalog's schema cannot be migrated (a database of another application, or of a newer picsift?)",
        ),
        Dependency::Redis if has("WRONGPASS") || has("NOAUTH") || has("invalid password") => fix(
            "redis.url (PICSIFT_REDIS_URL)",
            "Redis refuses the credentials; put them in the URL (redis://:PASSWORD@host:port/db)",
        ),
        Dependency::Redis if has("Redis URL did not parse") || has("Invalid URL") => fix(
            "redis.url (PICSIFT_REDIS_URL)",
            "not a Redis URL (redis://host:port/db)",
        ),
        Dependency::S3 if has("NoSuchBucket") => fix(
            "s3.bucket (PICSIFT_S3_BUCKET)",
            "the bucket does not exist; create it, or name one that does",
        ),
        Dependency::S3
            if has("InvalidAccessKeyId") || has("SignatureDoesNotMatch") || has("AccessDenied") =>
        {
            fix(
                "s3.access_key_id and s3.secret_access_key (PICSIFT_S3_ACCESS_KEY_ID, PICSIFT_S3_SECRET_ACCESS_KEY)",
                "the object store refuses these credentials, or they may not write to the bucket",
            )
        }
        Dependency::S3
            if has("IMDS") || has("no providers in chain") || has("CredentialsNotLoaded") =>
        {
            fix(
                "s3.access_key_id and s3.secret_access_key (PICSIFT_S3_ACCESS_KEY_ID, PICSIFT_S3_SECRET_ACCESS_KEY)",
                "no credentials: set them (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a web identity)",
            )
        }
        _ => None,
    }
}

/// Retries `connect` with backoff while its errors are transient; a
/// permanent one ends with the line that says what to fix. `startup`
/// learns the dependency's state (the gateway's `/readyz` shows it).
pub async fn patiently<T, F, Fut>(
    dep: Dependency,
    what: &str,
    startup: &Startup,
    mut connect: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = picsift_core::Result<T>>,
{
    let mut failures = 0;
    startup.set(dep.name(), DepState::Connecting);
    loop {
        match connect().await {
            Ok(v) => {
                startup.set(dep.name(), DepState::Ok);
                return Ok(v);
            }
            Err(e) => {
                let text = format!("{e:#}");
                if let Some(fix) = classify(dep, &text) {
                    tracing::error!(what, error = %text, "cannot start: {fix}");
                    anyhow::bail!("{fix}");
                }
                startup.set(dep.name(), DepState::Waiting);
                failures += 1;
                let wait = picsift_core::backoff::delay_ms(failures, 200, 10_000);
                tracing::warn!(what, error = %e, retry_in_ms = wait, "dependency unavailable; waiting for it");
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dependency::*;

    #[test]
    fn misconfigurations_stop_and_outages_wait() {
        // (dependency, error text as the driver gives it, the setting named; None: wait)
        let cases = [
            (
                Postgres,
                "catalog error: error returned from database: database \"nodb\" does not exist",
                Some("postgres.url"),
            ),
            (
                Postgres,
                "catalog error: error returned from database: role \"nobody\" does not exist",
                Some("postgres.url"),
            ),
            (
                Postgres,
                "catalog error: error returned from database: password authentication failed for user \"picsift\"",
                Some("postgres.url"),
            ),
            (
                Postgres,
                "catalog migration failed: migration 7 was previously applied but is missing",
                Some("postgres.url"),
            ),
            (
                Postgres,
                "catalog error: error communicating with database: Connection refused (os error 111)",
                None,
            ),
            (
                Postgres,
                "catalog error: pool timed out while waiting for an open connection",
                None,
            ),
            (
                Redis,
                "Redis error: WRONGPASS invalid username-password pair or user is disabled.",
                Some("redis.url"),
            ),
            (
                Redis,
                "Redis error: NOAUTH: Authentication required.",
                Some("redis.url"),
            ),
            (
                Redis,
                "Redis error: Connection refused (os error 111)",
                None,
            ),
            (Redis, "Redis error: broken pipe", None),
            (
                S3,
                "backend error: S3 put health/readiness-probe: NoSuchBucket: The specified bucket does not exist",
                Some("s3.bucket"),
            ),
            (
                S3,
                "backend error: S3 put x: InvalidAccessKeyId: Forbidden",
                Some("s3.access_key_id"),
            ),
            (
                S3,
                "backend error: S3 put x: SignatureDoesNotMatch",
                Some("s3.access_key_id"),
            ),
            (
                S3,
                "backend error: dispatch failure: failed to load IMDS session token",
                Some("s3.access_key_id"),
            ),
            (
                S3,
                "backend error: dispatch failure: io error: Connection refused (os error 111)",
                None,
            ),
            (S3, "backend error: S3 put x: timeout", None),
        ];
        for (dep, error, setting) in cases {
            let got = classify(dep, error);
            match setting {
                Some(s) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(s)),
                    "{dep:?} {error}: {got:?}"
                ),
                None => assert_eq!(got, None, "{dep:?} {error}"),
            }
        }
    }
}
