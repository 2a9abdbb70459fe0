//! WAN address translation applied by an agent with `translate_wan_addrs` to answers
//! about another datacenter (Consul's `agent/translate_addr.go`, HTTP callers use
//! `TranslateAddressAcceptAny`). Works on the rendered JSON; `TaggedAddresses` stay as
//! they are.

use serde_json::{Map, Value};

/// The Go type an endpoint hands to `TranslateAddresses`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    /// Nothing to translate (`/v1/catalog/services`, `/v1/health/node`, ...).
    None,
    /// `structs.Nodes`: `/v1/catalog/nodes`.
    Nodes,
    /// `*structs.NodeServices`: `/v1/catalog/node/<node>`.
    NodeServices,
    /// `structs.ServiceNodes`: `/v1/catalog/service/<svc>` and `/v1/catalog/connect/<svc>`.
    ServiceNodes,
    /// `structs.CheckServiceNodes`: `/v1/health/{service,connect,ingress}/<svc>`.
    CheckServiceNodes,
}

pub(super) fn apply(shape: Shape, body: &mut Value) {
    match shape {
        Shape::None => {}
        Shape::Nodes => each(body, |n| node(n, "Address", "TaggedAddresses")),
        Shape::NodeServices => {
            let Some(obj) = body.as_object_mut() else {
                return; // `null`: unknown node
            };
            if let Some(n) = obj.get_mut("Node").and_then(Value::as_object_mut) {
                node(n, "Address", "TaggedAddresses");
            }
            if let Some(services) = obj.get_mut("Services").and_then(Value::as_object_mut) {
                for s in services.values_mut().filter_map(Value::as_object_mut) {
                    service(s, "Address", "Port", "TaggedAddresses");
                }
            }
        }
        Shape::ServiceNodes => each(body, |e| {
            node(e, "Address", "TaggedAddresses");
            service(e, "ServiceAddress", "ServicePort", "ServiceTaggedAddresses");
        }),
        Shape::CheckServiceNodes => check_service_nodes(body),
    }
}

/// Translates a `CheckServiceNodes` array (also the `Nodes` of a prepared query result).
pub(super) fn check_service_nodes(body: &mut Value) {
    each(body, |e| {
        if let Some(n) = e.get_mut("Node").and_then(Value::as_object_mut) {
            node(n, "Address", "TaggedAddresses");
        }
        if let Some(s) = e.get_mut("Service").and_then(Value::as_object_mut) {
            service(s, "Address", "Port", "TaggedAddresses");
        }
    });
}

fn each(body: &mut Value, f: impl Fn(&mut Map<String, Value>)) {
    if let Some(items) = body.as_array_mut() {
        items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(f);
    }
}

/// `TranslateAddress`: node tagged addresses are plain strings.
fn node(obj: &mut Map<String, Value>, addr_key: &str, tagged_key: &str) {
    let tagged =
        |k: &str| -> Option<String> { obj.get(tagged_key)?.get(k)?.as_str().map(str::to_string) };
    let def = obj.get(addr_key).and_then(Value::as_str).unwrap_or("");
    let translated = accept_any(
        tagged("wan").unwrap_or_else(|| def.to_string()),
        tagged("wan_ipv4").or_else(|| tagged("lan_ipv4")),
        tagged("wan_ipv6").or_else(|| tagged("lan_ipv6")),
    );
    obj.insert(addr_key.into(), Value::String(translated));
}

/// `TranslateServiceAddress` and `TranslateServicePort`: service tagged addresses are
/// `{"Address", "Port"}` objects. A service without address stays without one (the
/// client falls back to the node address, translated above).
fn service(obj: &mut Map<String, Value>, addr_key: &str, port_key: &str, tagged_key: &str) {
    let entry = |k: &str| obj.get(tagged_key).and_then(|t| t.get(k)).cloned();
    let address =
        |k: &str| -> Option<String> { Some(entry(k)?.get("Address")?.as_str()?.to_string()) };
    let wan = entry("wan");
    let def = obj.get(addr_key).and_then(Value::as_str).unwrap_or("");
    // Present keys win even with an empty Address (Go map lookup `ok`).
    let translated = accept_any(
        if wan.is_some() {
            address("wan").unwrap_or_default()
        } else {
            def.to_string()
        },
        if entry("wan_ipv4").is_some() {
            address("wan_ipv4")
        } else {
            address("lan_ipv4")
        },
        if entry("wan_ipv6").is_some() {
            address("wan_ipv6")
        } else {
            address("lan_ipv6")
        },
    );
    obj.insert(addr_key.into(), Value::String(translated));
    let wan_port = wan
        .as_ref()
        .and_then(|w| w.get("Port"))
        .and_then(Value::as_i64)
        .filter(|p| *p != 0);
    if let Some(port) = wan_port {
        obj.insert(port_key.into(), port.into());
    }
}

/// `translateAddressAccept(TranslateAddressAcceptAny, def, v4, v6)`: IPv6, then IPv4,
/// then the default, first non-empty.
fn accept_any(def: String, v4: Option<String>, v6: Option<String>) -> String {
    [v6, v4]
        .into_iter()
        .flatten()
        .find(|a| !a.is_empty())
        .unwrap_or(def)
}
