//! The `consul-dns` binary: command line, logging, signals. Everything else is in the library.

use std::process::ExitCode;
use std::time::Duration;

mod query_output;
mod service_manager;

use clap::Parser;
use consul_dns::app;
use consul_dns::config::{Cli, Config, LogFormat};
use consul_dns::dns::query_log;
use query_output::QueryOutput;
use tracing::{error, info, warn};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

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
    let query_log = match init_tracing(&config) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("consul-dns: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
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
    if let Some(output) = &query_log {
        runtime.spawn(report_dropped(output.clone()));
    }
    let code = runtime.block_on(run(config));
    drop(runtime);
    if let Some(output) = &query_log {
        output.finish(QUERY_LOG_FINISH);
    }
    code
}

/// Query log lines waiting for stdout at most; past it, new ones are dropped (counted)
/// rather than hold up the answers (a few MB of lines).
const QUERY_LOG_BUFFER: usize = 16_384;
/// How often dropped query log lines are reported.
const DROPPED_REPORT: Duration = Duration::from_secs(10);
/// How long the exit waits for the query log lines queued to be written.
const QUERY_LOG_FINISH: Duration = Duration::from_secs(1);

/// hickory's crates log what a packet or an upstream's reply makes them do, at info and
/// warn, once per message ("request edns version greater than 0", malformed EDNS options,
/// replies from the wrong address): lines anyone can have written by the thousand a second,
/// costing more than the answers. Our own lines say what matters; theirs are kept to errors
/// unless `RUST_LOG` asks for them.
const HICKORY_LOGS: &str =
    "hickory_server=error,hickory_proto=error,hickory_net=error,hickory_resolver=error";

/// The log lines on stderr, as text or JSON (`--log-format`), and with `--query-log` the
/// query log's events (target [`query_log::TARGET`]) as JSON lines on stdout, whatever
/// the log level; those are the query log's only output. The query log's output is
/// returned.
///
/// `RUST_LOG` wins over `--log-level`; `--log-level` applies to our lines, not hickory's
/// ([`HICKORY_LOGS`]) unless it names them (a later directive for a target replaces one
/// before it). A filter that does not parse is an error, not silence.
fn init_tracing(config: &Config) -> Result<Option<QueryOutput>, String> {
    let level = &config.log_level;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| format!("invalid log filter RUST_LOG={v:?}: {e}"))?
        }
        _ => EnvFilter::try_new(format!("{HICKORY_LOGS},{level}"))
            .map_err(|e| format!("invalid log filter --log-level {level:?}: {e}"))?,
    };
    let not_queries = format!("{}=off", query_log::TARGET)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let filter = filter.add_directive(not_queries);
    use std::io::IsTerminal;
    // Colours only on a terminal: journald, files and pipes get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // A closed stderr (`2>&1 | head -1`) loses the lines; reporting that on the same
    // stderr would panic (`log_internal_errors(false)`).
    let logs = match config.log_format {
        LogFormat::Text => fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .with_filter(filter)
            .boxed(),
    };
    let (queries, query_log) = if config.query_log {
        // Written by a thread of its own: a slow reader of stdout never holds up the
        // answers; past the buffer, lines are dropped and counted.
        let output = QueryOutput::stdout(QUERY_LOG_BUFFER)
            .map_err(|e| format!("--query-log: cannot start its thread: {e}"))?;
        let layer = fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .with_level(false)
            .with_writer(output.clone())
            .log_internal_errors(false)
            .with_filter(Targets::new().with_target(query_log::TARGET, tracing::Level::INFO));
        (Some(layer), Some(output))
    } else {
        (None, None)
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(queries)
        .try_init()
        .map_err(|e| format!("{e}"))?;
    Ok(query_log)
}

/// Logs, at most every [`DROPPED_REPORT`], how many query log lines were dropped because
/// stdout did not take them fast enough.
async fn report_dropped(output: QueryOutput) {
    let mut reported = 0;
    loop {
        tokio::time::sleep(DROPPED_REPORT).await;
        let now = output.dropped();
        if now > reported {
            warn!(
                dropped = now - reported,
                "query log: lines dropped, stdout does not take them as fast as they come"
            );
            reported = now;
        }
    }
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
