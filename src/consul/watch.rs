//! The blocking-query loop of one Consul resource (http-api.md §6).
//!
//! Invariants:
//! - the index sent is never 0 after the first answer (an index of 0 never blocks, so a
//!   loop on it would hammer Consul);
//! - an index that goes backwards (snapshot restore, new cluster) resets the watch and the
//!   body replaces the previous state;
//! - the loop is rate limited (a token bucket), so a resource whose index moves on every
//!   request cannot turn the watch into a busy loop, while ordinary changes pass at once;
//! - errors keep the last good state: the caller is only told about successful reads;
//!   retries back off with jitter, capped at about a second so a watch resumes quickly
//!   when Consul comes back, and longer on 403 (an ACL problem is not fixed by retrying).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{ConsulClient, ConsulError, QueryMeta};
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::view::freshness::WatchHealth;

/// What an answer's index means for the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexStep {
    /// The index did not move: nothing changed (the wait timed out).
    Unchanged,
    /// The index moved forward: the body is the new state.
    Changed,
    /// The index went backwards: the body is a fresh full state.
    Reset,
}

/// Applies the client rules of Consul's blocking queries: returns what the answer means and
/// the index to send next.
pub fn next_index(current: u64, returned: u64) -> (IndexStep, u64) {
    let (step, next) = if returned < current {
        (IndexStep::Reset, 0)
    } else if returned == current {
        (IndexStep::Unchanged, current)
    } else {
        (IndexStep::Changed, returned)
    };
    // Never block on 0: it would return at once, every time.
    (step, next.max(1))
}

/// Token bucket: `burst` requests at once, then one every `1/rate` seconds.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl RateLimit {
    /// Ordinary catalog changes pass at once; a resource changing on every request is
    /// read at most 20 times a second.
    pub fn for_watch() -> Self {
        Self::new(10, 20.0)
    }

    pub fn new(burst: u32, per_second: f64) -> Self {
        RateLimit {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second,
            last: Instant::now(),
        }
    }

    /// Adds the tokens earned since the last call, up to the burst.
    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
    }

    /// Takes a token if one is left; never goes into debt.
    pub fn try_take(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long to wait before the next request (and takes its token).
    pub fn take(&mut self) -> Duration {
        self.refill();
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

/// Exponential backoff with jitter for failed reads.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);
    const MAX_FORBIDDEN: Duration = Duration::from_secs(10);

    /// The delay before retrying after this error: 50 ms doubling up to 1 s (10 s on 403),
    /// each multiplied by a random factor in [0.5, 1] so watches do not retry in lockstep.
    pub fn next_delay(&mut self, forbidden: bool) -> Duration {
        let cap = if forbidden {
            Self::MAX_FORBIDDEN
        } else {
            Self::MAX
        };
        let exp = Self::BASE.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        exp.min(cap).mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Bounds the number of watches holding a blocking query (`max_watches`), and the number
/// of polled watches' reads in flight at once ([`MAX_POLLS_IN_FLIGHT`], or `max_watches`
/// if fewer): with up to nine times as many services polled as watched, a slow or hanging
/// Consul would otherwise get one connection per polled service, and the process could run
/// out of descriptors.
#[derive(Debug)]
pub struct WatchSlots {
    max: usize,
    used: AtomicUsize,
    polls: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// Plain reads take milliseconds: 32 at once re-read thousands of services a second.
pub const MAX_POLLS_IN_FLIGHT: usize = 32;

/// A blocking-query slot, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<WatchSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.watches_blocking.dec();
    }
}

impl WatchSlots {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(WatchSlots {
            max,
            used: AtomicUsize::new(0),
            polls: Arc::new(Semaphore::new(max.clamp(1, MAX_POLLS_IN_FLIGHT))),
            metrics,
        })
    }

    /// Permits for the polled services' reads in flight.
    pub fn polls(&self) -> &Arc<Semaphore> {
        &self.polls
    }

    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.metrics.watches_blocking.inc();
        Some(Slot(Arc::clone(self)))
    }
}

