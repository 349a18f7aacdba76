//! Multi-index hashing over PDQ hashes (Norouzi, Punjani and Fleet,
//! "Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012).
//!
//! A 256-bit hash is cut into 16 segments of 16 bits, each indexed under the
//! key `segment << 16 | value` (`pdq_memory::MemoryIndex`, in every process
//! that checks near duplicates). Two hashes within
//! distance `d` differ in at most `d / 16` bits of some segment (pigeonhole:
//! were every segment `d / 16 + 1` or more bits apart, the hashes would be
//! at least `16 * (d / 16 + 1) > d` apart). So probing each segment's value
//! and every value within `d / 16` bits of it finds every neighbour; the
//! candidates are then checked exactly by popcount. At the matching
//! threshold (31) that is 16 × (1 + 16) = 272 probes.

use crate::pdq::Hash;

/// Segments per hash.
pub const SEGMENTS: usize = 16;

/// The farthest distance [`probes`] can guarantee to find every neighbour
/// for (probing up to one flipped bit per segment).
pub const MAX_SEARCH_DISTANCE: u32 = 31;

/// The 16-bit value of each segment, most significant bits first.
pub fn segments(hash: &Hash) -> [u16; SEGMENTS] {
    let b = hash.to_bytes();
    std::array::from_fn(|i| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]))
}

fn key(segment: usize, value: u16) -> i64 {
    ((segment as i64) << 16) | i64::from(value)
}

/// The index keys stored for `hash`: one per segment.
pub fn keys(hash: &Hash) -> [i64; SEGMENTS] {
    let s = segments(hash);
    std::array::from_fn(|i| key(i, s[i]))
}

