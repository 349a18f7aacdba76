//! What the near-duplicate benchmarks share: deterministic random PDQ
//! hashes and neighbours at a chosen distance, percentiles (loading them
//! into PostgreSQL is `benches/shared/postgres.rs`: this crate's library
//! does not link sqlx).

use picsift_core::pdq::Hash;
use std::time::Duration;

/// xorshift64*: deterministic random hashes.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A random hash.
    pub fn hash(&mut self) -> Hash {
        let mut b = [0u8; 32];
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        Hash::from_bytes(b)
    }

    /// `h` with exactly `d` distinct bits flipped.
    pub fn neighbour(&mut self, h: &Hash, d: u32) -> Hash {
        let mut b = h.to_bytes();
        let mut flipped = std::collections::BTreeSet::new();
        while flipped.len() < d as usize {
            flipped.insert((self.next_u64() % 256) as usize);
        }
        for k in flipped {
            b[k / 8] ^= 1 << (k % 8);
        }
        Hash::from_bytes(b)
    }
}

/// An image id for the `i`th hash.
pub fn id(i: u64) -> String {
    format!("{i:064x}")
}

/// The `p` quantile of `xs` (sorted here).
pub fn percentile(xs: &mut [Duration], p: f64) -> Duration {
    xs.sort();
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
