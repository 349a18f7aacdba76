//! An in-memory PDQ index: multi-index hashing (see [`crate::pdq_index`])
//! over arrays in memory instead of catalog rows. The benchmark
//! (`tests/benches/pdq_index.rs`, docs/benchmarks.md) showed the catalog's
//! MIH 8–10× slower than even a brute-force scan of the hashes in memory at
//! 1M images; this is the accelerator it called for. The standalone
//! catalog (one process owns its SQLite file) keeps one, loaded at open and
//! updated with every insert, and answers near-duplicate checks and
//! similar-image searches from it.
//!
//! Memory: 32 bytes per hash, 4 bytes per hash in each of the 16 segment
//! tables (with their spare capacity), and the image id: 264 bytes per
//! image measured (`tests/benches/pdq_index.rs`), 2.6 GB at 10M. The
//! cluster's processes keep one each too (`backends/src/sql/pg_near.rs`).

use crate::pdq::Hash;
use crate::pdq_index::{self, MAX_SEARCH_DISTANCE, SEGMENTS};

/// Hashes and, per segment and 16-bit value, the hashes that have it.
pub struct MemoryIndex {
    hashes: Vec<[u64; 4]>,
    ids: Vec<String>,
    /// `SEGMENTS × 65536` lists of positions in `hashes`, indexed by
    /// [`pdq_index::keys`] (`segment << 16 | value`).
    tables: Vec<Vec<u32>>,
}

impl Default for MemoryIndex {
    fn default() -> Self {
        Self {
            hashes: Vec::new(),
            ids: Vec::new(),
            tables: vec![Vec::new(); SEGMENTS << 16],
        }
    }
}

fn words(h: &Hash) -> [u64; 4] {
    let b = h.to_bytes();
    std::array::from_fn(|i| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap_or([0; 8])))
}

fn distance(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    (0..4).map(|i| (a[i] ^ b[i]).count_ones()).sum()
}

impl MemoryIndex {
    /// Hashes held.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Adds `id` with `hash` (the caller adds each image once).
    pub fn insert(&mut self, id: &str, hash: &Hash) {
        let pos = self.hashes.len() as u32;
        self.hashes.push(words(hash));
        self.ids.push(id.to_string());
        for key in pdq_index::keys(hash) {
            self.tables[key as usize].push(pos);
        }
    }

    /// Every held image within `max_distance` (at most
    /// [`MAX_SEARCH_DISTANCE`]) of `hash`, nearest first (ties by id), as
    /// `(id, distance)`; `keep` filters before the limit.
    pub fn search(
        &self,
        hash: &Hash,
        max_distance: u32,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<(String, u32)> {
        let max = max_distance.min(MAX_SEARCH_DISTANCE);
        let query = words(hash);
        let mut found: Vec<(u32, u32)> = Vec::new();
        for key in pdq_index::probes(hash, max) {
            for &pos in &self.tables[key as usize] {
                let d = distance(&query, &self.hashes[pos as usize]);
                if d <= max {
                    found.push((d, pos));
                }
            }
        }
        found.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| self.ids[a.1 as usize].cmp(&self.ids[b.1 as usize]))
        });
        found.dedup_by_key(|f| f.1);
        found
            .into_iter()
            .filter(|&(_, pos)| keep(&self.ids[pos as usize]))
            .take(limit)
            .map(|(d, pos)| (self.ids[pos as usize].clone(), d))
            .collect()
    }

    /// The same answer by scanning every hash (for tests and benchmarks).
    pub fn scan(&self, hash: &Hash, max_distance: u32, limit: usize) -> Vec<(String, u32)> {
        let query = words(hash);
        let mut found: Vec<(u32, &str)> = self
            .hashes
            .iter()
            .zip(&self.ids)
            .filter_map(|(h, id)| {
                let d = distance(&query, h);
                (d <= max_distance).then_some((d, id.as_str()))
            })
            .collect();
        found.sort_unstable();
        found
            .into_iter()
            .take(limit)
            .map(|(d, id)| (id.to_string(), d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flip(hash: &Hash, bits: &[usize]) -> Hash {
        let mut b = hash.to_bytes();
        for &k in bits {
            b[k / 8] ^= 1 << (k % 8);
        }
        Hash::from_bytes(b)
    }

    proptest! {
        /// MIH in memory answers exactly what a scan answers.
        #[test]
        fn search_equals_a_scan(
            seed in any::<[u8; 32]>(),
            others in proptest::collection::vec((proptest::collection::vec(0usize..256, 0..40), any::<bool>()), 1..60),
            query_flips in proptest::collection::vec(0usize..256, 0..20),
            max in 0u32..=31,
        ) {
            let base = Hash::from_bytes(seed);
            let mut index = MemoryIndex::default();
            for (i, (bits, far)) in others.iter().enumerate() {
                let h = if *far { Hash::from_bytes([i as u8; 32]) } else { flip(&base, bits) };
                index.insert(&format!("{i:04}"), &h);
            }
            let q = flip(&base, &query_flips);
            prop_assert_eq!(index.search(&q, max, 1000, |_| true), index.scan(&q, max, 1000));
        }
    }

    #[test]
    fn keep_filters_before_the_limit() {
        let mut index = MemoryIndex::default();
        let h = Hash::from_bytes([7; 32]);
        for id in ["a", "b", "c"] {
            index.insert(id, &h);
        }
        let got = index.search(&h, 31, 1, |id| id != "a");
        assert_eq!(got, vec![("b".to_string(), 0)]);
        assert_eq!(index.len(), 3);
    }
}
