//! Integration tests of the Consul HTTP API emulator over real loopback HTTP.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use consul_emulator::{run_dev, Emulator, EmulatorConfig, EmulatorError, Fault};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::*;

async fn demo() -> Emulator {
    run_dev(loopback()).await.expect("start demo emulator")
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/consul/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Field-shape comparison with the fixtures.

/// Field names of a JSON document: arrays are merged over their elements, maps keyed by
/// data (tagged addresses, meta, the `Services` map) over their values.
#[derive(Debug, Clone)]
enum Shape {
    Leaf,
    Object(BTreeMap<String, Shape>),
}

const DATA_KEYED: &[&str] = &[
    "TaggedAddresses",
    "ServiceTaggedAddresses",
    "Meta",
    "NodeMeta",
    "ServiceMeta",
    "Services",
    "Tags",
];
/// Version-dependent sub-objects compared by presence only (docs samples show the Consul
/// 1.2-era proxy shape, the real capture the current `{"MeshGateway":{},"Expose":{}}`).
const OPAQUE: &[&str] = &[
    "ServiceProxy",
    "ServiceConnect",
    "Proxy",
    "Connect",
    "Definition",
    "DebugConfig",
];

fn shape(v: &Value, data_keyed: bool) -> Shape {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| shape(i, false))
            .fold(Shape::Leaf, merge),
        Value::Object(map) if data_keyed => map
            .values()
            .map(|i| shape(i, false))
            .fold(Shape::Leaf, merge),
        Value::Object(map) => Shape::Object(
            map.iter()
                .map(|(k, v)| {
                    let s = if OPAQUE.contains(&k.as_str()) {
                        Shape::Leaf
                    } else {
                        shape(v, DATA_KEYED.contains(&k.as_str()))
                    };
                    (k.clone(), s)
                })
                .collect(),
        ),
        _ => Shape::Leaf,
    }
}

fn merge(a: Shape, b: Shape) -> Shape {
    match (a, b) {
        (Shape::Object(mut x), Shape::Object(y)) => {
            for (k, v) in y {
                let merged = match x.remove(&k) {
                    Some(old) => merge(old, v),
                    None => v,
                };
                x.insert(k, merged);
            }
            Shape::Object(x)
        }
        (Shape::Object(x), Shape::Leaf) | (Shape::Leaf, Shape::Object(x)) => Shape::Object(x),
        _ => Shape::Leaf,
    }
}

/// `-path` for a fixture field the emulator lacks, `+path` for an extra emulator field.
fn shape_diff(fixture: &Shape, actual: &Shape, path: &str, out: &mut BTreeSet<String>) {
    match (fixture, actual) {
        (Shape::Object(f), Shape::Object(a)) => {
            for k in f.keys().chain(a.keys()) {
                match (f.get(k), a.get(k)) {
                    (Some(_), None) => out.insert(format!("-{path}{k}")),
                    (None, Some(_)) => out.insert(format!("+{path}{k}")),
                    (Some(x), Some(y)) => {
                        shape_diff(x, y, &format!("{path}{k}."), out);
                        false
                    }
                    (None, None) => false,
                };
            }
        }
        (Shape::Leaf, Shape::Leaf) => {}
        _ => {
            out.insert(format!("~{path}"));
        }
    }
}

/// The docs samples write tagged service addresses as `address`/`port`; real agents emit
/// `Address`/`Port` (real-catalog-service-order-ms.json), which is what we compare with.
fn capitalise_service_addresses(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k.ends_with("TaggedAddresses") {
                    for addr in child
                        .as_object_mut()
                        .into_iter()
                        .flat_map(|m| m.values_mut())
                    {
                        if let Some(a) = addr.as_object_mut() {
                            for (lower, upper) in [("address", "Address"), ("port", "Port")] {
                                if let Some(x) = a.remove(lower) {
                                    a.insert(upper.to_string(), x);
                                }
                            }
                        }
                    }
                }
                capitalise_service_addresses(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(capitalise_service_addresses),
        _ => {}
    }
}

fn assert_shape(name: &str, actual: &Value, data_keyed_root: bool, expected: &[&str]) {
    let mut fix = fixture(name);
    capitalise_service_addresses(&mut fix);
    let mut diff = BTreeSet::new();
    shape_diff(
        &shape(&fix, data_keyed_root),
        &shape(actual, data_keyed_root),
        "",
        &mut diff,
    );
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        diff, expected,
        "{name}: field names differ; emulator: {actual:#}"
    );
}

// Differences the fixtures show against real OSS agents: `Namespace` is Enterprise-only,
// `ID` in health-node checks is a docs artefact (HealthCheck has no ID field), and the docs
// samples omit bookkeeping fields real agents emit (CreateIndex, ModifyIndex, ...).
const NODE_EXTRAS: [&str; 2] = ["+CreateIndex", "+ModifyIndex"];
const CHECK_EXTRAS: [&str; 7] = [
    "+CreateIndex",
    "+Definition",
    "+ExposedPort",
    "+Interval",
    "+ModifyIndex",
    "+Timeout",
    "+Type",
];

#[tokio::test]
async fn json_field_names_match_fixtures() {
    let emu = start().await;
    emu.register(fixture("catalog-register-request.json"))
        .expect("register fixture");

    let r = get(&emu, "/v1/catalog/nodes").await;
    assert_shape("catalog-nodes.json", &r.json(), false, &NODE_EXTRAS);

    let r = get(&emu, "/v1/catalog/services").await;
    assert_shape("catalog-services.json", &r.json(), true, &[]);

    let r = get(&emu, "/v1/catalog/datacenters").await;
    assert_shape("catalog-datacenters.json", &r.json(), false, &[]);

    let r = get(&emu, "/v1/agent/self").await;
    assert_shape("agent-self.json", &r.json(), false, &[]);

    let r = get(&emu, "/v1/catalog/service/redis").await;
    assert_shape("real-catalog-service-order-ms.json", &r.json(), false, &[]);
    assert_shape(
        "catalog-service-web.json",
        &r.json(),
        false,
        &["-Namespace", "+ServiceKind", "+ServiceWeights"],
    );

    let r = get(&emu, "/v1/catalog/node/t2.320").await;
    assert_shape(
        "catalog-node-my-node.json",
        &r.json(),
        false,
        &[
            "+Node.CreateIndex",
            "+Node.ModifyIndex",
            "+Services.Address",
            "+Services.Connect",
            "+Services.CreateIndex",
            "+Services.EnableTagOverride",
            "+Services.ModifyIndex",
            "+Services.Proxy",
            "+Services.Weights",
            "-Services.Namespace",
        ],
    );

    let r = get(&emu, "/v1/health/service/redis").await;
    let mut expected = vec![
        "+Node.CreateIndex",
        "+Node.ModifyIndex",
        "+Service.Connect",
        "+Service.CreateIndex",
        "+Service.EnableTagOverride",
        "+Service.ModifyIndex",
        "+Service.Proxy",
        "-Service.Namespace",
        "-Checks.Namespace",
    ];
    let check_extras: Vec<String> = CHECK_EXTRAS
        .iter()
        .map(|e| e.replace('+', "+Checks."))
        .collect();
    expected.extend(check_extras.iter().map(String::as_str));
    assert_shape(
        "health-service-my-service.json",
        &r.json(),
        false,
        &expected,
    );

    let r = get(&emu, "/v1/health/node/t2.320").await;
    let mut expected = vec!["-ID", "-Namespace"];
    expected.extend(CHECK_EXTRAS);
    assert_shape("health-node-my-node.json", &r.json(), false, &expected);
}

#[tokio::test]
async fn tagged_service_addresses_are_capitalised_and_lists_never_null() {
    let emu = start().await;
    emu.register(fixture("catalog-register-request.json"))
        .expect("register fixture");
    let entry = &get(&emu, "/v1/catalog/service/redis").await.json()[0];
    assert_eq!(
        entry["ServiceTaggedAddresses"]["wan"],
        json!({"Address": "198.18.0.1", "Port": 80})
    );
    let consul = get(&emu, "/v1/catalog/node/consul-dev").await.json();
    assert_eq!(consul["Services"]["consul"]["Tags"], json!([]));
    let services = get(&emu, "/v1/catalog/services").await.json();
    assert_eq!(services, json!({"consul": [], "redis": ["primary", "v1"]}));
    let health = get(&emu, "/v1/health/service/consul").await.json();
    assert_eq!(health[0]["Checks"][0]["ServiceTags"], json!([]));
}

