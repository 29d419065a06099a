//! Deterministic randomness: every random stream is derived from (run seed, step, key, index).
//!
//! Nothing random in shareflow comes from scheduling, worker count or thread identity, so a run is
//! reproducible and 1 worker vs N workers produce the same records. The generator is
//! xoshiro256** seeded through splitmix64 from the stable hash of the derivation path.

use std::hash::Hash;

use crate::hash::StableHasher;
use std::hash::Hasher;

/// A small, fast, reproducible generator (xoshiro256**).
#[derive(Debug, Clone)]
pub struct DetRng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl DetRng {
    /// A generator seeded directly from a `u64`.
    pub fn from_seed(seed: u64) -> Self {
        let mut st = seed;
        let s = [
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
        ];
        Self { s }
    }

    /// The generator for (run seed, step, key, index): e.g. the sampler of response `index` of
    /// variant key `(seed id, k)` at training step `step`.
    pub fn derive<K: Hash + ?Sized>(run_seed: u64, step: u64, key: &K, index: u64) -> Self {
        let mut h = StableHasher::default();
        h.write_u64(run_seed);
        h.write_u64(step);
        key.hash(&mut h);
        h.write_u64(index);
        Self::from_seed(h.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` without modulo bias (Lemire's method). `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "DetRng::below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// `k` distinct indices out of `0..n` in random order (`k` is capped at `n`).
    pub fn choose_distinct(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below((n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_path_same_stream_and_paths_are_independent() {
        let a: Vec<u64> = {
            let mut r = DetRng::derive(7, 3, "seed-1", 0);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = DetRng::derive(7, 3, "seed-1", 0);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        for (run, step, key, idx) in [
            (8, 3, "seed-1", 0),
            (7, 4, "seed-1", 0),
            (7, 3, "seed-2", 0),
            (7, 3, "seed-1", 1),
        ] {
            let mut r = DetRng::derive(run, step, key, idx);
            assert_ne!(r.next_u64(), a[0], "{run} {step} {key} {idx}");
        }
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut r = DetRng::from_seed(1);
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        let mut buckets = [0usize; 10];
        for _ in 0..n {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
            buckets[(u * 10.0) as usize] += 1;
            let z = r.normal();
            s += z;
            s2 += z * z;
        }
        for b in buckets {
            assert!((19_000..21_000).contains(&b), "{buckets:?}");
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
    }

    #[test]
    fn below_and_choose_distinct() {
        let mut r = DetRng::from_seed(2);
        let mut seen = [0usize; 3];
        for _ in 0..30_000 {
            seen[r.below(3) as usize] += 1;
        }
        assert!(
            seen.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{seen:?}"
        );
        let picks = r.choose_distinct(5, 3);
        assert_eq!(picks.len(), 3);
        let mut sorted = picks.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 3);
        assert!(picks.iter().all(|&p| p < 5));
        assert_eq!(r.choose_distinct(2, 5).len(), 2);
    }
}