/// What a watch shares with its owner.
#[derive(Clone)]
pub struct WatchContext {
    pub client: ConsulClient,
    /// `?dc=` of every read (None: the agent's datacenter).
    pub datacenter: Option<String>,
    pub health: Arc<WatchHealth>,
    pub cancel: CancellationToken,
}

/// Runs the loop for `segments` until `ctx.cancel` fires. `index` is the index of the state
/// the caller already holds (0: none; the first read is then non-blocking). `on_change` is
/// called with each new state, never for an unchanged index or an error.
pub async fn run<T, F>(
    ctx: WatchContext,
    segments: Vec<String>,
    mut index: u64,
    _slot: Option<Slot>,
    mut on_change: F,
) where
    T: DeserializeOwned + Send + 'static,
    F: FnMut(T, QueryMeta, IndexStep),
{
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let what = segs.join("/");
    let metrics = Arc::clone(ctx.client.metrics());
    let mut limit = RateLimit::for_watch();
    let mut backoff = Backoff::default();
    loop {
        let delay = limit.take();
        if !delay.is_zero() {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        // After a failure the first read does not block: it tells at once whether Consul
        // is back (a blocking read would only answer at the next change).
        let blocking_index = if backoff.failures() == 0 { index } else { 0 };
        let read = ctx
            .client
            .get_in::<T>(&segs, ctx.datacenter.as_deref(), blocking_index);
        let result = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            r = read => r,
        };
        match result {
            Ok((body, meta)) => {
                if backoff.failures() > 0 {
                    answers_again(&what);
                    backoff.reset();
                }
                let (step, next) = read_answered(&metrics, &what, &ctx.health, index, &meta);
                if step != IndexStep::Unchanged || index == 0 {
                    on_change(body, meta, step);
                    view_updated(&metrics, &meta);
                }
                index = next;
            }
            Err(e) => {
                ctx.health.failed();
                let delay = backoff.next_delay(e.is_forbidden());
                log_failure(&what, &e, backoff.failures(), delay);
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// A read of `what` answered, for a watch whose data is at `index`: records it (health,
/// leader, an index that went backwards) and returns what the answer's index means and the
/// index to send next.
pub(super) fn read_answered(
    metrics: &Metrics,
    what: &str,
    health: &WatchHealth,
    index: u64,
    meta: &QueryMeta,
) -> (IndexStep, u64) {
    health.succeeded();
    note_leader(metrics, what, meta.known_leader);
    let (step, next) = next_index(index, meta.index);
    if step == IndexStep::Reset {
        metrics.index_resets.inc();
        // A Consul answering `X-Consul-Index: 0` does this on every read.
        if let Some(suppressed) = lines_of(what).index_reset.allow() {
            info!(resource = %what, from = index, to = meta.index, suppressed, "Consul index went backwards; watch reset");
        } else {
            debug!(resource = %what, from = index, to = meta.index, "Consul index went backwards; watch reset");
        }
    }
    (step, next)
}

/// The view took the change Consul answered with: how long after the answer arrived.
pub(super) fn view_updated(metrics: &Metrics, meta: &QueryMeta) {
    if let Some(received) = meta.received {
        metrics
            .view_update_seconds
            .observe(received.elapsed().as_secs_f64());
    }
}

/// The lines of the watches of one kind of resource. How often their events happen is up
/// to Consul (an index of 0 resets a watch on every read, a flapping agent fails and
/// recovers as fast as the backoff lets it retry): each goes at most once per
/// [`LOG_INTERVAL`](crate::log_limit::LOG_INTERVAL) per kind, with the count of those held
/// back; the others are at debug.
struct WatchLines {
    index_reset: LogLimit,
    read_failed: LogLimit,
    answers_again: LogLimit,
}

impl WatchLines {
    const fn new() -> WatchLines {
        WatchLines {
            index_reset: LogLimit::every_interval(),
            read_failed: LogLimit::every_interval(),
            answers_again: LogLimit::every_interval(),
        }
    }
}

/// The service list, the node list, and every other resource (services' health, the
/// prepared queries, the polled services), in every datacenter.
static WATCH_LINES: [WatchLines; 3] = [WatchLines::new(), WatchLines::new(), WatchLines::new()];

fn lines_of(what: &str) -> &'static WatchLines {
    let kind = match what {
        "v1/catalog/services" => 0,
        "v1/catalog/nodes" => 1,
        _ => 2,
    };
    &WATCH_LINES[kind]
}

/// Consul's leader is one for every resource: its changes are limited apart from the kinds.
static LEADER_LOST: LogLimit = LogLimit::every_interval();
static LEADER_BACK: LogLimit = LogLimit::every_interval();

fn note_leader(metrics: &Metrics, what: &str, known_leader: Option<bool>) {
    let Some(known) = known_leader else { return };
    // A first report of a leader is no news (the gauge starts at 0, not at "had none").
    let before = metrics.set_known_leader(known);
    if !known && before != Some(false) {
        if let Some(suppressed) = LEADER_LOST.allow() {
            warn!(resource = %what, suppressed, "Consul reports no known leader; its answers may be stale");
        } else {
            debug!(resource = %what, "Consul reports no known leader");
        }
    } else if before == Some(false) && known {
        if let Some(suppressed) = LEADER_BACK.allow() {
            info!(resource = %what, suppressed, "Consul has a leader again");
        } else {
            debug!(resource = %what, "Consul has a leader again");
        }
    }
}

pub(super) fn answers_again(what: &str) {
    if let Some(suppressed) = lines_of(what).answers_again.allow() {
        info!(resource = %what, suppressed, "Consul answers again");
    } else {
        debug!(resource = %what, "Consul answers again");
    }
}

pub(super) fn log_failure(what: &str, e: &ConsulError, failures: u32, retry_in: Duration) {
    // The first failure and then every 30th are worth a warning (one per interval: a
    // flapping Consul fails for the first time over and over); the rest are noise.
    if failures == 1 || failures.is_multiple_of(30) {
        if let Some(suppressed) = lines_of(what).read_failed.allow() {
            warn!(resource = %what, error = %e, failures, ?retry_in, suppressed, "Consul read failed; serving last good data");
            return;
        }
    }
    debug!(resource = %what, error = %e, failures, ?retry_in, "Consul read failed");
}

/// The lines of the callers of [`acl_would_empty`] when it holds: Consul may answer so on
/// every read, so they go once per interval for every resource together, with the count of
/// those held back.
pub(super) static ACL_KEPT_LINES: LogLimit = LogLimit::every_interval();

/// Whether an answer is an ACL-filtered empty result that would wipe data we had; counts it.
pub fn acl_would_empty(meta: &QueryMeta, empty: bool, had_data: bool, metrics: &Metrics) -> bool {
    let wipe = meta.filtered_by_acls && empty && had_data;
    if wipe {
        metrics.acl_filtered_ignored.inc();
    }
    wipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 5), (IndexStep::Changed, 5));
        assert_eq!(next_index(5, 5), (IndexStep::Unchanged, 5));
        assert_eq!(next_index(5, 9), (IndexStep::Changed, 9));
        // Backwards: reset, and never block on 0.
        assert_eq!(next_index(9, 3), (IndexStep::Reset, 1));
        // A missing header (0) must not make us send index=0.
        assert_eq!(next_index(0, 0), (IndexStep::Unchanged, 1));
        assert_eq!(next_index(1, 0), (IndexStep::Reset, 1));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::default();
        let first = b.next_delay(false);
        assert!(first <= Duration::from_millis(50) && first >= Duration::from_millis(25));
        for _ in 0..20 {
            assert!(b.next_delay(false) <= Duration::from_secs(1));
        }
        assert!(b.next_delay(true) > Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay(false) <= Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_passes_bursts_then_spaces_requests() {
        let mut r = RateLimit::new(3, 10.0);
        assert_eq!(r.take(), Duration::ZERO);
        assert_eq!(r.take(), Duration::ZERO);
        assert_eq!(r.take(), Duration::ZERO);
        let d = r.take();
        assert!(
            d > Duration::from_millis(90) && d <= Duration::from_millis(100),
            "{d:?}"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(r.take(), Duration::ZERO);
    }
}
