//! Consul's agent API, as a client agent serves it to registrator and Consul client
//! libraries: services and checks registered through the local agent.
//!
//! They live on the agent's own node ([`EmulatorConfig::node_name`](crate::EmulatorConfig),
//! 127.0.0.1, the agent's datacenter). The agent keeps its own state (what
//! `/v1/agent/services` and `/v1/agent/checks` list) and writes every change to the
//! catalog at once, through the same write path as `/v1/catalog/register`, so indexes and
//! blocked queries behave as for catalog registrations. (A real agent syncs within
//! seconds by anti-entropy; output-only changes it defers up to minutes.)
//!
//! Endpoints, with Consul's status codes and messages:
//! * `PUT /v1/agent/service/register[?replace-existing-checks]`: `ID` defaults to `Name`;
//!   service checks get `service:<id>` (one) or `service:<id>:<n>` (several) as ID and
//!   `Service '<name>' check` as name unless given, and start critical unless `Status` is
//!   given. Registering an ID again replaces the service, keeps the status and output of
//!   checks registered again under the same ID, and keeps the service's other checks unless
//!   `replace-existing-checks` (empty or `true`). An IP `Address` adds the
//!   `lan_ipv4`/`wan_ipv4` (or `_ipv6`) tagged addresses. Script checks are refused (500),
//!   as by an agent without `enable_script_checks`.
//! * `PUT /v1/agent/service/deregister/<id>` (IDs may hold `:` and `/`), `GET
//!   /v1/agent/service/<id>` (with `ContentHash`; `?hash=` blocks), `GET /v1/agent/services`.
//! * `PUT /v1/agent/check/register`, `…/check/deregister/<id>`, `…/check/{pass,warn,fail}/<id>[?note=]`,
//!   `…/check/update/<id>` (`Status`, `Output`), `GET /v1/agent/checks`.
//! * `PUT /v1/agent/service/maintenance/<id>?enable=&reason=` (check
//!   `_service_maintenance:<id>`), `PUT /v1/agent/maintenance?enable=&reason=` (node check
//!   `_node_maintenance`).
//! * `GET /v1/status/leader`, `GET /v1/status/peers`.
//!
//! TTL, HTTP and TCP checks and `DeregisterCriticalServiceAfter` run on tokio tasks owned by
//! the emulator (`src/checks.rs`): a TTL check goes critical ("TTL expired") when not
//! refreshed in time; HTTP checks pass on 2xx, warn on 429, fail otherwise; TCP checks pass
//! when they connect; a service whose check stays critical for
//! `DeregisterCriticalServiceAfter` is deregistered. Intervals under 1 s and reap times under
//! 1 min are honoured (Consul raises them). The tasks end with
//! [`Emulator::stop`](crate::Emulator::stop) and start again with
//! [`Emulator::restart`](crate::Emulator::restart). gRPC, UDP, H2PING, OS-service and alias
//! checks are accepted but never run (they keep their initial status).

pub(crate) mod body;
mod catalog;
mod json;
mod ops;
mod routes;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checks::{self, ProbeJob, Runner};
use crate::register::{CheckSpec, ServiceAddress, ServiceSpec};
use crate::{duration, EmulatorError, Inner};
use body::CheckDef;

pub(crate) use routes::routes;

const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
const NODE_MAINTENANCE: &str = "_node_maintenance";
const DEFAULT_SERVICE_MAINTENANCE_REASON: &str =
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";
const DEFAULT_NODE_MAINTENANCE_REASON: &str =
    "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
const SCRIPTS_DISABLED: &str =
    "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true";

/// The agent's local state and its check tasks.
pub(crate) struct AgentState {
    /// By service ID.
    services: BTreeMap<String, ServiceSpec>,
    /// By check ID.
    checks: BTreeMap<String, LocalCheck>,
    /// The tasks of the checks that have a timer, by check ID.
    runners: HashMap<String, Runner>,
    /// Last generation handed out (a check registered again gets a new one).
    generation: u64,
    /// Parent of every runner's token: cancelled when the emulator stops.
    session: CancellationToken,
    /// False between `Emulator::stop` and `Emulator::restart`: no check runs.
    running: bool,
    runtime: Handle,
}

/// A check as the agent holds it.
pub(crate) struct LocalCheck {
    /// What the catalog gets.
    pub spec: CheckSpec,
    pub def: CheckDef,
    /// Since when the check has been critical (`DeregisterCriticalServiceAfter`).
    pub critical_since: Option<Instant>,
    /// When the TTL runs out; `None` once it has.
    pub ttl_deadline: Option<Instant>,
    /// The output of the last TTL update, quoted when the TTL runs out.
    pub last_ttl_output: String,
    pub generation: u64,
}

fn unknown_service(id: &str) -> EmulatorError {
    EmulatorError::NotFound(format!(
        "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
    ))
}

fn unknown_check(id: &str) -> EmulatorError {
    EmulatorError::NotFound(format!(
        "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
    ))
}

fn nonzero(d: Option<std::time::Duration>) -> Option<std::time::Duration> {
    d.filter(|d| !d.is_zero())
}

impl LocalCheck {
    /// A check as registered: critical unless `Status` says otherwise, its TTL counting.
    fn new(node: &str, check_id: String, name: String, def: CheckDef, service_id: &str) -> Self {
        let now = Instant::now();
        let status = if def.status.is_empty() {
            "critical".to_string()
        } else {
            def.status.clone()
        };
        LocalCheck {
            critical_since: (status == "critical").then_some(now),
            spec: CheckSpec {
                node: node.to_string(),
                check_id,
                name,
                status,
                notes: def.notes.clone(),
                output: String::new(),
                service_id: service_id.to_string(),
                definition: def.definition_json(),
                check_type: def.check_type().to_string(),
            },
            ttl_deadline: nonzero(def.ttl).map(|ttl| now + ttl),
            last_ttl_output: String::new(),
            generation: 0,
            def,
        }
    }

