//! In-process emulator of the Consul HTTP API (catalog, health, agent/self) with real
//! blocking-query semantics, used by integration tests and by `--dev` mode.
//!
//! Like a real server, a fresh emulator already holds the agent's own node
//! (`EmulatorConfig::node_name`, 127.0.0.1) running the `consul` service with a passing
//! `serfHealth` check. [`Emulator::seed_demo`] adds the demo catalog described in [`demo`].

pub mod demo;
mod http;
mod register;
mod server;
mod state;
mod views;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use state::Catalog;

/// How many requests [`Emulator::request_log`] keeps.
const REQUEST_LOG_CAPACITY: usize = 10_000;

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub datacenter: String,
    /// The agent's own node name (reported by `/v1/agent/self`, registered at start).
    pub node_name: String,
    pub max_query_time: Duration,
    pub default_query_time: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            datacenter: "dc1".to_string(),
            node_name: "consul-dev".to_string(),
            max_query_time: Duration::from_secs(600),
            default_query_time: Duration::from_secs(300),
        }
    }
}

/// Failure injected into every request arriving after [`Emulator::set_fault`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Answer with this status and text body, e.g. 500 "rpc error: No cluster leader".
    Status(u16, String),
    /// Read the request and never answer (until [`Emulator::stop`]).
    Hang,
}

#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// Raw query string ("" when absent).
    pub query: String,
    /// From `?token=`, else `X-Consul-Token`, else `Authorization: Bearer`.
    pub token: Option<String>,
    pub received_at: Instant,
}

/// Register/deregister failures; `Display` is the message Consul gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmulatorError {
    #[error("Request decode failed: {0}")]
    Decode(String),
    #[error("Must provide node")]
    MissingNode,
    #[error("Must provide address if SkipNodeUpdate is not set")]
    MissingAddress,
    #[error("Bad node ID: {0}")]
    BadNodeId(String),
    #[error("Must provide service name with ID")]
    MissingServiceName,
    #[error("Invalid service address")]
    InvalidServiceAddress,
    #[error("Missing check ID")]
    MissingCheckId,
    #[error("Invalid check status: {0:?}")]
    InvalidCheckStatus(String),
    #[error("Missing node registration")]
    MissingNodeRegistration,
    #[error("Missing service registration")]
    MissingServiceRegistration,
    #[error("No path to datacenter")]
    NoPathToDatacenter,
}

/// Handle to a running emulator; clones share the same server and catalog.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: EmulatorConfig,
    addr: SocketAddr,
    node_id: String,
    catalog: Mutex<Catalog>,
    /// Bumped after every catalog change; blocked queries wait on it.
    changes: watch::Sender<u64>,
    known_leader: AtomicBool,
    acl_filter_all: AtomicBool,
    fault: Mutex<Fault>,
    required_token: Mutex<Option<String>>,
    total_requests: AtomicU64,
    stats: Mutex<RequestStats>,
    server: Mutex<Option<server::Server>>,
}

#[derive(Default)]
struct RequestStats {
    per_path: HashMap<String, u64>,
    log: VecDeque<RequestRecord>,
}

/// Locks ignoring poisoning: every critical section leaves the data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn catalog(&self) -> MutexGuard<'_, Catalog> {
        lock(&self.catalog)
    }

    fn notify_change(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn register(&self, body: &serde_json::Value) -> Result<(), EmulatorError> {
        let req = register::parse_register(body)?;
        self.check_datacenter(req.datacenter.as_deref())?;
        self.catalog().register(req)?;
        self.notify_change();
        Ok(())
    }

    fn deregister(&self, body: &serde_json::Value) -> Result<(), EmulatorError> {
        let req = register::parse_deregister(body)?;
        self.check_datacenter(req.datacenter.as_deref())?;
        self.catalog().deregister(req)?;
        self.notify_change();
        Ok(())
    }

    fn check_datacenter(&self, dc: Option<&str>) -> Result<(), EmulatorError> {
        match dc {
            Some(dc) if !dc.is_empty() && !dc.eq_ignore_ascii_case(&self.cfg.datacenter) => {
                Err(EmulatorError::NoPathToDatacenter)
            }
            _ => Ok(()),
        }
    }

    fn record(&self, rec: RequestRecord) {
        self.total_requests.fetch_add(1, Ordering::SeqCst);
        let mut stats = lock(&self.stats);
        *stats.per_path.entry(rec.path.clone()).or_default() += 1;
        if stats.log.len() == REQUEST_LOG_CAPACITY {
            stats.log.pop_front();
        }
        stats.log.push_back(rec);
    }
}

