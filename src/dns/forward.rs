//! The `recursors`, used two ways.
//!
//! Forwarding, as Consul does: a query for a name outside the zones we serve is sent on as
//! the client asked it (its question, RD and CD, its EDNS options but for its cookie), over
//! the client's transport, to each upstream in turn (`recursor_strategy`: configuration
//! order, or a random order per query), each for at most `recursor_timeout`. The first
//! reply that is not an error (NOERROR or NXDOMAIN, or cut: TC) is passed back as the
//! upstream gave it: every section, owner names, TTLs, TC. An upstream that times out or
//! answers anything else is skipped; when every one fails the caller answers SERVFAIL.
//! Nothing is cached here: the upstream resolver caches, and a cache would count TTLs down.
//!
//! Hostnames: a service or node whose address is a hostname outside the Consul domain is
//! answered with a CNAME to it, followed by its addresses as the recursors resolve them
//! (Consul's `resolveCNAME`), through hickory's resolver and its TTL-honouring cache, so
//! that answering such a service does not cost a recursor query each time.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::net::xfer::{DnsHandle, Protocol};
use hickory_server::proto::op::{
    DnsRequest, DnsRequestOptions, Edns, Message, MessageType, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::opt::EdnsCode;
use hickory_server::proto::rr::{Name, Record, RecordType};
use hickory_server::resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use hickory_server::resolver::{Resolver, TokioResolver};
use hickory_server::server::Request;
use rand::seq::SliceRandom;
use tracing::debug;

use crate::config::RecursorStrategy;

/// The recursors could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("recursors {addrs:?}: {reason}")]
pub struct ForwardError {
    pub addrs: Vec<SocketAddr>,
    pub reason: String,
}

/// The upstream resolvers (`recursors`).
pub struct Recursors {
    upstreams: Vec<SocketAddr>,
    strategy: RecursorStrategy,
    timeout: Duration,
    /// For hostname addresses: the recursors in configuration order, with a cache.
    resolver: TokioResolver,
    /// Owns the tasks of the exchanges with the recursors (a provider dropped aborts them).
    provider: TokioRuntimeProvider,
}

impl Recursors {
    pub fn new(
        upstreams: &[SocketAddr],
        strategy: RecursorStrategy,
        timeout: Duration,
    ) -> Result<Recursors, ForwardError> {
        let name_servers = upstreams
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        options.attempts = 1;
        options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        options.preserve_intermediates = true;
        options.use_hosts_file = ResolveHosts::Never;
        let resolver = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()
        .map_err(|e| ForwardError {
            addrs: upstreams.to_vec(),
            reason: e.to_string(),
        })?;
        Ok(Recursors {
            upstreams: upstreams.to_vec(),
            strategy,
            timeout,
            resolver,
            provider: TokioRuntimeProvider::default(),
        })
    }

    fn order(&self) -> Vec<SocketAddr> {
        let mut order = self.upstreams.clone();
        if self.strategy == RecursorStrategy::Random {
            order.shuffle(&mut rand::rng());
        }
        order
    }

    /// The first usable reply of the recursors to `request`, forwarded as the client asked
    /// it; None when every recursor failed. `max_udp_payload`: the most a UDP reply to the
    /// client may carry, so that is what is asked for.
    pub async fn forward(&self, request: &Request, max_udp_payload: u16) -> Option<Message> {
        let query = forwarded_query(request, max_udp_payload)?;
        for upstream in self.order() {
            match self.exchange(upstream, &query, request.protocol()).await {
                Ok(reply) if usable(&reply) => return Some(reply),
                Ok(reply) => {
                    debug!(recursor = %upstream, rcode = %reply.metadata.response_code, "recursor failed; trying the next");
                }
                Err(e) => {
                    debug!(recursor = %upstream, error = %e, "recursor failed; trying the next");
                }
            }
        }
        debug!(name = ?request.queries.queries().first().map(|q| q.name()), "every recursor failed: SERVFAIL");
        None
    }

    /// One exchange with `upstream` over `protocol` (TCP for TCP clients, else UDP).
    async fn exchange(
        &self,
        upstream: SocketAddr,
        query: &Message,
        protocol: Protocol,
    ) -> Result<Message, String> {
        let mut query = query.clone();
        query.metadata.id = rand::random();
        let request = DnsRequest::new(query, DnsRequestOptions::default());
        let provider = self.provider.clone();
        let reply = if protocol == Protocol::Tcp {
            let exchange =
                TcpClientStream::exchange(upstream, None, self.timeout, Some(1), provider)
                    .await
                    .map_err(|e| e.to_string())?;
            exchange.send(request).next().await
        } else {
            let exchange = UdpClientStream::builder(upstream, provider)
                .with_timeout(Some(self.timeout))
                .with_max_retries(1)
                .exchange();
            exchange.send(request).next().await
        };
        match reply {
            Some(Ok(reply)) => Ok(reply.into_message()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("no reply".to_string()),
        }
    }

    /// `host`'s records of `qtype` (A or AAAA) as the recursors resolve it, the CNAMEs
    /// leading to them first; empty when it cannot be resolved.
    pub async fn resolve(&self, host: &Name, qtype: RecordType) -> Vec<Record> {
        match self.resolver.lookup(host.clone(), qtype).await {
            Ok(lookup) => lookup.answers().to_vec(),
            Err(e) => {
                debug!(%host, %qtype, error = %e, "hostname not resolved by the recursors");
                Vec::new()
            }
        }
    }
}

/// A reply worth passing on: an answer (NOERROR, NXDOMAIN) or a cut one (TC: the client
/// retries over TCP). SERVFAIL, REFUSED and the rest mean "try the next".
fn usable(reply: &Message) -> bool {
    reply.metadata.message_type == MessageType::Response
        && (matches!(
            reply.metadata.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ) || reply.metadata.truncation)
}

/// The query sent upstream: the client's question (as spelled), RD and CD, and its EDNS
/// with the payload we can take and without its cookie (a cookie is between two parties).
fn forwarded_query(request: &Request, max_udp_payload: u16) -> Option<Message> {
    let question = request.queries.queries().first()?.original().clone();
    let mut query = Message::new(0, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = request.metadata.recursion_desired;
    query.metadata.checking_disabled = request.metadata.checking_disabled;
    query.add_query(question);
    if let Some(client) = &request.edns {
        let mut edns: Edns = client.clone();
        if request.protocol() == Protocol::Udp {
            edns.set_max_payload(client.max_payload().clamp(512, max_udp_payload.max(512)));
        }
        edns.options_mut().remove(EdnsCode::Cookie);
        query.set_edns(edns);
    }
    Some(query)
}
