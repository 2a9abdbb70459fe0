//! The Consul HTTP API emulator alone, in its own process: for benchmarks (the DNS server
//! can then be pinned to a core of its own) and for trying clients by hand.
//!
//! `cargo run --release --example emulator -- --listen 127.0.0.1:8500 [--demo]`
//!
//! Request counters: `GET /_emulator/stats`.
//!
//! Benchmarks: `--synthetic 1000x3` registers a deterministic catalog of 1,000 services
//! (`svc-0` … `svc-999`) with 3 instances each, and `--write-zone FILE` writes the RFC 1035
//! zone of `consul.` that gives, for those names, exactly the answers consul-dns gives from
//! that catalog (for NSD and Knot). Both come from [`Synthetic`], so they cannot disagree.
//! With `--zone-only` the zone is written and the process exits without listening.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Instant;

use clap::Parser;
use consul_emulator::{Emulator, EmulatorConfig};
use serde_json::json;

#[derive(Parser)]
#[command(
    about = "Consul HTTP API emulator (catalog, health, agent API and checks; blocking queries)"
)]
struct Args {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8500")]
    listen: SocketAddr,
    /// Seed the demo catalog of `consul-dns --dev`.
    #[arg(long)]
    demo: bool,
    /// Datacenter name.
    #[arg(long, default_value = "dc1")]
    datacenter: String,
    /// Register a synthetic catalog: SERVICESxINSTANCES, e.g. `1000x3`.
    #[arg(long, value_name = "SERVICESxINSTANCES")]
    synthetic: Option<Synthetic>,
    /// Nodes the synthetic instances are spread over (round robin).
    #[arg(long, default_value_t = 256)]
    nodes: u32,
    /// Write the zone file of the synthetic catalog (needs --synthetic).
    #[arg(long, value_name = "FILE")]
    write_zone: Option<std::path::PathBuf>,
    /// With --write-zone: write the zone and exit (no emulator).
    #[arg(long)]
    zone_only: bool,
}

/// The synthetic catalog: `services` services named `svc-<i>`, each with `instances`
/// instances `svc-<i>-<j>` (instance number `k = i * instances + j`) at address
/// 10.2.0.1 + k (10.2.0.0/16, then 10.3…, …), port 20000 + k % 40000, on node
/// `bench-node-<k % nodes>`, one passing service check each; no tags, no node meta.
#[derive(Debug, Clone, Copy)]
struct Synthetic {
    services: u32,
    instances: u32,
}

impl FromStr for Synthetic {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("{s:?}: expected SERVICESxINSTANCES, e.g. 1000x3"))?;
        let n = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{v:?}: expected a positive number"))
        };
        let syn = Synthetic {
            services: n(a)?,
            instances: n(b)?,
        };
        // Addresses from 10.2.0.1 must stay inside 10/8.
        if u64::from(syn.services) * u64::from(syn.instances) > 0xFD_FFFE {
            return Err(format!("{s}: too many instances"));
        }
        Ok(syn)
    }
}

/// The agent's own node (registered by the emulator at start), the NS of the zone.
const AGENT_NODE: &str = "consul-dev";
const AGENT_ADDR: &str = "127.0.0.1";

