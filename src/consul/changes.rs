//! A process-wide count of the changes an answer may rest on: a service's data, a watch
//! ending, the service list, a watch starting or ceasing to fail. A stored response (see
//! `ServiceBasis`) checks what it rests on in full only when the count has moved since it
//! last did, so a hit mostly reads one word every core already has in its cache, instead
//! of a service's own counters wherever they are in memory.

use std::sync::atomic::{AtomicU64, Ordering};

static CHANGES: AtomicU64 = AtomicU64::new(0);

/// Notes a change, after it is made.
pub fn note() {
    CHANGES.fetch_add(1, Ordering::Release);
}

/// The changes noted so far.
pub fn count() -> u64 {
    CHANGES.load(Ordering::Acquire)
}
