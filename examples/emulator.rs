//! The Consul HTTP API emulator alone, in its own process: for benchmarks (the DNS server
//! can then be pinned to a core of its own) and for trying clients by hand.
//!
//! `cargo run --release --example emulator -- --listen 127.0.0.1:8500 [--demo]`
//!
//! Request counters: `GET /_emulator/stats`.

use std::net::SocketAddr;

use clap::Parser;
use consul_dns::dev::{Emulator, EmulatorConfig};

#[derive(Parser)]
#[command(about = "Consul HTTP API emulator (catalog, health, agent/self; blocking queries)")]
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
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
    println!("emulator listening on {}", emulator.addr());
    let _ = tokio::signal::ctrl_c().await;
    emulator.stop().await;
    std::process::ExitCode::SUCCESS
}
