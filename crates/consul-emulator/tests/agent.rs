//! Integration tests of the emulator's agent API (`/v1/agent/*`, `/v1/status/*`) over real
//! loopback HTTP: Consul's shapes, status codes and messages, the catalog and health views
//! of agent registrations, blocking-query wake-ups, the check runners (TTL, HTTP, TCP,
//! DeregisterCriticalServiceAfter), maintenance, and registrator's exact requests.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};
use consul_emulator::Emulator;
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::*;

async fn put_json(emu: &Emulator, path: &str, body: Value) -> Reply {
    put(emu, path, body.to_string()).await
}

async fn register(emu: &Emulator, body: Value) {
    put_json(emu, "/v1/agent/service/register", body).await.ok();
}

async fn agent_checks(emu: &Emulator) -> Value {
    get(emu, "/v1/agent/checks").await.ok().json()
}

async fn agent_check(emu: &Emulator, id: &str) -> Value {
    agent_checks(emu).await[id].clone()
}

/// Polls the agent until check `id` has `status`; its JSON.
async fn wait_for_status(emu: &Emulator, id: &str, status: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let check = agent_check(emu, id).await;
        if check["Status"] == status {
            return check;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not {status} within {within:?}: {check}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The checks of the instances of `service` in `/v1/health/service/<service>`, by ID.
async fn health_checks(emu: &Emulator, service: &str) -> Vec<(String, String)> {
    let entries = get(emu, &format!("/v1/health/service/{service}"))
        .await
        .ok()
        .json();
    entries
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["Checks"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (field("CheckID"), field("Status"))
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// A blocking query started now: its reply and when it came.
/// Runs `change` while a blocking query on `path` waits; asserts it wakes within 1 s of the
/// change, with a higher index. The reply.
async fn wakes_on<F: std::future::Future<Output = ()>>(
    emu: &Emulator,
    path: &str,
    change: F,
) -> Reply {
    let index = get(emu, path).await.ok().index();
    let sep = if path.contains('?') { '&' } else { '?' };
    let query = blocking(emu, format!("{path}{sep}index={index}&wait=5s"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!query.is_finished(), "the query blocks");
    let changed_at = Instant::now();
    change.await;
    let (reply, at) = query.await.expect("query task");
    let took = at.saturating_duration_since(changed_at);
    assert!(
        took < Duration::from_secs(1),
        "woke {took:?} after the change"
    );
    assert!(reply.index() > index, "{} > {index}", reply.index());
    reply
}

// ---------------------------------------------------------------------------------------
// Services.

#[tokio::test]
async fn service_register_shows_in_agent_catalog_and_health_views() {
    let emu = start().await;
    register(
        &emu,
        json!({ "Name": "web", "Port": 8080, "Address": "10.0.0.1", "Tags": ["v1"],
                "Meta": { "version": "1" }, "EnableTagOverride": true }),
    )
    .await;

    let services = get(&emu, "/v1/agent/services").await.ok().json();
    assert_eq!(
        services,
        json!({ "web": {
            "ID": "web", "Service": "web", "Tags": ["v1"], "Meta": { "version": "1" },
            "Port": 8080, "Address": "10.0.0.1",
            "TaggedAddresses": {
                "lan_ipv4": { "Address": "10.0.0.1", "Port": 8080 },
                "wan_ipv4": { "Address": "10.0.0.1", "Port": 8080 },
            },
            "Weights": { "Passing": 1, "Warning": 1 }, "EnableTagOverride": true,
            "Datacenter": "dc1",
        }})
    );

    let one = get(&emu, "/v1/agent/service/web").await;
    let body = one.ok().json();
    let hash = body["ContentHash"]
        .as_str()
        .expect("ContentHash")
        .to_string();
    assert_eq!(one.headers["x-consul-contenthash"], hash.as_str());
    assert_eq!(body["ID"], "web");
    get(&emu, "/v1/agent/service/nope")
        .await
        .err(404, "unknown service ID: nope");

    // On the agent's node, with the node's address.
    let catalog = get(&emu, "/v1/catalog/service/web").await.ok().json();
    assert_eq!(catalog.as_array().map(Vec::len), Some(1), "{catalog}");
    let entry = &catalog[0];
    assert_eq!(entry["Node"], "consul-dev");
    assert_eq!(entry["Address"], "127.0.0.1");
    assert_eq!(entry["Datacenter"], "dc1");
    assert_eq!(entry["ServiceID"], "web");
    assert_eq!(entry["ServiceAddress"], "10.0.0.1");
    assert_eq!(entry["ServicePort"], 8080);
    assert_eq!(entry["ServiceTags"], json!(["v1"]));
    assert_eq!(entry["ServiceMeta"], json!({ "version": "1" }));
    assert_eq!(entry["ServiceEnableTagOverride"], true);

    // No check of its own: only the node's serfHealth.
    assert_eq!(
        health_checks(&emu, "web").await,
        pairs(&[("serfHealth", "passing")])
    );
}

#[tokio::test]
async fn service_checks_get_consul_ids_and_names_and_start_critical() {
    let emu = start().await;
    register(
        &emu,
        json!({ "ID": "web-1", "Name": "web", "Tags": ["v1"], "Check": { "TTL": "30s" } }),
    )
    .await;
    register(
        &emu,
        json!({ "ID": "api-1", "Name": "api", "Checks": [
            { "TTL": "30s" },
            { "TTL": "30s", "Status": "passing", "Notes": "second" },
            { "CheckID": "api-custom", "Name": "Custom", "TTL": "30s", "Status": "warning" },
        ]}),
    )
    .await;

    let checks = agent_checks(&emu).await;
    let web = &checks["service:web-1"];
    assert_eq!(
        *web,
        json!({
            "Node": "consul-dev", "CheckID": "service:web-1", "Name": "Service 'web' check",
            "Status": "critical", "Notes": "", "Output": "", "ServiceID": "web-1",
            "ServiceName": "web", "ServiceTags": ["v1"], "Type": "ttl", "Interval": "",
            "Timeout": "", "ExposedPort": 0, "Definition": {}, "CreateIndex": 0,
            "ModifyIndex": 0,
        })
    );
    let summary = |id: &str| {
        let c = &checks[id];
        (c["Name"].clone(), c["Status"].clone(), c["Notes"].clone())
    };
    assert_eq!(
        summary("service:api-1:1"),
        (json!("Service 'api' check"), json!("critical"), json!(""))
    );
    assert_eq!(
        summary("service:api-1:2"),
        (
            json!("Service 'api' check"),
            json!("passing"),
            json!("second")
        )
    );
    assert_eq!(
        summary("api-custom"),
        (json!("Custom"), json!("warning"), json!(""))
    );

    // The catalog has them with their status, next to the node's serfHealth.
    assert_eq!(
        health_checks(&emu, "api").await,
        pairs(&[
            ("api-custom", "warning"),
            ("serfHealth", "passing"),
            ("service:api-1:1", "critical"),
            ("service:api-1:2", "passing"),
        ])
    );
    let health = get(&emu, "/v1/health/service/web").await.ok().json();
    let check = health[0]["Checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["CheckID"] == "service:web-1"))
        .cloned()
        .expect("service check in health");
    assert_eq!(check["ServiceName"], "web");
    assert_eq!(check["ServiceTags"], json!(["v1"]));
    assert_eq!(check["Type"], "ttl");
    assert_eq!(check["Node"], "consul-dev");
}

#[tokio::test]
async fn registering_again_replaces_the_service_and_keeps_checks_unless_asked() {
    let emu = start().await;
    let with_two = json!({ "ID": "web-1", "Name": "web", "Port": 80, "Checks": [
        { "CheckID": "a", "TTL": "30s" }, { "CheckID": "b", "TTL": "30s" },
    ]});
    register(&emu, with_two).await;
    put(&emu, "/v1/agent/check/pass/a?note=fine", "").await.ok();

    // Again with one check and new fields: the service changes, `a` keeps its state, `b`
    // stays.
    let with_one = json!({ "ID": "web-1", "Name": "web", "Port": 81, "Tags": ["new"],
                           "Checks": [{ "CheckID": "a", "TTL": "30s" }] });
    register(&emu, with_one.clone()).await;
    let service = get(&emu, "/v1/agent/service/web-1").await.ok().json();
    assert_eq!(
        (service["Port"].clone(), service["Tags"].clone()),
        (json!(81), json!(["new"]))
    );
    let checks = agent_checks(&emu).await;
    assert_eq!(checks["a"]["Status"], "passing");
    assert_eq!(checks["a"]["Output"], "fine");
    assert_eq!(checks["b"]["Status"], "critical");

    // With replace-existing-checks, `b` goes, from the agent and from the catalog.
    put_json(
        &emu,
        "/v1/agent/service/register?replace-existing-checks=true",
        with_one,
    )
    .await
    .ok();
    let checks = agent_checks(&emu).await;
    assert!(checks.get("b").is_none(), "{checks}");
    assert_eq!(
        health_checks(&emu, "web").await,
        pairs(&[("a", "passing"), ("serfHealth", "passing")])
    );
}

#[tokio::test]
async fn register_errors_are_consul_messages() {
    let emu = start().await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({}), 400, "Missing service name"),
        (
            json!({ "Name": "web", "Address": "0.0.0.0" }),
            400,
            "Invalid service address",
        ),
        (
            json!({ "Name": "web", "Weights": { "Passing": 0, "Warning": 1 } }),
            400,
            "Invalid Weights: Passing must be greater than 0",
        ),
        (
            json!({ "Name": "web", "Meta": { "consul-version": "1" } }),
            400,
            "Invalid Service Meta: Couldn't load metadata pair ('consul-version', '1'): Key prefix 'consul-' is reserved for internal use",
        ),
        (
            json!({ "Name": "web", "Check": { "HTTP": "http://127.0.0.1:1/" } }),
            400,
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks",
        ),
        (
            json!({ "Name": "web", "Checks": [{ "TTL": "5s", "Interval": "5s", "TCP": "x:1" }] }),
            400,
            "Invalid check: Interval and TTL cannot both be specified",
        ),
        (
            json!({ "Name": "web", "Check": { "Notes": "no type" } }),
            400,
            "Invalid check: TTL must be > 0 for TTL checks",
        ),
        (
            json!({ "Name": "web", "Check": { "TTL": "5s", "Status": "fine" } }),
            400,
            "Status for checks must 'passing', 'warning', 'critical'",
        ),
        (
            json!({ "Name": "web", "Check": { "TTL": "soon" } }),
            400,
            "Request decode failed: time: invalid duration \"soon\"",
        ),
        (
            json!({ "Name": "web", "Check": { "Args": ["/bin/true"], "Interval": "10s" } }),
            500,
            "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true",
        ),
        (
            json!({ "Name": "web", "Kind": "connect-proxy", "Port": 21000 }),
            400,
            "Validation failed: 1 error occurred:\n\t* Proxy.DestinationServiceName must be non-empty for Connect proxy services\n\n",
        ),
        (
            json!({ "Name": "web", "TaggedAddresses": { "lan_ipv4": { "Address": "::1" } } }),
            500,
            "Service tagged address \"lan_ipv4\" must be a valid ipv4 address",
        ),
    ];
    let index = emu.index();
    for (body, status, text) in cases {
        put_json(&emu, "/v1/agent/service/register", body)
            .await
            .err(status, text);
    }
    let not_json = put(&emu, "/v1/agent/service/register", "{").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert!(
        not_json.text.starts_with("Request decode failed: "),
        "{}",
        not_json.text
    );
    // Nothing was registered, nothing written.
    assert_eq!(get(&emu, "/v1/agent/services").await.ok().json(), json!({}));
    assert_eq!(emu.index(), index);
}

#[tokio::test]
async fn deregister_takes_ids_with_colons_and_slashes() {
    let emu = start().await;
    for id in ["myhost:nginx:443:udp", "rack/a:b"] {
        register(
            &emu,
            json!({ "ID": id, "Name": "nginx", "Check": { "TTL": "30s" } }),
        )
        .await;
    }
    get(&emu, "/v1/agent/service/rack/a:b").await.ok();
    put(
        &emu,
        "/v1/agent/service/deregister/myhost:nginx:443:udp",
        "",
    )
    .await
    .ok();
    put(&emu, "/v1/agent/service/deregister/rack%2Fa:b", "")
        .await
        .ok();
    assert_eq!(get(&emu, "/v1/agent/services").await.ok().json(), json!({}));
    // The service's checks went with it, in the agent and in the catalog.
    assert_eq!(agent_checks(&emu).await, json!({}));
    assert_eq!(
        get(&emu, "/v1/catalog/service/nginx").await.ok().json(),
        json!([])
    );
    put(&emu, "/v1/agent/service/deregister/nginx", "")
        .await
        .err(
        404,
        "Unknown service ID \"nginx\". Ensure that the service ID is passed, not the service name.",
    );
}

// ---------------------------------------------------------------------------------------
// Checks.

#[tokio::test]
async fn check_register_update_and_deregister() {
    let emu = start().await;
    register(&emu, json!({ "ID": "web-1", "Name": "web" })).await;

    // A node-level TTL check (ID from the name) and a service check (`CheckID` works too).
    put_json(
        &emu,
        "/v1/agent/check/register",
        json!({ "Name": "mem", "TTL": "30s" }),
    )
    .await
    .ok();
    put_json(
        &emu,
        "/v1/agent/check/register",
        json!({ "CheckID": "web-ttl", "Name": "Web TTL", "TTL": "30s", "ServiceID": "web-1",
                "Notes": "pushed by web" }),
    )
    .await
    .ok();
    let checks = agent_checks(&emu).await;
    assert_eq!(
        (
            checks["mem"]["Status"].clone(),
            checks["mem"]["ServiceID"].clone(),
            checks["mem"]["Type"].clone()
        ),
        (json!("critical"), json!(""), json!("ttl"))
    );
    assert_eq!(checks["web-ttl"]["ServiceName"], "web");
    assert_eq!(checks["web-ttl"]["Notes"], "pushed by web");

    let updates = [
        (
            "/v1/agent/check/pass/mem?note=all+good",
            "passing",
            "all good",
        ),
        (
            "/v1/agent/check/warn/mem?note=swapping",
            "warning",
            "swapping",
        ),
        ("/v1/agent/check/fail/mem", "critical", ""),
    ];
    for (path, status, output) in updates {
        put(&emu, path, "").await.ok();
        let check = agent_check(&emu, "mem").await;
        assert_eq!(
            (check["Status"].clone(), check["Output"].clone()),
            (json!(status), json!(output))
        );
    }
    put_json(
        &emu,
        "/v1/agent/check/update/web-ttl",
        json!({ "Status": "warning", "Output": "slow" }),
    )
    .await
    .ok();
    let check = agent_check(&emu, "web-ttl").await;
    assert_eq!(
        (check["Status"].clone(), check["Output"].clone()),
        (json!("warning"), json!("slow"))
    );
    // A node check counts for every service of the node.
    assert_eq!(
        health_checks(&emu, "web").await,
        pairs(&[
            ("mem", "critical"),
            ("serfHealth", "passing"),
            ("web-ttl", "warning")
        ])
    );

    put(&emu, "/v1/agent/check/deregister/mem", "").await.ok();
    assert!(agent_checks(&emu).await.get("mem").is_none());
    assert_eq!(
        health_checks(&emu, "web").await,
        pairs(&[("serfHealth", "passing"), ("web-ttl", "warning")])
    );
}

#[tokio::test]
async fn check_errors_are_consul_messages() {
    let emu = start().await;
    put_json(
        &emu,
        "/v1/agent/check/register",
        json!({ "Name": "tcp", "TCP": "127.0.0.1:1", "Interval": "1h" }),
    )
    .await
    .ok();
    let unknown =
        "Unknown check ID \"nope\". Ensure that the check ID is passed, not the check name.";
    let cases: Vec<(&str, Value, u16, String)> = vec![
        (
            "/v1/agent/check/register",
            json!({ "TTL": "5s" }),
            400,
            "Missing check name".into(),
        ),
        (
            "/v1/agent/check/register",
            json!({ "Name": "x", "TTL": "5s", "Status": "up" }),
            400,
            "Bad check status".into(),
        ),
        (
            "/v1/agent/check/register",
            json!({ "Name": "x" }),
            400,
            "Invalid check: TTL must be > 0 for TTL checks".into(),
        ),
        (
            "/v1/agent/check/register",
            json!({ "Name": "x", "TTL": "5s", "ServiceID": "nope" }),
            404,
            "ServiceID \"nope\" does not exist".into(),
        ),
        (
            "/v1/agent/check/pass/nope",
            json!(null),
            404,
            unknown.into(),
        ),
        (
            "/v1/agent/check/deregister/nope",
            json!(null),
            404,
            unknown.into(),
        ),
        (
            "/v1/agent/check/pass/tcp",
            json!(null),
            500,
            "CheckID \"tcp\" does not have associated TTL".into(),
        ),
        (
            "/v1/agent/check/update/tcp",
            json!({ "Status": "bogus" }),
            400,
            "Invalid check status: 'bogus'".into(),
        ),
        (
            "/v1/agent/check/update/nope",
            json!({ "Status": "passing" }),
            404,
            unknown.into(),
        ),
    ];
    for (path, body, status, text) in cases {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        put(&emu, path, body).await.err(status, &text);
    }
    // Wrong method: Consul's 405.
    assert_eq!(
        get(&emu, "/v1/agent/check/pass/tcp").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn ttl_runs_out_to_critical() {
    let emu = start().await;
    register(
        &emu,
        json!({ "ID": "web-1", "Name": "web", "Check": { "TTL": "300ms" } }),
    )
    .await;
    put(&emu, "/v1/agent/check/pass/service:web-1?note=ok", "")
        .await
        .ok();
    assert_eq!(
        agent_check(&emu, "service:web-1").await["Status"],
        "passing"
    );

    // No refresh: critical after the TTL, quoting the last output; the blocked health query
    // wakes for it.
    let passed = Instant::now();
    let reply = wakes_on(&emu, "/v1/health/service/web", async {
        tokio::time::sleep(Duration::from_millis(50)).await;
    })
    .await;
    let elapsed = passed.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "expired after {elapsed:?}"
    );
    let check = reply.json()[0]["Checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["CheckID"] == "service:web-1").cloned())
        .expect("check");
    assert_eq!(check["Status"], "critical");
    assert_eq!(
        check["Output"],
        "TTL expired (last output before timeout follows): ok"
    );

    // A pass revives it and restarts the TTL; refreshed in time, it stays passing.
    for _ in 0..4 {
        put(&emu, "/v1/agent/check/pass/service:web-1", "")
            .await
            .ok();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            agent_check(&emu, "service:web-1").await["Status"],
            "passing"
        );
    }
    let check = wait_for_status(&emu, "service:web-1", "critical", Duration::from_secs(2)).await;
    assert_eq!(check["Output"], "TTL expired");
}

// ---------------------------------------------------------------------------------------
// Blocking queries.

#[tokio::test]
async fn blocking_health_query_wakes_at_once_on_agent_writes() {
    let emu = start().await;
    let path = "/v1/health/service/web";
    let reply = wakes_on(&emu, path, async {
        register(
            &emu,
            json!({ "ID": "web-1", "Name": "web", "Check": { "TTL": "30s" } }),
        )
        .await;
    })
    .await;
    assert_eq!(reply.json().as_array().map(Vec::len), Some(1));
    for (path_to_put, status) in [
        ("/v1/agent/check/pass/service:web-1", "passing"),
        ("/v1/agent/check/fail/service:web-1", "critical"),
    ] {
        let reply = wakes_on(&emu, path, async {
            put(&emu, path_to_put, "").await.ok();
        })
        .await;
        let statuses: Vec<Value> = reply.json()[0]["Checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["Status"].clone())
            .collect();
        assert_eq!(
            statuses,
            vec![json!("passing"), json!(status)],
            "serfHealth, then ours"
        );
    }
    wakes_on(&emu, path, async {
        put(&emu, "/v1/agent/service/maintenance/web-1?enable=true", "")
            .await
            .ok();
    })
    .await;
    let reply = wakes_on(&emu, path, async {
        put(&emu, "/v1/agent/service/deregister/web-1", "")
            .await
            .ok();
    })
    .await;
    assert_eq!(reply.json(), json!([]));
}

#[tokio::test]
async fn agent_service_supports_hash_blocking() {
    let emu = start().await;
    register(&emu, json!({ "ID": "web-1", "Name": "web", "Tags": ["a"] })).await;
    let hash = get(&emu, "/v1/agent/service/web-1").await.ok().json()["ContentHash"]
        .as_str()
        .expect("hash")
        .to_string();

    // Unchanged: the same hash after the wait.
    let started = Instant::now();
    let same = get(
        &emu,
        &format!("/v1/agent/service/web-1?hash={hash}&wait=200ms"),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(same.ok().json()["ContentHash"], hash.as_str());

    // Changed: back at once with a new hash.
    let query = blocking(&emu, format!("/v1/agent/service/web-1?hash={hash}&wait=5s"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!query.is_finished());
    let changed_at = Instant::now();
    register(&emu, json!({ "ID": "web-1", "Name": "web", "Tags": ["b"] })).await;
    let (reply, at) = query.await.expect("query");
    assert!(at.saturating_duration_since(changed_at) < Duration::from_secs(1));
    let body = reply.ok().json();
    assert_eq!(body["Tags"], json!(["b"]));
    assert_ne!(body["ContentHash"], hash.as_str());
}

// ---------------------------------------------------------------------------------------
// registrator.

/// registrator (gliderlabs/registrator `consul/consul.go` + `bridge.NewService`) for an
/// `nginx` container named `nginx` on host `myhost` publishing 80/tcp and 443/udp, with
/// `SERVICE_TAGS=web,prod` and `SERVICE_80_CHECK_TTL=15s`: it pings the leader, registers
/// one service per port through the agent (the Go client's JSON: `omitempty` fields left
/// out, `Check`/`Checks` null when unset), the application passes its TTL, a resync lists
/// the agent's services, and the container's death deregisters by ID.
#[tokio::test]
async fn registrator_sequence() {
    let emu = start().await;
    assert_eq!(
        get(&emu, "/v1/status/leader").await.ok().json(),
        json!("127.0.0.1:8300")
    );

    let http = r#"{"ID":"myhost:nginx:80","Name":"nginx-80","Tags":["web","prod"],"Port":32768,"Address":"192.168.1.10","Check":{"TTL":"15s"},"Checks":null,"Meta":{"check_ttl":"15s"}}"#;
    let udp = r#"{"ID":"myhost:nginx:443:udp","Name":"nginx-443","Tags":["web","prod","udp"],"Port":32769,"Address":"192.168.1.10","Check":null,"Checks":null,"Meta":{}}"#;
    put(&emu, "/v1/agent/service/register", http).await.ok();
    put(&emu, "/v1/agent/service/register", udp).await.ok();

    let catalog = get(&emu, "/v1/catalog/service/nginx-80").await.ok().json();
    assert_eq!(catalog[0]["ServiceID"], "myhost:nginx:80");
    assert_eq!(catalog[0]["ServiceAddress"], "192.168.1.10");
    assert_eq!(catalog[0]["ServicePort"], 32768);
    assert_eq!(catalog[0]["ServiceTags"], json!(["web", "prod"]));
    assert_eq!(catalog[0]["ServiceMeta"], json!({ "check_ttl": "15s" }));
    let udp_entry = get(&emu, "/v1/catalog/service/nginx-443").await.ok().json();
    assert_eq!(udp_entry[0]["ServiceTags"], json!(["web", "prod", "udp"]));
    let services = get(&emu, "/v1/catalog/services").await.ok().json();
    assert_eq!(services["nginx-443"], json!(["prod", "udp", "web"]));

    // Critical until the application passes its TTL; the UDP service has no check.
    assert_eq!(
        get(&emu, "/v1/health/service/nginx-80?passing")
            .await
            .ok()
            .json(),
        json!([])
    );
    assert_eq!(
        health_checks(&emu, "nginx-80").await,
        pairs(&[
            ("serfHealth", "passing"),
            ("service:myhost:nginx:80", "critical")
        ])
    );
    put(&emu, "/v1/agent/check/pass/service:myhost:nginx:80", "")
        .await
        .ok();
    let passing = get(&emu, "/v1/health/service/nginx-80?passing")
        .await
        .ok()
        .json();
    assert_eq!(passing[0]["Service"]["ID"], "myhost:nginx:80");
    let udp_health = get(&emu, "/v1/health/service/nginx-443?passing")
        .await
        .ok()
        .json();
    assert_eq!(udp_health[0]["Service"]["ID"], "myhost:nginx:443:udp");

    // `-resync`: registrator reads the agent's services back.
    let agent = get(&emu, "/v1/agent/services").await.ok().json();
    let ids: Vec<&String> = agent
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(ids, ["myhost:nginx:443:udp", "myhost:nginx:80"]);
    assert_eq!(agent["myhost:nginx:80"]["Service"], "nginx-80");
    assert_eq!(agent["myhost:nginx:80"]["Address"], "192.168.1.10");

    for id in ["myhost:nginx:80", "myhost:nginx:443:udp"] {
        put(&emu, &format!("/v1/agent/service/deregister/{id}"), "")
            .await
            .ok();
    }
    assert_eq!(get(&emu, "/v1/agent/services").await.ok().json(), json!({}));
    let services = get(&emu, "/v1/catalog/services").await.ok().json();
    assert_eq!(services, json!({ "consul": [] }));
}

// ---------------------------------------------------------------------------------------
// HTTP and TCP checks.

/// A tiny HTTP server on loopback answering `/health` with a settable status, and `/slow`
/// after 5 s.
struct CheckTarget {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    /// (method, User-Agent) of each request.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn check_target() -> CheckTarget {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let status = Arc::new(AtomicU16::new(200));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (code, log) = (status.clone(), seen.clone());
    let health = move |method: Method, headers: HeaderMap| {
        let (code, log) = (code.clone(), log.clone());
        async move {
            let agent = headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((method.to_string(), agent));
            let status = axum::http::StatusCode::from_u16(code.load(Ordering::SeqCst))
                .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
            (status, "ok")
        }
    };
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "late"
    };
    let app = axum::Router::new()
        .route("/health", axum::routing::any(health))
        .route("/slow", axum::routing::get(slow));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    CheckTarget {
        addr,
        status,
        seen,
        task,
    }
}

#[tokio::test]
async fn http_check_follows_the_target() {
    let emu = start().await;
    let target = check_target().await;
    let url = format!("http://{}/health", target.addr);
    register(
        &emu,
        json!({ "ID": "web-1", "Name": "web",
                "Check": { "HTTP": url, "Interval": "50ms", "Timeout": "1s" } }),
    )
    .await;
    let check = wait_for_status(&emu, "service:web-1", "passing", Duration::from_secs(3)).await;
    assert_eq!(
        check["Output"],
        format!("HTTP GET {url}: 200 OK Output: ok").as_str()
    );
    assert_eq!(
        (
            check["Type"].clone(),
            check["Interval"].clone(),
            check["Timeout"].clone()
        ),
        (json!("http"), json!("50ms"), json!("1s"))
    );
    let first = target
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .first()
        .cloned();
    assert_eq!(
        first,
        Some(("GET".to_string(), "Consul Health Check".to_string()))
    );

    target.status.store(429, Ordering::SeqCst);
    let check = wait_for_status(&emu, "service:web-1", "warning", Duration::from_secs(3)).await;
    assert_eq!(
        check["Output"],
        format!("HTTP GET {url}: 429 Too Many Requests Output: ok").as_str()
    );
    target.status.store(503, Ordering::SeqCst);
    wait_for_status(&emu, "service:web-1", "critical", Duration::from_secs(3)).await;
    target.status.store(204, Ordering::SeqCst);
    wait_for_status(&emu, "service:web-1", "passing", Duration::from_secs(3)).await;
    assert_eq!(
        health_checks(&emu, "web").await,
        pairs(&[("serfHealth", "passing"), ("service:web-1", "passing")])
    );

    // The target goes away: connection refused.
    target.task.abort();
    let _ = target.task.await;
    let check = wait_for_status(&emu, "service:web-1", "critical", Duration::from_secs(3)).await;
    let output = check["Output"].as_str().unwrap_or_default();
    assert!(
        output.starts_with(&format!("Get \"{url}\": dial tcp {}: ", target.addr)),
        "{output}"
    );
    emu.stop().await;
}

#[tokio::test]
async fn http_check_times_out_and_uses_the_method() {
    let emu = start().await;
    let target = check_target().await;
    let slow = format!("http://{}/slow", target.addr);
    put_json(
        &emu,
        "/v1/agent/check/register",
        json!({ "Name": "slow", "HTTP": slow, "Interval": "50ms", "Timeout": "200ms",
                "Status": "passing" }),
    )
    .await
    .ok();
    let check = wait_for_status(&emu, "slow", "critical", Duration::from_secs(3)).await;
    assert_eq!(
        check["Output"],
        format!(
            "Get \"{slow}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )
        .as_str()
    );

    let health = format!("http://{}/health", target.addr);
    put_json(
        &emu,
        "/v1/agent/check/register",
        json!({ "Name": "head", "HTTP": health, "Method": "HEAD", "Interval": "50ms",
                "Header": { "User-Agent": ["probe/1"] } }),
    )
    .await
    .ok();
    wait_for_status(&emu, "head", "passing", Duration::from_secs(3)).await;
    let seen = target
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        seen.contains(&("HEAD".to_string(), "probe/1".to_string())),
        "{seen:?}"
    );
    emu.stop().await;
}

#[tokio::test]
async fn tcp_check_against_bound_and_unbound_ports() {
    let emu = start().await;
    // Bound, never accepting: the kernel completes the handshake.
    let bound = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let open = bound.local_addr().expect("address");
    let closed = {
        let probe = std::net::TcpListener::bind(loopback()).expect("bind");
        probe.local_addr().expect("address")
    };
    for (name, addr) in [("open", open), ("closed", closed)] {
        put_json(
            &emu,
            "/v1/agent/check/register",
            json!({ "Name": name, "TCP": addr.to_string(), "Interval": "50ms", "Timeout": "1s" }),
        )
        .await
        .ok();
    }
    let check = wait_for_status(&emu, "open", "passing", Duration::from_secs(3)).await;
    assert_eq!(
        check["Output"],
        format!("TCP connect {open}: Success").as_str()
    );
    assert_eq!(check["Type"], "tcp");
    let check = agent_check(&emu, "closed").await;
    assert_eq!(check["Status"], "critical");
    // The initial status is critical: wait for the first probe's output.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut output = String::new();
    while output.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        output = agent_check(&emu, "closed").await["Output"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    assert_eq!(
        output,
        format!("dial tcp {closed}: connect: connection refused")
    );
    drop(bound);
    wait_for_status(&emu, "open", "critical", Duration::from_secs(3)).await;
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------
// DeregisterCriticalServiceAfter.

#[tokio::test]
async fn deregister_critical_service_after_reaps_the_service() {
    let emu = start().await;
    // Critical from the start: reaped once critical for 300 ms.
    register(
        &emu,
        json!({ "ID": "doomed", "Name": "web",
                "Check": { "TTL": "30s", "DeregisterCriticalServiceAfter": "300ms" } }),
    )
    .await;
    // Passing: kept, until it fails and stays critical that long (longer, so that slow test
    // machines keep the margins below).
    register(
        &emu,
        json!({ "ID": "healthy", "Name": "web", "Checks": [
            { "CheckID": "ok", "TTL": "30s", "Status": "passing",
              "DeregisterCriticalServiceAfter": "600ms" },
        ]}),
    )
    .await;
    let registered = Instant::now();
    let reply = wakes_on(&emu, "/v1/health/service/web", async {}).await;
    assert!(registered.elapsed() >= Duration::from_millis(250));
    let ids: Vec<Value> = reply
        .json()
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["Service"]["ID"].clone())
        .collect();
    assert_eq!(ids, vec![json!("healthy")]);
    let agent = get(&emu, "/v1/agent/services").await.ok().json();
    assert!(agent.get("doomed").is_none(), "{agent}");
    assert!(agent_checks(&emu).await.get("service:doomed").is_none());

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(get(&emu, "/v1/agent/services")
        .await
        .ok()
        .json()
        .get("healthy")
        .is_some());
    // Critical, then passing again before the time is up: the count starts over (900 ms
    // since the first failure, 400 ms since the second).
    put(&emu, "/v1/agent/check/fail/ok", "").await.ok();
    tokio::time::sleep(Duration::from_millis(400)).await;
    put(&emu, "/v1/agent/check/pass/ok", "").await.ok();
    tokio::time::sleep(Duration::from_millis(100)).await;
    put(&emu, "/v1/agent/check/fail/ok", "").await.ok();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(get(&emu, "/v1/agent/services")
        .await
        .ok()
        .json()
        .get("healthy")
        .is_some());
    let failed = Instant::now();
    let deadline = failed + Duration::from_secs(3);
    while get(&emu, "/v1/agent/services")
        .await
        .ok()
        .json()
        .get("healthy")
        .is_some()
    {
        assert!(Instant::now() < deadline, "not reaped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(&emu, "/v1/catalog/service/web").await.ok().json(),
        json!([])
    );
}

// ---------------------------------------------------------------------------------------
// Maintenance.

#[tokio::test]
async fn service_maintenance_adds_and_removes_a_critical_check() {
    let emu = start().await;
    register(
        &emu,
        json!({ "ID": "web-1", "Name": "web", "Check": { "TTL": "30s", "Status": "passing" } }),
    )
    .await;
    put(
        &emu,
        "/v1/agent/service/maintenance/web-1?enable=true&reason=deploy+v2",
        "",
    )
    .await
    .ok();
    let check = agent_check(&emu, "_service_maintenance:web-1").await;
    assert_eq!(
        (
            check["Name"].clone(),
            check["Status"].clone(),
            check["Notes"].clone(),
            check["ServiceID"].clone(),
            check["Type"].clone()
        ),
        (
            json!("Service Maintenance Mode"),
            json!("critical"),
            json!("deploy v2"),
            json!("web-1"),
            json!("maintenance")
        )
    );
    assert_eq!(
        get(&emu, "/v1/health/service/web?passing")
            .await
            .ok()
            .json(),
        json!([])
    );
    // Idempotent: enabling again keeps the first reason.
    put(
        &emu,
        "/v1/agent/service/maintenance/web-1?enable=1&reason=other",
        "",
    )
    .await
    .ok();
    assert_eq!(
        agent_check(&emu, "_service_maintenance:web-1").await["Notes"],
        "deploy v2"
    );

    put(&emu, "/v1/agent/service/maintenance/web-1?enable=false", "")
        .await
        .ok();
    assert!(agent_checks(&emu)
        .await
        .get("_service_maintenance:web-1")
        .is_none());
    put(&emu, "/v1/agent/service/maintenance/web-1?enable=false", "")
        .await
        .ok();
    assert_eq!(
        health_checks(&emu, "web").await,
        pairs(&[("serfHealth", "passing"), ("service:web-1", "passing")])
    );

    put(&emu, "/v1/agent/service/maintenance/web-1?enable=true", "")
        .await
        .ok();
    assert_eq!(
        agent_check(&emu, "_service_maintenance:web-1").await["Notes"],
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
    );

    put(&emu, "/v1/agent/service/maintenance/web-1", "")
        .await
        .err(400, "Missing value for enable");
    put(&emu, "/v1/agent/service/maintenance/web-1?enable=maybe", "")
        .await
        .err(400, "Invalid value for enable: \"maybe\"");
    put(&emu, "/v1/agent/service/maintenance/?enable=true", "")
        .await
        .err(400, "Missing service ID");
    put(&emu, "/v1/agent/service/maintenance/nope?enable=true", "")
        .await
        .err(
            404,
            "Unknown service ID \"nope\". Ensure that the service ID is passed, not the service name.",
        );
}

#[tokio::test]
async fn node_maintenance_marks_every_service_of_the_node() {
    let emu = start().await;
    register(&emu, json!({ "ID": "web-1", "Name": "web" })).await;
    register(&emu, json!({ "ID": "api-1", "Name": "api" })).await;
    put(&emu, "/v1/agent/maintenance?enable=true", "")
        .await
        .ok();
    let check = agent_check(&emu, "_node_maintenance").await;
    assert_eq!(
        (
            check["Name"].clone(),
            check["Status"].clone(),
            check["ServiceID"].clone()
        ),
        (json!("Node Maintenance Mode"), json!("critical"), json!(""))
    );
    assert_eq!(
        check["Notes"],
        "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
    );
    for service in ["web", "api"] {
        assert_eq!(
            health_checks(&emu, service).await,
            pairs(&[("_node_maintenance", "critical"), ("serfHealth", "passing")])
        );
    }
    let node = get(&emu, "/v1/health/node/consul-dev").await.ok().json();
    assert!(
        node.as_array()
            .is_some_and(|c| c.iter().any(|c| c["CheckID"] == "_node_maintenance")),
        "{node}"
    );
    put(&emu, "/v1/agent/maintenance?enable=false", "")
        .await
        .ok();
    put(&emu, "/v1/agent/maintenance?enable=false", "")
        .await
        .ok();
    assert_eq!(
        health_checks(&emu, "web").await,
        pairs(&[("serfHealth", "passing")])
    );
    put(&emu, "/v1/agent/maintenance", "")
        .await
        .err(400, "Missing value for enable");
    put(&emu, "/v1/agent/maintenance?enable", "")
        .await
        .err(400, "Invalid value for enable: \"\"");
}

// ---------------------------------------------------------------------------------------
// Status and lifecycle.

#[tokio::test]
async fn status_leader_and_peers() {
    let emu = start().await;
    let leader = get(&emu, "/v1/status/leader").await;
    assert_eq!(leader.ok().text, "\"127.0.0.1:8300\"");
    assert_eq!(
        get(&emu, "/v1/status/peers").await.ok().json(),
        json!(["127.0.0.1:8300"])
    );
    emu.set_known_leader(false);
    assert_eq!(get(&emu, "/v1/status/leader").await.ok().json(), json!(""));
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits until the runtime is back to `count` tasks (connection tasks end a little after
/// the server closes them).
async fn settle_to(count: usize) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive_tasks() != count {
        assert!(
            Instant::now() < deadline,
            "{} tasks alive, {count} expected",
            alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn check_tasks_end_with_stop_and_run_again_after_restart() {
    let before = alive_tasks();
    let emu = start().await;
    register(
        &emu,
        json!({ "ID": "web-1", "Name": "web", "Checks": [
            { "CheckID": "ttl", "TTL": "300ms" },
            { "CheckID": "tcp", "TCP": "127.0.0.1:1", "Interval": "50ms" },
            { "CheckID": "http", "HTTP": "http://127.0.0.1:1/", "Interval": "50ms" },
        ]}),
    )
    .await;
    // The accept loop and three check tasks (connection tasks come and go).
    assert!(alive_tasks() >= before + 4, "{} alive", alive_tasks());

    emu.stop().await;
    settle_to(before).await;
    // Stopped checks do not change state: the TTL (300 ms) does not run out.
    tokio::time::sleep(Duration::from_millis(500)).await;

    emu.restart().await.expect("restart");
    let check = agent_check(&emu, "ttl").await;
    assert_eq!(check["Output"], "", "no expiry while stopped: {check}");
    wait_for_status(&emu, "ttl", "critical", Duration::from_secs(2)).await;
    let check = wait_for_output(&emu, "ttl", "TTL expired").await;
    assert_eq!(check["Status"], "critical");

    emu.stop().await;
    drop(emu);
    settle_to(before).await;
}

async fn wait_for_output(emu: &Emulator, id: &str, output: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let check = agent_check(emu, id).await;
        if check["Output"] == output {
            return check;
        }
        assert!(Instant::now() < deadline, "{id}: {check}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
