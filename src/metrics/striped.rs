//! Counters that many threads bump without sharing a cache line: one slot per thread
//! (threads beyond [`STRIPES`] share slots), summed when read. The UDP workers count every
//! query they answer; with prometheus-client's single atomic per counter, N workers would
//! bounce that cache line between their cores on every query.
//!
//! [`StripedCounter`] is one counter; [`StripedCounters`] a block of many (the query
//! counters, one per qtype, rcode and name form), each thread's slots of all of them side
//! by side in lines of their own: a counter is an index, counting it an add at a computed
//! address.

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

/// One cache line of slots (128 bytes, as [`Slot`]).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line([AtomicU64; LINE]);

/// Slots per [`Line`].
const LINE: usize = 16;

/// A block of `len` monotonic counters, each counted by its index; cheap to clone (clones
/// share the counts). Per thread slot, a row of whole lines holding one slot of every
/// counter: rows share no cache line.
#[derive(Debug, Clone)]
pub struct StripedCounters {
    len: usize,
    /// Lines per row.
    row: usize,
    lines: Arc<[Line]>,
}

impl StripedCounters {
    /// `len` counters at 0.
    pub fn new(len: usize) -> Self {
        let row = len.div_ceil(LINE).max(1);
        StripedCounters {
            len,
            row,
            lines: (0..row * STRIPES).map(|_| Line::default()).collect(),
        }
    }

    /// How many counters.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counts one for counter `i` (nothing if there is no such counter).
    pub fn inc(&self, i: usize) {
        if i >= self.len {
            return;
        }
        let line = slot() * self.row + i / LINE;
        if let Some(line) = self.lines.get(line) {
            line.0[i % LINE].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The count of counter `i`: the sum of its slots.
    pub fn get(&self, i: usize) -> u64 {
        if i >= self.len {
            return 0;
        }
        (0..STRIPES)
            .filter_map(|s| self.lines.get(s * self.row + i / LINE))
            .map(|line| line.0[i % LINE].load(Ordering::Relaxed))
            .sum()
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

    #[test]
    fn threads_count_each_counter_apart() {
        let c = StripedCounters::new(40);
        let threads: Vec<_> = (0..20)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.inc(t);
                        c.inc(39);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        c.inc(40);
        for i in 0..20 {
            assert_eq!(c.get(i), 1000, "counter {i}");
        }
        assert_eq!(c.get(20), 0);
        assert_eq!(c.get(39), 20_000);
        assert_eq!(c.get(40), 0, "no such counter");
    }
}
