//! NOTIFY (RFC 1996) to one secondary: each new serial is announced for every zone, at
//! most once per interval (changes in between are coalesced into the latest serial), and
//! retried with backoff until the secondary answers; a newer serial replaces the one being
//! retried. It runs on its own task: nothing on the answer path waits for it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::xfr::with_serial;
use crate::dns::tsig::{self, RequestMac, TsigKey};
use crate::metrics::Metrics;

/// The first wait for an answer before sending again; doubled on each retry up to
/// [`MAX_BACKOFF`].
const FIRST_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Announces every serial `serials` takes (0: none yet) for each of `zones` (its SOA with
/// serial 0, sent with the serial: a secondary that has it already need not ask) to
/// `target`.
pub async fn notifier(
    target: SocketAddr,
    zones: Vec<Record>,
    key: Option<TsigKey>,
    mut serials: watch::Receiver<u32>,
    metrics: Arc<Metrics>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%target, error = %e, "cannot open a socket to NOTIFY: not notifying");
            return;
        }
    };
    // A newer serial arrived while announcing one (`changed` has marked it seen).
    let mut pending = false;
    loop {
        if !pending {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = serials.changed() => if changed.is_err() { return },
            }
        }
        pending = false;
        let serial = *serials.borrow_and_update();
        if serial == 0 {
            continue;
        }
        for zone in &zones {
            let soa = with_serial(zone, serial);
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = serials.changed() => {
                    pending = changed.is_ok();
                    break;
                }
                () = announce(&socket, target, &soa, key.as_ref(), &metrics) => {}
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Sends the NOTIFY of the zone of `soa` until `target` answers it.
/// Signed with `key` when given (and its answer must verify).
async fn announce(
    socket: &UdpSocket,
    target: SocketAddr,
    soa: &Record,
    key: Option<&TsigKey>,
    metrics: &Metrics,
) {
    let zone = &soa.name;
    let serial = match &soa.data {
        RData::SOA(s) => s.serial,
        _ => 0,
    };
    let mut wait = FIRST_TIMEOUT;
    let mut buf = vec![0u8; 4096];
    loop {
        let id: u16 = rand::random();
        let mut message = Message::new(id, MessageType::Query, OpCode::Notify);
        message.metadata.authoritative = true;
        message.add_query(Query::query(zone.clone(), RecordType::SOA));
        // RFC 1996 §3.7: the new SOA may go in Answer.
        message.add_answer(soa.clone());
        let Ok(bytes) = message.to_vec() else {
            return;
        };
        let (bytes, mac) = match key {
            Some(key) => match tsig::sign_request(key, &bytes, tsig::unix_now()) {
                Ok((signed, mac)) => (signed, Some(mac)),
                Err(e) => {
                    warn!(%target, error = %e, "NOTIFY not signed: not sent");
                    return;
                }
            },
            None => (bytes, None),
        };
        let reply = Expected {
            target,
            id,
            key: key.zip(mac.as_ref()),
        };
        metrics.notify_sent.inc();
        if let Err(e) = socket.send_to(&bytes, target).await {
            debug!(%target, error = %e, "NOTIFY not sent");
        } else if acknowledged(socket, &reply, &mut buf, wait).await {
            metrics.notify_acknowledged.inc();
            debug!(%target, %zone, serial, "NOTIFY acknowledged");
            return;
        }
        metrics.notify_failed.inc();
        debug!(%target, %zone, serial, waited = ?wait, "NOTIFY not answered: sending again");
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// The answer a NOTIFY waits for.
struct Expected<'a> {
    target: SocketAddr,
    id: u16,
    /// The key it was signed with and its MAC: the answer must be signed in turn.
    key: Option<(&'a TsigKey, &'a RequestMac)>,
}

/// Whether the NOTIFY is answered within `wait` (other datagrams are ignored).
async fn acknowledged(
    socket: &UdpSocket,
    reply: &Expected<'_>,
    buf: &mut [u8],
    wait: Duration,
) -> bool {
    let (target, id) = (reply.target, reply.id);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Ok(Ok((len, from))) = tokio::time::timeout_at(deadline, socket.recv_from(buf)).await
        else {
            return false;
        };
        if from != target {
            continue;
        }
        let Ok(answer) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        if answer.metadata.id != id
            || answer.metadata.message_type != MessageType::Response
            || answer.metadata.op_code != OpCode::Notify
        {
            continue;
        }
        let Some((key, mac)) = reply.key else {
            return true;
        };
        match tsig::verify_response(key, mac, &buf[..len], tsig::unix_now()) {
            Ok(()) => return true,
            Err(e) => debug!(%target, error = %e, "NOTIFY answer's TSIG does not verify"),
        }
    }
}
