//! In-process emulator of the Consul HTTP API (catalog, health incl. Connect and ingress,
//! prepared queries, config entries, agent/self) with real blocking-query semantics, used
//! by integration tests and by `--dev` mode.
//!
//! Like a real server, a fresh emulator already holds the agent's own node
//! (`EmulatorConfig::node_name`, 127.0.0.1) running the `consul` service with a passing
//! `serfHealth` check. [`Emulator::seed_demo`] adds the demo catalog described in [`demo`].
//!
//! The agent API (`/v1/agent/service*`, `/v1/agent/check*`, maintenance, `/v1/status/*`)
//! registers on that node as a Consul client agent does, runs TTL, HTTP and TCP checks on
//! tokio tasks that end with [`Emulator::stop`], and keeps the catalog in step (see
//! [`agent`]).
//!
//! [`EmulatorConfig::extra_datacenters`] adds datacenters reachable with `?dc=`: each is a
//! separate cluster (own catalog, prepared queries, config entries and indexes) and starts
//! empty. With [`EmulatorConfig::translate_wan_addrs`] the agent rewrites addresses in
//! answers about those datacenters as Consul's `translate_wan_addrs` does.

pub mod agent;
mod checks;
mod config_entry;
pub mod demo;
mod duration;
mod http;
mod query;
mod register;
mod server;
mod state;
pub mod tls;
mod translate;
mod versioned;
mod views;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use state::Datacenters;

/// How many requests [`Emulator::request_log`] keeps.
const REQUEST_LOG_CAPACITY: usize = 10_000;

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The agent's (primary) datacenter.
    pub datacenter: String,
    /// Further datacenters (`?dc=`, `/v1/catalog/datacenters`), each its own cluster.
    pub extra_datacenters: Vec<String>,
    /// Consul's `translate_wan_addrs`: answers about another datacenter carry WAN
    /// addresses, and every response has `X-Consul-Translate-Addresses: true`.
    pub translate_wan_addrs: bool,
    /// The agent's own node name (reported by `/v1/agent/self`, registered at start).
    pub node_name: String,
    pub max_query_time: Duration,
    pub default_query_time: Duration,
    /// Serve HTTPS with this configuration (see [`tls::server_config`]); `None`: plain
    /// HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            datacenter: "dc1".to_string(),
            extra_datacenters: Vec::new(),
            translate_wan_addrs: false,
            node_name: "consul-dev".to_string(),
            max_query_time: Duration::from_secs(600),
            default_query_time: Duration::from_secs(300),
            tls: None,
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
    /// Answer 200 `application/json` with this body, whatever was asked (broken or hostile
    /// agent: invalid JSON, wrong types, huge bodies).
    Body(String),
    /// Answer 200 at once, then send this body one byte per `every` (a slow or hostile
    /// agent holding the connection).
    Trickle {
        body: String,
        every: Duration,
    },
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

