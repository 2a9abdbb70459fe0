//! The agent's operations behind its endpoints, and what its check tasks report back.
//! Lock order: the agent state, then (inside `Inner::write`) the catalog.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::body::{self, truncate_output};
use super::{
    add_default_tagged_addresses, json, nonzero, unknown_check, unknown_service,
    validate_tagged_addresses, LocalCheck, DEFAULT_NODE_MAINTENANCE_REASON,
    DEFAULT_SERVICE_MAINTENANCE_REASON, NODE_MAINTENANCE, SCRIPTS_DISABLED,
    SERVICE_MAINTENANCE_PREFIX,
};
use crate::checks::Plan;
use crate::{lock, EmulatorError, Inner};

impl Inner {
    /// `PUT /v1/agent/service/register`.
    pub(crate) fn agent_register_service(
        self: &Arc<Self>,
        body: &Value,
        replace_existing_checks: bool,
    ) -> Result<(), EmulatorError> {
        let registration = body::parse_service_registration(body)?;
        let mut service = registration.service;
        validate_tagged_addresses(&service)?;
        add_default_tagged_addresses(&mut service);
        if registration.checks.iter().any(|c| c.script) {
            return Err(EmulatorError::Invalid(SCRIPTS_DISABLED.into()));
        }
        let mut state = lock(&self.agent);
        let id = service.id.clone();
        let several = registration.checks.len() > 1;
        let mut fresh = Vec::new();
        for (i, def) in registration.checks.into_iter().enumerate() {
            let check_id = match (def.id.is_empty(), several) {
                (false, _) => def.id.clone(),
                (true, false) => format!("service:{id}"),
                (true, true) => format!("service:{id}:{}", i + 1),
            };
            let name = if def.name.is_empty() {
                format!("Service '{}' check", service.name)
            } else {
                def.name.clone()
            };
            let mut check = LocalCheck::new(&self.cfg.node_name, check_id, name, def, &id);
            // A check registered again keeps its state (Consul's check snapshot).
            if let Some(previous) = state.checks.get(&check.spec.check_id) {
                check.spec.status = previous.spec.status.clone();
                check.spec.output = previous.spec.output.clone();
                check.critical_since = previous.critical_since;
            }
            fresh.push(check);
        }
        let kept: HashSet<String> = fresh.iter().map(|c| c.spec.check_id.clone()).collect();
        let removed: Vec<String> = if replace_existing_checks {
            state
                .checks
                .values()
                .filter(|c| c.spec.service_id == id && !kept.contains(&c.spec.check_id))
                .map(|c| c.spec.check_id.clone())
                .collect()
        } else {
            Vec::new()
        };
        state.services.insert(id.clone(), service);
        for check in fresh {
            state.install(self, check);
        }
        for check_id in &removed {
            state.remove_check(check_id);
        }
        self.sync_service(&state, &id, &removed)
    }

    /// `PUT /v1/agent/service/deregister/<id>`.
    pub(crate) fn agent_deregister_service(&self, id: &str) -> Result<(), EmulatorError> {
        let mut state = lock(&self.agent);
        if !state.services.contains_key(id) {
            return Err(unknown_service(id));
        }
        state.remove_service(id);
        self.catalog_deregister(Some(id), None)
    }

    /// `PUT /v1/agent/check/register`.
    pub(crate) fn agent_register_check(
        self: &Arc<Self>,
        body: &Value,
    ) -> Result<(), EmulatorError> {
        let def = body::parse_check_registration(body)?;
        let mut state = lock(&self.agent);
        if !def.service_id.is_empty() && !state.services.contains_key(&def.service_id) {
            return Err(EmulatorError::NotFound(format!(
                "ServiceID {:?} does not exist",
                def.service_id
            )));
        }
        if def.script {
            return Err(EmulatorError::Invalid(SCRIPTS_DISABLED.into()));
        }
        let (id, name, service_id) = (def.id.clone(), def.name.clone(), def.service_id.clone());
        let check = LocalCheck::new(&self.cfg.node_name, id.clone(), name, def, &service_id);
        state.install(self, check);
        self.sync_check(&state, &id)
    }