/// The keys a check-and-insert of `hash` locks so that it is ordered with
/// every concurrent one of a hash within [`MAX_SEARCH_DISTANCE`] of it, and
/// with no other: per segment, its value with each bit in turn cleared
/// (the value itself, unless every bit is set, and the value with each of
/// its set bits cleared: about 9 keys per segment, 144 in all), sorted. Two hashes within 31 bits have a segment whose values `v`, `w`
/// differ in at most one bit (the pigeonhole argument above): when equal
/// they share all of that segment's keys, and when they differ in bit `c`
/// both include `v & !(1 << c) == w & !(1 << c)`. The keys do not depend
/// on the distance a check uses, so checks of different thresholds are
/// ordered too. Random hashes share a key rarely (about one pair in 50),
/// so concurrent inserts seldom wait for each other.
pub fn lock_keys(hash: &Hash) -> Vec<i64> {
    let mut out: Vec<i64> = segments(hash)
        .into_iter()
        .enumerate()
        .flat_map(|(i, v)| (0..16).map(move |bit| key(i, v & !(1 << bit))))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Every key [`lock_keys`] can name: `SEGMENTS × 65536`, from 0.
pub const LOCK_KEY_COUNT: i64 = (SEGMENTS as i64) << 16;

/// The keys to look up to find every stored hash within `max_distance`
/// (clamped to [`MAX_SEARCH_DISTANCE`]) of `hash`.
pub fn probes(hash: &Hash, max_distance: u32) -> Vec<i64> {
    let flips = max_distance.min(MAX_SEARCH_DISTANCE) / SEGMENTS as u32;
    let mut out = Vec::with_capacity(SEGMENTS * 17);
    for (i, v) in segments(hash).into_iter().enumerate() {
        out.push(key(i, v));
        if flips >= 1 {
            out.extend((0..16).map(|bit| key(i, v ^ (1 << bit))));
        }
    }
    out
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

    #[test]
    fn probe_counts() {
        let h = Hash::from_bytes([0xA5; 32]);
        assert_eq!(probes(&h, 0).len(), 16);
        assert_eq!(probes(&h, 15).len(), 16);
        assert_eq!(probes(&h, 16).len(), 272);
        assert_eq!(probes(&h, 31).len(), 272);
        assert_eq!(probes(&h, 200).len(), 272, "clamped to what MIH guarantees");
    }

    #[test]
    fn lock_keys_are_each_segment_as_it_is_and_with_a_set_bit_cleared() {
        // All bits clear: the value alone; all set: only the 16 cleared.
        assert_eq!(lock_keys(&Hash::from_bytes([0; 32])).len(), 16);
        assert_eq!(lock_keys(&Hash::from_bytes([0xFF; 32])).len(), 16 * 16);
        assert_eq!(lock_keys(&Hash::from_bytes([0x0F; 32])).len(), 16 * 9);
        let mut b = [0u8; 32];
        b[0] = 0b1000_0001;
        let first: Vec<i64> = lock_keys(&Hash::from_bytes(b))
            .into_iter()
            .take(3)
            .collect();
        assert_eq!(first, vec![0x0100, 0x8000, 0x8100], "segment 0 is 0x8100");
    }

    #[test]
    fn hashes_32_bits_apart_two_per_segment_share_no_lock_key() {
        // Beyond the guarantee, as with the probes: no ordering is needed.
        let a = Hash::from_bytes([0; 32]);
        let bits: Vec<usize> = (0..16).flat_map(|s| [s * 16, s * 16 + 1]).collect();
        let (ka, kb) = (lock_keys(&a), lock_keys(&flip(&a, &bits)));
        assert!(!ka.iter().any(|k| kb.contains(k)));
    }

    #[test]
    fn keys_name_segment_and_value() {
        let mut b = [0u8; 32];
        b[0] = 0x12;
        b[1] = 0x34;
        b[31] = 0x01;
        let k = keys(&Hash::from_bytes(b));
        assert_eq!(k[0], 0x1234);
        assert_eq!(k[15], (15 << 16) | 1);
    }

    proptest! {
        /// The guarantee the index rests on: every hash within 31 bits
        /// shares at least one probed key.
        #[test]
        fn every_neighbour_within_31_bits_is_probed(
            seed in any::<[u8; 32]>(),
            bits in proptest::collection::btree_set(0usize..256, 0..=31),
        ) {
            let a = Hash::from_bytes(seed);
            let b = flip(&a, &bits.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(a.distance(&b), bits.len() as u32);
            let probed = probes(&a, 31);
            prop_assert!(keys(&b).iter().any(|k| probed.contains(k)));
        }

        /// The guarantee near-duplicate inserts rest on: two hashes within
        /// 31 bits always lock a key in common.
        #[test]
        fn hashes_within_31_bits_share_a_lock_key(
            seed in any::<[u8; 32]>(),
            bits in proptest::collection::btree_set(0usize..256, 0..=31),
        ) {
            let a = Hash::from_bytes(seed);
            let b = flip(&a, &bits.iter().copied().collect::<Vec<_>>());
            let (ka, kb) = (lock_keys(&a), lock_keys(&b));
            prop_assert!(ka.iter().any(|k| kb.binary_search(k).is_ok()));
            prop_assert!(ka.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
            prop_assert!(ka.iter().all(|&k| (0..LOCK_KEY_COUNT).contains(&k)));
        }

        #[test]
        fn every_neighbour_within_15_bits_shares_an_exact_segment(
            seed in any::<[u8; 32]>(),
            bits in proptest::collection::btree_set(0usize..256, 0..=15),
        ) {
            let a = Hash::from_bytes(seed);
            let b = flip(&a, &bits.iter().copied().collect::<Vec<_>>());
            let probed = probes(&a, 15);
            prop_assert!(keys(&b).iter().any(|k| probed.contains(k)));
        }
    }

    #[test]
    fn worst_case_two_bits_in_every_segment_is_32_apart_and_may_be_missed() {
        // 2 bits in each of 16 segments: distance 32, beyond the guarantee.
        let a = Hash::from_bytes([0; 32]);
        let bits: Vec<usize> = (0..16).flat_map(|s| [s * 16, s * 16 + 1]).collect();
        let b = flip(&a, &bits);
        assert_eq!(a.distance(&b), 32);
        let probed = probes(&a, 31);
        assert!(!keys(&b).iter().any(|k| probed.contains(k)));
    }
}
