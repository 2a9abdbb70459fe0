//! Registrations through the agent API, as applications and registrator make them, seen in
//! DNS (issue 17): each step of a session is answered within a second. One session is
//! driven by a real client library, py-consul (`tests/clients/py_consul_agent.py`, run
//! with the Python of `target/py-consul`, which `.ci/run` prepares, or of
//! `CONSUL_DNS_TEST_PYTHON`); the other sends registrator's own request bodies.

use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;
use serde_json::json;

/// How soon a change through the agent API must be answered.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

/// The A records of `name`, sorted.
async fn addresses(dns: SocketAddr, name: &str) -> Vec<String> {
    let m = query(dns, name, RecordType::A).await;
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// Waits until `name` answers exactly `want` (sorted), at most [`VISIBLE_WITHIN`].
async fn answers_within(dns: SocketAddr, name: &str, want: &[&str]) {
    let start = std::time::Instant::now();
    loop {
        let got = addresses(dns, name).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < VISIBLE_WITHIN,
            "{name}: {got:?}, not {want:?}, after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The Python with py-consul, if there is one.
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CONSUL_DNS_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-consul/bin/python");
    venv.exists().then_some(venv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_consul_session_is_answered_at_each_step() {
    let Some(python) = python() else {
        skip!(
            "py_consul_session_is_answered_at_each_step",
            "no Python with py-consul (target/py-consul, made by .ci/run, or CONSUL_DNS_TEST_PYTHON)"
        );
    };
    let consul = emulator().await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    let addr = consul.addr().to_string();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/py_consul_agent.py");
    let step = |name: &'static str| {
        let (python, script, addr) = (python.clone(), script.clone(), addr.clone());
        async move {
            let out = tokio::task::spawn_blocking(move || {
                Command::new(python)
                    .arg(script)
                    .arg(addr)
                    .arg(name)
                    .output()
            })
            .await
            .expect("step task")
            .expect("python runs");
            assert!(
                out.status.success(),
                "py-consul step {name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let shop = "shop.service.consul.";
    step("leader").await;
    // A TTL check starts critical: registered, not answered.
    step("register").await;
    answers_within(dns, shop, &[]).await;
    step("pass").await;
    answers_within(dns, shop, &["10.2.5.1"]).await;
    step("register-second").await;
    step("pass-second").await;
    answers_within(dns, shop, &["10.2.5.1", "10.2.5.2"]).await;
    step("list").await;
    step("fail").await;
    answers_within(dns, shop, &["10.2.5.2"]).await;
    step("maintenance").await;
    answers_within(dns, shop, &[]).await;
    step("maintenance-off").await;
    answers_within(dns, shop, &["10.2.5.2"]).await;
    step("deregister").await;
    answers_within(dns, shop, &[]).await;
    running.shutdown().await;
}

/// registrator (gliderlabs/registrator, consul backend, `-internal`) registers each
/// published port of a container as a service `<image>-<port>` with the ID
/// `<hostname>:<container>:<port>[:udp]`, the container's own address, the tags of
/// `SERVICE_TAGS` (plus `udp` for UDP ports) and a TTL check when `SERVICE_CHECK_TTL` is
/// set, which it then passes; it deregisters by ID when the container stops.
#[tokio::test]
async fn registrator_session_is_answered_at_each_step() {
    let consul = emulator().await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    let http = reqwest::Client::new();
    let put = |path: String, body: Option<serde_json::Value>| {
        let req = http.put(format!("{}{path}", consul.url()));
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            let resp = req.send().await.expect("emulator reachable");
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
        }
    };
    let leader = reqwest::get(format!("{}/v1/status/leader", consul.url()))
        .await
        .expect("status/leader")
        .text()
        .await
        .expect("a body");
    assert!(leader.contains(':'), "a leader address: {leader}");
    for (port, proto, ip) in [
        (80, "", "10.2.6.1"),
        (443, "", "10.2.6.1"),
        (53, ":udp", "10.2.6.1"),
    ] {
        let id = format!("host1:nginx-1:{port}{proto}");
        let mut tags = vec!["edge"];
        if proto == ":udp" {
            tags.push("udp");
        }
        put(
            "/v1/agent/service/register".into(),
            Some(json!({
                "ID": id, "Name": format!("nginx-{port}"), "Port": port, "Address": ip,
                "Tags": tags, "Check": {"TTL": "15s"}
            })),
        )
        .await;
        put(format!("/v1/agent/check/pass/service:{id}"), None).await;
    }
    answers_within(dns, "nginx-80.service.consul.", &["10.2.6.1"]).await;
    answers_within(dns, "edge.nginx-443.service.consul.", &["10.2.6.1"]).await;
    answers_within(dns, "udp.nginx-53.service.consul.", &["10.2.6.1"]).await;
    let srv = query(dns, "_nginx-80._edge.service.consul.", RecordType::SRV).await;
    assert_records(
        "registrator SRV",
        &srv.answers,
        &["_nginx-80._edge.service.consul. 0 IN SRV 1 1 80 0a020601.addr.dc1.consul."],
    );
    // A second container of the same image.
    put(
        "/v1/agent/service/register".into(),
        Some(json!({
            "ID": "host1:nginx-2:80", "Name": "nginx-80", "Port": 80, "Address": "10.2.6.2",
            "Tags": ["edge"], "Check": {"TTL": "15s"}
        })),
    )
    .await;
    put("/v1/agent/check/pass/service:host1:nginx-2:80".into(), None).await;
    answers_within(dns, "nginx-80.service.consul.", &["10.2.6.1", "10.2.6.2"]).await;
    // The first container stops.
    for id in [
        "host1:nginx-1:80",
        "host1:nginx-1:443",
        "host1:nginx-1:53:udp",
    ] {
        put(format!("/v1/agent/service/deregister/{id}"), None).await;
    }
    answers_within(dns, "nginx-80.service.consul.", &["10.2.6.2"]).await;
    answers_within(dns, "nginx-443.service.consul.", &[]).await;
    running.shutdown().await;
}