impl Emulator {
    /// Binds `listen` (port 0 allowed) and serves in background tasks.
    pub async fn start(listen: SocketAddr, cfg: EmulatorConfig) -> io::Result<Emulator> {
        let listener = server::bind(listen)?;
        let addr = listener.local_addr()?;
        let node_id = demo::AGENT_NODE_ID.to_string();
        let catalog = Catalog::new(cfg.datacenter.clone());
        let inner = Arc::new(Inner {
            addr,
            node_id,
            catalog: Mutex::new(catalog),
            changes: watch::channel(0).0,
            known_leader: AtomicBool::new(true),
            acl_filter_all: AtomicBool::new(false),
            fault: Mutex::new(Fault::None),
            required_token: Mutex::new(None),
            total_requests: AtomicU64::new(0),
            stats: Mutex::new(RequestStats::default()),
            server: Mutex::new(None),
            cfg,
        });
        let emu = Emulator { inner };
        demo::register_agent_node(&emu);
        let srv = server::spawn(listener, emu.inner.clone());
        *lock(&emu.inner.server) = Some(srv);
        tracing::info!(%addr, "consul emulator listening");
        Ok(emu)
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT` (loopback substituted for an unspecified bind address).
    pub fn url(&self) -> String {
        let mut addr = self.inner.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}")
    }

    /// Same semantics as `PUT /v1/catalog/register`.
    pub fn register(&self, body: serde_json::Value) -> Result<(), EmulatorError> {
        self.inner.register(&body)
    }

    /// Same semantics as `PUT /v1/catalog/deregister`.
    pub fn deregister(&self, body: serde_json::Value) -> Result<(), EmulatorError> {
        self.inner.deregister(&body)
    }

    /// Registers the demo catalog (see [`demo`]).
    pub fn seed_demo(&self) {
        demo::seed(self);
    }

    /// Current raft index.
    pub fn index(&self) -> u64 {
        self.inner.catalog().raft_index()
    }

    /// HTTP requests received since start (counted on arrival, whatever the outcome).
    pub fn requests(&self) -> u64 {
        self.inner.total_requests.load(Ordering::SeqCst)
    }

    /// Requests whose path starts with `path_prefix`.
    pub fn requests_to(&self, path_prefix: &str) -> u64 {
        let stats = lock(&self.inner.stats);
        stats
            .per_path
            .iter()
            .filter(|(path, _)| path.starts_with(path_prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// The last 10 000 requests, oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        lock(&self.inner.stats).log.iter().cloned().collect()
    }

    /// Applies to requests arriving from now on; requests already hung stay hung until `stop()`.
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.inner.fault) = fault;
    }

    /// When `Some`, requests not carrying this token get 403 "ACL not found".
    pub fn set_required_token(&self, token: Option<String>) {
        *lock(&self.inner.required_token) = token;
    }

    /// Value of the `X-Consul-KnownLeader` header.
    pub fn set_known_leader(&self, v: bool) {
        self.inner.known_leader.store(v, Ordering::SeqCst);
    }

    /// Emulates a token that lost its read rights: reads answer empty results (`[]`, `{}`)
    /// marked `X-Consul-Results-Filtered-By-ACLs: true`, as Consul's list endpoints do.
    pub fn set_acl_filter_all(&self, v: bool) {
        self.inner.acl_filter_all.store(v, Ordering::SeqCst);
    }

    /// Emulates a snapshot restore: the raft index and every resource index (and entity
    /// Create/ModifyIndex) drop to at most `index`, data is kept, and every blocked query
    /// returns at once with the new index (Consul's AbandonCh).
    pub fn restore_snapshot(&self, index: u64) {
        self.inner.catalog().restore_snapshot(index);
        self.inner.notify_change();
    }

    /// Closes the listener and every open connection (in-flight long polls are cut).
    pub async fn stop(&self) {
        let srv = lock(&self.inner.server).take();
        if let Some(srv) = srv {
            srv.shutdown().await;
        }
    }

    /// Listens again on the same address; a no-op when already serving.
    pub async fn restart(&self) -> io::Result<()> {
        if lock(&self.inner.server).is_some() {
            return Ok(());
        }
        let listener = server::bind(self.inner.addr)?;
        let srv = server::spawn(listener, self.inner.clone());
        let previous = lock(&self.inner.server).replace(srv);
        if let Some(previous) = previous {
            // A concurrent restart won the race; keep ours, drop theirs.
            previous.shutdown().await;
        }
        Ok(())
    }
}

/// Starts an emulator with default config on `listen` and seeds the demo catalog.
pub async fn run_dev(listen: SocketAddr) -> io::Result<Emulator> {
    let emu = Emulator::start(listen, EmulatorConfig::default()).await?;
    emu.seed_demo();
    Ok(emu)
}
