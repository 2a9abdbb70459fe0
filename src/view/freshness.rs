//! How fresh the view's data is, and what a stored response rests on.
//!
//! - [`WatchHealth`]: whether the watch feeding some data is failing, and since when; its
//!   answers are then stale (served within `max_stale`, marked).
//! - [`note_change`] / [`changes`]: a process-wide count of the changes an answer may rest
//!   on: a service's data, a watch ending, the service list, a watch starting or ceasing to
//!   fail. A stored response ([`ServiceBasis`]) checks what it rests on in full only when the
//!   count has moved since it last did, so a hit mostly reads one word every core already
//!   has in its cache, instead of a service's own counters wherever they are in memory.
//! - [`WatchStamp`], [`ServiceData`], [`ServiceBasis`]: a service's data with the counters
//!   that say whether a response built from it may be sent again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::records::ServiceRecords;
use super::View;

static CHANGES: AtomicU64 = AtomicU64::new(0);

/// Notes a change, after it is made.
pub fn note_change() {
    CHANGES.fetch_add(1, Ordering::Release);
}

/// The changes noted so far.
pub fn changes() -> u64 {
    CHANGES.load(Ordering::Acquire)
}

/// How recent a watch's data is. Shared between the watch task (which records successes
/// and failures) and the answers (which mark or refuse data past `max_stale`).
///
/// Data counts as fresh while the watch succeeds, including while a blocking query waits
/// (Consul would have answered a change); it is stale from the first failed read on.
#[derive(Debug, Default)]
pub struct WatchHealth {
    /// Milliseconds since `CLOCK` (plus one, so 0 means "not failing") of the first failure
    /// since the last success.
    failing_since_ms: AtomicU64,
    /// Unix time in milliseconds of the last success (0: none yet).
    succeeded_unix_ms: AtomicU64,
}

/// Now, in milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

static CLOCK: OnceLock<std::time::Instant> = OnceLock::new();

fn now_ms() -> u64 {
    let origin = CLOCK.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

impl WatchHealth {
    pub fn succeeded(&self) {
        self.succeeded_unix_ms.store(unix_ms(), Ordering::Relaxed);
        if self.failing_since_ms.swap(0, Ordering::Relaxed) != 0 {
            note_change();
        }
    }

    pub fn failed(&self) {
        let started = self
            .failing_since_ms
            .compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if started {
            note_change();
        }
    }

    pub fn is_failing(&self) -> bool {
        self.failing_since_ms.load(Ordering::Relaxed) != 0
    }

    /// Unix time, in seconds, up to which the watch's data is known current: now while it
    /// succeeds (a blocking query held open counts: Consul would answer a change), the
    /// time of its last success while it fails, 0 before its first success.
    pub fn current_until(&self) -> f64 {
        let last = self.succeeded_unix_ms.load(Ordering::Relaxed);
        let at = match last {
            0 => 0,
            _ if self.is_failing() => last,
            _ => unix_ms(),
        };
        at as f64 / 1000.0
    }

    /// While the watch is failing: for how long. `None` while it is healthy.
    pub fn stale_for(&self) -> Option<Duration> {
        match self.failing_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }
}

/// What a service's watch shares with the answers built from its data: its changes
/// counted, whether it still runs, and the tick in which a query last used it (the watch's
/// owner ends watches nobody uses).
#[derive(Debug, Default)]
pub struct WatchStamp {
    version: AtomicU64,
    ended: AtomicBool,
    last_used: AtomicU64,
}

impl WatchStamp {
    /// A stamp first used in `tick`.
    pub fn new(tick: u64) -> Self {
        WatchStamp {
            last_used: AtomicU64::new(tick),
            ..WatchStamp::default()
        }
    }

    /// Its data was replaced (call after storing the new data).
    pub fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
        note_change();
    }

    /// Its watch ended: answers resting on it must be built again.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
        note_change();
    }

    /// A query used it in `tick`.
    pub fn use_in(&self, tick: u64) {
        self.last_used.store(tick, Ordering::Relaxed);
    }

    /// The tick in which a query last used it.
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

