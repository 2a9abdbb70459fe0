//! The figures of one kind of stream listener (DNS over TCP, DNS over TLS): open
//! connections, those refused or closed for room, and those closed by a timeout.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Labels;

/// What a listener kind's metrics are called: `tcp` and `TCP`, say.
pub struct Kind {
    /// The metric names' prefix, and the config keys' (`tcp_max_connections`).
    pub prefix: &'static str,
    /// How help texts name the connections.
    pub name: &'static str,
    /// The per-source limit, as the help texts describe it.
    pub per_source: &'static str,
}

pub const TCP: Kind = Kind {
    prefix: "tcp",
    name: "TCP",
    per_source: "tcp_max_connections_per_source",
};

pub const TLS: Kind = Kind {
    prefix: "tls",
    name: "DNS-over-TLS",
    per_source: "a quarter of tls_max_connections from one source",
};

/// Cheap to clone: clones count into the same series.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    /// Connections open.
    pub connections: Gauge,
    /// Connections closed at once: the limits were reached, none of the open ones idle.
    pub refused: Counter,
    /// Idle connections closed to make room for a new one.
    pub evicted: Counter,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: Counter,
    /// Connections closed by the total (lifetime) timeout.
    pub total_timeouts: Counter,
    /// Connections closed because an answer could not be written in time.
    pub write_timeouts: Counter,
}

impl ConnectionMetrics {
    /// The metrics of `kind`, registered in `registry`.
    pub(super) fn register(registry: &mut Registry, kind: &Kind) -> Self {
        let Kind {
            prefix,
            name,
            per_source,
        } = kind;
        let timeouts = Family::<Labels, Counter>::default();
        let timeout = |label: &str| {
            timeouts
                .get_or_create(&vec![("timeout", label.to_string())])
                .clone()
        };
        let m = ConnectionMetrics {
            connections: Gauge::default(),
            refused: Counter::default(),
            evicted: Counter::default(),
            idle_timeouts: timeout("idle"),
            total_timeouts: timeout("total"),
            write_timeouts: timeout("write"),
        };
        registry.register(
            format!("{prefix}_timeouts"),
            format!("{name} connections closed by a timeout: idle, total (lifetime) or write"),
            timeouts,
        );
        registry.register(
            format!("{prefix}_connections"),
            format!("{name} connections open"),
            m.connections.clone(),
        );
        registry.register(
            format!("{prefix}_refused"),
            format!(
                "{name} connections closed at once because {prefix}_max_connections (or \
                 {per_source}) were open, none of them idle"
            ),
            m.refused.clone(),
        );
        registry.register(
            format!("{prefix}_evicted"),
            format!(
                "Idle {name} connections closed to make room for a new one, past \
                 {prefix}_max_connections or {per_source}"
            ),
            m.evicted.clone(),
        );
        m
    }
}
