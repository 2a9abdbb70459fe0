//! The in-memory view of the Consul catalog that DNS answers from: the leaf both sides
//! meet in. No I/O, no HTTP, no DNS messages: DNS-ready records (`records`), which
//! services exist (`directory`), addresses to names (`reverse`), how fresh it all is and
//! what a stored response rests on (`freshness`), and what the DNS side may ask of its
//! keeper (`source`).
//!
//! The Consul side (`consul::Syncer`) replaces the view's parts when Consul reports a
//! change; queries read them without locks (`ArcSwap`). Until the first sync the view is
//! not ready and Consul names are answered SERVFAIL, never NXDOMAIN.

pub mod catalog_size;
pub mod directory;
pub mod domain;
pub mod freshness;
pub mod records;
pub mod reverse;
pub mod source;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use catalog_size::CatalogSize;
pub use directory::{hierarchical_alias, Directory, KnownService};
pub use domain::DomainId;
pub use records::NodeTable;
pub use reverse::ReverseIndex;
pub use source::{Endpoint, RemoteLists, ServiceRef, Source, SourceError};

/// The catalog as last seen.
#[derive(Debug)]
pub struct View {
    directory: ArcSwapOption<Directory>,
    directory_version: AtomicU64,
    nodes: ArcSwapOption<NodeTable>,
    /// The SOA serial, worked out when a list changes (read by every negative answer).
    serial: AtomicU32,
    /// Set once zone transfers publish their serial: it is then the SOA's serial.
    transferred: AtomicBool,
    /// Held while a list is replaced and the serial worked out again, so that the last
    /// serial stored is the one of the last lists stored.
    replacing: Mutex<()>,
    datacenter: OnceLock<String>,
    ready: watch::Sender<bool>,
    /// `ready`'s value, read by every answer without the channel's lock.
    is_ready: AtomicBool,
    /// When the view was made: the first sync's log line says how long it took.
    created: std::time::Instant,
    /// The sizes in the log after the first sync's line.
    size: CatalogSize,
}

impl Default for View {
    fn default() -> Self {
        View {
            directory: ArcSwapOption::empty(),
            directory_version: AtomicU64::new(0),
            nodes: ArcSwapOption::empty(),
            serial: AtomicU32::new(0),
            transferred: AtomicBool::new(false),
            replacing: Mutex::new(()),
            datacenter: OnceLock::new(),
            ready: watch::channel(false).0,
            is_ready: AtomicBool::new(false),
            created: std::time::Instant::now(),
            size: CatalogSize::default(),
        }
    }
}

impl View {
    pub fn new() -> Arc<Self> {
        Arc::new(View::default())
    }

    /// The local datacenter (lower-case), once known.
    pub fn datacenter(&self) -> Option<&str> {
        self.datacenter.get().map(String::as_str)
    }

    /// Sets the local datacenter; it never changes afterwards.
    pub fn set_datacenter(&self, dc: &str) {
        let _ = self.datacenter.set(dc.to_ascii_lowercase());
        self.update_ready();
    }

    pub fn directory(&self) -> Option<Arc<Directory>> {
        self.directory.load_full()
    }

    /// The service list and its version (the number of times it was replaced), read in
    /// that order so the version is never newer than the list.
    pub fn directory_versioned(&self) -> (u64, Option<Arc<Directory>>) {
        let version = self.directory_version.load(Ordering::Acquire);
        (version, self.directory.load_full())
    }

    pub fn directory_version(&self) -> u64 {
        self.directory_version.load(Ordering::Acquire)
    }

    pub fn set_directory(&self, d: Directory) {
        let d = Arc::new(d);
        {
            let _replacing = self.replacing.lock().unwrap_or_else(|p| p.into_inner());
            self.directory.store(Some(d));
            self.update_serial();
        }
        self.directory_version.fetch_add(1, Ordering::Release);
        freshness::note_change();
        self.update_ready();
    }

    pub fn nodes(&self) -> Option<Arc<NodeTable>> {
        self.nodes.load_full()
    }

    pub fn set_nodes(&self, n: NodeTable) {
        let n = Arc::new(n);
        {
            let _replacing = self.replacing.lock().unwrap_or_else(|p| p.into_inner());
            self.nodes.store(Some(n));
            self.update_serial();
        }
        self.update_ready();
    }

    /// Ready once the datacenter, the service list and the node list are all known.
    pub fn is_ready(&self) -> bool {
        self.is_ready.load(Ordering::Acquire)
    }

    /// Waits until ready or until `timeout`; returns whether ready.
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The SOA serial: moves whenever the service list or the node list moves.
    pub fn serial(&self) -> u32 {
        self.serial.load(Ordering::Acquire)
    }

    /// Zone transfers will publish the serial: until their first version the SOA's
    /// serial is 0 (so it never goes backwards when their first version's comes).
    pub fn hold_serial(&self) {
        let _replacing = self.replacing.lock().unwrap_or_else(|p| p.into_inner());
        if !self.transferred.swap(true, Ordering::AcqRel) {
            self.serial.store(0, Ordering::Release);
        }
    }

    /// The serial of the transferable zone's new version: from now on the SOA's serial
    /// (a secondary compares the SOA it is answered with the one it transferred).
    pub fn publish_serial(&self, serial: u32) {
        self.transferred.store(true, Ordering::Release);
        self.serial.store(serial, Ordering::Release);
    }

    fn update_serial(&self) {
        if self.transferred.load(Ordering::Acquire) {
            return;
        }
        let d = self.directory.load().as_ref().map_or(0, |d| d.index);
        let n = self.nodes.load().as_ref().map_or(0, |n| n.index);
        // Consul indexes are u64; the serial is the low 32 bits of their sum, which is
        // monotonic in practice and wraps per RFC 1982 otherwise.
        let serial = (d.wrapping_add(n) & u64::from(u32::MAX)) as u32;
        self.serial.store(serial, Ordering::Release);
    }

    /// The number of services and of nodes known.
    pub fn size(&self) -> (usize, usize) {
        let services = self
            .directory
            .load()
            .as_ref()
            .map_or(0, |d| d.services.len());
        let nodes = self.nodes.load().as_ref().map_or(0, |n| n.by_name.len());
        (services, nodes)
    }

    /// Logs the catalog's size if it changed since the last line (at most one line per
    /// `SIZE_LINE_INTERVAL`; called on every list change, and by the syncer every few
    /// seconds for a change held back).
    pub fn log_size(&self) {
        let (services, nodes) = self.size();
        self.size.note(services, nodes);
    }

    fn update_ready(&self) {
        let ready = self.datacenter.get().is_some()
            && self.directory.load().is_some()
            && self.nodes.load().is_some();
        // Once, whichever list arrives last.
        if ready && !self.is_ready.swap(true, Ordering::AcqRel) {
            self.ready.send_replace(true);
            let (services, nodes) = self.size();
            self.size.synced(services, nodes);
            let directory = self.directory.load();
            tracing::info!(
                services,
                nodes,
                index = directory.as_ref().map_or(0, |d| d.index),
                took_ms = self.created.elapsed().as_millis() as u64,
                "synced with Consul: answering Consul names"
            );
        } else if ready {
            self.log_size();
        }
    }
}
