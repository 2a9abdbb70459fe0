//! The demo catalog of `--dev` mode ([`Emulator::seed_demo`]), registered through the normal
//! `/v1/catalog/register` code path.
//!
//! | node         | address        | meta         | node check           |
//! |--------------|----------------|--------------|----------------------|
//! | `consul-dev` | 127.0.0.1      | –            | `serfHealth` passing |
//! | `node1`      | 192.168.56.11  | `rack=r1`    | `serfHealth` passing |
//! | `node2`      | 192.168.56.12  | `rack=r2`    | `serfHealth` passing |
//! | `node3`      | 192.168.56.13  | `rack=r3`    | `serfHealth` passing |
//!
//! Services (addresses on the 10.2.0.0/16 container network, as registrator `-internal`
//! registers them; service check ID `service:<ID>`):
//!
//! | service | ID        | node         | address   | port | tags          | check    |
//! |---------|-----------|--------------|-----------|------|---------------|----------|
//! | consul  | consul    | `consul-dev` | –         | 8300 | –             | (none)   |
//! | web     | web-1     | node1        | 10.2.1.1  | 80   | v1, http      | passing  |
//! | web     | web-2     | node2        | 10.2.1.2  | 80   | v1, http      | passing  |
//! | web     | web-3     | node3        | 10.2.1.3  | 80   | v1, http      | passing  |
//! | web     | web-4     | node1        | 10.2.1.4  | 80   | v1, http      | critical |
//! | api     | api-1     | node1        | 10.2.2.1  | 8080 | v2            | passing  |
//! | api     | api-2     | node2        | 10.2.2.2  | 8080 | v2            | warning  |
//! | db      | db-1      | node2        | 10.2.3.1  | 5432 | primary       | passing  |
//! | db      | db-2      | node3        | 10.2.3.2  | 5432 | secondary     | passing  |
//! | redis   | redis-1   | node2        | – (node)  | 6379 | –             | passing  |
//!
//! Also: `web-sidecar-proxy` (Connect proxy of `web`, 10.2.1.1:21000, carrying the virtual
//! IP 240.0.0.1 as its `consul-virtual` tagged address), an ingress gateway `ingress`
//! (10.2.9.1:8443) in front of `api`, and the prepared query `primary-db` (service `db`, tag
//! `primary`, TTL 10s).
//!
//! So DNS sees three healthy `web` instances (web-4 is critical), both `api` instances
//! (warning is not critical) unless only-passing is on, and `redis` at the node address
//! 192.168.56.12. Nodes carry `lan`/`lan_ipv4`/`wan`/`wan_ipv4` tagged addresses and
//! services with an address carry `lan_ipv4`/`wan_ipv4`, as agents auto-populate them.

use serde_json::{json, Value};

use super::{Emulator, EmulatorConfig};

/// Node ID reported for the agent's own node.
pub(super) const AGENT_NODE_ID: &str = "6a5a6f3e-7c2d-4b6e-9a1f-0d3c2b1a0e01";

