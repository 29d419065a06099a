//! A hash that is the same in every worker, process and run (FNV-1a, little-endian integers).
//!
//! Exchange routing and derived randomness must not depend on `std`'s randomly keyed hasher.

use std::hash::{Hash, Hasher};

/// FNV-1a over the bytes a value writes, integers written little-endian.
#[derive(Debug, Clone)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        // A final avalanche (splitmix64's) so that low bits are usable for `% peers`.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }
    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }
    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }
    fn write_usize(&mut self, i: usize) {
        self.write(&(i as u64).to_le_bytes());
    }
}

/// The stable hash of any `Hash` value.
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// The worker (of `workers`) that owns the seed question with group key `key`: it feeds the
/// seed, samples its responses and scores its old log-probs. A function of the key alone, so the
/// same seed has the same owner in every run with the same number of workers. The stock seed keys
/// are positions in the step (`000003`): those go round-robin, so that a step's seeds spread
/// evenly over the workers; any other key goes by its stable hash.
pub fn seed_owner(key: &str, workers: usize) -> usize {
    let workers = workers.max(1) as u64;
    let slot = match key.parse::<u64>() {
        Ok(position) => position % workers,
        Err(_) => stable_hash(key) % workers,
    };
    slot as usize
}

/// Which workers own the seed questions: `count` workers from worker `first` on (every worker,
/// or, with the update placed on worker 0 alone, workers 1..: the disaggregated layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedPlacement {
    pub first: usize,
    pub count: usize,
}

impl SeedPlacement {
    /// Every one of `workers` workers owns seeds.
    pub fn all(workers: usize) -> Self {
        Self {
            first: 0,
            count: workers.max(1),
        }
    }

    /// The owner of the seed with group key `key` ([`seed_owner`] among these workers).
    pub fn owner(&self, key: &str) -> usize {
        self.first + seed_owner(key, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_positions_go_round_robin_other_keys_by_hash() {
        let owners: Vec<usize> = (0..6).map(|b| seed_owner(&format!("{b:06}"), 3)).collect();
        assert_eq!(owners, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(seed_owner("q-17", 4), (stable_hash("q-17") % 4) as usize);
        assert_eq!(seed_owner("000005", 1), 0);
        assert_eq!(seed_owner("000005", 0), 0);
    }

    #[test]
    fn known_values_do_not_change_between_builds() {
        // Pinned: a change of the hash reshuffles routing and every derived random stream, which
        // breaks the reproducibility of recorded runs, so it must be a visible decision.
        assert_eq!(stable_hash("seed-17"), 0xb1f8_36d4_d6c3_3777);
        assert_eq!(stable_hash(&(3u64, 1u32)), 0xed86_360c_c777_aae7);
        assert_ne!(stable_hash(&(1u64, 2u64)), stable_hash(&(2u64, 1u64)));
    }

    #[test]
    fn low_bits_spread_over_peers() {
        let mut counts = [0usize; 4];
        for i in 0..4000u64 {
            counts[(stable_hash(&format!("seed{i}")) % 4) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn split_placement_keeps_seeds_off_worker_0() {
        let split = SeedPlacement { first: 1, count: 2 };
        let owners: Vec<usize> = (0..6).map(|b| split.owner(&format!("{b:06}"))).collect();
        assert_eq!(owners, vec![1, 2, 1, 2, 1, 2]);
        assert_eq!(
            SeedPlacement::all(3).owner("000004"),
            seed_owner("000004", 3)
        );
    }
}
