//! Parsing of `/v1/catalog/register` and `/v1/catalog/deregister` bodies.
//!
//! Field names match case-insensitively, like Go's `encoding/json` (so the docs'
//! lower-case `address`/`port` in tagged addresses work); unknown fields are ignored.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::EmulatorError;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct NodeSpec {
    pub name: String,
    pub id: String,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct ServiceAddress {
    pub address: String,
    pub port: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct ServiceSpec {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: BTreeMap<String, String>,
    pub port: i64,
    pub weights: (i64, i64),
    pub enable_tag_override: bool,
    /// `Proxy` (ConnectProxyConfig) with known fields under their canonical names.
    pub proxy: Map<String, Value>,
    /// `Connect.Native`.
    pub connect_native: bool,
}

impl ServiceSpec {
    /// The service this instance serves over Connect: a proxy's destination, or itself
    /// when Connect-native.
    pub fn connect_target(&self) -> Option<&str> {
        if self.kind == KIND_CONNECT_PROXY {
            self.proxy
                .get("DestinationServiceName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        } else if self.connect_native {
            Some(&self.name)
        } else {
            None
        }
    }
}

pub(super) const KIND_CONNECT_PROXY: &str = "connect-proxy";

/// ConnectProxyConfig fields, as Consul names them in JSON.
const PROXY_FIELDS: [&str; 13] = [
    "EnvoyExtensions",
    "DestinationServiceName",
    "DestinationServiceID",
    "LocalServiceAddress",
    "LocalServicePort",
    "LocalServiceSocketPath",
    "Mode",
    "Config",
    "Upstreams",
    "MeshGateway",
    "Expose",
    "TransparentProxy",
    "AccessLogs",
];

#[derive(Debug, Clone, PartialEq)]
pub(super) struct CheckSpec {
    pub node: String,
    pub check_id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    /// Echoed as given (`{}` when absent).
    pub definition: Value,
    /// `Type` as the agent sets it (`ttl`, `http`, `maintenance`…); empty for catalog
    /// registrations, whose type is read from `definition`.
    pub check_type: String,
}

#[derive(Debug)]
pub(super) struct RegisterRequest {
    pub datacenter: Option<String>,
    pub node: NodeSpec,
    pub service: Option<ServiceSpec>,
    pub checks: Vec<CheckSpec>,
    pub skip_node_update: bool,
}

#[derive(Debug)]
pub(super) struct DeregisterRequest {
    pub datacenter: Option<String>,
    pub node: String,
    pub service_id: Option<String>,
    pub check_id: Option<String>,
}

pub(super) fn parse_register(body: &Value) -> Result<RegisterRequest, EmulatorError> {
    let o = Obj::root(body)?;
    let node_name = o.string("Node")?;
    if node_name.is_empty() {
        return Err(EmulatorError::MissingNode);
    }
    let skip_node_update = o.boolean("SkipNodeUpdate")?;
    let address = o.string("Address")?;
    if address.is_empty() && !skip_node_update {
        return Err(EmulatorError::MissingAddress);
    }
    let id = o.string("ID")?;
    if !id.is_empty() {
        validate_uuid(&id)?;
    }
    let node = NodeSpec {
        name: node_name.clone(),
        id,
        address,
        tagged_addresses: o.string_map("TaggedAddresses")?,
        meta: o.string_map("NodeMeta")?,
    };
    let service = o
        .object("Service")?
        .map(|s| parse_service(&s))
        .transpose()?;

    let mut check_objs = Vec::new();
    check_objs.extend(o.object("Check")?);
    check_objs.extend(o.objects("Checks")?);
    let checks = check_objs
        .iter()
        .map(|c| parse_check(c, &node_name))
        .collect::<Result<_, _>>()?;

    Ok(RegisterRequest {
        datacenter: Some(o.string("Datacenter")?).filter(|s| !s.is_empty()),
        node,
        service,
        checks,
        skip_node_update,
    })
}

pub(super) fn parse_deregister(body: &Value) -> Result<DeregisterRequest, EmulatorError> {
    let o = Obj::root(body)?;
    let node = o.string("Node")?;
    if node.is_empty() {
        return Err(EmulatorError::MissingNode);
    }
    let non_empty = |s: String| Some(s).filter(|s| !s.is_empty());
    Ok(DeregisterRequest {
        datacenter: non_empty(o.string("Datacenter")?),
        node,
        service_id: non_empty(o.string("ServiceID")?),
        check_id: non_empty(o.string("CheckID")?),
    })
}

/// A catalog `Service` object (also the agent's service definition, once its `Name` is
/// moved to `Service`).
pub(super) fn parse_service(o: &Obj<'_>) -> Result<ServiceSpec, EmulatorError> {
    let name = o.string("Service")?;
    let mut id = o.string("ID")?;
    if id.is_empty() {
        id = name.clone();
    }
    if name.is_empty() {
        return Err(EmulatorError::MissingServiceName);
    }
    let address = o.string("Address")?;
    if matches!(address.as_str(), "0.0.0.0" | "::" | "[::]") {
        return Err(EmulatorError::InvalidServiceAddress);
    }
    let mut tagged_addresses = BTreeMap::new();
    if let Some(map) = o.object("TaggedAddresses")? {
        for key in map.keys() {
            if let Some(entry) = map.object(&key)? {
                let sa = ServiceAddress {
                    address: entry.string("Address")?,
                    port: entry.int("Port")?.unwrap_or(0),
                };
                tagged_addresses.insert(key, sa);
            }
        }
    }
    let mut proxy = Map::new();
    if let Some(p) = o.object("Proxy")? {
        for field in PROXY_FIELDS {
            if let Some(v) = p.get(field) {
                proxy.insert(field.to_string(), v.clone());
            }
        }
    }
    let connect_native = match o.object("Connect")? {
        Some(c) => c.boolean("Native")?,
        None => false,
    };
    let weights = match o.object("Weights")? {
        Some(w) => (
            w.int("Passing")?.unwrap_or(0),
            w.int("Warning")?.unwrap_or(0),
        ),
        None => (1, 1),
    };
    let spec = ServiceSpec {
        id,
        name,
        kind: o.string("Kind")?,
        tags: o.strings("Tags")?,
        address,
        tagged_addresses,
        meta: o.string_map("Meta")?,
        port: o.int("Port")?.unwrap_or(0),
        weights,
        enable_tag_override: o.boolean("EnableTagOverride")?,
        proxy,
        connect_native,
    };
    validate_service(&spec)?;
    Ok(spec)
}

/// Consul's `NodeService.Validate` (Connect proxy part), with go-multierror's message.
fn validate_service(s: &ServiceSpec) -> Result<(), EmulatorError> {
    let mut errors = Vec::new();
    if s.kind == KIND_CONNECT_PROXY {
        let dest = s
            .proxy
            .get("DestinationServiceName")
            .and_then(Value::as_str);
        match dest.map(str::trim) {
            None | Some("") => errors
                .push("Proxy.DestinationServiceName must be non-empty for Connect proxy services"),
            Some("*") => errors.push(
                "Proxy.DestinationServiceName must not be a wildcard for Connect proxy services",
            ),
            Some(_) => {}
        }
        if s.port == 0 {
            errors.push("Port or SocketPath must be set for a Connect proxy");
        }
        if s.connect_native {
            errors.push("A Proxy cannot also be Connect Native, only typical services");
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(EmulatorError::Invalid(multierror(&errors)))
    }
}

/// go-multierror's `ListFormatFunc`.
pub(super) fn multierror(errors: &[&str]) -> String {
    if let [one] = errors {
        return format!("1 error occurred:\n\t* {one}\n\n");
    }
    let points: Vec<String> = errors.iter().map(|e| format!("* {e}")).collect();
    format!(
        "{} errors occurred:\n\t{}\n\n",
        errors.len(),
        points.join("\n\t")
    )
}

fn parse_check(o: &Obj<'_>, request_node: &str) -> Result<CheckSpec, EmulatorError> {
    let name = o.string("Name")?;
    let mut check_id = o.string("CheckID")?;
    if check_id.is_empty() {
        check_id = name.clone();
    }
    if check_id.is_empty() {
        return Err(EmulatorError::MissingCheckId);
    }
    let mut node = o.string("Node")?;
    if node.is_empty() {
        node = request_node.to_string();
    }
    let mut status = o.string("Status")?;
    if status.is_empty() {
        status = "critical".to_string();
    }
    if !matches!(status.as_str(), "passing" | "warning" | "critical") {
        return Err(EmulatorError::InvalidCheckStatus(status));
    }
    let definition = match o.get("Definition") {
        Some(v @ Value::Object(_)) => v.clone(),
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(_) => return Err(o.type_error("Definition", "an object")),
    };
    Ok(CheckSpec {
        node,
        check_id,
        name,
        status,
        notes: o.string("Notes")?,
        output: o.string("Output")?,
        service_id: o.string("ServiceID")?,
        definition,
        check_type: String::new(),
    })
}

/// Same checks and messages as go-uuid's `ParseUUID`.
fn validate_uuid(id: &str) -> Result<(), EmulatorError> {
    if id.len() != 36 {
        return Err(EmulatorError::BadNodeId(
            "uuid string is wrong length".to_string(),
        ));
    }
    let well_formed = id.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-',
        _ => c.is_ascii_hexdigit(),
    });
    if !well_formed {
        return Err(EmulatorError::BadNodeId(
            "uuid is improperly formatted".to_string(),
        ));
    }
    Ok(())
}

/// A JSON object with case-insensitive, typed field access; `path` names it in errors.
pub(super) struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    pub(super) fn root(v: &'a Value) -> Result<Self, EmulatorError> {
        match v {
            Value::Object(map) => Ok(Obj {
                map,
                path: String::new(),
            }),
            _ => Err(EmulatorError::Decode(
                "request body must be a JSON object".to_string(),
            )),
        }
    }

    /// The underlying JSON object.
    pub(super) fn raw(&self) -> &'a Map<String, Value> {
        self.map
    }

    pub(super) fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn type_error(&self, key: &str, expected: &str) -> EmulatorError {
        EmulatorError::Decode(format!("{}: expected {expected}", self.field_path(key)))
    }

    pub(super) fn keys(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// Exact match first, then case-insensitive (Go's rule). `null` counts as absent.
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map
            .get(key)
            .or_else(|| {
                self.map
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
            .filter(|v| !v.is_null())
    }

    pub(super) fn string(&self, key: &str) -> Result<String, EmulatorError> {
        match self.get(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.type_error(key, "a string")),
        }
    }

    pub(super) fn boolean(&self, key: &str) -> Result<bool, EmulatorError> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.type_error(key, "a boolean")),
        }
    }

    pub(super) fn int(&self, key: &str) -> Result<Option<i64>, EmulatorError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.type_error(key, "an integer")),
        }
    }

    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>, EmulatorError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| self.type_error(key, "an array of strings")),
            Some(_) => Err(self.type_error(key, "an array of strings")),
        }
    }

    pub(super) fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, EmulatorError> {
        let Some(o) = self.object(key)? else {
            return Ok(BTreeMap::new());
        };
        o.map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(o.type_error(k, "a string")),
            })
            .collect()
    }

    pub(super) fn object(&self, key: &str) -> Result<Option<Obj<'a>>, EmulatorError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                map,
                path: self.field_path(key),
            })),
            Some(_) => Err(self.type_error(key, "an object")),
        }
    }

    pub(super) fn objects(&self, key: &str) -> Result<Vec<Obj<'a>>, EmulatorError> {
        let items = match self.get(key) {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(self.type_error(key, "an array of objects")),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(map) => Ok(Obj {
                    map,
                    path: format!("{}[{i}]", self.field_path(key)),
                }),
                _ => Err(self.type_error(key, "an array of objects")),
            })
            .collect()
    }
}