impl Synthetic {
    fn ip(k: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 2, 0, 1)) + k)
    }

    fn port(k: u32) -> u16 {
        (20_000 + k % 40_000) as u16
    }

    fn node_name(n: u32) -> String {
        format!("bench-node-{n}")
    }

    /// Node addresses 10.1.x.y (never an instance address).
    fn node_ip(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 1)) + n)
    }

    fn register(&self, emu: &Emulator, nodes: u32) -> Result<(), String> {
        let nodes = nodes.max(1);
        for n in 0..nodes {
            emu.register(json!({
                "Node": Self::node_name(n),
                "Address": Self::node_ip(n).to_string(),
            }))
            .map_err(|e| format!("node {n}: {e}"))?;
        }
        for i in 0..self.services {
            let name = format!("svc-{i}");
            for j in 0..self.instances {
                let k = i * self.instances + j;
                let id = format!("{name}-{j}");
                emu.register(json!({
                    "Node": Self::node_name(k % nodes),
                    "SkipNodeUpdate": true,
                    "Service": {
                        "ID": id,
                        "Service": name,
                        "Address": Self::ip(k).to_string(),
                        "Port": Self::port(k),
                    },
                    "Check": {
                        "CheckID": format!("service:{id}"),
                        "Name": "bench",
                        "Status": "passing",
                        "ServiceID": id,
                    },
                }))
                .map_err(|e| format!("{id}: {e}"))?;
            }
        }
        Ok(())
    }

    /// The zone of `consul.` with consul-dns's answers for the synthetic names (TTL 0, its
    /// default `service_ttl` and `node_ttl`): `svc-<i>.service.consul.` A and SRV
    /// (`1 1 <port> <hex>.addr.dc1.consul.`, as consul-dns for a service address) and the
    /// targets' A records, which both consul-dns and the zone servers put in Additional.
    fn write_zone(&self, out: &mut impl std::io::Write, dc: &str) -> std::io::Result<()> {
        let dc = dc.to_ascii_lowercase();
        writeln!(
            out,
            "; synthetic catalog {}x{}",
            self.services, self.instances
        )?;
        writeln!(out, "$ORIGIN consul.")?;
        writeln!(out, "$TTL 0")?;
        writeln!(
            out,
            "@ 0 IN SOA ns.consul. hostmaster.consul. 1 3600 600 86400 0"
        )?;
        writeln!(out, "@ 0 IN NS {AGENT_NODE}.node.{dc}.consul.")?;
        writeln!(out, "{AGENT_NODE}.node.{dc} 0 IN A {AGENT_ADDR}")?;
        let mut buf = String::with_capacity(1 << 16);
        for i in 0..self.services {
            buf.clear();
            for j in 0..self.instances {
                let k = i * self.instances + j;
                let _ = writeln!(buf, "svc-{i}.service 0 IN A {}", Self::ip(k));
            }
            for j in 0..self.instances {
                let k = i * self.instances + j;
                let _ = writeln!(
                    buf,
                    "svc-{i}.service 0 IN SRV 1 1 {} {:08x}.addr.{dc}.consul.",
                    Self::port(k),
                    u32::from(Self::ip(k))
                );
            }
            for j in 0..self.instances {
                let k = i * self.instances + j;
                let ip = Self::ip(k);
                let _ = writeln!(buf, "{:08x}.addr.{dc} 0 IN A {ip}", u32::from(ip));
            }
            out.write_all(buf.as_bytes())?;
        }
        Ok(())
    }
}

fn write_zone_file(syn: &Synthetic, path: &std::path::Path, dc: &str) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    syn.write_zone(&mut w, dc)
        .and_then(|_| w.flush())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.write_zone {
        let Some(syn) = &args.synthetic else {
            eprintln!("emulator: --write-zone needs --synthetic");
            return std::process::ExitCode::from(2);
        };
        if let Err(e) = write_zone_file(syn, path, &args.datacenter) {
            eprintln!("emulator: cannot write the zone: {e}");
            return std::process::ExitCode::FAILURE;
        }
        eprintln!(
            "zone of {}x{} written to {}",
            syn.services,
            syn.instances,
            path.display()
        );
        if args.zone_only {
            return std::process::ExitCode::SUCCESS;
        }
    }
    let cfg = EmulatorConfig {
        datacenter: args.datacenter,
        ..EmulatorConfig::default()
    };
    let emulator = match Emulator::start(args.listen, cfg).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("emulator: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::from(2);
        }
    };
    if args.demo {
        emulator.seed_demo();
    }
    if let Some(syn) = &args.synthetic {
        let t = Instant::now();
        if let Err(e) = syn.register(&emulator, args.nodes) {
            eprintln!("emulator: synthetic registration failed: {e}");
            return std::process::ExitCode::FAILURE;
        }
        eprintln!(
            "synthetic catalog {}x{} on {} nodes registered in {:.2} s",
            syn.services,
            syn.instances,
            args.nodes.max(1),
            t.elapsed().as_secs_f64()
        );
    }
    // Printed once the catalog is complete: the benchmark script waits for this line.
    println!("emulator listening on {}", emulator.addr());
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    emulator.stop().await;
    std::process::ExitCode::SUCCESS
}
