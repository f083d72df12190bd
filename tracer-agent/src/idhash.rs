//! A fast hasher for the maps the event loop looks up on every event, keyed by process and
//! thread ids and descriptors (or socket ids): numbers the kernel hands out, which no remote
//! peer chooses, so the flooding resistance of std's `SipHash` buys nothing there, while
//! `SipHash` took 3 % of the agent's CPU at saturation. Maps keyed by what the network decides
//! (peer addresses) keep std's hasher. The mixing is `FxHash`'s (rustc's own), with a final
//! rotation that brings the well-mixed high bits down to the bucket index.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

const SEED: u64 = 0xf135_7aea_2e62_a9c5;

impl IdHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }

    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.add(u64::from(v));
    }

    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }

    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

/// A `HashMap` with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn nearby_keys_spread_over_buckets() {
        // (pid, fd) pairs as a busy node has them: the low bits of the hash pick the bucket.
        let build = BuildHasherDefault::<IdHasher>::default();
        let buckets: HashSet<u64> = (0..64u32)
            .flat_map(|pid| (3..67u32).map(move |fd| (1000 + pid, fd)))
            .map(|key| build.hash_one(key) & 4095)
            .collect();
        assert!(
            buckets.len() > 2500,
            "{} of 4096 buckets used",
            buckets.len()
        );
        let mut map: IdMap<(u32, u32), u32> = IdMap::default();
        map.insert((1, 2), 3);
        assert_eq!(map.get(&(1, 2)), Some(&3));
    }
}
