//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and their regression tests.
//! Not an API: each function runs one production path on hostile input and hands back what
//! it produced, for the caller to check.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use tokio::runtime::Runtime;

use crate::app;
use crate::config::Config;
use crate::consul::queries::query_ttl;
use crate::dns::answer::{find_service, instance_records, node_records, service_records, Answer};
use crate::dns::static_zones::{self, StaticZone, ZoneError};
use crate::dns::udp::DatagramPath;
use crate::model::{Node, PreparedQueryResult, ServiceDirectory, ServiceEntry};
use crate::view::records::{generated_name, NodeTable, RecordSettings, ServiceRecords, Settings};
use crate::view::{Directory, DomainId, ReverseIndex};
use consul_emulator::{Emulator, EmulatorConfig};

/// How long one request may wait for its answer (a cold service loaded from the emulator
/// takes milliseconds); past it the request counts as unanswered, as a dropped datagram.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The server of the `request` target: the emulator with the demo catalog, the server
/// started on it and synced, and a socket pair standing in for a client.
struct Harness {
    runtime: Runtime,
    /// The server's side: the socket loop's path per datagram (with its response cache),
    /// sending from a socket of its own.
    path: tokio::sync::Mutex<DatagramPath>,
    /// The client's side, non-blocking: responses are read from it.
    client: StdUdpSocket,
    client_addr: SocketAddr,
    /// The server's listening address (UDP and TCP).
    server: SocketAddr,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| match start_harness() {
        Ok(h) => h,
        Err(e) => panic!("fuzz harness cannot start: {e}"),
    })
}

fn start_harness() -> Result<Harness, String> {
    // One thread: the background tasks (sync, emulator) run while a request is handled.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let path = runtime.block_on(async {
        let emulator = Emulator::start(local, EmulatorConfig::default())
            .await
            .map_err(|e| format!("emulator: {e}"))?;
        emulator.seed_demo();
        let mut config = Config::for_tests(&emulator.url());
        config.zones = Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/zones")));
        let running = app::start(&config)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let view = Arc::clone(running.syncer().view());
        if !view.wait_ready(Duration::from_secs(30)).await {
            return Err("the server did not sync with the emulator".to_string());
        }
        let handler = Arc::clone(running.handler());
        let metrics = Arc::clone(running.syncer().metrics());
        let socket = StdUdpSocket::bind(local).map_err(|e| format!("socket: {e}"))?;
        let server = running.dns_addrs[0];
        // Both live as long as the process.
        Box::leak(Box::new(emulator));
        Box::leak(Box::new(running));
        Ok::<_, String>((
            DatagramPath::new(Arc::new(socket), handler, metrics),
            server,
        ))
    })?;
    let (path, server) = path;
    let client = StdUdpSocket::bind(local).map_err(|e| e.to_string())?;
    client.set_nonblocking(true).map_err(|e| e.to_string())?;
    let client_addr = client.local_addr().map_err(|e| e.to_string())?;
    Ok(Harness {
        runtime,
        path: tokio::sync::Mutex::new(path),
        client,
        client_addr,
        server,
    })
}

/// Every datagram the server sends back for `bytes` arriving on its UDP socket, through
/// the code the socket loop runs per datagram (`udp::DatagramPath`: rate limiting off, the
/// response cache, parse, the handler). Empty when nothing is answered (a response, a runt,
/// or no answer within `ANSWER_WAIT`).
pub fn request_datagrams(bytes: &[u8]) -> Vec<Vec<u8>> {
    let h = harness();
    h.runtime.block_on(async {
        let mut path = h.path.lock().await;
        if let Some(waiting) = path.answer(bytes, h.client_addr) {
            let _ = tokio::time::timeout(ANSWER_WAIT, waiting).await;
        }
    });
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_535];
    // Loopback delivers on send: whatever was sent is already queued.
    while let Ok(n) = h.client.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// Everything the server's TCP listener writes back on a connection that sends `stream`
/// and then closes its sending side (the server answers what it read, then closes). None
/// when the connection cannot be made or the server neither answers nor closes within
/// `ANSWER_WAIT`.
pub fn request_stream(stream: &[u8]) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = harness();
    h.runtime.block_on(async {
        let mut conn = tokio::net::TcpStream::connect(h.server).await.ok()?;
        // The server may close while input is still being written (a zero length): what
        // it wrote before is still read.
        let _ = conn.write_all(stream).await;
        let _ = conn.shutdown().await;
        let mut out = Vec::new();
        match tokio::time::timeout(ANSWER_WAIT, conn.read_to_end(&mut out)).await {
            Ok(_) => Some(out),
            Err(_) => None,
        }
    })
}

/// The response to `bytes` (see [`request_datagrams`]); the first if there were several.
pub fn request(bytes: &[u8]) -> Option<Vec<u8>> {
    request_datagrams(bytes).into_iter().next()
}

/// Which Consul endpoint a body answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `/v1/health/service/<name>` (also `connect`, `ingress`).
    Health,
    /// `/v1/catalog/services`.
    Services,
    /// `/v1/catalog/nodes`.
    Nodes,
    /// `/v1/query/<name>/execute`.
    PreparedQuery,
}