    /// `PUT /v1/agent/check/deregister/<id>`.
    pub(crate) fn agent_deregister_check(&self, id: &str) -> Result<(), EmulatorError> {
        let mut state = lock(&self.agent);
        if state.remove_check(id).is_none() {
            return Err(unknown_check(id));
        }
        self.catalog_deregister(None, Some(id))
    }

    /// `PUT /v1/agent/check/{pass,warn,fail,update}/<id>`: sets a TTL check and restarts
    /// its TTL.
    pub(crate) fn agent_update_ttl(
        &self,
        id: &str,
        status: &str,
        output: String,
    ) -> Result<(), EmulatorError> {
        let mut state = lock(&self.agent);
        let Some(check) = state.checks.get_mut(id) else {
            return Err(unknown_check(id));
        };
        let Some(ttl) = nonzero(check.def.ttl) else {
            return Err(EmulatorError::Invalid(format!(
                "CheckID {id:?} does not have associated TTL"
            )));
        };
        let output = truncate_output(output);
        let changed = check.set_status(status, output.clone());
        check.last_ttl_output = output;
        check.ttl_deadline = Some(Instant::now() + ttl);
        state.wake(id);
        if changed {
            self.sync_check(&state, id)
        } else {
            Ok(())
        }
    }

    /// `PUT /v1/agent/service/maintenance/<id>`: idempotent both ways.
    pub(crate) fn agent_service_maintenance(
        self: &Arc<Self>,
        id: &str,
        enable: bool,
        reason: &str,
    ) -> Result<(), EmulatorError> {
        let mut state = lock(&self.agent);
        if !state.services.contains_key(id) {
            return Err(unknown_service(id));
        }
        let check_id = format!("{SERVICE_MAINTENANCE_PREFIX}{id}");
        if !enable {
            if state.remove_check(&check_id).is_none() {
                return Ok(());
            }
            return self.catalog_deregister(None, Some(&check_id));
        }
        if state.checks.contains_key(&check_id) {
            return Ok(());
        }
        let notes = if reason.is_empty() {
            DEFAULT_SERVICE_MAINTENANCE_REASON
        } else {
            reason
        };
        let check = LocalCheck::maintenance(
            &self.cfg.node_name,
            check_id,
            "Service Maintenance Mode",
            notes,
            id,
        );
        state.install(self, check);
        self.sync_service(&state, id, &[])
    }

    /// `PUT /v1/agent/maintenance`: idempotent both ways.
    pub(crate) fn agent_node_maintenance(
        self: &Arc<Self>,
        enable: bool,
        reason: &str,
    ) -> Result<(), EmulatorError> {
        let mut state = lock(&self.agent);
        if !enable {
            if state.remove_check(NODE_MAINTENANCE).is_none() {
                return Ok(());
            }
            return self.catalog_deregister(None, Some(NODE_MAINTENANCE));
        }
        if state.checks.contains_key(NODE_MAINTENANCE) {
            return Ok(());
        }
        let notes = if reason.is_empty() {
            DEFAULT_NODE_MAINTENANCE_REASON
        } else {
            reason
        };
        let check = LocalCheck::maintenance(
            &self.cfg.node_name,
            NODE_MAINTENANCE.to_string(),
            "Node Maintenance Mode",
            notes,
            "",
        );
        state.install(self, check);
        self.sync_check(&state, NODE_MAINTENANCE)
    }

    /// `GET /v1/agent/services`.
    pub(crate) fn agent_services_json(&self) -> Value {
        let state = lock(&self.agent);
        let map = state
            .services
            .iter()
            .map(|(id, s)| (id.clone(), json::service_json(s, &self.cfg.datacenter)))
            .collect();
        Value::Object(map)
    }

