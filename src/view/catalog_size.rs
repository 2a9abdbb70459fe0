//! The catalog's size in the log: after the first sync's line (services, nodes, index, time
//! taken), one info line whenever the number of services or of nodes has changed since the
//! last line, at most one per [`SIZE_LINE_INTERVAL`]: a burst of registrations makes one
//! line, and a change held back goes out with the next one looked at after the interval
//! (the syncer looks at every list update and every few seconds).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two size lines.
pub const SIZE_LINE_INTERVAL: Duration = Duration::from_secs(10);

/// The sizes last logged, and when the next line may go.
#[derive(Debug, Default)]
pub struct CatalogSize {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Services and nodes of the last line; None before the first sync's.
    logged: Option<(usize, usize)>,
    /// No line before this.
    next: Option<Instant>,
}

impl CatalogSize {
    /// The sizes of the first sync's line.
    pub fn synced(&self, services: usize, nodes: usize) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.logged = Some((services, nodes));
    }

    /// The catalog has `services` and `nodes` now: a line if that differs from the last
    /// line and the interval since it has passed.
    pub fn note(&self, services: usize, nodes: usize) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some((was_services, was_nodes)) = state.logged else {
            return;
        };
        if (was_services, was_nodes) == (services, nodes) {
            return;
        }
        let now = Instant::now();
        if state.next.is_some_and(|next| now < next) {
            return;
        }
        state.logged = Some((services, nodes));
        state.next = Some(now + SIZE_LINE_INTERVAL);
        tracing::info!(
            services,
            nodes,
            services_before = was_services,
            nodes_before = was_nodes,
            "catalog size changed: {was_services} -> {services} services, {was_nodes} -> {nodes} nodes"
        );
    }
}
