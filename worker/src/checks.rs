//! The quality and ML checks as the worker runs them (models loaded from
//! files or the blob store), and the audit sample.

use crate::Result;
use picsift_core::backend::Backends;
use picsift_core::model::{ReportEntry, audit_key};
use picsift_core::policy::Policy;
use picsift_core::verdict::Verdict;
use picsift_ml::{Checker, ConfigError, Runtime};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Loads every model of `policy` not loaded yet: `blob:KEY` sources from
/// the blob store, others from the file system. The worker calls this for
/// its own policy at start (so a bad model stops it there) and for each
/// batch policy it first meets.
pub async fn load_models(
    b: &Backends,
    rt: &std::sync::Arc<Runtime>,
    policy: &Policy,
) -> std::result::Result<(), ConfigError> {
    for spec in &policy.models {
        if rt.is_loaded(spec) {
            continue;
        }
        let bytes = match spec.source.strip_prefix("blob:") {
            Some(key) => {
                let fail = |e: picsift_core::Error| ConfigError {
                    model: spec.name.clone(),
                    message: format!("cannot read the model from the blob store ({key}): {e}"),
                };
                let size = b
                    .blobs
                    .size(key)
                    .await
                    .map_err(fail)?
                    .ok_or_else(|| fail(picsift_core::Error::NotFound(key.into())))?;
                b.blobs
                    .get_range(key, 0..size)
                    .await
                    .map_err(fail)?
                    .to_vec()
            }
            None => picsift_ml::read_model_file(spec)?,
        };
        let (rt, spec) = (rt.clone(), spec.clone());
        tokio::task::spawn_blocking(move || rt.load(&spec, bytes))
            .await
            .map_err(|e| ConfigError {
                model: String::new(),
                message: format!("loading crashed: {e}"),
            })??;
    }
    Ok(())
}

/// Loads and checks the worker's own policy's models before it takes any
/// work: a model that does not load, or does not give what it declares,
/// stops the worker at start.
pub async fn start_checks(
    b: &Backends,
    cfg: &crate::WorkerConfig,
) -> std::result::Result<(), ConfigError> {
    load_models(b, &cfg.ml, &cfg.policy).await?;
    cfg.ml.checker(&cfg.policy)?;
    let models: Vec<&str> = cfg.policy.models.iter().map(|m| m.name.as_str()).collect();
    tracing::info!(
        device = %cfg.ml.device_name(),
        quality = cfg.policy.quality.any(),
        models = %models.join(","),
        "checks ready"
    );
    Ok(())
}

/// The checks a chunk's policy asks for, or `None` when it asks for none.
/// A model that cannot be loaded fails the chunk (it is retried, then
/// dead-lettered) rather than judging images without it.
pub(crate) async fn checker(
    b: &Backends,
    rt: &std::sync::Arc<Runtime>,
    policy: &Policy,
) -> Result<Option<Checker>> {
    if !policy.has_checks() {
        return Ok(None);
    }
    let config = |e: ConfigError| {
        tracing::error!(error = %e, "the batch policy's checks cannot run");
        picsift_core::Error::Backend(format!("the policy's checks cannot run: {e}"))
    };
    load_models(b, rt, policy).await.map_err(config)?;
    Ok(Some(rt.checker(policy).map_err(config)?))
}

/// Whether entry `index` of `batch_id` is in the audit sample: a hash of
/// the two against the rate, so a retried chunk picks the same entries.
pub fn audited(batch_id: &str, index: u32, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let digest = Sha256::digest(format!("{batch_id}:{index}"));
    let draw = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (draw as f64 / u64::MAX as f64) < rate
}

/// Copies a sampled entry (as uploaded) and its verdict, with every score,
/// to the audit area. Best effort with retries: the audit sample is for
/// review, and a store that stays down is logged, not the batch's failure.
pub(crate) async fn write_audit(
    b: &Backends,
    batch_id: &str,
    index: u32,
    name: &str,
    verdict: &Verdict,
    bytes: Option<Vec<u8>>,
) {
    let record = ReportEntry::new(index, name.to_owned(), Some(verdict.clone()));
    let json = serde_json::to_vec(&record).expect("a report line serialises");
    let mut puts = vec![(audit_key(batch_id, index, "json"), bytes::Bytes::from(json))];
    if let Some(data) = bytes {
        puts.insert(
            0,
            (audit_key(batch_id, index, "data"), bytes::Bytes::from(data)),
        );
    }
    for (key, body) in puts {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=3 {
            match b.blobs.put(&key, body.clone()).await {
                Ok(()) => break,
                Err(e) if attempt == 3 => {
                    tracing::warn!(key, error = %e, "could not write the audit copy");
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_sample_is_deterministic_and_near_its_rate() {
        let picked = (0..10_000).filter(|&i| audited("b1", i, 0.1)).count();
        assert!((900..1100).contains(&picked), "{picked}");
        let again = (0..10_000).filter(|&i| audited("b1", i, 0.1)).count();
        assert_eq!(picked, again);
        assert_eq!((0..100).filter(|&i| audited("b1", i, 0.0)).count(), 0);
        assert_eq!((0..100).filter(|&i| audited("b1", i, 1.0)).count(), 100);
    }
}
