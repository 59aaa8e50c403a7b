//! Counters the domain keeps about itself for operators (read by the metrics endpoint): plain
//! atomics, so counting costs the hot path one relaxed add and nothing knows of how they are
//! exported.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lookups in one cache: answered from it, or not (absent, or due for revalidation).
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheStats {
    /// Count one lookup; returns `found` so a lookup can be counted where it is made.
    pub fn count<T>(&self, found: Option<T>) -> Option<T> {
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hits_and_misses() {
        let stats = CacheStats::default();
        assert_eq!(stats.count(Some(1)), Some(1));
        assert_eq!(stats.count(None::<u8>), None);
        assert_eq!(stats.count(Some(2)), Some(2));
        assert_eq!((stats.hits(), stats.misses()), (2, 1));
    }
}
