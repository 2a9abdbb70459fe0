//! Forwarding to the `recursors`, as Consul does: each upstream is tried in turn
//! (`recursor_strategy`: configuration order, or a random order per query), each for at
//! most `recursor_timeout`; an upstream that times out or answers anything but NOERROR or
//! NXDOMAIN is skipped; when every one fails the answer is SERVFAIL.
//!
//! Each upstream is one hickory forwarder (`ForwardZoneHandler`, hickory's resolver with
//! its TTL-honouring cache), so hickory's own server selection and retries do not get in the
//! way of Consul's order: a hickory resolver with several name servers spends its whole
//! timeout on the first one that does not answer, and does not move on after a REFUSED.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{LowerName, Name, RecordType, TSigResponseContext};
use hickory_server::resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, ZoneHandler, ZoneType,
};
use rand::seq::SliceRandom;
use tracing::debug;

use crate::config::RecursorStrategy;

/// Forwarding could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("recursor {addr}: {reason}")]
pub struct ForwardError {
    pub addr: SocketAddr,
    pub reason: String,
}

/// The root zone handler that forwards to the recursors.
pub struct Forwarder {
    origin: LowerName,
    upstreams: Vec<(SocketAddr, ForwardZoneHandler)>,
    strategy: RecursorStrategy,
}

impl Forwarder {
    /// One hickory forwarder per recursor, each with `timeout` and no retry of its own.
    pub fn new(
        recursors: &[SocketAddr],
        strategy: RecursorStrategy,
        timeout: Duration,
    ) -> Result<Forwarder, ForwardError> {
        let mut upstreams = Vec::with_capacity(recursors.len());
        for &addr in recursors {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let mut options = ResolverOpts::default();
            options.timeout = timeout;
            // No retry: the next recursor is the retry, as in Consul.
            options.attempts = 0;
            options.num_concurrent_reqs = 1;
            options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
            options.preserve_intermediates = true;
            let config = ForwardConfig {
                name_servers: vec![NameServerConfig::new(addr.ip(), true, vec![udp, tcp])],
                options: Some(options),
            };
            let handler = ForwardZoneHandler::builder_tokio(config)
                .build()
                .map_err(|reason| ForwardError { addr, reason })?;
            upstreams.push((addr, handler));
        }
        Ok(Forwarder {
            origin: LowerName::from(Name::root()),
            upstreams,
            strategy,
        })
    }

    fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.upstreams.len()).collect();
        if self.strategy == RecursorStrategy::Random {
            order.shuffle(&mut rand::rng());
        }
        order
    }
}

#[async_trait::async_trait]
impl ZoneHandler for Forwarder {
    fn zone_type(&self) -> ZoneType {
        ZoneType::External
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        let mut last = None;
        for i in self.order() {
            let (addr, upstream) = &self.upstreams[i];
            match upstream
                .lookup(name, rtype, request_info, lookup_options)
                .await
            {
                LookupControlFlow::Continue(Err(e))
                    if !(e.is_nx_domain() || e.is_no_records_found()) =>
                {
                    debug!(recursor = %addr, %name, %rtype, error = %e, "recursor failed; trying the next");
                    last = Some(e);
                }
                answer => return answer,
            }
        }
        debug!(%name, %rtype, "every recursor failed: SERVFAIL");
        LookupControlFlow::Continue(Err(
            last.unwrap_or(LookupError::ResponseCode(ResponseCode::ServFail))
        ))
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let info = match request.request_info() {
            Ok(info) => info,
            Err(e) => return (LookupControlFlow::Break(Err(e)), None),
        };
        let flow = self
            .lookup(
                info.query.name(),
                info.query.query_type(),
                Some(&info),
                lookup_options,
            )
            .await;
        (flow, None)
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Continue(Err(LookupError::from(io::Error::other(
            "NSEC records are not available from the recursors",
        ))))
    }
}
