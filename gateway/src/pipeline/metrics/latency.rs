//! A latency histogram that every request observes without a lock.
//!
//! prometheus-client's `Histogram` takes a write lock per observation and finds the bucket by
//! comparing floats one by one. Every request observes a route's histogram (and a forwarded
//! one its upstream's), from every thread, so that lock was the one place where all requests
//! of a route met. Here an observation is two relaxed additions (its bucket and the sum; the
//! count is the buckets' total), and the bucket is found by arithmetic: the buckets double, so
//! a bucket is a bit length.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// The first bucket's upper bound, in nanoseconds (100 µs).
const FIRST_NANOS: u64 = 100_000;

/// Bounded buckets: 100 µs, 200 µs, ... 100 µs × 2^15 (about 3.3 s). One more, unbounded,
/// takes the rest (`+Inf`).
pub const BOUNDED: usize = 16;

/// Observed durations, shared by clones.
#[derive(Debug, Clone, Default)]
pub struct Latency(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// Per bucket, not cumulative; the last is `+Inf`.
    buckets: [AtomicU64; BOUNDED + 1],
    /// In whole microseconds, each observation rounded to the nearest: additions stay exact
    /// and need no compare-and-swap loop, and the sum wraps only after 2^64 µs (at 1,000
    /// requests always in flight, after 584 years; in nanoseconds it would be 213 days, and
    /// Prometheus would read the wrap as a reset).
    sum_micros: AtomicU64,
}

/// The bucket a duration of `nanos` falls in: the first whose bound it does not exceed.
fn bucket(nanos: u64) -> usize {
    // Bucket i holds (FIRST × 2^(i-1), FIRST × 2^i]. With q = (nanos - 1) / FIRST, that is
    // the i with 2^(i-1) <= q < 2^i: the bit length of q.
    let q = nanos.saturating_sub(1) / FIRST_NANOS;
    let bits = (u64::BITS - q.leading_zeros()) as usize;
    bits.min(BOUNDED)
}

/// Upper bound of bounded bucket `i`, in seconds.
fn bound_seconds(i: usize) -> f64 {
    (FIRST_NANOS << i) as f64 / 1e9
}

impl Latency {
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(b) = self.0.buckets.get(bucket(nanos)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let micros = nanos / 1000 + u64::from(nanos % 1000 >= 500);
        self.0.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with their upper bounds, `f64::MAX` for
    /// `+Inf`). The count is the buckets' total, so a scrape during an observation still
    /// reads a `+Inf` bucket equal to the count, as OpenMetrics requires.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let bound = if i < BOUNDED {
                    bound_seconds(i)
                } else {
                    f64::MAX
                };
                (bound, n.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        // The encoder makes the per-bucket counts cumulative.
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The bucket as prometheus-client finds it: the first bound not below the value.
    fn by_comparison(nanos: u64) -> usize {
        (0..BOUNDED)
            .find(|&i| nanos <= FIRST_NANOS << i)
            .unwrap_or(BOUNDED)
    }

    #[test]
    fn bounds_fall_in_their_own_bucket() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(100_000), 0);
        assert_eq!(bucket(100_001), 1);
        assert_eq!(bucket(200_000), 1);
        assert_eq!(bucket(200_001), 2);
        assert_eq!(bucket(FIRST_NANOS << 15), 15);
        assert_eq!(bucket((FIRST_NANOS << 15) + 1), BOUNDED);
        assert_eq!(bucket(u64::MAX), BOUNDED);
    }

    proptest! {
        #[test]
        fn bucket_is_the_first_bound_not_exceeded(nanos in any::<u64>(), small in 0u64..10_000_000) {
            prop_assert_eq!(bucket(nanos), by_comparison(nanos));
            prop_assert_eq!(bucket(small), by_comparison(small));
        }
    }

    #[test]
    fn snapshot_counts_what_was_observed() {
        let l = Latency::default();
        l.observe(Duration::from_micros(50));
        l.observe(Duration::from_micros(150));
        l.observe(Duration::from_secs(10));
        // Rounded to the nearest microsecond: 0.4 µs down, 0.6 µs up.
        l.observe(Duration::from_nanos(400));
        l.observe(Duration::from_nanos(600));
        let (sum, count, buckets) = l.snapshot();
        assert_eq!(count, 5);
        assert!((sum - 10.000_201).abs() < 1e-9, "{sum}");
        assert_eq!(buckets.len(), BOUNDED + 1);
        assert_eq!(buckets[0], (0.0001, 3));
        assert_eq!(buckets[1], (0.0002, 1));
        assert_eq!(buckets[BOUNDED], (f64::MAX, 1));
    }
}
