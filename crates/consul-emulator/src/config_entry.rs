//! Config entries (`/v1/config`). Every known kind is stored and echoed; only
//! `ingress-gateway` has an effect (on `/v1/health/ingress/<service>`).

use serde_json::{Map, Value};

use super::register::Obj;
use super::versioned::Versioned;
use super::EmulatorError;

pub(super) const INGRESS_GATEWAY: &str = "ingress-gateway";

/// Kinds Consul's `MakeConfigEntry` knows (CE).
const KINDS: [&str; 18] = [
    "service-defaults",
    "proxy-defaults",
    "service-router",
    "service-splitter",
    "service-resolver",
    INGRESS_GATEWAY,
    "terminating-gateway",
    "service-intentions",
    "mesh",
    "exported-services",
    "sameness-group",
    "api-gateway",
    "bound-api-gateway",
    "inline-certificate",
    "file-system-certificate",
    "http-route",
    "tcp-route",
    "jwt-provider",
];

#[derive(Debug, Clone, PartialEq)]
pub(super) struct ConfigEntry {
    pub kind: String,
    pub name: String,
    /// The entry as `GET /v1/config/...` returns it (without the indexes).
    pub body: Map<String, Value>,
    /// For ingress gateways: every service name its listeners list (`*` for a wildcard).
    pub ingress_services: Vec<String>,
}

fn decode(msg: String) -> EmulatorError {
    EmulatorError::ConfigDecode(msg)
}

/// Parses a `PUT /v1/config` body: decode errors (400) then Consul's `Validate` (500).
pub(super) fn parse_config_entry(body: &Value) -> Result<ConfigEntry, EmulatorError> {
    let Value::Object(raw) = body else {
        return Err(decode("request body must be a JSON object".into()));
    };
    let o = Obj::root(body)?;
    let kind = match o.get("Kind") {
        Some(Value::String(k)) => k.clone(),
        _ => {
            return Err(decode(
                "Payload does not contain a kind/Kind key at the top level".into(),
            ))
        }
    };
    if !KINDS.contains(&kind.as_str()) {
        return Err(decode(format!("invalid config entry kind: {kind}")));
    }
    let name = o.string("Name").map_err(|e| decode(e.to_string()))?;
    if name.is_empty() {
        return Err(EmulatorError::Invalid(
            "emulator: config entry Name is required".into(),
        ));
    }
    let mut out: Map<String, Value> = raw
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("kind") && !k.eq_ignore_ascii_case("name"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert("Kind".into(), Value::String(kind.clone()));
    out.insert("Name".into(), Value::String(name.clone()));
    let mut ingress_services = Vec::new();
    if kind == INGRESS_GATEWAY {
        let listeners = parse_listeners(&o)?;
        out.retain(|k, _| !k.eq_ignore_ascii_case("listeners"));
        out.insert(
            "Listeners".into(),
            Value::Array(listeners.iter().map(|l| l.json.clone()).collect()),
        );
        ingress_services = listeners.into_iter().flat_map(|l| l.services).collect();
    }
    Ok(ConfigEntry {
        kind,
        name,
        body: out,
        ingress_services,
    })
}

struct Listener {
    json: Value,
    services: Vec<String>,
}

/// Normalises (protocol lower-cased, default `tcp`) and validates like Consul's
/// `IngressGatewayConfigEntry.Normalize`/`Validate`.
fn parse_listeners(o: &Obj<'_>) -> Result<Vec<Listener>, EmulatorError> {
    let d = |e: EmulatorError| decode(e.to_string());
    let invalid = |msg: String| Err(EmulatorError::Invalid(msg));
    let mut ports = Vec::new();
    let mut out = Vec::new();
    for l in o.objects("Listeners").map_err(d)? {
        let port = l.int("Port").map_err(d)?.unwrap_or(0);
        let mut protocol = l.string("Protocol").map_err(d)?.to_lowercase();
        if protocol.is_empty() {
            protocol = "tcp".into();
        }
        if ports.contains(&port) {
            return invalid(format!("port {port} declared on two listeners"));
        }
        ports.push(port);
        if !matches!(protocol.as_str(), "tcp" | "http" | "http2" | "grpc") {
            return invalid(format!(
                "protocol must be 'tcp', 'http', 'http2', or 'grpc'. '{protocol}' is an unsupported protocol"
            ));
        }
        let services = l.objects("Services").map_err(d)?;
        if services.is_empty() {
            return invalid(format!("No service declared for listener with port {port}"));
        }
        if protocol == "tcp" && services.len() > 1 {
            return invalid(format!(
                "Multiple services per listener are only supported for protocol = 'http' (listener on port {port})"
            ));
        }
        let mut names = Vec::new();
        let mut services_json = Vec::new();
        for s in &services {
            let name = s.string("Name").map_err(d)?;
            if name == "*" && protocol != "http" {
                return invalid(format!(
                    "Wildcard service name is only valid for protocol = 'http' (listener on port {port})"
                ));
            }
            if name.is_empty() {
                return invalid(format!(
                    "Service name cannot be blank (listener on port {port})"
                ));
            }
            let mut sj = s.raw().clone();
            sj.retain(|k, _| !k.eq_ignore_ascii_case("name"));
            sj.insert("Name".into(), Value::String(name.clone()));
            services_json.push(Value::Object(sj));
            names.push(name);
        }
        let mut lj = l.raw().clone();
        lj.retain(|k, _| {
            !["port", "protocol", "services"]
                .iter()
                .any(|x| k.eq_ignore_ascii_case(x))
        });
        lj.insert("Port".into(), port.into());
        lj.insert("Protocol".into(), protocol.into());
        lj.insert("Services".into(), Value::Array(services_json));
        out.push(Listener {
            json: Value::Object(lj),
            services: names,
        });
    }
    Ok(out)
}

/// The entry with its indexes, as `GET /v1/config/<kind>/<name>` returns it.
pub(super) fn config_entry_json(e: &Versioned<ConfigEntry>) -> Value {
    let mut map = e.spec.body.clone();
    map.insert("CreateIndex".into(), e.create_index.into());
    map.insert("ModifyIndex".into(), e.modify_index.into());
    Value::Object(map)
}