// ---------------------------------------------------------------------------------------
// Register / deregister.

#[tokio::test]
async fn register_and_deregister_fixture_bodies_round_trip() {
    let emu = start().await;
    let body = fixture("catalog-register-request.json").to_string();
    let r = put(&emu, "/v1/catalog/register", body).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "true"));

    let entries = get(&emu, "/v1/health/service/redis").await.json();
    assert_eq!(entries.as_array().map(Vec::len), Some(1));
    let e = &entries[0];
    assert_eq!(e["Node"]["Node"], "t2.320");
    assert_eq!(e["Node"]["ID"], "40e4a748-2192-161a-0510-9bf59fe950b5");
    assert_eq!(e["Node"]["Meta"], json!({"somekey": "somevalue"}));
    assert_eq!(e["Service"]["ID"], "redis1");
    assert_eq!(e["Service"]["Address"], "127.0.0.1");
    assert_eq!(e["Service"]["Port"], 8000);
    assert_eq!(e["Service"]["Weights"], json!({"Passing": 1, "Warning": 1}));
    assert_eq!(e["Checks"][0]["CheckID"], "service:redis1");
    assert_eq!(e["Checks"][0]["Status"], "passing");
    assert_eq!(e["Checks"][0]["ServiceName"], "redis");
    assert_eq!(e["Checks"][0]["ServiceTags"], json!(["primary", "v1"]));
    assert_eq!(e["Checks"][0]["Type"], "tcp");

    let r = put(
        &emu,
        "/v1/catalog/deregister",
        fixture("catalog-deregister-check.json").to_string(),
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "true"));
    let entries = get(&emu, "/v1/health/service/redis").await.json();
    assert_eq!(entries[0]["Checks"], json!([]));

    let r = put(
        &emu,
        "/v1/catalog/deregister",
        fixture("catalog-deregister-service.json").to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        get(&emu, "/v1/catalog/service/redis").await.json(),
        json!([])
    );
    assert!(get(&emu, "/v1/catalog/node/t2.320").await.json()["Node"].is_object());

    let r = put(
        &emu,
        "/v1/catalog/deregister",
        fixture("catalog-deregister-node.json").to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&emu, "/v1/catalog/node/t2.320").await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "null"));
    let nodes = get(&emu, "/v1/catalog/nodes").await.json();
    assert_eq!(
        nodes.as_array().map(Vec::len),
        Some(1),
        "only the agent's node is left"
    );
}

#[tokio::test]
async fn register_defaults_and_node_level_checks() {
    let emu = start().await;
    emu.register(json!({
        "Node": "n1", "Address": "10.0.0.1",
        "Service": {"Service": "svc", "Port": 1},
        "Checks": [
            {"Name": "node-ok", "Status": "passing"},
            {"Name": "svc-check", "ServiceID": "svc"}
        ]
    }))
    .expect("register");
    let e = &get(&emu, "/v1/health/service/SVC").await.json()[0];
    assert_eq!(
        e["Service"]["ID"], "svc",
        "ID defaults to the name; lookup is case-insensitive"
    );
    let checks: BTreeMap<String, Value> = e["Checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["CheckID"].as_str().unwrap_or("").to_string(),
                c["Status"].clone(),
            )
        })
        .collect();
    assert_eq!(checks.get("node-ok"), Some(&json!("passing")));
    assert_eq!(
        checks.get("svc-check"),
        Some(&json!("critical")),
        "status defaults to critical"
    );
    let with_passing = get(&emu, "/v1/health/service/svc?passing").await.json();
    assert_eq!(with_passing, json!([]));
}

#[tokio::test]
async fn register_errors_are_consul_messages() {
    let emu = start().await;
    let cases = [
        ("{", "Request decode failed"),
        ("[1]", "Request decode failed"),
        (r#"{"Address": "10.0.0.1"}"#, "Must provide node"),
        (
            r#"{"Node": "n"}"#,
            "Must provide address if SkipNodeUpdate is not set",
        ),
        (
            r#"{"Node": "n", "Address": "a", "ID": "xyz"}"#,
            "Bad node ID: uuid string is wrong length",
        ),
        (
            r#"{"Node": "n", "Address": "a", "Service": {"ID": "x"}}"#,
            "Must provide service name with ID",
        ),
        (
            r#"{"Node": "n", "Address": "a", "Service": {"Service": "s", "Port": "80"}}"#,
            "Request decode failed: Service.Port: expected an integer",
        ),
        (
            r#"{"Node": "n", "Address": "a", "Check": {"Name": "c", "ServiceID": "nope"}}"#,
            "Missing service registration",
        ),
    ];
    for (body, msg) in cases {
        let r = put(&emu, "/v1/catalog/register", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(r.text.starts_with(msg), "{body}: {}", r.text);
    }
    let r = put(&emu, "/v1/catalog/deregister", r#"{"ServiceID": "x"}"#).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (StatusCode::BAD_REQUEST, "Must provide node")
    );
    let r = put(
        &emu,
        "/v1/catalog/register",
        r#"{"Node": "n", "Address": "a", "Datacenter": "dc9"}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter")
    );

    let err = emu.register(json!({"Address": "a"})).expect_err("no node");
    assert!(matches!(err, EmulatorError::MissingNode));
    assert_eq!(err.to_string(), "Must provide node");
    assert_eq!(emu.index(), 1, "failed writes change nothing");

    // SkipNodeUpdate on a node not registered yet creates it (Consul's documentation of
    // the parameter: "it will still be created").
    let body = r#"{"Node": "ghost", "SkipNodeUpdate": true, "Service": {"Service": "s"}}"#;
    let r = put(&emu, "/v1/catalog/register", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        get(&emu, "/v1/catalog/node/ghost").await.json()["Services"]["s"]["Service"],
        "s"
    );
}

// ---------------------------------------------------------------------------------------
// Reads on the demo catalog.

fn addresses(entries: &Value) -> Vec<String> {
    let mut v: Vec<String> = entries
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["Service"]["Address"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn demo_catalog_filters() {
    let emu = demo().await;
    let all = get(&emu, "/v1/health/service/web").await.json();
    assert_eq!(
        addresses(&all),
        ["10.2.1.1", "10.2.1.2", "10.2.1.3", "10.2.1.4"]
    );
    let passing = get(&emu, "/v1/health/service/web?passing").await.json();
    assert_eq!(addresses(&passing), ["10.2.1.1", "10.2.1.2", "10.2.1.3"]);
    let not_passing = get(&emu, "/v1/health/service/web?passing=false")
        .await
        .json();
    assert_eq!(addresses(&not_passing).len(), 4);
    let api = get(&emu, "/v1/health/service/api?passing=1").await.json();
    assert_eq!(addresses(&api), ["10.2.2.1"]);

    let primary = get(&emu, "/v1/catalog/service/db?tag=PRIMARY").await.json();
    assert_eq!(primary.as_array().map(Vec::len), Some(1));
    assert_eq!(primary[0]["ServiceAddress"], "10.2.3.1");
    let both = get(&emu, "/v1/health/service/web?tag=v1&tag=http")
        .await
        .json();
    assert_eq!(both.as_array().map(Vec::len), Some(4));
    let none = get(&emu, "/v1/health/service/web?tag=v1&tag=nope")
        .await
        .json();
    assert_eq!(none, json!([]));

    let redis = get(&emu, "/v1/catalog/service/redis").await.json();
    assert_eq!(redis[0]["ServiceAddress"], "");
    assert_eq!(redis[0]["Address"], "192.168.56.12");

    let services = get(&emu, "/v1/catalog/services").await.json();
    assert_eq!(
        services,
        json!({"api": ["v2"], "consul": [], "db": ["primary", "secondary"],
               "ingress": [], "redis": [], "web": ["http", "v1"], "web-sidecar-proxy": []})
    );
    let nodes = get(&emu, "/v1/catalog/nodes").await.json();
    let names: Vec<&str> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["Node"].as_str())
        .collect();
    assert_eq!(names, ["consul-dev", "node1", "node2", "node3"]);
    assert_eq!(nodes[1]["Meta"], json!({"rack": "r1"}));

    let checks = get(&emu, "/v1/health/node/node2").await.json();
    assert_eq!(
        checks.as_array().map(Vec::len),
        Some(5),
        "serfHealth + 4 service checks"
    );
    let r = get(&emu, "/v1/health/service/nothing").await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "[]"));
    let r = get(&emu, "/v1/catalog/node/nothing").await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "null"));
    let r = get(&emu, "/v1/agent/self").await;
    assert_eq!(r.json()["Config"]["Datacenter"], "dc1");
    assert_eq!(r.json()["Config"]["NodeName"], "consul-dev");
    assert_eq!(
        get(&emu, "/v1/catalog/datacenters").await.json(),
        json!(["dc1"])
    );
}