/// Write failures; `Display` is the message Consul gives.
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
    /// Rejected by the server (HTTP 500), e.g. a Connect proxy without destination, an
    /// invalid prepared query or config entry.
    #[error("{0}")]
    Invalid(String),
    /// A config entry body that does not decode (HTTP 400).
    #[error("Request decoding failed: {0}")]
    ConfigDecode(String),
    /// A request the agent refuses, with Consul's message as is (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// An unknown agent service or check (HTTP 404).
    #[error("{0}")]
    NotFound(String),
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
    dcs: Mutex<Datacenters>,
    /// Bumped after every catalog change; blocked queries wait on it.
    changes: watch::Sender<u64>,
    known_leader: AtomicBool,
    acl_filter_all: AtomicBool,
    fault: Mutex<Fault>,
    required_token: Mutex<Option<String>>,
    total_requests: AtomicU64,
    stats: Mutex<RequestStats>,
    server: Mutex<Option<server::Server>>,
    /// The local agent's services and checks, and the tasks running the checks.
    agent: Mutex<agent::AgentState>,
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
    fn dcs(&self) -> MutexGuard<'_, Datacenters> {
        lock(&self.dcs)
    }

    fn notify_change(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Applies a write to a datacenter's catalog (`None`/empty: the agent's) and wakes
    /// blocked queries when it succeeds.
    fn write<R>(
        &self,
        dc: Option<&str>,
        apply: impl FnOnce(&mut state::Catalog) -> Result<R, EmulatorError>,
    ) -> Result<R, EmulatorError> {
        let result = {
            let mut dcs = self.dcs();
            let catalog = dcs.get_mut(dc).ok_or(EmulatorError::NoPathToDatacenter)?;
            apply(catalog)?
        };
        self.notify_change();
        Ok(result)
    }

    /// The body's `Datacenter` wins over `?dc=` (Consul's CatalogRegister).
    fn register(
        &self,
        body: &serde_json::Value,
        query_dc: Option<&str>,
    ) -> Result<(), EmulatorError> {
        let req = register::parse_register(body)?;
        let dc = req.datacenter.clone();
        self.write(dc.as_deref().or(query_dc), |c| c.register(req))
    }

    fn deregister(
        &self,
        body: &serde_json::Value,
        query_dc: Option<&str>,
    ) -> Result<(), EmulatorError> {
        let req = register::parse_deregister(body)?;
        let dc = req.datacenter.clone();
        self.write(dc.as_deref().or(query_dc), |c| c.deregister(req))
    }

    fn create_query(
        &self,
        body: &serde_json::Value,
        dc: Option<&str>,
    ) -> Result<String, EmulatorError> {
        let spec = query::parse_query(body)?;
        if !spec.id.is_empty() {
            return Err(EmulatorError::Invalid(
                "ID must be empty when creating a new prepared query".into(),
            ));
        }
        self.write(dc, |c| c.create_query(spec))
    }

    fn update_query(
        &self,
        id: &str,
        body: &serde_json::Value,
        dc: Option<&str>,
    ) -> Result<(), EmulatorError> {
        let spec = query::parse_query(body)?;
        self.write(dc, |c| c.update_query(id, spec))
    }

    fn delete_query(&self, id: &str, dc: Option<&str>) -> Result<(), EmulatorError> {
        self.write(dc, |c| c.delete_query(id))
    }

    fn put_config_entry(
        &self,
        body: &serde_json::Value,
        dc: Option<&str>,
    ) -> Result<(), EmulatorError> {
        let entry = config_entry::parse_config_entry(body)?;
        self.write(dc, |c| {
            c.put_config_entry(entry);
            Ok(())
        })
    }

    fn delete_config_entry(
        &self,
        kind: &str,
        name: &str,
        dc: Option<&str>,
    ) -> Result<(), EmulatorError> {
        self.write(dc, |c| {
            c.delete_config_entry(kind, name);
            Ok(())
        })
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
        let dcs = Datacenters::new(&cfg.datacenter, &cfg.extra_datacenters);
        let inner = Arc::new(Inner {
            addr,
            node_id,
            dcs: Mutex::new(dcs),
            changes: watch::channel(0).0,
            known_leader: AtomicBool::new(true),
            acl_filter_all: AtomicBool::new(false),
            fault: Mutex::new(Fault::None),
            required_token: Mutex::new(None),
            total_requests: AtomicU64::new(0),
            stats: Mutex::new(RequestStats::default()),
            server: Mutex::new(None),
            agent: Mutex::new(agent::AgentState::new(tokio::runtime::Handle::current())),
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

    /// `http://127.0.0.1:PORT`, `https://` when serving TLS (loopback substituted for an
    /// unspecified bind address).
    pub fn url(&self) -> String {
        let mut addr = self.inner.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let scheme = if self.inner.cfg.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    }

    /// Same semantics as `PUT /v1/catalog/register` (the body's `Datacenter` picks the
    /// datacenter, default the agent's).
    pub fn register(&self, body: serde_json::Value) -> Result<(), EmulatorError> {
        self.inner.register(&body, None)
    }

    /// Same semantics as `PUT /v1/catalog/deregister`.
    pub fn deregister(&self, body: serde_json::Value) -> Result<(), EmulatorError> {
        self.inner.deregister(&body, None)
    }

    /// Same semantics as `POST /v1/query` in the agent's datacenter; returns the new ID.
    pub fn create_query(&self, body: serde_json::Value) -> Result<String, EmulatorError> {
        self.inner.create_query(&body, None)
    }

    /// Same semantics as `PUT /v1/config` in the agent's datacenter.
    pub fn put_config_entry(&self, body: serde_json::Value) -> Result<(), EmulatorError> {
        self.inner.put_config_entry(&body, None)
    }

    /// Registers the demo catalog (see [`demo`]).
    pub fn seed_demo(&self) {
        demo::seed(self);
    }

    /// Current raft index of the agent's datacenter.
    pub fn index(&self) -> u64 {
        self.inner.dcs().primary().raft_index()
    }

    /// Current raft index of a datacenter (case-insensitive), `None` if unknown.
    pub fn index_of_dc(&self, dc: &str) -> Option<u64> {
        self.inner.dcs().get(Some(dc)).map(|c| c.raft_index())
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

    /// Emulates a snapshot restore in the agent's datacenter: the raft index and every
    /// resource index (and entity Create/ModifyIndex) drop to at most `index`, data is kept,
    /// and every query blocked on that datacenter returns at once with the new index
    /// (Consul's AbandonCh).
    pub fn restore_snapshot(&self, index: u64) {
        self.inner.dcs().primary_mut().restore_snapshot(index);
        self.inner.notify_change();
    }

    /// Closes the listener and every open connection (in-flight long polls are cut), and
    /// stops the agent's check tasks (they are gone when this returns).
    pub async fn stop(&self) {
        self.inner.stop_agent_checks().await;
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
        // The agent's checks run again, TTLs counting from now (as after an agent restart).
        self.inner.start_agent_checks();
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