    /// A maintenance check: critical, no timer, type `maintenance`.
    fn maintenance(
        node: &str,
        check_id: String,
        name: &str,
        notes: &str,
        service_id: &str,
    ) -> Self {
        let def = CheckDef {
            notes: notes.to_string(),
            ..CheckDef::default()
        };
        let mut check = LocalCheck::new(node, check_id, name.to_string(), def, service_id);
        check.spec.check_type = "maintenance".to_string();
        check
    }

    pub(crate) fn interval_text(&self) -> String {
        nonzero(self.def.interval)
            .map(duration::format)
            .unwrap_or_default()
    }

    pub(crate) fn timeout_text(&self) -> String {
        nonzero(self.def.timeout)
            .map(duration::format)
            .unwrap_or_default()
    }

    /// Sets status and output; true if either changed (the catalog needs a write).
    fn set_status(&mut self, status: &str, output: String) -> bool {
        if status == "critical" {
            self.critical_since.get_or_insert_with(Instant::now);
        } else {
            self.critical_since = None;
        }
        let changed = self.spec.status != status || self.spec.output != output;
        self.spec.status = status.to_string();
        self.spec.output = output;
        changed
    }

    /// When the check's service is deregistered if the check stays critical.
    fn reap_at(&self) -> Option<Instant> {
        if self.spec.service_id.is_empty() {
            return None;
        }
        Some(self.critical_since? + nonzero(self.def.deregister_after)?)
    }

    fn needs_runner(&self) -> bool {
        nonzero(self.def.ttl).is_some()
            || self.def.probe().is_some()
            || (nonzero(self.def.deregister_after).is_some() && !self.spec.service_id.is_empty())
    }
}

impl AgentState {
    pub(crate) fn new(runtime: Handle) -> Self {
        AgentState {
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            runners: HashMap::new(),
            generation: 0,
            session: CancellationToken::new(),
            running: true,
            runtime,
        }
    }

    /// Stores a check (replacing one with the same ID and stopping its task) and starts its
    /// task if it has a timer.
    fn install(&mut self, inner: &Arc<Inner>, mut check: LocalCheck) {
        self.generation += 1;
        check.generation = self.generation;
        let id = check.spec.check_id.clone();
        if let Some(old) = self.runners.remove(&id) {
            old.cancel.cancel();
        }
        if self.running && check.needs_runner() {
            let job = check.def.probe().map(|probe| ProbeJob {
                probe,
                interval: check.def.interval.unwrap_or_default(),
                timeout: check.def.timeout,
            });
            let runner = checks::spawn(
                &self.runtime,
                Arc::downgrade(inner),
                id.clone(),
                check.generation,
                job,
                self.session.child_token(),
            );
            self.runners.insert(id.clone(), runner);
        }
        self.checks.insert(id, check);
    }

    fn remove_check(&mut self, id: &str) -> Option<LocalCheck> {
        if let Some(runner) = self.runners.remove(id) {
            runner.cancel.cancel();
        }
        self.checks.remove(id)
    }

    /// Removes a service and its checks.
    fn remove_service(&mut self, id: &str) {
        self.services.remove(id);
        let ids: Vec<String> = self
            .checks
            .values()
            .filter(|c| c.spec.service_id == id)
            .map(|c| c.spec.check_id.clone())
            .collect();
        for check_id in ids {
            self.remove_check(&check_id);
        }
    }

    /// Tells a check's task that its deadlines moved.
    fn wake(&self, id: &str) {
        if let Some(runner) = self.runners.get(id) {
            runner.wake.notify_one();
        }
    }

    fn check_of_generation(&mut self, id: &str, generation: u64) -> Option<&mut LocalCheck> {
        self.checks
            .get_mut(id)
            .filter(|c| c.generation == generation)
    }
}

impl Drop for AgentState {
    fn drop(&mut self) {
        self.session.cancel();
    }
}

/// An IP service address gives the service `lan_ipv4`/`wan_ipv4` (or `_ipv6`) tagged
/// addresses unless set (`addServiceInternal`).
fn add_default_tagged_addresses(s: &mut ServiceSpec) {
    let Ok(ip) = s.address.parse::<IpAddr>() else {
        return;
    };
    let keys = match ip.to_canonical() {
        IpAddr::V4(_) => ["lan_ipv4", "wan_ipv4"],
        IpAddr::V6(_) => ["lan_ipv6", "wan_ipv6"],
    };
    for key in keys {
        s.tagged_addresses
            .entry(key.to_string())
            .or_insert_with(|| ServiceAddress {
                address: s.address.clone(),
                port: s.port,
            });
    }
}

/// The agent's `validateService` checks of explicit tagged addresses (wan_ipv6 unchecked,
/// as in Consul).
fn validate_tagged_addresses(s: &ServiceSpec) -> Result<(), EmulatorError> {
    for (key, want_v4) in [("lan_ipv4", true), ("wan_ipv4", true), ("lan_ipv6", false)] {
        let Some(addr) = s.tagged_addresses.get(key) else {
            continue;
        };
        let ok = match addr.address.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(IpAddr::V4(_)) => want_v4,
            Ok(IpAddr::V6(_)) => !want_v4,
            Err(_) => false,
        };
        if !ok {
            let family = if want_v4 { "ipv4" } else { "ipv6" };
            return Err(EmulatorError::Invalid(format!(
                "Service tagged address {key:?} must be a valid {family} address"
            )));
        }
    }
    Ok(())
}
