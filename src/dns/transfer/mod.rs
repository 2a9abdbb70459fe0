//! Zone transfers of the Consul domain (each served domain a zone of its own): versions
//! built when the catalog changes (`content`), journaled for IXFR (`journal`), served
//! over TCP to `allow_transfer` as AXFR (RFC 5936) and IXFR (RFC 1995) (`xfr`), and
//! announced to the `notify` targets (RFC 1996, `notify`).
//!
//! The version's serial is the SOA serial every answer carries from its first version
//! on, so a secondary polling the SOA sees what it would transfer.

mod content;
mod journal;
mod notify;
mod wire;
mod xfr;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, Record};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::TransferConfig;
use crate::view::DomainId;
use hickory_proto::op::ResponseCode;

use crate::dns::consul_zone::ConsulZone;
use crate::dns::tsig::{self, RequestAuth, TsigKey};
use crate::metrics::Metrics;
use crate::view::{freshness, Source};
use content::ContentBuilder;
pub use journal::{serial_gt, Journal, Since, Version};

/// How often the builder looks whether the catalog changed.
const CHECK: Duration = Duration::from_millis(20);

/// How long the first version waits for every service's data before it is built
/// without the ones still loading.
const FIRST_VERSION_WAIT: Duration = Duration::from_secs(10);

/// The framed (TCP, length-prefixed) messages answering a transfer request, each made
/// when it is taken: a transfer holds one message at a time, not the zone's worth.
pub type Framed = Box<dyn Iterator<Item = Vec<u8>> + Send>;

/// The transferable zones and who may have them.
pub struct Transfers {
    config: TransferConfig,
    /// Requests must be signed with it, responses and NOTIFYs are.
    key: Option<TsigKey>,
    /// Served domains (lower-case), index as in [`ConsulZone`].
    domains: Vec<Name>,
    /// Per served domain, its versions; empty before the first version.
    journals: Mutex<Vec<Journal>>,
    /// The SOA of each domain, with serial 0.
    soas: Vec<Record>,
    metrics: Arc<Metrics>,
}

impl Transfers {
    /// Starts building versions from `zone`'s answers and notifying, until `cancel`.
    pub fn start(
        zone: &ConsulZone,
        source: Arc<dyn Source>,
        config: TransferConfig,
        key: Option<TsigKey>,
        metrics: Arc<Metrics>,
        cancel: &CancellationToken,
    ) -> Arc<Self> {
        let complete = Arc::new(zone.complete());
        let domains: Vec<Name> = zone
            .domains()
            .map(|d| zone.domain(d).to_lowercase())
            .collect();
        let soas = zone.domains().map(|d| zone.soa_template(d)).collect();
        let transfers = Arc::new(Transfers {
            config,
            key,
            domains: domains.clone(),
            journals: Mutex::new(Vec::new()),
            soas,
            metrics,
        });
        source.view().hold_serial();
        let builders = zone
            .domains()
            .map(|d| ContentBuilder::new(Arc::clone(&complete), Arc::clone(&source), d))
            .collect();
        let (serials, watching) = watch::channel(0u32);
        for &target in &transfers.config.notify {
            tokio::spawn(notify::notifier(
                target,
                transfers.soas.clone(),
                transfers.key.clone(),
                watching.clone(),
                Arc::clone(&transfers.metrics),
                transfers.config.notify_interval,
                cancel.clone(),
            ));
        }
        tokio::spawn(Arc::clone(&transfers).keep_versions(
            builders,
            source,
            serials,
            cancel.clone(),
        ));
        transfers
    }

    fn journals(&self) -> MutexGuard<'_, Vec<Journal>> {
        self.journals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current version of domain `d`'s zone, once there is one.
    pub fn current(&self, d: DomainId) -> Option<Version> {
        self.journals().get(d.index()).map(|j| j.current().clone())
    }

