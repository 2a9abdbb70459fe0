//! A counter that many threads bump without sharing a cache line: one slot per thread
//! (threads beyond [`STRIPES`] share slots), summed when read. The UDP workers count every
//! query they answer; with prometheus-client's single atomic per counter, N workers would
//! bounce that cache line between their cores on every query.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Slots per counter: as many threads as this count without sharing one.
pub const STRIPES: usize = 16;

/// One slot, alone on its cache line (128 bytes: adjacent-line prefetching pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// A monotonic counter, cheap to clone (clones share the count).
#[derive(Debug, Clone, Default)]
pub struct StripedCounter(Arc<[Slot; STRIPES]>);

/// The slot of the calling thread: threads take slots in the order they first count.
fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    SLOT.with(|s| *s)
}

impl StripedCounter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0[slot()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count: the sum of the slots.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for StripedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for StripedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_count_into_one_sum() {
        let c = StripedCounter::default();
        let threads: Vec<_> = (0..40)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        c.inc_by(5);
        assert_eq!(c.get(), 40_005);
    }
}
