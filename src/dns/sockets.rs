//! Sockets: one UDP socket and one TCP listener on each `--listen` address.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};

/// Bound sockets, ready to be handed to the server.
#[derive(Debug)]
pub struct Sockets {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
    /// The bound addresses (port 0 resolved), one per `--listen`.
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// The UDP receive buffer asked for. The default (208 KiB on Linux) holds a few hundred
/// queries: a burst beyond is dropped by the kernel (`UdpRcvbufErrors`) before we see it.
/// The kernel caps it at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

fn grow_receive_buffer(udp: &UdpSocket) {
    let socket = socket2::SockRef::from(udp);
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!(error = %e, "cannot grow the UDP receive buffer");
    }
    if let Ok(size) = socket.recv_buffer_size() {
        tracing::debug!(size, "UDP receive buffer");
    }
}

/// Ports tried for port 0. A port the system picks for UDP can be taken for TCP, by a
/// connection of ours in TIME_WAIT among others: with thousands of those (a test suite, a
/// benchmark), 10 tries all failed now and then.
const PORT_0_ATTEMPTS: u32 = 100;

/// Binds UDP and TCP on every address. With port 0 the system picks a port free for UDP,
/// and TCP takes the same one (another is picked while TCP already has it).
pub async fn bind(addrs: &[SocketAddr]) -> Result<Sockets, BindError> {
    let mut out = Sockets {
        udp: Vec::new(),
        tcp: Vec::new(),
        addrs: Vec::new(),
    };
    for &addr in addrs {
        let err = |source| BindError { addr, source };
        let mut attempts = 0;
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(addr).await.map_err(err)?;
            let bound = udp.local_addr().map_err(err)?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if addr.port() == 0 && attempts < PORT_0_ATTEMPTS => {
                    attempts += 1;
                    tracing::debug!(%bound, error = %e, "TCP port taken; picking another");
                }
                Err(e) => return Err(err(e)),
            }
        };
        grow_receive_buffer(&udp);
        out.addrs.push(udp.local_addr().map_err(err)?);
        out.udp.push(udp);
        out.tcp.push(tcp);
    }
    Ok(out)
}
