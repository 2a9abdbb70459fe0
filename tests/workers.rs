//! Every core answers (issue 19): each listen address is served by `workers` UDP sockets
//! in a SO_REUSEPORT group, each with a thread of its own; queries, from many source ports
//! or from one, are spread over them by the kernel, every reply read strictly; on shutdown every
//! worker stops and the port is free again. One test per process: it reads the CPU time of
//! this process's worker threads from /proc.

#[path = "it/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

/// CPU ticks (user + system) of this process's threads named `dns-udp-<i>`, by name.
fn worker_ticks() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let comm = comm.trim().to_string();
        if !comm.starts_with("dns-udp-") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // After the command in parentheses: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        out.push((comm, ticks));
    }
    out.sort();
    out
}

/// Ticks each worker spent between two readings of [`worker_ticks`].
fn spent(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<u64> {
    before
        .iter()
        .zip(after)
        .map(|((_, a), (_, b))| b - a)
        .collect()
}

/// `n` queries for web's A record from one socket (one source port), each answered.
async fn ask_from_one_port(dns: SocketAddr, n: usize) {
    let sock = UdpSocket::bind(LOCAL).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(
            Name::from_ascii("web.service.consul.").unwrap(),
            RecordType::A,
        ));
        sock.send_to(&msg.to_vec().unwrap(), dns).await.unwrap();
        let len = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .expect("answered within 5 s")
            .unwrap();
        let reply = decode(&buf[..len]);
        assert_eq!(reply.metadata.id, msg.metadata.id);
        assert_eq!(reply.answers.len(), 1, "{reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_from_many_ports_are_spread_over_the_workers() {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    let running = server_with(&consul.url(), |c| c.workers = 3).await;
    let dns = running.dns_addrs[0];
    eventually(Duration::from_secs(5), || async {
        query(dns, "web.service.consul.", RecordType::A)
            .await
            .answers
            .len()
            == 1
    })
    .await;
    let before = worker_ticks();
    assert_eq!(
        before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["dns-udp-0", "dns-udp-1", "dns-udp-2"],
        "one thread per worker"
    );
    let clients: Vec<_> = (0..48)
        .map(|_| tokio::spawn(ask_from_one_port(dns, 400)))
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let after = worker_ticks();
    let busy = spent(&before, &after);
    let total: u64 = busy.iter().sum();
    println!("CPU ticks per worker: {busy:?}");
    assert!(total > 0, "the workers did the work");
    assert!(
        busy.iter().filter(|&&t| t > 0).count() >= 2,
        "the load was not spread: {busy:?}"
    );

    // One client socket (one flow): spread too, as datagrams go to a random worker.
    let before = worker_ticks();
    ask_from_one_port(dns, 8_000).await;
    let after = worker_ticks();
    let busy = spent(&before, &after);
    println!("CPU ticks per worker, one client port: {busy:?}");
    assert!(
        busy.iter().filter(|&&t| t > 0).count() >= 2,
        "one flow went to one worker: {busy:?}"
    );

    // Shutdown stops every worker and closes every socket of the group.
    running.shutdown().await;
    // A joined thread can stay listed in /proc for an instant while the kernel reaps it.
    eventually(Duration::from_secs(1), || async {
        worker_ticks().is_empty()
    })
    .await;
    std::net::UdpSocket::bind(dns).expect("the port is free again");
}