// Tables, kept one row per line.
#[rustfmt::skip]
const NODES: [(&str, &str, &str, &str); 3] = [
    ("node1", "192.168.56.11", "r1", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f1"),
    ("node2", "192.168.56.12", "r2", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f2"),
    ("node3", "192.168.56.13", "r3", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f3"),
];

/// (node, id, name, address, port, tags, check status)
type DemoService = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u16,
    &'static [&'static str],
    &'static str,
);

#[rustfmt::skip]
const SERVICES: [DemoService; 9] = [
    ("node1", "web-1",   "web",   "10.2.1.1", 80,   &["v1", "http"], "passing"),
    ("node2", "web-2",   "web",   "10.2.1.2", 80,   &["v1", "http"], "passing"),
    ("node3", "web-3",   "web",   "10.2.1.3", 80,   &["v1", "http"], "passing"),
    ("node1", "web-4",   "web",   "10.2.1.4", 80,   &["v1", "http"], "critical"),
    ("node1", "api-1",   "api",   "10.2.2.1", 8080, &["v2"],         "passing"),
    ("node2", "api-2",   "api",   "10.2.2.2", 8080, &["v2"],         "warning"),
    ("node2", "db-1",    "db",    "10.2.3.1", 5432, &["primary"],    "passing"),
    ("node3", "db-2",    "db",    "10.2.3.2", 5432, &["secondary"],  "passing"),
    ("node2", "redis-1", "redis", "",         6379, &[],             "passing"),
];

fn node_tagged_addresses(address: &str) -> Value {
    json!({ "lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address })
}

fn serf_health() -> Value {
    json!({ "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
            "Output": "Agent alive and reachable" })
}

fn register(emu: &Emulator, body: Value) {
    if let Err(e) = emu.register(body) {
        tracing::error!("demo registration failed: {e}");
    }
}

/// The agent's own node as a catalog register body (no service, no check): what the agent
/// API registers its services on.
pub(super) fn agent_node_body(cfg: &EmulatorConfig) -> Value {
    json!({
        "ID": AGENT_NODE_ID,
        "Node": cfg.node_name,
        "Address": "127.0.0.1",
        "TaggedAddresses": node_tagged_addresses("127.0.0.1"),
        "NodeMeta": { "consul-network-segment": "" },
    })
}

/// The agent's own node and its `consul` service, present from start like on a real server.
pub(super) fn register_agent_node(emu: &Emulator) {
    let mut body = agent_node_body(&emu.inner.cfg);
    body["Service"] = json!({ "ID": "consul", "Service": "consul", "Port": 8300 });
    body["Checks"] = json!([serf_health()]);
    register(emu, body);
}

pub(super) fn seed(emu: &Emulator) {
    register_agent_node(emu);
    for (name, address, rack, id) in NODES {
        register(
            emu,
            json!({
                "ID": id,
                "Node": name,
                "Address": address,
                "TaggedAddresses": node_tagged_addresses(address),
                "NodeMeta": { "rack": rack },
                "Checks": [serf_health()],
            }),
        );
    }
    for (node, id, name, address, port, tags, status) in SERVICES {
        let mut service = json!({ "ID": id, "Service": name, "Tags": tags, "Port": port });
        if !address.is_empty() {
            service["Address"] = json!(address);
            service["TaggedAddresses"] = json!({
                "lan_ipv4": { "Address": address, "Port": port },
                "wan_ipv4": { "Address": address, "Port": port },
            });
        }
        register(
            emu,
            json!({
                "Node": node,
                "SkipNodeUpdate": true,
                "Service": service,
                "Check": {
                    "CheckID": format!("service:{id}"),
                    "Name": format!("Service '{name}' check"),
                    "Status": status,
                    "ServiceID": id,
                },
            }),
        );
    }
    seed_mesh(emu);
}

/// Something to try for every kind of name: a sidecar proxy and a virtual IP for `web`, an
/// ingress gateway in front of `api`, a prepared query for the primary database.
fn seed_mesh(emu: &Emulator) {
    register(
        emu,
        json!({
            "Node": "node1", "SkipNodeUpdate": true,
            "Service": { "ID": "web-1-sidecar-proxy", "Service": "web-sidecar-proxy",
                         "Kind": "connect-proxy", "Address": "10.2.1.1", "Port": 21000,
                         "TaggedAddresses": { "consul-virtual": { "Address": "240.0.0.1", "Port": 80 } },
                         "Proxy": { "DestinationServiceName": "web", "DestinationServiceID": "web-1" } },
        }),
    );
    register(
        emu,
        json!({
            "Node": "node3", "SkipNodeUpdate": true,
            "Service": { "ID": "ingress-1", "Service": "ingress", "Kind": "ingress-gateway",
                         "Address": "10.2.9.1", "Port": 8443 },
        }),
    );
    let entry = json!({ "Kind": "ingress-gateway", "Name": "ingress",
                        "Listeners": [{ "Port": 8443, "Protocol": "tcp", "Services": [{ "Name": "api" }] }] });
    if let Err(e) = emu.put_config_entry(entry) {
        tracing::error!("demo ingress configuration failed: {e}");
    }
    let query = json!({ "Name": "primary-db", "Service": { "Service": "db", "Tags": ["primary"] },
                        "DNS": { "TTL": "10s" } });
    if let Err(e) = emu.create_query(query) {
        tracing::error!("demo prepared query failed: {e}");
    }
}
