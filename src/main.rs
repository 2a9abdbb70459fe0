//! The `consul-dns` binary: command line, logging, signals. Everything else is in the library.

use std::process::ExitCode;
use std::time::Duration;

mod service_manager;

use clap::Parser;
use consul_dns::app;
use consul_dns::config::{Cli, Config};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Exit code for configuration and environment errors (bad flag, bad config, port in use).
const EXIT_CONFIG: u8 = 2;
/// How long shutdown may take before we exit anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("consul-dns: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = init_tracing(&config.log_level) {
        eprintln!("consul-dns: invalid log filter {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("consul-dns: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

/// hickory's crates log what a packet or an upstream's reply makes them do, at info and
/// warn, once per message ("request edns version greater than 0", malformed EDNS options,
/// replies from the wrong address): lines anyone can have written by the thousand a second,
/// costing more than the answers. Our own lines say what matters; theirs are kept to errors
/// unless `RUST_LOG` asks for them.
const HICKORY_LOGS: &str =
    "hickory_server=error,hickory_proto=error,hickory_net=error,hickory_resolver=error";

/// `RUST_LOG` wins over `--log-level`; `--log-level` applies to our lines, not hickory's
/// ([`HICKORY_LOGS`]) unless it names them (a later directive for a target replaces one
/// before it). A filter that does not parse is an error, not silence.
fn init_tracing(level: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| format!("RUST_LOG={v:?}: {e}"))?
        }
        _ => EnvFilter::try_new(format!("{HICKORY_LOGS},{level}"))
            .map_err(|e| format!("--log-level {level:?}: {e}"))?,
    };
    use std::io::IsTerminal;
    // Colours only on a terminal: journald, files and pipes get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        // A closed stderr (`2>&1 | head -1`) loses the lines; reporting that on the same
        // stderr would panic.
        .log_internal_errors(false)
        .init();
    Ok(())
}

#[cfg_attr(not(feature = "dev"), allow(unused_mut))]
async fn run(mut config: Config) -> ExitCode {
    let mut signals = Signals::install();
    #[cfg(not(feature = "dev"))]
    if config.dev {
        eprintln!("consul-dns: --dev: this build has no Consul API emulator (the `dev` feature)");
        return ExitCode::from(EXIT_CONFIG);
    }
    #[cfg(feature = "dev")]
    let _emulator = if config.dev {
        match consul_emulator::run_dev(config.dev_http).await {
            Ok(emulator) => {
                info!(addr = %emulator.addr(), "--dev: Consul HTTP API emulator with demo data on http://{}", emulator.addr());
                if let Some(given) = &config.dev_replaced {
                    warn!(
                        "--dev: answering from the embedded emulator; the Consul address {} (--consul-addr, CONSUL_HTTP_ADDR or consul_addr) is not used",
                        consul_dns::config::redact_userinfo(given)
                    );
                }
                config.consul_addr = emulator.url();
                Some(emulator)
            }
            Err(e) => {
                eprintln!(
                    "consul-dns: --dev: cannot listen on {}: {e}",
                    config.dev_http
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    } else {
        None
    };
    info!(consul = %config.consul_addr, domain = %config.domain, "starting");
    let running = match app::start(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("consul-dns: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let synced = running
        .syncer()
        .view()
        .wait_ready(config.startup_wait)
        .await;
    service_manager::ready(if synced {
        "answering"
    } else {
        "answering; not synced with Consul yet (Consul names are SERVFAIL until then)"
    });
    signals.wait(&running).await;
    info!("shutting down");
    service_manager::stopping();
    if tokio::time::timeout(SHUTDOWN_GRACE, running.shutdown())
        .await
        .is_err()
    {
        error!("shutdown took longer than {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    ExitCode::SUCCESS
}

/// The signals the server reacts to, installed before it starts so that an early SIGHUP
/// does not kill it.
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let unix = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(hup)) => Some((term, hup)),
                _ => {
                    error!(
                        "cannot install the SIGTERM/SIGHUP handlers; only Ctrl-C stops the server"
                    );
                    None
                }
            };
            Signals { unix }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Returns on SIGTERM or SIGINT; reloads the static zones and the DNS-over-TLS
    /// certificate on every SIGHUP.
    async fn wait(&mut self, running: &app::Running) {
        #[cfg(unix)]
        if let Some((term, hup)) = &mut self.unix {
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = hup.recv() => {
                        info!("SIGHUP: reloading the zones and the DNS-over-TLS certificate");
                        service_manager::reloading();
                        running.reload_zones().await;
                        running.reload_certificate();
                        service_manager::ready("answering");
                    }
                }
            }
        }
        let _ = running;
        let _ = tokio::signal::ctrl_c().await;
    }
}