    /// `GET /v1/agent/service/<id>`: (content hash, body).
    pub(crate) fn agent_service_json(&self, id: &str) -> Option<(String, Value)> {
        let state = lock(&self.agent);
        let service = state.services.get(id)?;
        Some(json::service_with_hash(service, &self.cfg.datacenter))
    }

    /// `GET /v1/agent/checks`.
    pub(crate) fn agent_checks_json(&self) -> Value {
        let state = lock(&self.agent);
        let map = state
            .checks
            .iter()
            .map(|(id, c)| (id.clone(), json::check_json(c, &state.services)))
            .collect();
        Value::Object(map)
    }

    /// Stops every check task (`Emulator::stop`); they are gone when this returns.
    pub(crate) async fn stop_agent_checks(&self) {
        let tasks: Vec<_> = {
            let mut state = lock(&self.agent);
            state.running = false;
            state.session.cancel();
            state.runners.drain().map(|(_, r)| r.task).collect()
        };
        for task in tasks {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::warn!("agent check task panicked: {e}");
                }
            }
        }
    }

    /// Starts the check tasks again (`Emulator::restart`), TTLs counting from now.
    pub(crate) fn start_agent_checks(self: &Arc<Self>) {
        let mut state = lock(&self.agent);
        if state.running {
            return;
        }
        state.running = true;
        state.session = CancellationToken::new();
        let checks = std::mem::take(&mut state.checks);
        let now = Instant::now();
        for mut check in checks.into_values() {
            check.ttl_deadline = nonzero(check.def.ttl).map(|ttl| now + ttl);
            state.install(self, check);
        }
    }

    // ---- For the check tasks ([`crate::checks`]).

    /// The deadlines of a check; `None` when it is gone or was registered again.
    pub(crate) fn runner_plan(&self, id: &str, generation: u64) -> Option<Plan> {
        let mut state = lock(&self.agent);
        let check = state.check_of_generation(id, generation)?;
        Some(Plan {
            ttl: check.ttl_deadline,
            reap: check.reap_at(),
        })
    }

    pub(crate) fn runner_ttl_expired(&self, id: &str, generation: u64) {
        let mut state = lock(&self.agent);
        let Some(check) = state.check_of_generation(id, generation) else {
            return;
        };
        // A pass may have come in since the task looked.
        if check.ttl_deadline.is_none_or(|at| at > Instant::now()) {
            return;
        }
        check.ttl_deadline = None;
        let output = if check.last_ttl_output.is_empty() {
            "TTL expired".to_string()
        } else {
            format!(
                "TTL expired (last output before timeout follows): {}",
                check.last_ttl_output
            )
        };
        if check.set_status("critical", output) {
            self.log_sync(self.sync_check(&state, id));
        }
    }

    pub(crate) fn runner_probe_result(
        &self,
        id: &str,
        generation: u64,
        status: &str,
        output: String,
    ) {
        let mut state = lock(&self.agent);
        let Some(check) = state.check_of_generation(id, generation) else {
            return;
        };
        if check.set_status(status, output) {
            self.log_sync(self.sync_check(&state, id));
        }
    }

    /// Deregisters the check's service if it has been critical for too long.
    pub(crate) fn runner_reap(&self, id: &str, generation: u64) {
        let mut state = lock(&self.agent);
        let Some(check) = state.check_of_generation(id, generation) else {
            return;
        };
        if check.reap_at().is_none_or(|at| at > Instant::now()) {
            return;
        }
        let service_id = check.spec.service_id.clone();
        if !state.services.contains_key(&service_id) {
            return;
        }
        tracing::info!(
            service = %service_id,
            check = %id,
            "Check for service has been critical for too long; deregistered service"
        );
        state.remove_service(&service_id);
        self.log_sync(self.catalog_deregister(Some(&service_id), None));
    }
}