#[tokio::test]
async fn read_headers() {
    let emu = demo().await;
    let r = get(&emu, "/v1/health/service/web?stale").await;
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("x-consul-knownleader"), "true");
    assert_eq!(r.header("x-consul-lastcontact"), "0");
    assert_eq!(r.header("x-consul-effective-consistency"), "stale");
    emu.set_known_leader(false);
    let r = get(&emu, "/v1/catalog/services?dc=DC1").await;
    assert_eq!(r.header("x-consul-knownleader"), "false");
    assert_eq!(r.header("x-consul-effective-consistency"), "leader");
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_parameters_give_documented_errors() {
    let emu = demo().await;
    let cases = [
        ("/v1/health/service/web?index=abc", 400, "Invalid index"),
        ("/v1/health/service/web?index=-1", 400, "Invalid index"),
        (
            "/v1/health/service/web?index=1&wait=10",
            400,
            "Invalid wait time",
        ),
        ("/v1/catalog/services?wait=soon", 400, "Invalid wait time"),
        (
            "/v1/health/service/web?passing=maybe",
            400,
            "Invalid value for ?passing",
        ),
        (
            "/v1/catalog/nodes?stale&consistent",
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
        ("/v1/catalog/nodes?dc=dc2", 500, "No path to datacenter"),
        ("/v1/nope", 404, "404 page not found"),
    ];
    for (path, status, body) in cases {
        let r = get(&emu, path).await;
        assert_eq!(
            (r.status.as_u16(), r.text.as_str()),
            (status, body),
            "{path}"
        );
        assert!(r.header("content-type").starts_with("text/plain"), "{path}");
    }
    let r = get(&emu, "/v1/health/service/web?dc=other").await;
    assert_eq!(r.header("x-consul-index"), "1");
    assert_eq!(r.header("x-consul-knownleader"), "false");
    let r = put(&emu, "/v1/catalog/services", "").await;
    assert_eq!(
        (r.status.as_u16(), r.text.as_str()),
        (405, "method PUT not allowed")
    );
    let r = get(&emu, "/v1/catalog/register").await;
    assert_eq!(r.status.as_u16(), 405);
}

// ---------------------------------------------------------------------------------------
// Indexes and blocking queries.

/// Starts a blocking query for `path_and_query`, checks that it blocks, makes `change`,
/// and returns the query's reply with how long after the change it came.
async fn wake_by(
    emu: &Emulator,
    path_and_query: String,
    change: impl FnOnce(&Emulator),
) -> (Reply, Duration) {
    let pending = blocking(emu, path_and_query);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "must block while nothing changes");
    let changed_at = Instant::now();
    change(emu);
    let (r, at) = pending.await.expect("join");
    (r, at - changed_at)
}

fn web_check(status: &str) -> Value {
    json!({"Node": "node1", "SkipNodeUpdate": true,
           "Check": {"CheckID": "service:web-1", "Name": "Service 'web' check",
                     "Status": status, "ServiceID": "web-1"}})
}

