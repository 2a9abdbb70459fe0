//! The integration tests, one binary (one link for all), a module per area. Each runs
//! the server (in process through `consul_dns::app`, or its binary) against the Consul API
//! emulator over real sockets on loopback. `tests/workers.rs` is a binary of its own: it
//! counts this process's UDP worker threads.

#[macro_use]
#[path = "common/program.rs"]
mod program;
mod common;

mod agent_clients;
mod amplification;
mod beyond_consul;
mod cli;
mod conformance;
mod consul_config;
mod dns_cases;
mod dot;
mod extended_errors;
mod forwarding;
mod fuzz_regressions;
mod hostile_clients;
mod hostile_consul;
mod hostnames;
mod limits;
mod log_flood;
mod marathon;
mod negative_cache;
mod observe;
mod overload;
mod reply_shape;
mod resilience;
mod resolvers;
mod response_cache;
mod service_manager;
mod sync;
mod tcp_sources;
mod tls;
mod token;
mod transfer;
mod tsig;
mod zone_table;
mod zones;
