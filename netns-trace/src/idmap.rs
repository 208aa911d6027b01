//! Hash maps keyed by kernel identifiers (namespace inodes, thread ids,
//! kernel addresses), on the loader's per-event path. std's SipHash
//! resists keys chosen to collide, which these are not (the kernel picks
//! them), and cost the replay bench a few percent of each record; one
//! multiply and a fold spread them as well for hashbrown, which takes the
//! bucket from the low bits and a tag from the high ones.
use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Addresses are aligned (low bits zero) and inodes sequential: a
        // full 64-bit finaliser (two multiplies, three folds) spreads every
        // input bit over the low bits (bucket) and the top ones (tag).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only integer keys are meant; anything else still hashes.
        for &b in bytes {
            self.write_u64(b.into());
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(v.into());
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = self.0.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn aligned_and_sequential_keys_spread_over_buckets() {
        let b = BuildHasherDefault::<IdHasher>::default();
        for keys in [
            (0..4096u64)
                .map(|i| 0xff11_0000_0300_0000 + i * 0x2000)
                .collect::<Vec<_>>(),
            (0..4096u64).map(|i| 4_026_532_000 + i).collect(),
        ] {
            // The low 12 bits pick among 4,096 buckets: as many must be
            // used as by a random function (about 4096 * (1 - 1/e) = 2589).
            let used: IdSet<u64> = keys.iter().map(|k| b.hash_one(k) & 0xfff).collect();
            assert!(used.len() > 2450, "{} of 4096 buckets", used.len());
            // And the top 7 bits (hashbrown's tag) must vary too.
            let tags: IdSet<u64> = keys.iter().map(|k| b.hash_one(k) >> 57).collect();
            assert_eq!(tags.len(), 128);
        }
    }

    #[test]
    fn a_map_works_as_a_map() {
        let mut m: IdMap<u32, &str> = IdMap::default();
        m.insert(7, "a");
        m.insert(4_026_532_115, "b");
        assert_eq!(m.remove(&7), Some("a"));
        assert_eq!(m.get(&4_026_532_115), Some(&"b"));
        assert_eq!(m.len(), 1);
    }
}
