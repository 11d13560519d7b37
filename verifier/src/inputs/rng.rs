//! A counter-based random source: element `i` of a tensor draws from its own stream, derived
//! from (tensor key, i). Values therefore do not depend on how the work is split across threads
//! or machines. The mixer is SplitMix64's finaliser (Steele, Lea, Flood 2014), whose output
//! passes BigCrush; keys come from SHA-256 of everything that identifies an input.

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stream of one element (or one pair, row or word, whatever the generator's unit is).
#[derive(Debug, Clone)]
pub struct Stream {
    state: u64,
}

impl Stream {
    #[inline]
    pub fn at(key: u64, index: u64) -> Stream {
        Stream {
            state: mix64(key ^ mix64(index.wrapping_mul(GAMMA).wrapping_add(GAMMA))),
        }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// Uniform in [0, 1), 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe under `ln`.
    #[inline]
    pub fn uniform_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) for n >= 1 (multiply-shift; bias below n / 2^64).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Shuffles `v` in place (Fisher-Yates, from the back), every order equally likely.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    /// Two independent standard normals (Box-Muller).
    #[inline]
    pub fn normal_pair(&mut self) -> (f64, f64) {
        let r = (-2.0 * self.uniform_open0().ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * self.uniform()).sin_cos();
        (r * c, r * s)
    }

    /// Student's t with `df` degrees of freedom (Bailey's polar method, 1994).
    #[inline]
    pub fn student_t(&mut self, df: f64) -> f64 {
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let w = u * u + v * v;
            if w > 0.0 && w <= 1.0 {
                return u * (df * (w.powf(-2.0 / df) - 1.0) / w).sqrt();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        (m, v)
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|i| Stream::at(7, i).next_u64()).collect();
        let b: Vec<u64> = (0..4).map(|i| Stream::at(7, i).next_u64()).collect();
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        assert_ne!(Stream::at(8, 0).next_u64(), a[0]);
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let n = 200_000u64;
        let normals: Vec<f64> = (0..n / 2)
            .flat_map(|i| {
                let (a, b) = Stream::at(1, i).normal_pair();
                [a, b]
            })
            .collect();
        let (m, v) = moments(&normals);
        assert!(m.abs() < 0.01 && (v - 1.0).abs() < 0.02, "normal {m} {v}");
        let unif: Vec<f64> = (0..n).map(|i| Stream::at(2, i).uniform()).collect();
        let (m, v) = moments(&unif);
        assert!((m - 0.5).abs() < 0.01 && (v - 1.0 / 12.0).abs() < 0.005);
        // t with df = 5: variance df / (df - 2).
        let t: Vec<f64> = (0..n).map(|i| Stream::at(3, i).student_t(5.0)).collect();
        let (m, v) = moments(&t);
        assert!(m.abs() < 0.02 && (v - 5.0 / 3.0).abs() < 0.1, "t {m} {v}");
        let counts = (0..n).fold([0u64; 3], |mut c, i| {
            c[Stream::at(4, i).below(3) as usize] += 1;
            c
        });
        assert!(counts
            .iter()
            .all(|&c| (c as f64 - n as f64 / 3.0).abs() < 2000.0));
    }
}
