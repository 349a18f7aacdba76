//! Intake of a received batch: its entries read from the source's central
//! directory (or the objects under a prefix), recorded in the catalog, and
//! grouped into chunk tasks on the queue.
//!
//! The standalone server, the cluster gateway and worker, and the operator
//! all enqueue batches through [`enqueue_batch`], over the backend traits.

use crate::archive::EntryMeta;
use crate::backend::{Backends, NewBatch, Scheduler};
use crate::blob_reader::BlobReader;
use crate::chunk::{ChunkLimits, group_entries};
use crate::model::{EntryPlan, Phase, is_prefix, owns_source};
use crate::policy::Policy;
use crate::setting::Setting;
use crate::time::now_ms;
use crate::{Error, Result};
use async_trait::async_trait;
use zip::ZipArchive;

/// What enqueueing a batch needs besides the backends.
#[derive(Clone, Debug, Default)]
pub struct IntakeConfig {
    /// The batch's policy: its entry limit, and what the chunk tasks carry
    /// so that any worker applies it.
    pub policy: Policy,
    /// How entries are grouped into chunk tasks.
    pub chunk_limits: ChunkLimits,
    /// Chunks processed at once, where one process takes them all (`picsift
    /// serve`: its concurrency), so that a batch is cut into a multiple of
    /// it ([`group_entries`]); 1 (or 0) where workers come and go.
    pub lanes: usize,
}

/// Reads the staged archive's central directory, records its entries and
/// enqueues chunks for those without a verdict. Safe to call again: entries
/// are recorded once, and decided entries are not enqueued.
pub async fn enqueue_batch(b: &Backends, cfg: &IntakeConfig, batch_id: &str) -> Result<()> {
    let Some(batch) = b.catalog.batch(batch_id).await? else {
        return Ok(());
    };
    if batch.phase.is_final() {
        return Ok(());
    }
    if batch.phase == Phase::Received {
        match read_entries(b, &batch.staged_key, &cfg.policy).await? {
            Ok(entries) => {
                b.catalog
                    .record_entries(batch_id, &entries, now_ms())
                    .await?
            }
            Err(problem) => {
                tracing::warn!(batch = batch_id, %problem, "batch archive unreadable");
                b.catalog.fail_batch(batch_id, &problem, now_ms()).await?;
                if owns_source(&batch.staged_key) {
                    let _ = b.blobs.delete(&batch.staged_key).await;
                }
                return Ok(());
            }
        }
    }
    let pending = b.catalog.pending_entries(batch_id).await?;
    for mut task in group_entries(batch_id, &pending, cfg.chunk_limits, cfg.lanes) {
        task.policy = Some(cfg.policy.clone());
        task.owner = batch.owner.clone();
        task.replanned = batch.phase == Phase::Processing;
        b.queue.enqueue(task).await?;
    }
    if pending.is_empty()
        && b.catalog.try_complete(batch_id, now_ms()).await?
        && owns_source(&batch.staged_key)
    {
        let _ = b.blobs.delete(&batch.staged_key).await;
    }
    Ok(())
}

/// The entries of a batch's source (a zip, or every object under a
/// prefix), or why it cannot be read.
async fn read_entries(
    b: &Backends,
    key: &str,
    policy: &Policy,
) -> Result<Result<Vec<EntryPlan>, String>> {
    let max_entries = policy.max_entries;
    let limit_name = policy.spelling.name(Setting::MaxEntries);
    if is_prefix(key) {
        return read_prefix(b, key, max_entries, &limit_name).await;
    }
    read_zip_entries(b, key, max_entries, limit_name).await
}

/// Every object under `prefix`, in key order, as entries.
async fn read_prefix(
    b: &Backends,
    prefix: &str,
    max_entries: u64,
    limit_name: &str,
) -> Result<Result<Vec<EntryPlan>, String>> {
    let mut keys = b.blobs.list(prefix).await?;
    keys.retain(|k| !k.ends_with('/'));
    keys.sort();
    if keys.is_empty() {
        return Ok(Err(format!("there are no objects under {prefix}")));
    }
    if keys.len() as u64 > max_entries {
        return Ok(Err(format!(
            "{prefix} holds {} objects; the policy allows {max_entries} ({limit_name})",
            keys.len()
        )));
    }
    let mut entries = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        // A size per object: chunks are balanced by bytes.
        let size = b.blobs.size(key).await?.unwrap_or(0);
        entries.push(EntryPlan {
            index: i as u32,
            name: key[prefix.len()..].to_string(),
            compressed_size: size,
        });
    }
    Ok(Ok(entries))
}

