//! Chunk planning: a batch's entries grouped into tasks a worker takes one
//! at a time.

use serde::{Deserialize, Serialize};

/// Deliveries of a chunk task before it is dead-lettered, unless configured.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// One unit of work: some entries of one batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkTask {
    /// The batch.
    pub batch_id: String,
    /// Entry indices in the archive, ascending.
    pub entries: Vec<u32>,
    /// The batch's policy (its ValidationPolicy in the cluster), carried
    /// with the task so any worker applies it; `None`: the worker's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::Policy>,
    /// The tenant that uploaded the batch (per-tenant dedup and image
    /// ownership).
    #[serde(default = "default_owner")]
    pub owner: String,
    /// Planned again for a batch that was already processing (a restart,
    /// or tasks lost with their queue): its decodes are counted as on a
    /// redelivery, since a worker may have died on one of its entries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replanned: bool,
}

fn default_owner() -> String {
    crate::auth::DEFAULT_TENANT.to_string()
}

/// Limits of one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Most entries per chunk.
    pub max_entries: usize,
    /// Most compressed bytes per chunk (a single larger entry still gets a chunk).
    pub max_bytes: u64,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            max_entries: 16,
            max_bytes: 64 << 20,
        }
    }
}

/// Groups `(index, compressed size)` pairs, in order, into chunks.
pub fn group_entries(
    batch_id: &str,
    entries: &[(u32, u64)],
    limits: ChunkLimits,
) -> Vec<ChunkTask> {
    let mut out = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut bytes = 0u64;
    for &(index, size) in entries {
        if !current.is_empty()
            && (current.len() >= limits.max_entries
                || bytes.saturating_add(size) > limits.max_bytes)
        {
            out.push(ChunkTask {
                batch_id: batch_id.into(),
                entries: std::mem::take(&mut current),
                policy: None,
                owner: default_owner(),
                replanned: false,
            });
            bytes = 0;
        }
        current.push(index);
        bytes = bytes.saturating_add(size);
    }
    if !current.is_empty() {
        out.push(ChunkTask {
            batch_id: batch_id.into(),
            entries: current,
            policy: None,
            owner: default_owner(),
            replanned: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_both_limits_and_keep_every_entry_once() {
        let limits = ChunkLimits {
            max_entries: 3,
            max_bytes: 100,
        };
        type Case = (Vec<(u32, u64)>, Vec<Vec<u32>>);
        let cases: Vec<Case> = vec![
            (vec![], vec![]),
            (vec![(0, 10)], vec![vec![0]]),
            (
                vec![(0, 10), (1, 10), (2, 10), (3, 10)],
                vec![vec![0, 1, 2], vec![3]],
            ),
            (vec![(0, 60), (1, 60), (2, 10)], vec![vec![0], vec![1, 2]]),
            (vec![(0, 500), (1, 1)], vec![vec![0], vec![1]]),
            (vec![(4, 1), (9, 1)], vec![vec![4, 9]]),
        ];
        for (entries, want) in cases {
            let got: Vec<Vec<u32>> = group_entries("b", &entries, limits)
                .into_iter()
                .map(|c| c.entries)
                .collect();
            assert_eq!(got, want, "{entries:?}");
        }
    }
}