#[tokio::test]
async fn blocking_query_wakes_at_once_on_change() {
    let emu = demo().await;
    let idx = get(&emu, "/v1/health/service/web").await.index();
    let (r, latency) = wake_by(
        &emu,
        format!("/v1/health/service/web?index={idx}&wait=5s"),
        |e| e.register(web_check("critical")).expect("register"),
    )
    .await;
    println!("blocking query answered {latency:?} after the change");
    assert!(latency < Duration::from_millis(50), "{latency:?}");
    assert!(r.index() > idx);
    let passing = get(&emu, "/v1/health/service/web?passing").await.json();
    assert_eq!(passing.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn blocking_query_times_out_with_the_same_index() {
    let emu = demo().await;
    let idx = get(&emu, "/v1/health/service/web").await.index();
    let began = Instant::now();
    // A change to another service must not wake a query on `web`.
    let pending = blocking(
        &emu,
        format!("/v1/health/service/web?index={idx}&wait=200ms"),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    emu.register(json!({"Node": "node3", "SkipNodeUpdate": true,
                        "Service": {"ID": "api-3", "Service": "api", "Port": 1}}))
        .expect("register");
    let (r, done) = pending.await.expect("join");
    let took = done - began;
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(200 + 13 + 150), "{took:?}");
    assert_eq!(r.index(), idx);
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn wait_is_capped_by_max_query_time_and_defaults() {
    let cfg = EmulatorConfig {
        max_query_time: Duration::from_millis(100),
        default_query_time: Duration::from_millis(150),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start(loopback(), cfg).await.expect("start");
    let idx = get(&emu, "/v1/catalog/nodes").await.index();
    for (query, min_ms) in [
        (format!("index={idx}&wait=10m"), 100),
        (format!("index={idx}"), 150),
    ] {
        let began = Instant::now();
        let r = get(&emu, &format!("/v1/catalog/nodes?{query}")).await;
        let took = began.elapsed();
        assert_eq!(r.index(), idx);
        assert!(took >= Duration::from_millis(min_ms), "{query}: {took:?}");
        assert!(
            took < Duration::from_millis(min_ms + 150),
            "{query}: {took:?}"
        );
    }
}

#[tokio::test]
async fn unknown_service_blocks_until_it_appears() {
    let emu = demo().await;
    let r = get(&emu, "/v1/health/service/newsvc").await;
    assert_eq!(r.text, "[]");
    let idx = r.index();
    let pending = blocking(
        &emu,
        format!("/v1/health/service/newsvc?index={idx}&wait=5s"),
    );
    let nodes_idx = get(&emu, "/v1/catalog/node/newnode").await.index();
    let pending_node = blocking(
        &emu,
        format!("/v1/catalog/node/newnode?index={nodes_idx}&wait=5s"),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished() && !pending_node.is_finished());

    let changed_at = Instant::now();
    emu.register(json!({"Node": "newnode", "Address": "10.9.9.9",
                        "Service": {"Service": "newsvc", "Port": 9}}))
        .expect("register");
    let (r, at) = pending.await.expect("join");
    assert!(
        at - changed_at < Duration::from_millis(50),
        "{:?}",
        at - changed_at
    );
    assert!(r.index() > idx);
    assert_eq!(r.json()[0]["Node"]["Address"], "10.9.9.9");
    let (r, _) = pending_node.await.expect("join");
    assert_eq!(r.json()["Node"]["Node"], "newnode");
}

#[tokio::test]
async fn a_service_that_appeared_wakes_on_its_own_changes() {
    let emu = demo().await;
    // Asked while absent, then registered: the emulator must not keep thinking it absent
    // (a query on it would then wait on the service list, which its checks do not move).
    assert_eq!(get(&emu, "/v1/health/service/newsvc").await.text, "[]");
    emu.register(json!({"Node": "newnode", "Address": "10.9.9.9",
                        "Service": {"Service": "newsvc", "Port": 9}}))
        .expect("register");
    let idx = get(&emu, "/v1/health/service/newsvc").await.index();
    let check = json!({"Node": "newnode", "SkipNodeUpdate": true,
                       "Check": {"CheckID": "newsvc-check", "Name": "check",
                                 "Status": "critical", "ServiceID": "newsvc"}});
    let (r, latency) = wake_by(
        &emu,
        format!("/v1/health/service/newsvc?index={idx}&wait=5s"),
        |e| e.register(check).expect("register the check"),
    )
    .await;
    assert!(latency < Duration::from_millis(50), "{latency:?}");
    assert!(r.index() > idx);
    let checks = r.json()[0]["Checks"].clone();
    let statuses: Vec<&str> = checks
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["Status"].as_str()).collect())
        .unwrap_or_default();
    assert!(statuses.contains(&"critical"), "{checks}");
}

#[tokio::test]
async fn idempotent_register_bumps_raft_index_but_not_resource_index() {
    let emu = demo().await;
    let raft = emu.index();
    let idx = get(&emu, "/v1/health/service/web").await.index();
    let pending = blocking(
        &emu,
        format!("/v1/health/service/web?index={idx}&wait=200ms"),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    emu.register(web_check("passing")).expect("same as seeded");
    assert_eq!(emu.index(), raft + 1);
    let (r, _) = pending.await.expect("join");
    assert_eq!(r.index(), idx);
}

#[tokio::test]
async fn index_is_never_zero() {
    let emu = start().await;
    for path in [
        "/v1/catalog/services",
        "/v1/catalog/nodes",
        "/v1/catalog/service/none",
        "/v1/catalog/node/none",
        "/v1/health/service/none",
        "/v1/health/node/none",
        "/v1/catalog/datacenters",
    ] {
        assert!(get(&emu, path).await.index() >= 1, "{path}");
    }
    emu.restore_snapshot(0);
    assert_eq!(emu.index(), 0);
    assert_eq!(get(&emu, "/v1/health/service/consul").await.index(), 1);
    // index=1 is a valid blocking index even then: it times out rather than spinning.
    let began = Instant::now();
    let r = get(&emu, "/v1/catalog/nodes?index=1&wait=100ms").await;
    assert!(began.elapsed() >= Duration::from_millis(100));
    assert_eq!(r.index(), 1);
}

#[tokio::test]
async fn restore_snapshot_releases_blocked_queries_with_lower_index() {
    let emu = demo().await;
    let web_idx = get(&emu, "/v1/health/service/web").await.index();
    let svc_idx = get(&emu, "/v1/catalog/services").await.index();
    assert!(web_idx > 5 && svc_idx > 5);
    let web = blocking(
        &emu,
        format!("/v1/health/service/web?index={web_idx}&wait=10s"),
    );
    let svcs = blocking(
        &emu,
        format!("/v1/catalog/services?index={svc_idx}&wait=10s"),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    let restored_at = Instant::now();
    emu.restore_snapshot(3);
    for pending in [web, svcs] {
        let (r, at) = pending.await.expect("join");
        assert!(
            at - restored_at < Duration::from_millis(50),
            "{:?}",
            at - restored_at
        );
        assert!(r.index() <= 3, "index {}", r.index());
        let body = r.json();
        let non_empty = body.as_array().is_some_and(|a| !a.is_empty())
            || body.as_object().is_some_and(|o| !o.is_empty());
        assert!(non_empty, "data is kept: {body}");
    }
    assert_eq!(emu.index(), 3);
    let entry = &get(&emu, "/v1/health/service/web").await.json()[0];
    assert!(entry["Service"]["ModifyIndex"].as_u64().unwrap_or(99) <= 3);
    emu.register(web_check("critical")).expect("register");
    assert_eq!(emu.index(), 4);
    assert_eq!(get(&emu, "/v1/health/service/web").await.index(), 4);
}

// ---------------------------------------------------------------------------------------
// Faults, tokens, lifecycle, counting.

#[tokio::test]
async fn fault_status_answers_every_request() {
    let emu = demo().await;
    emu.set_fault(Fault::Status(500, "rpc error: No cluster leader".into()));
    let r = get(&emu, "/v1/health/service/web").await;
    assert_eq!(
        (r.status.as_u16(), r.text.as_str()),
        (500, "rpc error: No cluster leader")
    );
    emu.set_fault(Fault::Status(403, "ACL not found".into()));
    let r = put(&emu, "/v1/catalog/register", "{}").await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (403, "ACL not found"));
    emu.set_fault(Fault::None);
    assert_eq!(
        get(&emu, "/v1/health/service/web").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn fault_hang_never_answers() {
    let emu = demo().await;
    emu.set_fault(Fault::Hang);
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let err = c
        .get(format!("{}/v1/catalog/services", emu.url()))
        .send()
        .await
        .expect_err("hangs");
    assert!(err.is_timeout(), "{err}");
    emu.set_fault(Fault::None);
    assert_eq!(
        get(&emu, "/v1/catalog/services").await.status,
        StatusCode::OK
    );
    assert_eq!(emu.requests(), 2, "the hung request was counted");
}

#[tokio::test]
async fn required_token() {
    let emu = demo().await;
    emu.set_required_token(Some("s3cret".into()));
    let url = format!("{}/v1/catalog/services", emu.url());
    let c = client();
    let r = send(c.get(&url)).await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (403, "ACL not found"));
    let r = send(c.get(&url).header("X-Consul-Token", "wrong")).await;
    assert_eq!(r.status.as_u16(), 403);
    let r = send(c.get(&url).header("X-Consul-Token", "s3cret")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(c.get(format!("{url}?token=s3cret"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(c.get(&url).bearer_auth("s3cret")).await;
    assert_eq!(r.status, StatusCode::OK);
    emu.set_required_token(None);
    assert_eq!(send(c.get(&url)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn stop_cuts_long_polls_and_restart_serves_the_same_data() {
    let emu = demo().await;
    let before = get(&emu, "/v1/health/service/web").await;
    let idx = before.index();
    let url = format!("{}/v1/health/service/web?index={idx}&wait=30s", emu.url());
    let pending = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopped_at = Instant::now();
    emu.stop().await;
    let result = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("long poll must be cut")
        .expect("join");
    assert!(result.is_err(), "the client sees the connection cut");
    assert!(stopped_at.elapsed() < Duration::from_millis(500));
    assert!(
        tokio::net::TcpStream::connect(emu.addr()).await.is_err(),
        "refused after stop"
    );

    emu.register(web_check("critical"))
        .expect("writes work while stopped");
    emu.restart().await.expect("restart");
    let after = get(&emu, "/v1/health/service/web").await;
    assert_eq!(after.index(), emu_index_of_web(&emu).await);
    assert!(after.index() > idx);
    assert_eq!(after.json().as_array().map(Vec::len), Some(4));
    assert!(emu.url().ends_with(&format!(":{}", emu.addr().port())));
}

async fn emu_index_of_web(emu: &Emulator) -> u64 {
    get(emu, "/v1/health/service/web").await.index()
}

#[tokio::test]
async fn requests_are_counted_and_logged() {
    let emu = start().await;
    assert_eq!(emu.requests(), 0);
    let c = client();
    let base = emu.url();
    send(c.get(format!("{base}/v1/health/service/web?token=q-tok&stale"))).await;
    send(
        c.get(format!("{base}/v1/health/service/web-api"))
            .header("X-Consul-Token", "h-tok"),
    )
    .await;
    send(
        c.get(format!("{base}/v1/health/service/db"))
            .bearer_auth("b-tok"),
    )
    .await;
    send(c.get(format!("{base}/v1/catalog/services?index=x"))).await;
    send(c.get(format!("{base}/nope"))).await;
    emu.set_fault(Fault::Status(500, "boom".into()));
    send(c.get(format!("{base}/v1/health/service/web"))).await;

    assert_eq!(emu.requests(), 6);
    assert_eq!(emu.requests_to("/v1/health/service/web"), 3);
    assert_eq!(emu.requests_to("/v1/health/"), 4);
    assert_eq!(emu.requests_to("/v1/catalog/services"), 1);
    let log = emu.request_log();
    assert_eq!(log.len(), 6);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/v1/health/service/web");
    assert_eq!(log[0].query, "token=q-tok&stale");
    let tokens: Vec<Option<&str>> = log.iter().map(|r| r.token.as_deref()).collect();
    assert_eq!(
        tokens[..4],
        [Some("q-tok"), Some("h-tok"), Some("b-tok"), None]
    );
    assert!(log.windows(2).all(|w| w[0].received_at <= w[1].received_at));
}

// ---------------------------------------------------------------------------------------
// Several datacenters and WAN address translation.

async fn start_with(cfg: EmulatorConfig) -> Emulator {
    Emulator::start(loopback(), cfg)
        .await
        .expect("start emulator")
}

fn two_dcs(translate_wan_addrs: bool) -> EmulatorConfig {
    EmulatorConfig {
        extra_datacenters: vec!["dc2".to_string()],
        translate_wan_addrs,
        ..EmulatorConfig::default()
    }
}

async fn post(emu: &Emulator, path: &str, body: impl Into<reqwest::Body>) -> Reply {
    send(client().post(format!("{}{path}", emu.url())).body(body)).await
}

fn len(v: &Value) -> usize {
    v.as_array().map_or(usize::MAX, Vec::len)
}

#[tokio::test]
async fn datacenters_are_separate_catalogs_with_their_own_indexes() {
    let emu = start_with(two_dcs(false)).await;
    assert_eq!(
        get(&emu, "/v1/catalog/datacenters").await.json(),
        json!(["dc1", "dc2"])
    );
    let primary = emu.index();
    assert_eq!(emu.index_of_dc("DC2"), Some(0));
    assert_eq!(emu.index_of_dc("dc1"), Some(primary));
    assert_eq!(emu.index_of_dc("dc3"), None);

    // Body `Datacenter`, then `?dc=` (case-insensitive), then the programmatic API.
    let body = json!({"Datacenter": "dc2", "Node": "n2", "Address": "10.0.2.1",
                      "Service": {"ID": "web-a", "Service": "web", "Port": 80}});
    let r = put(&emu, "/v1/catalog/register", body.to_string()).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "true"));
    let body = json!({"Node": "n3", "Address": "10.0.2.2",
                      "Service": {"ID": "web-b", "Service": "web", "Port": 80}});
    let r = put(&emu, "/v1/catalog/register?dc=DC2", body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK);
    emu.register(json!({"Datacenter": "dc2", "Node": "n4", "Address": "10.0.2.3"}))
        .expect("register in dc2");
    assert_eq!(emu.index(), primary, "dc1 untouched");
    assert_eq!(emu.index_of_dc("dc2"), Some(3));

    assert_eq!(get(&emu, "/v1/health/service/web").await.json(), json!([]));
    let r = get(&emu, "/v1/health/service/web?dc=Dc2").await;
    assert_eq!(len(&r.json()), 2);
    assert_eq!(r.json()[0]["Node"]["Datacenter"], "dc2");
    assert_eq!(r.index(), 2, "dc2's own service index");
    let r = get(&emu, "/v1/catalog/service/web?dc=dc2").await;
    assert_eq!(r.json()[1]["Datacenter"], "dc2");
    let nodes = get(&emu, "/v1/catalog/nodes?dc=dc2").await;
    assert_eq!(len(&nodes.json()), 3, "no agent node in dc2");
    assert_eq!(nodes.index(), 3);
    assert_eq!(
        get(&emu, "/v1/catalog/node/n2?dc=dc2").await.json()["Node"]["Datacenter"],
        "dc2"
    );
    assert_eq!(
        get(&emu, "/v1/catalog/node/consul-dev").await.json()["Node"]["Datacenter"],
        "dc1"
    );

    let r = put(&emu, "/v1/catalog/deregister?dc=dc2", r#"{"Node": "n3"}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        len(&get(&emu, "/v1/health/service/web?dc=dc2").await.json()),
        1
    );
    assert_eq!(emu.index_of_dc("dc2"), Some(4));

    for path in [
        "/v1/health/service/web?dc=dc3",
        "/v1/catalog/nodes?dc=dc3",
        "/v1/query/x/execute?dc=dc3",
    ] {
        let r = get(&emu, path).await;
        assert_eq!(
            (r.status.as_u16(), r.text.as_str()),
            (500, "No path to datacenter"),
            "{path}"
        );
    }
    let r = put(
        &emu,
        "/v1/catalog/register?dc=dc3",
        r#"{"Node": "x", "Address": "a"}"#,
    )
    .await;
    assert_eq!(r.status.as_u16(), 500);
    let err = emu
        .register(json!({"Datacenter": "dc3", "Node": "x", "Address": "a"}))
        .expect_err("unknown dc");
    assert_eq!(err, EmulatorError::NoPathToDatacenter);
}

#[tokio::test]
async fn blocking_query_on_a_remote_datacenter_waits_on_its_index() {
    let emu = start_with(two_dcs(false)).await;
    let web = |dc: &str, status: &str| {
        json!({"Datacenter": dc, "Node": "n1", "Address": "10.0.0.1",
               "Service": {"Service": "web", "Port": 80},
               "Check": {"Name": "web", "ServiceID": "web", "Status": status}})
    };
    emu.register(web("dc2", "passing")).expect("dc2");
    let idx = get(&emu, "/v1/health/service/web?dc=dc2").await.index();
    let pending = blocking(
        &emu,
        format!("/v1/health/service/web?dc=dc2&index={idx}&wait=5s"),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The same change in dc1 (whose indexes now run past dc2's) must not wake it.
    for _ in 0..3 {
        emu.register(web("dc1", "critical")).expect("dc1");
        emu.register(web("dc1", "passing")).expect("dc1");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "woken by another datacenter");

    let changed_at = Instant::now();
    emu.register(web("dc2", "critical")).expect("dc2");
    let (r, at) = pending.await.expect("join");
    assert!(
        at - changed_at < Duration::from_millis(50),
        "{:?}",
        at - changed_at
    );
    assert_eq!(r.index(), idx + 1);
    assert_eq!(r.json()[0]["Checks"][0]["Status"], "critical");
}

/// A node with WAN tagged addresses running `db` (own address, WAN address and port),
/// `cache` (no address) and, on `bar`, tagged IPv4 addresses only.
fn wan_fixture(emu: &Emulator, dc: &str) {
    emu.register(json!({
        "Datacenter": dc, "Node": "foo", "Address": "10.1.0.1",
        "TaggedAddresses": {"lan": "10.1.0.1", "wan": "198.18.1.1"},
        "Service": {"Service": "db", "Port": 8080, "Address": "10.1.0.5",
                    "TaggedAddresses": {"lan": {"Address": "10.1.0.5", "Port": 8080},
                                        "wan": {"Address": "198.18.1.5", "Port": 80}}}
    }))
    .expect("db");
    emu.register(
        json!({"Datacenter": dc, "Node": "foo", "SkipNodeUpdate": true,
                        "Service": {"Service": "cache", "Port": 6379}}),
    )
    .expect("cache");
    emu.register(json!({
        "Datacenter": dc, "Node": "bar", "Address": "10.1.0.2",
        "TaggedAddresses": {"lan_ipv4": "10.1.0.2", "wan": "198.18.1.2",
                            "wan_ipv4": "198.18.1.22"},
        "Service": {"Service": "cache", "Port": 6379}
    }))
    .expect("bar");
}

#[tokio::test]
async fn translate_wan_addrs_rewrites_answers_about_other_datacenters() {
    let emu = start_with(two_dcs(true)).await;
    wan_fixture(&emu, "dc1");
    wan_fixture(&emu, "dc2");

    let r = get(&emu, "/v1/health/service/db?dc=dc2").await;
    assert_eq!(r.header("x-consul-translate-addresses"), "true");
    let e = &r.json()[0];
    assert_eq!(e["Node"]["Address"], "198.18.1.1");
    assert_eq!(e["Service"]["Address"], "198.18.1.5");
    assert_eq!(e["Service"]["Port"], 80);
    assert_eq!(e["Node"]["TaggedAddresses"]["lan"], "10.1.0.1", "kept");
    assert_eq!(e["Service"]["TaggedAddresses"]["wan"]["Port"], 80);

    // No service address: stays empty (clients use the translated node address); no WAN
    // port: unchanged. Accept-any order: tagged IPv4 (wan_ipv4) beats `wan`.
    let cache = get(&emu, "/v1/health/service/cache?dc=dc2").await.json();
    assert_eq!(cache[0]["Node"]["Address"], "198.18.1.22");
    assert_eq!(cache[1]["Node"]["Address"], "198.18.1.1");
    assert_eq!(cache[1]["Service"]["Address"], "");
    assert_eq!(cache[1]["Service"]["Port"], 6379);

    let c = &get(&emu, "/v1/catalog/service/db?dc=dc2").await.json()[0];
    assert_eq!(
        (&c["Address"], &c["ServiceAddress"], &c["ServicePort"]),
        (&json!("198.18.1.1"), &json!("198.18.1.5"), &json!(80))
    );
    let n = get(&emu, "/v1/catalog/node/foo?dc=dc2").await.json();
    assert_eq!(n["Node"]["Address"], "198.18.1.1");
    assert_eq!(n["Services"]["db"]["Address"], "198.18.1.5");
    assert_eq!(n["Services"]["db"]["Port"], 80);
    let nodes = get(&emu, "/v1/catalog/nodes?dc=dc2").await.json();
    assert_eq!(nodes[0]["Address"], "198.18.1.22");

    let qid = post(
        &emu,
        "/v1/query?dc=dc2",
        json!({"Name": "db", "Service": {"Service": "db"}}).to_string(),
    )
    .await
    .json()["ID"]
        .clone();
    let x = get(
        &emu,
        &format!("/v1/query/{}/execute?dc=dc2", qid.as_str().unwrap_or("")),
    )
    .await;
    assert_eq!(x.json()["Datacenter"], "dc2");
    assert_eq!(x.json()["Nodes"][0]["Service"]["Address"], "198.18.1.5");

    // The agent's own datacenter is never rewritten (the header is on every response).
    for path in ["/v1/health/service/db", "/v1/health/service/db?dc=DC1"] {
        let r = get(&emu, path).await;
        assert_eq!(r.header("x-consul-translate-addresses"), "true");
        let e = &r.json()[0];
        assert_eq!(e["Node"]["Address"], "10.1.0.1", "{path}");
        assert_eq!(e["Service"]["Address"], "10.1.0.5", "{path}");
        assert_eq!(e["Service"]["Port"], 8080, "{path}");
    }
    assert_eq!(
        get(&emu, "/v1/catalog/nodes").await.json()[0]["Address"],
        "10.1.0.2"
    );

    let plain = start_with(two_dcs(false)).await;
    wan_fixture(&plain, "dc2");
    let r = get(&plain, "/v1/health/service/db?dc=dc2").await;
    assert!(r.headers.get("x-consul-translate-addresses").is_none());
    assert_eq!(r.json()[0]["Service"]["Address"], "10.1.0.5");
    assert_eq!(r.json()[0]["Node"]["Address"], "10.1.0.1");
}

// ---------------------------------------------------------------------------------------
// Prepared queries.

async fn delete(emu: &Emulator, path: &str) -> Reply {
    send(client().delete(format!("{}{path}", emu.url()))).await
}

async fn execute(emu: &Emulator, id_or_name: &str) -> Reply {
    get(emu, &format!("/v1/query/{id_or_name}/execute")).await
}

fn service_ids(result: &Value) -> Vec<String> {
    let mut ids: Vec<String> = result["Nodes"]
        .as_array()
        .expect("Nodes")
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap_or("").to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn prepared_query_create_list_execute_delete() {
    let emu = demo().await;
    let body = json!({"Name": "db-primary",
                      "Service": {"Service": "db", "Tags": ["primary"],
                                  "Failover": {"NearestN": 2, "Datacenters": ["dc9"]}},
                      "DNS": {"TTL": "10s"}});
    let r = post(&emu, "/v1/query", body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json()["ID"].as_str().expect("ID").to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(id.matches('-').count(), 4);

    let list = get(&emu, "/v1/query").await;
    let all = list.json();
    // The demo catalog has its own query (primary-db); find ours.
    let q = all
        .as_array()
        .and_then(|a| a.iter().find(|q| q["ID"] == id.as_str()))
        .expect("the created query is listed");
    assert_eq!(q["ID"], id.as_str());
    assert_eq!(q["Name"], "db-primary");
    assert_eq!(q["Service"]["Service"], "db");
    assert_eq!(q["Service"]["Tags"], json!(["primary"]));
    assert_eq!(q["Service"]["Failover"]["NearestN"], 2);
    assert_eq!(q["DNS"]["TTL"], "10s");
    assert_eq!(list.index(), emu.index());
    let one = get(&emu, &format!("/v1/query/{id}")).await.json();
    assert_eq!(one[0]["Name"], "db-primary");

    for name in [id.as_str(), "db-primary", "DB-Primary"] {
        let r = execute(&emu, name).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert_eq!(r.header("x-consul-index"), "1", "not a blocking query");
        let x = r.json();
        assert_eq!(x["Service"], "db");
        assert_eq!(x["DNS"], json!({"TTL": "10s"}));
        assert_eq!(x["Datacenter"], "dc1");
        assert_eq!(x["Failovers"], 0);
        assert_eq!(service_ids(&x), ["db-1"]);
        assert_eq!(x["Nodes"][0]["Service"]["Address"], "10.2.3.1");
        assert_eq!(x["Nodes"][0]["Checks"][0]["CheckID"], "serfHealth");
    }

    // Not blocking: index/wait are ignored.
    let began = Instant::now();
    let r = get(&emu, "/v1/query/db-primary/execute?index=999999&wait=5s").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(began.elapsed() < Duration::from_millis(500));

    for path in [
        "/v1/query/nope/execute",
        "/v1/query/6a5a6f3e-7c2d-4b6e-9a1f-0d3c2b1a0e99/execute",
        "/v1/query/6a5a6f3e-7c2d-4b6e-9a1f-0d3c2b1a0e99",
    ] {
        let r = get(&emu, path).await;
        assert_eq!(
            (r.status.as_u16(), r.text.as_str()),
            (404, "Query not found"),
            "{path}"
        );
    }

    let update = json!({"Name": "db-primary", "Service": {"Service": "db"}});
    let r = send(
        client()
            .put(format!("{}/v1/query/{id}", emu.url()))
            .body(update.to_string()),
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, ""));
    let x = execute(&emu, "db-primary").await.json();
    assert_eq!(service_ids(&x), ["db-1", "db-2"]);
    assert_eq!(x["DNS"]["TTL"], "");

    let r = delete(&emu, &format!("/v1/query/{id}")).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, ""));
    assert_eq!(execute(&emu, "db-primary").await.status.as_u16(), 404);
    let left = get(&emu, "/v1/query").await.json();
    assert!(
        left.as_array()
            .is_some_and(|a| a.iter().all(|q| q["ID"] != id.as_str())),
        "deleted query still listed: {left}"
    );
    let r = delete(&emu, &format!("/v1/query/{id}")).await;
    assert_eq!(r.status.as_u16(), 500);
    assert_eq!(
        r.text,
        format!("Cannot modify non-existent prepared query: '{id}'")
    );
}

#[tokio::test]
async fn prepared_query_health_and_tag_filters() {
    let emu = demo().await;
    let create = |name: &str, service: Value| {
        emu.create_query(json!({"Name": name, "Service": service}))
            .expect("create")
    };
    create("api-all", json!({"Service": "api"}));
    create(
        "api-passing",
        json!({"Service": "api", "OnlyPassing": true}),
    );
    create("web-all", json!({"Service": "web"}));
    create(
        "web-ignore",
        json!({"Service": "web", "IgnoreCheckIDs": ["service:web-4"]}),
    );
    create("web-not-v1", json!({"Service": "web", "Tags": ["!V1"]}));
    create(
        "db-not-primary",
        json!({"Service": "db", "Tags": ["!primary"]}),
    );
    create(
        "web-v1-http",
        json!({"Service": "web", "Tags": ["HTTP", "v1"]}),
    );
    create(
        "rack-r2",
        json!({"Service": "db", "NodeMeta": {"rack": "r2"}}),
    );
    let cases: [(&str, &[&str]); 8] = [
        ("api-all", &["api-1", "api-2"]), // warning is not critical
        ("api-passing", &["api-1"]),
        ("web-all", &["web-1", "web-2", "web-3"]),
        ("web-ignore", &["web-1", "web-2", "web-3", "web-4"]),
        ("web-not-v1", &[]),
        ("db-not-primary", &["db-2"]),
        ("web-v1-http", &["web-1", "web-2", "web-3"]),
        ("rack-r2", &["db-1"]),
    ];
    for (name, want) in cases {
        let r = execute(&emu, name).await;
        assert_eq!(service_ids(&r.json()), want, "{name}");
    }
    let r = get(&emu, "/v1/query/web-all/execute?limit=2").await;
    assert_eq!(len(&r.json()["Nodes"]), 2);

    // A node check going critical drops every instance on the node.
    emu.register(json!({"Node": "node1", "SkipNodeUpdate": true,
                        "Check": {"CheckID": "serfHealth", "Name": "Serf Health Status",
                                  "Status": "critical"}}))
        .expect("node check");
    assert_eq!(
        service_ids(&execute(&emu, "web-all").await.json()),
        ["web-2", "web-3"]
    );
}

#[tokio::test]
async fn prepared_query_errors() {
    let emu = demo().await;
    emu.create_query(json!({"Name": "q1", "Service": {"Service": "db"}}))
        .expect("create");
    let cases = [
        (
            json!({"Name": "x", "Service": {}}),
            "Invalid prepared query: Must provide a Service name to query",
        ),
        (
            json!({"Service": {"Service": "db"}}),
            "Invalid prepared query: Must be bound to a session",
        ),
        (
            json!({"Name": "Q1", "Service": {"Service": "db"}}),
            "name 'Q1' aliases an existing query name",
        ),
        (
            json!({"Name": "x", "Service": {"Service": "db"}, "DNS": {"TTL": "soon"}}),
            "Invalid prepared query: Bad DNS TTL 'soon': time: invalid duration \"soon\"",
        ),
        (
            json!({"ID": "abc", "Name": "x", "Service": {"Service": "db"}}),
            "ID must be empty when creating a new prepared query",
        ),
    ];
    for (body, msg) in cases {
        let r = post(&emu, "/v1/query", body.to_string()).await;
        assert_eq!((r.status.as_u16(), r.text.as_str()), (500, msg), "{body}");
    }
    let r = post(&emu, "/v1/query", "{").await;
    assert_eq!(r.status.as_u16(), 400);
    assert!(r.text.starts_with("Request decode failed"), "{}", r.text);
    let err = emu
        .create_query(json!({"Name": "y", "Service": {"Service": ""}}))
        .expect_err("invalid");
    assert!(matches!(err, EmulatorError::Invalid(_)), "{err:?}");

    // Queries belong to a datacenter.
    let r = get(&emu, "/v1/query/q1/execute?dc=dc1").await;
    assert_eq!(r.status, StatusCode::OK);
    let two = start_with(two_dcs(false)).await;
    two.create_query(json!({"Name": "q1", "Service": {"Service": "consul"}}))
        .expect("create");
    assert_eq!(len(&execute(&two, "q1").await.json()["Nodes"]), 1);
    let r = get(&two, "/v1/query/q1/execute?dc=dc2").await;
    assert_eq!(
        (r.status.as_u16(), r.text.as_str()),
        (404, "Query not found")
    );
}

// ---------------------------------------------------------------------------------------
// Connect and ingress.

fn web_sidecar(status: &str) -> Value {
    json!({"Node": "n1", "Address": "10.0.0.1",
           "Service": {"ID": "web-sidecar-proxy", "Service": "web-sidecar-proxy",
                       "Kind": "connect-proxy", "Port": 21000,
                       "Proxy": {"DestinationServiceName": "web",
                                 "DestinationServiceID": "web",
                                 "LocalServicePort": 80}},
           "Check": {"Name": "proxy alive", "ServiceID": "web-sidecar-proxy",
                     "Status": status}})
}

#[tokio::test]
async fn connect_returns_proxies_and_native_instances() {
    let emu = start().await;
    emu.register(json!({"Node": "n1", "Address": "10.0.0.1",
                        "Service": {"Service": "web", "Port": 80}}))
        .expect("web");
    emu.register(web_sidecar("passing")).expect("proxy");
    emu.register(json!({"Node": "n2", "Address": "10.0.0.2",
                        "Service": {"Service": "api", "Port": 9090,
                                    "Connect": {"Native": true}}}))
        .expect("native api");

    let proxies = get(&emu, "/v1/health/connect/WEB").await.json();
    assert_eq!(len(&proxies), 1);
    let s = &proxies[0]["Service"];
    assert_eq!(s["Service"], "web-sidecar-proxy");
    assert_eq!(s["Kind"], "connect-proxy");
    assert_eq!(s["Port"], 21000);
    assert_eq!(
        s["Proxy"],
        json!({"DestinationServiceName": "web", "DestinationServiceID": "web",
               "LocalServicePort": 80, "MeshGateway": {}, "Expose": {}})
    );
    assert_eq!(s["Connect"], json!({}));
    assert_eq!(proxies[0]["Checks"][0]["Name"], "proxy alive");
    let mut shape_diff = vec![
        "+Node.CreateIndex",
        "+Node.ModifyIndex",
        "+Service.Connect",
        "+Service.CreateIndex",
        "+Service.EnableTagOverride",
        "+Service.Kind",
        "+Service.ModifyIndex",
        "+Service.Proxy",
        "-Service.Namespace",
        "-Service.TaggedAddresses", // omitempty: none registered
        "-Checks.Namespace",
    ];
    let check_extras: Vec<String> = CHECK_EXTRAS
        .iter()
        .map(|e| e.replace('+', "+Checks."))
        .collect();
    shape_diff.extend(check_extras.iter().map(String::as_str));
    assert_shape(
        "health-service-my-service.json",
        &proxies,
        false,
        &shape_diff,
    );

    let native = get(&emu, "/v1/health/connect/api").await.json();
    assert_eq!(len(&native), 1);
    assert_eq!(native[0]["Service"]["Connect"], json!({"Native": true}));
    assert!(native[0]["Service"].get("Kind").is_none(), "omitempty");

    let web = get(&emu, "/v1/health/service/web").await.json();
    assert_eq!(len(&web), 1, "the proxy is its own service");
    assert_eq!(
        web[0]["Service"]["Proxy"],
        json!({"MeshGateway": {}, "Expose": {}})
    );
    let c = get(&emu, "/v1/catalog/connect/web").await.json();
    assert_eq!(c[0]["ServiceKind"], "connect-proxy");
    assert_eq!(c[0]["ServiceProxy"]["DestinationServiceName"], "web");
    assert_eq!(
        get(&emu, "/v1/catalog/connect/api").await.json()[0]["ServiceConnect"],
        json!({"Native": true})
    );
    assert_eq!(
        get(&emu, "/v1/health/connect/nothing").await.json(),
        json!([])
    );

    let r = put(
        &emu,
        "/v1/catalog/register",
        json!({"Node": "n1", "Address": "10.0.0.1",
               "Service": {"Service": "bad-proxy", "Kind": "connect-proxy"}})
        .to_string(),
    )
    .await;
    assert_eq!(r.status.as_u16(), 500);
    assert_eq!(
        r.text,
        "2 errors occurred:\n\t* Proxy.DestinationServiceName must be non-empty for Connect \
         proxy services\n\t* Port or SocketPath must be set for a Connect proxy\n\n"
    );
}

#[tokio::test]
async fn blocking_connect_query_wakes_on_proxy_changes() {
    let emu = start().await;
    emu.register(json!({"Node": "n1", "Address": "10.0.0.1",
                        "Service": {"Service": "web", "Port": 80}}))
        .expect("web");
    let idx = get(&emu, "/v1/health/connect/web").await.index();
    let pending = blocking(&emu, format!("/v1/health/connect/web?index={idx}&wait=5s"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished());
    let changed_at = Instant::now();
    emu.register(web_sidecar("passing")).expect("proxy appears");
    let (r, at) = pending.await.expect("join");
    assert!(
        at - changed_at < Duration::from_millis(50),
        "{:?}",
        at - changed_at
    );
    assert_eq!(len(&r.json()), 1);
    let idx = r.index();

    // Another service's change does not wake it; the proxy's check does.
    let pending = blocking(
        &emu,
        format!("/v1/health/connect/web?index={idx}&wait=5s&passing"),
    );
    emu.register(json!({"Node": "n3", "Address": "10.0.0.3",
                        "Service": {"Service": "other", "Port": 1}}))
        .expect("other");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "woken by an unrelated service");
    emu.register(web_sidecar("critical"))
        .expect("proxy critical");
    let (r, _) = pending.await.expect("join");
    assert!(r.index() > idx);
    assert_eq!(r.json(), json!([]));

    // Retargeting the proxy wakes both the old and the new destination.
    let idx = r.index();
    let old = blocking(&emu, format!("/v1/health/connect/web?index={idx}&wait=5s"));
    let api_idx = get(&emu, "/v1/health/connect/api").await.index();
    let new = blocking(
        &emu,
        format!("/v1/health/connect/api?index={api_idx}&wait=5s"),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut retarget = web_sidecar("critical");
    retarget["Service"]["Proxy"]["DestinationServiceName"] = json!("api");
    emu.register(retarget).expect("retarget");
    let (old, _) = tokio::time::timeout(Duration::from_secs(1), old)
        .await
        .expect("old destination woken")
        .expect("join");
    assert_eq!(old.json(), json!([]));
    let (new, _) = tokio::time::timeout(Duration::from_secs(1), new)
        .await
        .expect("new destination woken")
        .expect("join");
    assert_eq!(len(&new.json()), 1);
}

fn ingress_entry(services: Value) -> Value {
    json!({"Kind": "ingress-gateway", "Name": "ingress",
           "Listeners": [{"Port": 8080, "Protocol": "HTTP", "Services": services}]})
}

fn gateway_instance(status: &str) -> Value {
    json!({"Node": "gw-node", "Address": "10.0.9.1",
           "Service": {"ID": "ingress-1", "Service": "ingress", "Kind": "ingress-gateway",
                       "Address": "10.0.9.10", "Port": 8443},
           "Check": {"Name": "gateway", "ServiceID": "ingress-1", "Status": status}})
}

#[tokio::test]
async fn ingress_lists_gateways_whose_config_entry_names_the_service() {
    let emu = start().await;
    emu.register(gateway_instance("passing")).expect("gateway");
    for (node, svc) in [("n1", "api"), ("n2", "web")] {
        emu.register(json!({"Node": node, "Address": "10.0.0.1",
                            "Service": {"Service": svc, "Port": 80}}))
            .expect("service");
    }
    assert_eq!(get(&emu, "/v1/health/ingress/api").await.json(), json!([]));

    emu.put_config_entry(ingress_entry(json!([{"Name": "api"}])))
        .expect("config entry");
    let gw = get(&emu, "/v1/health/ingress/API").await.json();
    assert_eq!(len(&gw), 1);
    let s = &gw[0]["Service"];
    assert_eq!(s["Service"], "ingress");
    assert_eq!(s["Kind"], "ingress-gateway");
    assert_eq!(
        (&s["Address"], &s["Port"]),
        (&json!("10.0.9.10"), &json!(8443))
    );
    assert_eq!(gw[0]["Node"]["Address"], "10.0.9.1");
    assert_eq!(get(&emu, "/v1/health/ingress/web").await.json(), json!([]));

    let e = get(&emu, "/v1/config/ingress-gateway/ingress").await.json();
    assert_eq!(e["Kind"], "ingress-gateway");
    assert_eq!(e["Name"], "ingress");
    assert_eq!(e["Listeners"][0]["Protocol"], "http", "normalised");
    assert_eq!(e["Listeners"][0]["Services"], json!([{"Name": "api"}]));
    assert!(e["CreateIndex"].as_u64().is_some());
    assert_eq!(
        len(&get(&emu, "/v1/config/ingress-gateway").await.json()),
        1
    );

    // A wildcard matches every typical service but `consul`.
    let r = put(
        &emu,
        "/v1/config",
        ingress_entry(json!([{"Name": "*"}])).to_string(),
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "true"));
    assert_eq!(len(&get(&emu, "/v1/health/ingress/web").await.json()), 1);
    assert_eq!(
        get(&emu, "/v1/health/ingress/consul").await.json(),
        json!([])
    );
    assert_eq!(
        get(&emu, "/v1/health/ingress/nothing").await.json(),
        json!([])
    );

    let bad = [
        (
            json!({"Kind": "nope", "Name": "x"}),
            400,
            "Request decoding failed: invalid config entry kind: nope",
        ),
        (
            json!({"Name": "x"}),
            400,
            "Request decoding failed: Payload does not contain a kind/Kind key at the top level",
        ),
        (
            json!({"Kind": "ingress-gateway", "Name": "ingress",
                   "Listeners": [{"Port": 1, "Services": [{"Name": "a"}, {"Name": "b"}]}]}),
            500,
            "Multiple services per listener are only supported for protocol = 'http' \
             (listener on port 1)",
        ),
        (
            json!({"Kind": "ingress-gateway", "Name": "ingress",
                   "Listeners": [{"Port": 1, "Protocol": "tcp", "Services": [{"Name": "*"}]}]}),
            500,
            "Wildcard service name is only valid for protocol = 'http' (listener on port 1)",
        ),
    ];
    for (body, status, msg) in bad {
        let r = put(&emu, "/v1/config", body.to_string()).await;
        assert_eq!(
            (r.status.as_u16(), r.text.as_str()),
            (status, msg),
            "{body}"
        );
    }

    let r = delete(&emu, "/v1/config/ingress-gateway/ingress").await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "{}"));
    assert_eq!(get(&emu, "/v1/health/ingress/web").await.json(), json!([]));
    let r = get(&emu, "/v1/config/ingress-gateway/ingress").await;
    assert_eq!(
        (r.status.as_u16(), r.text.as_str()),
        (
            404,
            r#"Config entry not found for "ingress-gateway" / "ingress""#
        )
    );
}

#[tokio::test]
async fn blocking_ingress_query_wakes_on_config_entry_and_gateway_changes() {
    let emu = start().await;
    emu.register(gateway_instance("passing")).expect("gateway");
    let idx = get(&emu, "/v1/health/ingress/api").await.index();

    type Step = (&'static str, Box<dyn Fn(&Emulator)>, usize);
    let steps: [Step; 4] = [
        (
            "config entry lists api",
            Box::new(|e| {
                e.put_config_entry(ingress_entry(json!([{"Name": "api"}])))
                    .expect("entry")
            }),
            1,
        ),
        (
            "gateway check critical (?passing)",
            Box::new(|e| e.register(gateway_instance("critical")).expect("check")),
            0,
        ),
        (
            "gateway healthy again",
            Box::new(|e| e.register(gateway_instance("passing")).expect("check")),
            1,
        ),
        (
            "entry no longer lists api",
            Box::new(|e| {
                e.put_config_entry(ingress_entry(json!([{"Name": "web"}])))
                    .expect("entry")
            }),
            0,
        ),
    ];
    let mut idx = idx;
    for (what, change, want) in steps {
        let pending = blocking(
            &emu,
            format!("/v1/health/ingress/api?index={idx}&wait=5s&passing"),
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!pending.is_finished(), "{what}: must block");
        let changed_at = Instant::now();
        change(&emu);
        let (r, at) = pending.await.expect("join");
        assert!(
            at - changed_at < Duration::from_millis(50),
            "{what}: {:?}",
            at - changed_at
        );
        assert!(r.index() > idx, "{what}");
        assert_eq!(len(&r.json()), want, "{what}");
        idx = r.index();
    }

    // A change to an unrelated service does not wake it.
    let r = blocking(
        &emu,
        format!("/v1/health/ingress/api?index={idx}&wait=200ms"),
    );
    emu.register(json!({"Node": "n9", "Address": "10.0.0.9",
                        "Service": {"Service": "other", "Port": 1}}))
        .expect("other");
    let (r, _) = r.await.expect("join");
    assert_eq!(r.index(), idx);
}
