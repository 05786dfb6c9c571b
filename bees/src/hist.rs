//! A mergeable, serializable histogram of `u64` values (microseconds here).
//!
//! Log-linear buckets: exact below 32, then 16 buckets per power of two (at most 1/16,
//! 6.3 %, relative error on a quantile). Only non-empty buckets are stored, so a shard's JSON
//! stays small and merging two shards adds their bucket counts: quantiles of the merged
//! histogram are quantiles of all values together, which averaging shard quantiles is not.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Values below this are counted one bucket each.
const EXACT: u64 = 32;
/// log2 of the sub-buckets per power of two above [`EXACT`].
const SUB_BITS: u32 = 4;

/// A histogram; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bucket index → count.
    buckets: BTreeMap<u32, u64>,
    /// Values recorded.
    count: u64,
    /// Their sum.
    sum: u64,
    /// The largest, exact.
    max: u64,
}

/// Quantiles of a histogram, in the unit of its values divided by 1000 (µs → ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

fn index(v: u64) -> u32 {
    if v < EXACT {
        return v as u32;
    }
    let exp = 63 - v.leading_zeros(); // ≥ 5
    let sub = (v >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT as u32 + (exp - 5) * (1 << SUB_BITS) + sub as u32
}

/// The middle of bucket `i`.
fn value(i: u32) -> u64 {
    if u64::from(i) < EXACT {
        return u64::from(i);
    }
    let k = i - EXACT as u32;
    let exp = k / (1 << SUB_BITS) + 5;
    let sub = u64::from(k % (1 << SUB_BITS));
    let low = (1u64 << exp) + (sub << (exp - SUB_BITS));
    low + (1u64 << (exp - SUB_BITS)) / 2
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        *self.buckets.entry(index(v)).or_insert(0) += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (&i, &c) in &other.buckets {
            *self.buckets.entry(i).or_insert(0) += c;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean, if any value was recorded.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at quantile `q` (0..=1), within the bucket error; the largest is exact.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&i, &c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return Some(value(i).min(self.max));
            }
        }
        Some(self.max)
    }

    /// p50, p95, p99 and max divided by 1000 (microseconds in, milliseconds out).
    pub fn quantiles_ms(&self) -> Option<Quantiles> {
        let ms = |q: f64| self.quantile(q).unwrap_or(0) as f64 / 1000.0;
        (self.count > 0).then(|| Quantiles {
            p50: ms(0.5),
            p95: ms(0.95),
            p99: ms(0.99),
            max: self.max as f64 / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_bucket_error() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for q in [0.5, 0.95, 0.99] {
            let got = h.quantile(q).unwrap() as f64;
            let want = q * 100_000.0;
            assert!((got - want).abs() / want < 0.07, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), Some(100_000));
        assert_eq!(h.count(), 100_000);
        for v in 0..EXACT {
            assert_eq!(value(index(v)), v);
        }
    }

    #[test]
    fn merging_is_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in 0..1000u64 {
            let v = v * v;
            if v % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
        let json = serde_json::to_string(&a).unwrap();
        let back: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, all);
    }
}
