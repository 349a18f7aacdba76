//! The pure side of a chunk: each entry read (from the staged zip, or for
//! a batch of objects under a prefix, its object) and run through the
//! pipeline on a blocking thread, its quality and ML checks queued. A panic
//! or a decoder that dies costs its entry, never the chunk; a store that
//! cannot be read fails the chunk, to be retried.

use crate::{Result, checks};
use picsift_core::archive::{self, EntryMeta};
use picsift_core::backend::Backends;
use picsift_core::blob_reader::BlobReader;
use picsift_core::pipeline::{self, Prepared};
use picsift_core::verdict::{Reason, Rejection};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use tokio::sync::mpsc;
use zip::ZipArchive;

/// One entry after the pure pipeline.
pub(crate) struct Checked {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) outcome: Result<Prepared, Rejection>,
    /// The quality and ML checks under way, when the policy has any.
    pub(crate) pending: Option<picsift_ml::Pending>,
    /// The entry's bytes as uploaded, kept only for the audit sample.
    pub(crate) audit: Option<Vec<u8>>,
}

impl Checked {
    fn refused(index: u32, name: String, rejection: Rejection) -> Self {
        Self {
            index,
            name,
            outcome: Err(rejection),
            pending: None,
            audit: None,
        }
    }
}

/// What the pipeline's producers need besides the entries.
#[derive(Clone)]
pub(crate) struct Checking {
    pub(crate) policy: Arc<picsift_core::policy::Policy>,
    pub(crate) checker: Option<picsift_ml::Checker>,
    pub(crate) batch_id: Arc<str>,
    /// On a redelivered task: the catalog, to count each entry's decodes.
    pub(crate) guard: Option<(
        Arc<dyn picsift_core::backend::Catalog>,
        tokio::runtime::Handle,
    )>,
    /// Child processes to decode in, if isolated ([`crate::isolated`]).
    pub(crate) decoders: Option<Arc<crate::isolated::DecoderPool>>,
}

/// Decodes of one entry that may end with its worker gone (killed by an
/// abort or out of memory inside a decoder) before it is refused as
/// `decoder_crash`.
const MAX_DECODER_CRASHES: u32 = 1;

impl Checking {
    pub(crate) fn audited(&self, index: u32) -> bool {
        checks::audited(&self.batch_id, index, self.policy.audit.sample_rate)
    }

