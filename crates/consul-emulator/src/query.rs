//! Prepared queries (`/v1/query`): parsing, stored JSON shape and execution.
//!
//! Supported: `Name`, `Session` (not checked), `Token` (echoed), `Service.{Service,
//! OnlyPassing, IgnoreCheckIDs, Tags, NodeMeta, ServiceMeta, Connect}`, `DNS.TTL`.
//! `Service.Failover` and `Service.Near` are stored and echoed but not acted on (no
//! failover, no RTT sort). Templates of type `name_prefix_match` match the longest prefix of
//! the name asked for (the empty name matches every name) and interpolate `${name.full}`,
//! `${name.prefix}` and `${name.suffix}` into `Service.Service`; `Regexp` is refused.

use std::collections::BTreeMap;

use rand::Rng;
use serde_json::{json, Value};

use super::register::Obj;
use super::versioned::Versioned;
use super::EmulatorError;
use crate::duration;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct QuerySpec {
    /// Lower-case UUID (set by the catalog).
    pub id: String,
    pub name: String,
    pub session: String,
    pub token: String,
    pub service: String,
    pub only_passing: bool,
    pub ignore_check_ids: Vec<String>,
    /// `None` when absent (echoed as `null`, like a nil Go slice).
    pub tags: Option<Vec<String>>,
    pub node_meta: Option<BTreeMap<String, String>>,
    pub service_meta: Option<BTreeMap<String, String>>,
    pub connect: bool,
    pub near: String,
    pub failover_nearest_n: i64,
    pub failover_datacenters: Option<Vec<String>>,
    pub dns_ttl: String,
    /// `Template.Type`: empty, or `name_prefix_match`.
    pub template_type: String,
}

/// Consul's only template type.
pub(super) const NAME_PREFIX_MATCH: &str = "name_prefix_match";

impl QuerySpec {
    pub fn is_template(&self) -> bool {
        self.template_type == NAME_PREFIX_MATCH
    }

    /// The query a template stands for when asked as `asked` (Consul's `Render` with the
    /// `name.*` variables); a plain query unchanged.
    pub fn rendered(&self, asked: &str) -> QuerySpec {
        if !self.is_template() {
            return self.clone();
        }
        let asked = asked.to_lowercase();
        let prefix = self.name.to_lowercase();
        let suffix = asked.strip_prefix(prefix.as_str()).unwrap_or_default();
        let service = self
            .service
            .replace("${name.full}", &asked)
            .replace("${name.prefix}", &prefix)
            .replace("${name.suffix}", suffix);
        QuerySpec {
            service,
            ..self.clone()
        }
    }
}

/// Consul's `PreparedQuery.Apply` checks for create and update (`parseQuery`).
pub(super) fn parse_query(body: &Value) -> Result<QuerySpec, EmulatorError> {
    let o = Obj::root(body)?;
    let svc = o.object("Service")?;
    let string = |key: &str| -> Result<String, EmulatorError> {
        svc.as_ref().map_or(Ok(String::new()), |s| s.string(key))
    };
    let present = |key: &str| svc.as_ref().is_some_and(|s| s.get(key).is_some());
    let (nearest_n, datacenters) = match svc.as_ref().map(|s| s.object("Failover")).transpose()? {
        Some(Some(f)) => (
            f.int("NearestN")?.unwrap_or(0),
            f.get("Datacenters")
                .is_some()
                .then(|| f.strings("Datacenters"))
                .transpose()?,
        ),
        _ => (0, None),
    };
    let template = o.object("Template")?;
    let (ttl, template_type, regexp) = (
        o.object("DNS")?
            .map(|d| d.string("TTL"))
            .transpose()?
            .unwrap_or_default(),
        template
            .as_ref()
            .map(|t| t.string("Type"))
            .transpose()?
            .unwrap_or_default(),
        template
            .as_ref()
            .map(|t| t.string("Regexp"))
            .transpose()?
            .unwrap_or_default(),
    );
    let spec = QuerySpec {
        id: o.string("ID")?,
        name: o.string("Name")?,
        session: o.string("Session")?,
        token: o.string("Token")?,
        service: string("Service")?,
        only_passing: svc
            .as_ref()
            .map_or(Ok(false), |s| s.boolean("OnlyPassing"))?,
        ignore_check_ids: svc
            .as_ref()
            .map_or(Ok(Vec::new()), |s| s.strings("IgnoreCheckIDs"))?,
        tags: present("Tags")
            .then(|| svc.as_ref().map(|s| s.strings("Tags")))
            .flatten()
            .transpose()?,
        node_meta: present("NodeMeta")
            .then(|| svc.as_ref().map(|s| s.string_map("NodeMeta")))
            .flatten()
            .transpose()?,
        service_meta: present("ServiceMeta")
            .then(|| svc.as_ref().map(|s| s.string_map("ServiceMeta")))
            .flatten()
            .transpose()?,
        connect: svc.as_ref().map_or(Ok(false), |s| s.boolean("Connect"))?,
        near: string("Near")?,
        failover_nearest_n: nearest_n,
        failover_datacenters: datacenters,
        dns_ttl: ttl,
        template_type,
    };
    if !spec.template_type.is_empty() && !spec.is_template() {
        return Err(invalid(&format!(
            "Bad Template: unsupported template type '{}'",
            spec.template_type
        )));
    }
    if !regexp.is_empty() {
        return Err(invalid("emulator: template Regexp is not supported"));
    }
    if spec.name.is_empty() && spec.session.is_empty() && !spec.is_template() {
        return Err(invalid("Must be bound to a session"));
    }
    if spec.service.is_empty() {
        return Err(invalid("Must provide a Service name to query"));
    }
    if spec.failover_nearest_n < 0 {
        return Err(invalid(&format!(
            "Bad NearestN '{}', must be >= 0",
            spec.failover_nearest_n
        )));
    }
    if !spec.dns_ttl.is_empty() && duration::parse(&spec.dns_ttl).is_err() {
        let ttl = &spec.dns_ttl;
        return Err(invalid(&format!(
            "Bad DNS TTL '{ttl}': time: invalid duration \"{ttl}\""
        )));
    }
    Ok(spec)
}

fn invalid(msg: &str) -> EmulatorError {
    EmulatorError::Invalid(format!("Invalid prepared query: {msg}"))
}

/// A random (version 4) UUID, lower case.
pub(super) fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A stored query as `GET /v1/query` lists it (Consul's `PreparedQuery`).
pub(super) fn query_json(q: &Versioned<QuerySpec>) -> Value {
    let s = &q.spec;
    json!({
        "ID": s.id,
        "Name": s.name,
        "Session": s.session,
        "Token": s.token,
        "Service": {
            "Service": s.service,
            "Failover": {
                "NearestN": s.failover_nearest_n,
                "Datacenters": s.failover_datacenters,
            },
            "OnlyPassing": s.only_passing,
            "IgnoreCheckIDs": if s.ignore_check_ids.is_empty() {
                Value::Null
            } else {
                json!(s.ignore_check_ids)
            },
            "Near": s.near,
            "Tags": s.tags,
            "NodeMeta": s.node_meta,
            "ServiceMeta": s.service_meta,
            "Connect": s.connect,
        },
        "DNS": { "TTL": s.dns_ttl },
        "Template": { "Type": s.template_type, "Regexp": "", "RemoveEmptyTags": false },
        "CreateIndex": q.create_index,
        "ModifyIndex": q.modify_index,
    })
}