    /// Builds a version whenever the catalog changed, until `cancel`.
    async fn keep_versions(
        self: Arc<Self>,
        mut builders: Vec<ContentBuilder>,
        source: Arc<dyn Source>,
        serials: watch::Sender<u32>,
        cancel: CancellationToken,
    ) {
        let view = Arc::clone(source.view());
        let mut seen = None;
        let mut first_try: Option<Instant> = None;
        // After a build that took long (a large zone), as long again before the next: the
        // builder takes at most half a core however fast the catalog changes.
        let mut pause = CHECK;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = CHECK;
            let lists = (view.directory(), view.nodes());
            let now = (
                freshness::changes(),
                lists.0.as_ref().map(|d| Arc::as_ptr(d) as usize),
                lists.1.as_ref().map(|n| Arc::as_ptr(n) as usize),
            );
            if seen == Some(now) || !view.is_ready() {
                continue;
            }
            let started = Instant::now();
            let built = tokio::task::spawn_blocking(move || {
                let built: Vec<_> = builders.iter_mut().map(ContentBuilder::build).collect();
                (builders, built)
            })
            .await;
            let Ok((back, built)) = built else {
                warn!("the zone builder panicked: zone transfers stay at their last version");
                return;
            };
            builders = back;
            pause = started.elapsed().max(CHECK);
            let Some(built) = built.into_iter().collect::<Option<Vec<_>>>() else {
                continue;
            };
            let missing = built.first().map_or(0, |b| b.missing);
            let first = self.journals().is_empty();
            if first && missing > 0 {
                let since = *first_try.get_or_insert(started);
                if since.elapsed() < FIRST_VERSION_WAIT {
                    debug!(missing, "zone transfers wait for every service's data");
                    continue;
                }
            }
            seen = Some(now);
            if let Some(serial) = self.publish(built) {
                view.publish_serial(serial);
                serials.send_replace(serial);
                let records = self.current(DomainId::PRIMARY).map_or(0, |v| v.records);
                self.metrics.zone_records.set(records as i64);
                self.metrics.zone_serial.set(i64::from(serial));
                debug!(
                    serial,
                    records,
                    took_ms = started.elapsed().as_millis() as u64,
                    "new zone version"
                );
                if first {
                    info!(serial, records, missing, "zone transfers ready");
                }
            }
        }
    }

    /// Makes `built` the current versions when something changed; the new serial, or
    /// None when nothing did.
    fn publish(&self, built: Vec<content::Built>) -> Option<u32> {
        let mut journals = self.journals();
        let index = built.iter().map(|b| b.index).max().unwrap_or(0);
        let changed = journals.len() != built.len() || built.iter().any(|b| !b.delta.is_empty());
        if !changed {
            return None;
        }
        let previous = journals.first().map(|j| j.current().serial);
        let serial = journal::next_serial(previous, index);
        let first = journals.is_empty();
        let mut next = Vec::with_capacity(built.len());
        for (d, b) in built.into_iter().enumerate() {
            let version = Version {
                serial,
                parts: b.parts,
                records: b.records,
            };
            match journals.get_mut(d) {
                Some(j) if !first => j.push(version, b.delta),
                _ => next.push(Journal::new(version, self.config.journal_bytes)),
            }
        }
        if first {
            *journals = next;
        }
        let bytes: usize = journals.iter().map(Journal::bytes).sum();
        self.metrics.transfer_journal_bytes.set(bytes as i64);
        Some(serial)
    }

    /// The answer to `request` from `src` when it asks for a transfer of a served
    /// domain's zone (AXFR, IXFR); None otherwise (the usual answer path answers it).
    pub fn serve(&self, request: &[u8], src: SocketAddr) -> Option<Framed> {
        let (kind, d) = xfr::transfer_question(request, &self.domains)?;
        Some(self.answer(request, kind, d, src))
    }

    fn answer(&self, request: &[u8], kind: xfr::Kind, d: DomainId, src: SocketAddr) -> Framed {
        let one = |frame: Vec<u8>| -> Framed { Box::new(std::iter::once(frame)) };
        let ip = src.ip().to_canonical();
        if !self.config.allow.iter().any(|net| net.contains(&ip)) {
            self.metrics.transfers_refused.inc();
            debug!(%src, "zone transfer refused: not in allow_transfer");
            return one(xfr::refused(request));
        }
        let signer = match &self.key {
            None => None,
            Some(key) => match tsig::verify_request(key, request, tsig::unix_now()) {
                RequestAuth::Signed(signer) => Some(signer),
                RequestAuth::Unsigned => {
                    self.metrics.transfers_refused.inc();
                    debug!(%src, "zone transfer refused: not signed with the transfer key");
                    return one(xfr::refused(request));
                }
                RequestAuth::Rejected(response) => {
                    self.metrics.transfers_refused.inc();
                    debug!(%src, "zone transfer refused: TSIG does not verify");
                    return one(xfr::framed(&response));
                }
                RequestAuth::Malformed => return one(xfr::error(request, ResponseCode::FormErr)),
            },
        };
        let (version, since) = {
            let journals = self.journals();
            let Some(journal) = journals.get(d.index()) else {
                return one(xfr::error(request, ResponseCode::ServFail));
            };
            let since = match kind {
                xfr::Kind::Ixfr(serial) => Some(journal.since(serial)),
                xfr::Kind::Axfr => None,
            };
            (journal.current().clone(), since)
        };
        let template = self.soas[d.index()].clone();
        let soa = move |serial| xfr::with_serial(&template, serial);
        let head = soa(version.serial);
        // Every record is decoded when its message is made, a part or a delta at a time;
        // a body goes between two copies of the current SOA.
        let body: Option<Box<dyn Iterator<Item = Record> + Send>> = match since {
            Some(Since::Current) => {
                self.metrics.transfers_incremental.inc();
                None
            }
            Some(Since::Deltas(deltas)) => {
                self.metrics.transfers_incremental.inc();
                info!(%src, serial = version.serial, deltas = deltas.len(), "IXFR");
                Some(Box::new(deltas.into_iter().flat_map(move |delta| {
                    let mut records = vec![soa(delta.from)];
                    records.extend(delta.removed());
                    records.push(soa(delta.to));
                    records.extend(delta.added());
                    records
                })))
            }
            Some(Since::Unknown) | None => {
                self.metrics.transfers_full.inc();
                info!(%src, serial = version.serial, records = version.records, "full zone transfer");
                Some(Box::new(version.records()))
            }
        };
        // The client has the current version: its SOA alone (RFC 1995 §4).
        let records: Box<dyn Iterator<Item = Record> + Send> = match body {
            None => Box::new(std::iter::once(head)),
            Some(body) => Box::new(
                std::iter::once(head.clone())
                    .chain(body)
                    .chain(std::iter::once(head)),
            ),
        };
        Box::new(
            xfr::Messages::new(request, records, signer)
                .into_iter()
                .flatten(),
        )
    }
}
