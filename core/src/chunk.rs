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

/// Groups `(index, compressed size)` pairs, in order, into chunks of about
/// equal length: as few as the limits allow, and, when the limits call for
/// more than one, a multiple of `lanes` (the chunks processed at once), so
/// that a batch's last chunk does not run alone while the other lanes idle.
/// (Of 40 entries at most 16 a chunk, 16 + 16 + 8 on two lanes leaves one
/// idle for the last 8; 10 + 10 + 10 + 10 does not.) A batch that fits one
/// chunk stays one: its entries are then decided in order, so the first of
/// two identical entries is the one stored.
pub fn group_entries(
    batch_id: &str,
    entries: &[(u32, u64)],
    limits: ChunkLimits,
    lanes: usize,
) -> Vec<ChunkTask> {
    let fewest = greedy(entries, limits).len();
    let lanes = if fewest > 1 { lanes.max(1) } else { 1 };
    let chunks = fewest
        .div_ceil(lanes)
        .saturating_mul(lanes)
        .min(entries.len());
    let balanced = ChunkLimits {
        max_entries: limits
            .max_entries
            .min(entries.len().div_ceil(chunks.max(1)))
            .max(1),
        ..limits
    };
    greedy(entries, balanced)
        .into_iter()
        .map(|entries| ChunkTask {
            batch_id: batch_id.into(),
            entries,
            policy: None,
            owner: default_owner(),
            replanned: false,
        })
        .collect()
}

/// The entries in order, a chunk closed when the next entry would break a
/// limit (a single entry larger than `max_bytes` gets a chunk).
fn greedy(entries: &[(u32, u64)], limits: ChunkLimits) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut bytes = 0u64;
    for &(index, size) in entries {
        if !current.is_empty()
            && (current.len() >= limits.max_entries
                || bytes.saturating_add(size) > limits.max_bytes)
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(index);
        bytes = bytes.saturating_add(size);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entry `i` of `n`, each of `size` bytes.
    fn sized(n: u32, size: u64) -> Vec<(u32, u64)> {
        (0..n).map(|i| (i, size)).collect()
    }

    fn lengths(entries: &[(u32, u64)], limits: ChunkLimits, lanes: usize) -> Vec<usize> {
        group_entries("b", entries, limits, lanes)
            .iter()
            .map(|c| c.entries.len())
            .collect()
    }

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
            // Two chunks either way: two each, not three and one.
            (
                vec![(0, 10), (1, 10), (2, 10), (3, 10)],
                vec![vec![0, 1], vec![2, 3]],
            ),
            (vec![(0, 60), (1, 60), (2, 10)], vec![vec![0], vec![1, 2]]),
            (vec![(0, 500), (1, 1)], vec![vec![0], vec![1]]),
            (vec![(4, 1), (9, 1)], vec![vec![4, 9]]),
        ];
        for (entries, want) in cases {
            let got: Vec<Vec<u32>> = group_entries("b", &entries, limits, 1)
                .into_iter()
                .map(|c| c.entries)
                .collect();
            assert_eq!(got, want, "{entries:?}");
        }
    }

    #[test]
    fn chunks_are_balanced_and_a_multiple_of_the_lanes_when_entries_allow() {
        let limits = ChunkLimits {
            max_entries: 16,
            max_bytes: 64 << 20,
        };
        let photo = 3 << 20;
        type Case = (u32, usize, Vec<usize>);
        let cases: Vec<Case> = vec![
            // One lane: as few chunks as before, evened out.
            (40, 1, vec![14, 14, 12]),
            (32, 1, vec![16, 16]),
            (16, 1, vec![16]),
            // Two lanes: 16 + 16 + 8 would leave one lane idle at the end.
            (40, 2, vec![10, 10, 10, 10]),
            (80, 2, vec![14, 14, 14, 14, 14, 10]),
            (32, 2, vec![16, 16]),
            (20, 4, vec![5, 5, 5, 5]),
            // A batch that fits one chunk stays one (decided in order).
            (3, 2, vec![3]),
            (16, 4, vec![16]),
            (1, 4, vec![1]),
            (0, 2, vec![]),
        ];
        for (n, lanes, want) in cases {
            assert_eq!(
                lengths(&sized(n, photo), limits, lanes),
                want,
                "{n} on {lanes}"
            );
        }
        // Large entries: the byte limit sets the size (25 MB each: two a
        // chunk), however many lanes.
        assert_eq!(lengths(&sized(6, 25 << 20), limits, 1), vec![2, 2, 2]);
        assert_eq!(lengths(&sized(6, 25 << 20), limits, 2), vec![2, 2, 2]);
        assert_eq!(lengths(&sized(6, 25 << 20), limits, 4), vec![2, 2, 2]);
    }
}