/// The entries of a staged archive, or why it cannot be read.
async fn read_zip_entries(
    b: &Backends,
    key: &str,
    max_entries: u64,
    limit_name: String,
) -> Result<Result<Vec<EntryPlan>, String>> {
    let Some(len) = b.blobs.size(key).await? else {
        return Ok(Err(format!("the staged archive {key} is missing")));
    };
    let reader = BlobReader::new(b.blobs.clone(), key, len, tokio::runtime::Handle::current());
    let failure = reader.failure();
    let read = tokio::task::spawn_blocking(move || {
        let mut archive =
            ZipArchive::new(reader).map_err(|e| format!("the archive cannot be read: {e}"))?;
        // The zip reader keeps one entry per name: a repeated name would
        // leave an entry without a verdict.
        if archive.has_duplicate_names() {
            return Err("the archive holds two entries with the same name".to_string());
        }
        // The gateway checked this for uploads; an UploadBatch applied by
        // hand reaches here unchecked.
        if archive.len() as u64 > max_entries {
            return Err(format!(
                "the archive has {} entries; the policy allows {max_entries} \
                 ({limit_name})",
                archive.len()
            ));
        }
        (0..archive.len())
            .map(|i| {
                let meta = EntryMeta::read(&mut archive, i)
                    .map_err(|e| format!("entry {i} cannot be read: {e}"))?;
                Ok(EntryPlan {
                    index: i as u32,
                    name: meta.name,
                    compressed_size: meta.compressed_size,
                })
            })
            .collect()
    })
    .await
    .map_err(|e| Error::Backend(format!("reading the archive's entries stopped: {e}")))?;
    // A store that could not be read is a retry, not a broken archive.
    if let Some(f) = failure.get() {
        return Err(Error::Backend(format!(
            "reading the staged archive failed: {f}"
        )));
    }
    Ok(read)
}

/// Re-plans every unfinished batch: after a restart, the in-process queue
/// is empty but the catalog knows what is left.
pub async fn resume(b: &Backends, cfg: &IntakeConfig) -> Result<usize> {
    let batches = b.catalog.unfinished_batches().await?;
    for batch in &batches {
        enqueue_batch(b, cfg, &batch.id).await?;
    }
    Ok(batches.len())
}

/// The standalone scheduler: plans a batch in-process as soon as it is received.
pub struct LocalScheduler {
    backends: Backends,
    config: IntakeConfig,
}

impl LocalScheduler {
    /// A scheduler over the given backends.
    pub fn new(backends: Backends, config: IntakeConfig) -> Self {
        Self { backends, config }
    }
}

#[async_trait]
impl Scheduler for LocalScheduler {
    /// One policy, the configured one (also reachable by the name `default`).
    async fn policy(&self, name: Option<&str>) -> Result<Option<Policy>> {
        Ok(matches!(name, None | Some("default")).then(|| self.config.policy.clone()))
    }

    async fn submit(&self, batch: &NewBatch, _policy: Option<&str>) -> Result<()> {
        let (b, cfg, id) = (self.backends.clone(), self.config.clone(), batch.id.clone());
        // Planning reads the whole central directory; the upload response
        // need not wait for it. A backend hiccup is retried with backoff
        // (and a restart re-plans anything left unplanned).
        tokio::spawn(async move {
            let mut delay = std::time::Duration::from_millis(200);
            for attempt in 1..=8 {
                match enqueue_batch(&b, &cfg, &id).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(batch = id, attempt, error = %e, "planning failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            }
            tracing::error!(
                batch = id,
                "planning kept failing; the batch is re-planned at the next start"
            );
        });
        Ok(())
    }
}