/// A service's data as the answers need it.
#[derive(Debug, Clone)]
pub struct ServiceData {
    pub records: Arc<ServiceRecords>,
    pub health: Arc<WatchHealth>,
    stamp: Arc<WatchStamp>,
    /// `stamp`'s version when `records` was read (never newer than them).
    version: u64,
}

impl ServiceData {
    /// The data `records` gives now, with `stamp`'s version read before it.
    pub fn read(
        stamp: &Arc<WatchStamp>,
        health: &Arc<WatchHealth>,
        records: impl FnOnce() -> Arc<ServiceRecords>,
    ) -> Self {
        let version = stamp.version();
        ServiceData {
            records: records(),
            health: Arc::clone(health),
            stamp: Arc::clone(stamp),
            version,
        }
    }
}

/// What an answer about a local service was built from: a version of the service list
/// and a version of the service's data. A response encoded from that answer may be sent
/// again, without building it, while [`ServiceBasis::holds`]: neither has changed since
/// and neither watch is failing (a failing watch's answers carry a "stale" marker that
/// changes with time). It keeps neither the watch nor its data alive.
pub struct ServiceBasis {
    /// The instances' order may be drawn uniformly (their weights are all the same).
    pub uniform_order: bool,
    view: Arc<View>,
    directory_version: u64,
    directory_health: Arc<WatchHealth>,
    stamp: Arc<WatchStamp>,
    version: u64,
    health: Arc<WatchHealth>,
    /// The clock of uses (ticks): a hit notes its tick on the stamp, as a query would.
    ticks: Arc<AtomicU64>,
    /// `changes()` when it was last checked in full and held (`u64::MAX`: never).
    checked_at: u64,
    /// The tick in which its use was last written.
    used_in: u64,
}

impl std::fmt::Debug for ServiceBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBasis")
            .field("directory_version", &self.directory_version)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl ServiceBasis {
    /// The basis of an answer built from `view`'s service list at `directory_version`
    /// (its watch's health `directory_health`) and `data`; uses are noted in `ticks`.
    pub fn new(
        view: &Arc<View>,
        directory_version: u64,
        directory_health: &Arc<WatchHealth>,
        data: &ServiceData,
        ticks: &Arc<AtomicU64>,
    ) -> Self {
        ServiceBasis {
            uniform_order: data.records.uniform_weights,
            view: Arc::clone(view),
            directory_version,
            directory_health: Arc::clone(directory_health),
            stamp: Arc::clone(&data.stamp),
            version: data.version,
            health: Arc::clone(&data.health),
            ticks: Arc::clone(ticks),
            checked_at: u64::MAX,
            used_in: u64::MAX,
        }
    }

    /// Whether the data is unchanged and healthy; if so the use is noted, as a query
    /// answered from the data would (it keeps the watch from going idle). Checked in full
    /// only when a change was noted since the last check, and the use written once per
    /// tick: a hit mostly reads shared, hot words.
    pub fn holds(&mut self) -> bool {
        let changes = changes();
        if changes != self.checked_at {
            let s = &self.stamp;
            let holds = s.version() == self.version
                && !s.ended.load(Ordering::Relaxed)
                && !self.health.is_failing()
                && !self.directory_health.is_failing()
                && self.view.directory_version() == self.directory_version;
            if !holds {
                return false;
            }
            self.checked_at = changes;
        }
        let tick = self.ticks.load(Ordering::Relaxed);
        if tick != self.used_in {
            self.stamp.use_in(tick);
            self.used_in = tick;
        }
        true
    }

    /// Whether both rest on the same versions of the same data.
    pub fn same_data(&self, other: &ServiceBasis) -> bool {
        Arc::ptr_eq(&self.stamp, &other.stamp)
            && self.version == other.version
            && self.directory_version == other.directory_version
    }
}