/// Preparation settings: the defaults, or (`variant` odd) an alternative domain, WAN
/// translation, `only_passing` and `internal_cidrs`.
fn settings(variant: u8) -> Settings {
    let name = |s: &str| Name::from_ascii(s).unwrap_or_else(|_| Name::root());
    let mut s = Settings {
        domains: vec![name("consul.")],
        datacenter: "dc1".to_string(),
        only_passing: false,
        node_ttl: 0,
        node_meta_txt: true,
        internal_cidrs: Vec::new(),
        wan: false,
    };
    if variant & 1 == 1 {
        s.domains.push(name("alt.example."));
        s.wan = true;
        s.only_passing = true;
        s.internal_cidrs = ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
    }
    s
}

const QTYPES: [RecordType; 6] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::ANY,
    RecordType::SRV,
    RecordType::TXT,
    RecordType::MX,
];

/// At most this many services, nodes or tags of one body are asked for.
const ASKED: usize = 16;

/// `body` as Consul's answer to `endpoint`, through the serde models, the preparation and
/// the answer assembly for a few question types. The answers built (none when the body
/// does not decode, as the client then keeps its previous data).
pub fn consul_body(endpoint: Body, body: &[u8], variant: u8) -> Vec<Answer> {
    let settings = settings(variant);
    let qname = Name::from_ascii("web.service.consul.").unwrap_or_else(|_| Name::root());
    let mut out = Vec::new();
    match endpoint {
        Body::Health => {
            let Ok(entries) = serde_json::from_slice::<Vec<ServiceEntry>>(body) else {
                return out;
            };
            let p = ServiceRecords::build(
                &entries,
                5,
                1,
                &std::sync::Arc::new(RecordSettings::new(settings.clone())),
            );
            let reverse = ReverseIndex::default();
            let web: std::sync::Arc<str> = "web".into();
            reverse.replace(&web, &[], &p.addresses);
            reverse.replace(&web, &p.addresses, &p.addresses);
            reverse.replace(&web, &p.addresses, &[]);
            let mut tags: Vec<Option<String>> = vec![None];
            tags.extend(p.all_tags().iter().take(ASKED).cloned().map(Some));
            if let [Some(a), Some(b), ..] = &tags[1..] {
                tags.push(Some(format!("{a}.{b}")));
            }
            for tag in &tags {
                for qtype in QTYPES {
                    for d in DomainId::all(settings.domains.len()) {
                        let (known, tag) = (p.all_tags(), tag.as_deref());
                        out.push(service_records(&qname, qtype, d, &p, known, tag, 3));
                    }
                }
            }
        }
        Body::Services => {
            let Ok(services) = serde_json::from_slice::<ServiceDirectory>(body) else {
                return out;
            };
            let dir = Directory::build(services, 1);
            for (key, known) in dir.services.iter().take(ASKED) {
                let _ = find_service(&dir, key, None);
                for tag in known.tags.iter().take(ASKED) {
                    let _ = find_service(&dir, key, Some(tag));
                }
            }
            for alias in dir.aliases.keys().take(ASKED) {
                if let Some((tags, service)) = alias.rsplit_once('.') {
                    let _ = find_service(&dir, service, Some(tags));
                }
            }
        }
        Body::Nodes => {
            let Ok(nodes) = serde_json::from_slice::<Vec<Node>>(body) else {
                return out;
            };
            let table = NodeTable::build(&nodes, 1, settings.wan);
            for node in table.by_name.values().take(ASKED) {
                for qtype in QTYPES {
                    out.push(node_records(&qname, qtype, node, 0, true));
                }
            }
            for name in table.by_addr.values().take(ASKED) {
                let _ = generated_name(&name.to_ascii_lowercase(), "node", "dc1", &qname);
            }
        }
        Body::PreparedQuery => {
            let Ok(result) = serde_json::from_slice::<PreparedQueryResult>(body) else {
                return out;
            };
            let ttl = query_ttl(&result.dns.ttl).unwrap_or(0);
            let settings = std::sync::Arc::new(RecordSettings::new(Settings {
                only_passing: false,
                ..settings
            }));
            let p = ServiceRecords::build(&result.nodes, ttl, 1, &settings);
            let order: Vec<usize> = (0..p.instances.len()).collect();
            for qtype in QTYPES {
                for d in DomainId::all(settings.domains.len()) {
                    out.push(instance_records(&qname, qtype, d, &p, &order, 0));
                }
            }
        }
    }
    out
}

fn plain_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("no tokio runtime: {e}"),
        }
    })
}

/// `text` as the zone file `<stem>.zone` loaded at start (the file name gives the origin),
/// in a directory that does not exist. `consul.` is the reserved Consul domain.
pub fn zone_file(stem: &str, text: &str) -> Result<StaticZone, ZoneError> {
    // A file name has no `/`; one here would make the path leave the directory.
    let file = format!("{}.zone", stem.replace('/', "_"));
    let path = Path::new("/nonexistent/consul-dns-fuzz").join(file);
    let origin =
        static_zones::origin_from_file_name(stem).map_err(|reason| ZoneError::Invalid {
            path: path.clone(),
            reason,
        })?;
    let reserved = [Name::from_ascii("consul.").unwrap_or_else(|_| Name::root())];
    plain_runtime().block_on(static_zones::zone_from_text(&path, origin, text, &reserved))
}
