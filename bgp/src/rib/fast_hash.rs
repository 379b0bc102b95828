//! The hasher of the RIB's tables. Their keys are integers (packed prefixes, peer ids,
//! pointers) and every received prefix costs several lookups, which std's SipHash makes the
//! largest single cost of taking in a table. This is a folded multiply (the product's high and
//! low halves xored, so both ends of the hash are mixed), seeded once per process at random so
//! a peer cannot choose prefixes that collide.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::OnceLock;

/// 2^64 divided by the golden ratio: its product with a key mixes the low bits upwards.
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| RandomState::new().hash_one(0x5eed_u64))
}

#[derive(Clone, Copy, Debug)]
pub struct FastHash {
    seed: u64,
}

impl Default for FastHash {
    fn default() -> Self {
        FastHash { seed: seed() }
    }
}

impl BuildHasher for FastHash {
    type Hasher = Folded;

    fn build_hasher(&self) -> Folded {
        Folded { h: self.seed }
    }
}

pub struct Folded {
    h: u64,
}

impl Hasher for Folded {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.h = fold(self.h ^ n, MULTIPLIER);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn packed_prefixes_spread_over_the_low_bits() {
        // Keys of /24s differ only above their low 8 bits (address << 8 | 24); the table
        // indexes by the hash's low bits, which must still differ.
        let h = FastHash::default();
        let low: HashSet<u64> = (0..4096u64).map(|i| h.hash_one(((0x0a00_0000 + (i << 8)) << 8) | 24) & 0xfff).collect();
        assert!(low.len() > 2500, "only {} distinct low 12-bit values of 4096", low.len());
        let high: HashSet<u64> = (0..4096u64).map(|i| h.hash_one(((0x0a00_0000 + (i << 8)) << 8) | 24) >> 57).collect();
        assert_eq!(high.len(), 128, "all control-byte values used");
    }
}
