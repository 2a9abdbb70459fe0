//! At most one log line per interval for an event a remote party can repeat at will (a DNS
//! client's packets, a Consul's answers): the lines held back in between are counted, and
//! the count goes with the next line let through.
//!
//! ```
//! use consul_dns::log_limit::LogLimit;
//!
//! static INDEX_RESET: LogLimit = LogLimit::every_interval();
//!
//! if let Some(suppressed) = INDEX_RESET.allow() {
//!     tracing::info!(suppressed, "Consul index went backwards; watch reset");
//! } else {
//!     tracing::debug!("Consul index went backwards; watch reset");
//! }
//! ```
//!
//! Cheap on a hot path: a clock read and one or two relaxed atomic operations, no lock.
//! Imports nothing of the crate: both sides may use it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The interval of [`LogLimit::every_interval`]: one line per event kind per 10 s at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Lets one line through per `interval`; counts the others.
#[derive(Debug)]
pub struct LogLimit {
    interval: u64,
    /// When the next line may go, in nanoseconds since [`epoch`] (0: at once).
    next: AtomicU64,
    /// Lines held back since the last one let through.
    suppressed: AtomicU64,
}

impl LogLimit {
    /// A limit of one line per `interval` (usable in a `static`).
    pub const fn new(interval: Duration) -> LogLimit {
        let nanos = interval.as_nanos();
        LogLimit {
            interval: if nanos > u64::MAX as u128 {
                u64::MAX
            } else {
                nanos as u64
            },
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// A limit of one line per [`LOG_INTERVAL`].
    pub const fn every_interval() -> LogLimit {
        LogLimit::new(LOG_INTERVAL)
    }

    /// `Some(n)`: log this one now; `n` lines were held back since the last one let
    /// through. `None`: hold this one back (it is counted).
    pub fn allow(&self) -> Option<u64> {
        let now = since_epoch();
        let next = self.next.load(Ordering::Relaxed);
        if now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now.saturating_add(self.interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Nanoseconds since the first clock read of any limit in this process.
fn since_epoch() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let elapsed = EPOCH.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(elapsed).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_others() {
        let limit = LogLimit::new(Duration::from_millis(200));
        assert_eq!(limit.allow(), Some(0), "the first line goes at once");
        for _ in 0..1000 {
            assert_eq!(limit.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limit.allow(), Some(1000), "the next one carries the count");
        assert_eq!(limit.allow(), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limit.allow(), Some(1), "the count starts again");
    }

    #[test]
    fn threads_racing_let_one_line_through() {
        let limit = LogLimit::new(Duration::from_secs(3600));
        let allowed = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if limit.allow().is_some() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(Ordering::Relaxed), 1);
        assert_eq!(limit.suppressed.load(Ordering::Relaxed), 79_999);
    }

    #[test]
    fn limits_are_independent() {
        let (a, b) = (LogLimit::every_interval(), LogLimit::every_interval());
        assert_eq!(a.allow(), Some(0));
        assert_eq!(b.allow(), Some(0));
        assert_eq!(a.allow(), None);
    }
}
