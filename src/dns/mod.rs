//! The DNS side, reading the view (`crate::view`) and nothing of Consul's HTTP: qname
//! parsing, answers for the Consul zone, static zones, the recursors, the request handler
//! and the sockets (UDP, TCP, TLS).

pub mod answer;
pub mod consul_zone;
pub mod dot;
pub mod encoder;
pub mod fetch;
pub mod forward;
pub mod handler;
pub mod name;
pub mod negative_cache;
pub mod query_log;
pub mod responder;
pub mod response_cache;
pub mod rrl;
pub mod sockets;
pub mod static_zones;
pub mod tcp;
pub mod transfer;
pub mod truncation;
pub mod tsig;
pub mod udp;
pub mod udp_batch;