    /// [`Self::run_unguarded`], counted on a redelivered task: the count
    /// goes up before the decode and down after it, so an entry whose count
    /// is up when its task comes again is one whose decode took its worker
    /// down. The first such crash of a task is not attributed (nothing is
    /// counted on a first delivery, to keep the common path free); the next
    /// is, and the delivery after that refuses the entry.
    fn run(&self, index: u32, name: String, bytes: Vec<u8>) -> Checked {
        let Some((catalog, rt)) = &self.guard else {
            return self.run_unguarded(index, name, bytes);
        };
        match rt.block_on(catalog.begin_attempt(&self.batch_id, index)) {
            Ok(n) if n > MAX_DECODER_CRASHES => {
                tracing::error!(batch = %self.batch_id, index, "entry killed its worker while decoding; refused");
                return Checked::refused(
                    index,
                    name,
                    Rejection::new(
                        Reason::DecoderCrash,
                        "decoding this entry killed its worker (an abort or running out of memory) on two deliveries; it is not tried again",
                    ),
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not count the decode attempt"),
        }
        let checked = self.run_unguarded(index, name, bytes);
        if let Err(e) = rt.block_on(catalog.end_attempt(&self.batch_id, index)) {
            tracing::warn!(error = %e, "could not count the decode attempt's end");
        }
        checked
    }

    /// The pure pipeline on one entry's bytes, then its checks queued.
    fn run_unguarded(&self, index: u32, name: String, bytes: Vec<u8>) -> Checked {
        let audit = self.audited(index).then(|| bytes.clone());
        let prepared = match &self.decoders {
            None => pipeline::prepare_with_pixels(&bytes, &self.policy),
            Some(pool) => {
                // Pixels only as large as the checks' inputs need.
                let reduce_to = self.checker.as_ref().map_or(0, |c| c.largest_input());
                pool.prepare(&bytes, &self.policy, reduce_to)
            }
        };
        let (outcome, pending) = match prepared {
            Err(r) => (Err(r), None),
            Ok((p, pixels)) => match (&self.checker, pixels) {
                (Some(c), Some(rgb)) => (Ok(p), Some(c.submit(c.inputs(&rgb)))),
                // Quality alone is a courtesy; models are a gate that an
                // image without RGB pixels must not slip past.
                (Some(c), None) if c.has_models() => (
                    Err(Rejection::new(
                        Reason::Uncheckable,
                        "the image is CMYK; the policy's models need RGB pixels",
                    )),
                    None,
                ),
                _ => (Ok(p), None),
            },
        };
        Checked {
            index,
            name,
            outcome,
            pending,
            audit,
        }
    }
}

/// The prefix counterpart of [`check_entries`]: each entry is the object
/// `prefix + name`, read whole (up to the policy's entry limit).
pub(crate) async fn check_objects(
    b: Backends,
    prefix: String,
    names: std::collections::HashMap<u32, String>,
    todo: Vec<u32>,
    checking: Checking,
    tx: mpsc::Sender<Result<Checked, String>>,
) {
    for index in todo {
        let name = names.get(&index).cloned().unwrap_or_default();
        let key = format!("{prefix}{name}");
        let limit = checking.policy.max_entry_bytes;
        let spelling = checking.policy.spelling;
        let checked = match b.blobs.get_range(&key, 0..limit.saturating_add(1)).await {
            Err(picsift_core::Error::NotFound(_)) => Checked::refused(
                index,
                name,
                Rejection::new(
                    Reason::StorageError,
                    format!("{key} was deleted before it was checked"),
                ),
            ),
            Err(e) => {
                let _ = tx.send(Err(e.to_string())).await;
                return;
            }
            Ok(bytes) if bytes.len() as u64 > limit => Checked::refused(
                index,
                name,
                Rejection::new(
                    Reason::EntryTooLarge,
                    format!(
                        "{key} is larger than {limit} bytes ({})",
                        spelling.name(picsift_core::setting::Setting::MaxEntryBytes)
                    ),
                ),
            ),
            Ok(bytes) => {
                let checking = checking.clone();
                let named = name.clone();
                tokio::task::spawn_blocking(move || {
                    catch_unwind(AssertUnwindSafe(|| {
                        checking.run(index, named.clone(), bytes.to_vec())
                    }))
                    .unwrap_or_else(|_| crashed(index, named))
                })
                .await
                .unwrap_or_else(|_| crashed(index, name))
            }
        };
        if tx.send(Ok(checked)).await.is_err() {
            return;
        }
    }
}

/// Runs the pure steps for each entry, isolating panics per entry.
///
/// A storage failure while reading (the store briefly unreachable) is not
/// the entry's fault: it ends the walk with `Err`, and the chunk is retried.
pub(crate) fn check_entries(
    reader: BlobReader,
    todo: &[u32],
    checking: &Checking,
    tx: &mpsc::Sender<Result<Checked, String>>,
) {
    let failure = reader.failure();
    let mut archive = match ZipArchive::new(reader) {
        Ok(a) => Some(a),
        Err(e) => {
            if let Some(f) = failure.get() {
                let _ = tx.blocking_send(Err(f));
                return;
            }
            tracing::warn!(error = %e, "staged archive unreadable");
            None
        }
    };
    for &index in todo {
        let checked = match archive.as_mut() {
            None => Checked::refused(
                index,
                String::new(),
                Rejection::new(Reason::InternalError, "the staged archive cannot be read"),
            ),
            Some(a) => {
                let run = catch_unwind(AssertUnwindSafe(|| check_one(a, index, checking)));
                run.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(index, panic = what, "pipeline panicked on an entry");
                    crashed(index, String::new())
                })
            }
        };
        if let Some(f) = failure.get() {
            let _ = tx.blocking_send(Err(f));
            return;
        }
        if tx.blocking_send(Ok(checked)).is_err() {
            return;
        }
    }
}

/// The verdict of an entry whose processing panicked.
fn crashed(index: u32, name: String) -> Checked {
    Checked::refused(
        index,
        name,
        Rejection::new(
            Reason::DecoderCrash,
            "processing this entry panicked; it is refused and the rest of the batch goes on",
        ),
    )
}

fn check_one<R: std::io::Read + std::io::Seek>(
    a: &mut ZipArchive<R>,
    index: u32,
    checking: &Checking,
) -> Checked {
    let meta = match EntryMeta::read(a, index as usize) {
        Ok(m) => m,
        Err(e) => {
            return Checked::refused(
                index,
                String::new(),
                Rejection::new(Reason::DecodeError, format!("entry header unreadable: {e}")),
            );
        }
    };
    let policy = &checking.policy;
    match archive::check_entry(&meta, policy)
        .and_then(|()| archive::read_entry(a, index as usize, &meta, policy))
    {
        Ok(bytes) => checking.run(index, meta.name, bytes),
        Err(r) => Checked::refused(index, meta.name, r),
    }
}
