//! The agent's writes to the catalog: every change of its state is written at once, through
//! the catalog's own register/deregister paths (so indexes move and blocked queries wake as
//! for `/v1/catalog/register`), always on the agent's node in the agent's datacenter.

use super::AgentState;
use crate::register::{self, DeregisterRequest, NodeSpec, RegisterRequest};
use crate::state::Catalog;
use crate::{demo, EmulatorError, Inner};

impl Inner {
    /// The agent's node as the catalog has it (or as at start, if it was deregistered).
    fn agent_node(&self, catalog: &Catalog) -> Result<NodeSpec, EmulatorError> {
        match catalog.node(&self.cfg.node_name) {
            Some(entry) => Ok(entry.node.spec.clone()),
            None => Ok(register::parse_register(&demo::agent_node_body(&self.cfg))?.node),
        }
    }

    /// Writes a service with all its checks, after dropping the checks in `removed`: one
    /// write, one wake-up. Writing everything again also repairs what a catalog
    /// deregistration removed behind the agent's back (as anti-entropy would).
    pub(super) fn sync_service(
        &self,
        state: &AgentState,
        id: &str,
        removed: &[String],
    ) -> Result<(), EmulatorError> {
        let Some(service) = state.services.get(id) else {
            return Ok(());
        };
        let checks = state
            .checks
            .values()
            .filter(|c| c.spec.service_id == id)
            .map(|c| c.spec.clone())
            .collect();
        self.write(None, |catalog| {
            let node = self.agent_node(catalog)?;
            for check_id in removed {
                catalog.deregister(DeregisterRequest {
                    datacenter: None,
                    node: node.name.clone(),
                    service_id: None,
                    check_id: Some(check_id.clone()),
                })?;
            }
            catalog.register(RegisterRequest {
                datacenter: None,
                node,
                service: Some(service.clone()),
                checks,
                skip_node_update: false,
            })
        })
    }

    /// Writes a check: with its service for a service check, alone for a node check.
    pub(super) fn sync_check(
        &self,
        state: &AgentState,
        check_id: &str,
    ) -> Result<(), EmulatorError> {
        let Some(check) = state.checks.get(check_id) else {
            return Ok(());
        };
        if !check.spec.service_id.is_empty() {
            return self.sync_service(state, &check.spec.service_id, &[]);
        }
        self.write(None, |catalog| {
            let node = self.agent_node(catalog)?;
            catalog.register(RegisterRequest {
                datacenter: None,
                node,
                service: None,
                checks: vec![check.spec.clone()],
                skip_node_update: false,
            })
        })
    }

    pub(super) fn catalog_deregister(
        &self,
        service_id: Option<&str>,
        check_id: Option<&str>,
    ) -> Result<(), EmulatorError> {
        self.write(None, |catalog| {
            catalog.deregister(DeregisterRequest {
                datacenter: None,
                node: self.cfg.node_name.clone(),
                service_id: service_id.map(str::to_string),
                check_id: check_id.map(str::to_string),
            })
        })
    }

    /// A check task has no one to report a failed catalog write to.
    pub(super) fn log_sync(&self, result: Result<(), EmulatorError>) {
        if let Err(e) = result {
            tracing::warn!("agent: failed to sync a check to the catalog: {e}");
        }
    }
}
