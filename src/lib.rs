//! consul-dns: an authoritative DNS server for the Consul domain, answering from an
//! in-memory view of the Consul catalog kept fresh by blocking queries.

pub mod admin;
pub mod app;
pub mod config;
pub mod consul;
pub mod dns;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod log_limit;
pub mod metrics;
pub mod model;
pub mod pem;
pub mod view;
