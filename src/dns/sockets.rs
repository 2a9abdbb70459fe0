//! Sockets: on each `--listen` address, `workers` UDP sockets (bound with `SO_REUSEPORT`
//! when more than one, each served by a thread of its own; the kernel hands each datagram
//! to one of them at random, `spread_evenly`) and one TCP listener (backlog 4096); on each
//! `--listen-tls` address, one TCP listener for DNS over TLS.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};

/// Bound sockets, ready to be handed to the server.
#[derive(Debug)]
pub struct Sockets {
    /// Every address's UDP sockets, `workers` per address.
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
    /// The bound addresses (port 0 resolved), one per `--listen`.
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} ({flag}): {source}{}",
    hint(source, addr, flag)
)]
pub struct BindError {
    pub addr: SocketAddr,
    /// The option that named the address (`--listen`, `--http-addr`).
    pub flag: &'static str,
    #[source]
    pub source: io::Error,
}

/// What to do about the usual reasons a bind fails.
fn hint(source: &io::Error, addr: &SocketAddr, flag: &str) -> String {
    match source.kind() {
        io::ErrorKind::AddrInUse if addr.port() == 8600 => format!(
            "; port 8600 is the local Consul agent's DNS port: disable the agent's DNS \
             (`ports {{ dns = -1 }}` in its configuration) so consul-dns answers there \
             instead, or give {flag} another port"
        ),
        io::ErrorKind::AddrInUse => {
            format!("; another program listens there: stop it, or give {flag} another port")
        }
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "; ports below 1024 need the CAP_NET_BIND_SERVICE capability: \
             `sudo setcap cap_net_bind_service=+ep $(command -v consul-dns)`, or \
             `AmbientCapabilities=CAP_NET_BIND_SERVICE` in the systemd unit"
                .to_string()
        }
        _ => String::new(),
    }
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

/// Binds UDP (`workers` sockets) and TCP on every address. With port 0 the system picks
/// a port free for UDP, and TCP takes the same one (another is picked while TCP already
/// has it, or when another socket takes the UDP port between the probe and the group).
pub async fn bind(addrs: &[SocketAddr], workers: usize) -> Result<Sockets, BindError> {
    let mut out = Sockets {
        udp: Vec::new(),
        tcp: Vec::new(),
        addrs: Vec::new(),
    };
    let shared = workers > 1;
    for &addr in addrs {
        let err = |source| BindError {
            addr,
            flag: "--listen",
            source,
        };
        let mut attempts = 0;
        let (udp, tcp) = loop {
            let udp = match first_udp_socket(addr, shared) {
                Ok(udp) => udp,
                // Another socket took the port between the probe and the group's bind.
                Err(e)
                    if addr.port() == 0
                        && e.kind() == io::ErrorKind::AddrInUse
                        && attempts < PORT_0_ATTEMPTS =>
                {
                    attempts += 1;
                    tracing::debug!(error = %e, "UDP port taken after the probe; picking another");
                    continue;
                }
                Err(e) => return Err(err(e)),
            };
            let bound = udp.local_addr().map_err(err)?;
            match tcp_listener(bound) {
                Ok(tcp) => break (udp, tcp),
                Err(e) if addr.port() == 0 && attempts < PORT_0_ATTEMPTS => {
                    attempts += 1;
                    tracing::debug!(%bound, error = %e, "TCP port taken; picking another");
                }
                Err(e) => return Err(err(e)),
            }
        };
        let bound = udp.local_addr().map_err(err)?;
        let first = out.udp.len();
        out.udp.push(udp);
        for _ in 1..workers {
            out.udp.push(udp_socket(bound, shared).map_err(err)?);
        }
        if shared {
            spread_evenly(&out.udp[first], workers);
        }
        out.addrs.push(bound);
        out.tcp.push(tcp);
    }
    Ok(out)
}

/// A TCP listener on each DNS-over-TLS address, with the address it got (port 0 resolved).
pub fn bind_tls(addrs: &[SocketAddr]) -> Result<Vec<(TcpListener, SocketAddr)>, BindError> {
    addrs
        .iter()
        .map(|&addr| {
            let err = |source| BindError {
                addr,
                flag: "--listen-tls",
                source,
            };
            let listener = tcp_listener(addr).map_err(err)?;
            let bound = listener.local_addr().map_err(err)?;
            Ok((listener, bound))
        })
        .collect()
}

/// Makes the kernel hand each datagram to a random socket of `first`'s `SO_REUSEPORT`
/// group of `n`, rather than by a hash of its source address and port: a few busy clients
/// (a resolver forwarding from one port, a benchmark's eight sockets) would otherwise load
/// the workers as unevenly as their flows hash. A UDP query keeps no state between
/// datagrams, so nothing ties a client to a worker. Where this cannot be set, the
/// kernel's hash stays.
fn spread_evenly(first: &UdpSocket, n: usize) {
    if let Err(e) = attach_random_steering(first, n) {
        tracing::debug!(error = %e, "UDP workers: kept the kernel's flow hash");
    }
}

/// `SO_ATTACH_REUSEPORT_CBPF` with the classic BPF program `A = random; A %= n; return A`
/// (Linux on the architectures whose socket options are asm-generic's).
fn attach_random_steering(socket: &UdpSocket, n: usize) -> io::Result<()> {
    #[cfg(all(
        target_os = "linux",
        any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "arm",
            target_arch = "x86"
        )
    ))]
    {
        use std::os::fd::AsRawFd;
        const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
        let n = u32::try_from(n).map_err(|_| io::Error::other("too many workers"))?;
        let op = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let program = [
            op(
                libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
                (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
            ),
            op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, n),
            op(libc::BPF_RET | libc::BPF_A, 0),
        ];
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: `fprog` points at `program`, both alive for the call; the kernel copies
        // the program and reads `size_of::<sock_fprog>()` bytes of `fprog`.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_CBPF,
                std::ptr::from_ref(&fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(all(
        target_os = "linux",
        any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "arm",
            target_arch = "x86"
        )
    )))]
    {
        let _ = (socket, n);
        Err(io::Error::other("not supported on this platform"))
    }
}

/// The listen backlog asked for (the kernel caps it at `net.core.somaxconn`, 4096 by
/// default): a burst of a thousand connects waits there rather than having its SYNs
/// dropped and retransmitted a second later. tokio's `bind` asks for 1024.
const TCP_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with a [`TCP_BACKLOG`] backlog.
fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server rebinds despite TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(TCP_BACKLOG)
}

/// The first UDP socket of an address. `SO_REUSEPORT` lets a socket share its port with
/// any other of the same user that has it set, and a bind to port 0 picks such ports as
/// well: another consul-dns (or a test's server) would silently take part of this one's
/// queries. A plain socket bound first finds a port nobody holds, or says the given one
/// is taken; the group takes the port straight after.
fn first_udp_socket(addr: SocketAddr, shared: bool) -> io::Result<UdpSocket> {
    if shared {
        let probe = std::net::UdpSocket::bind(addr)?;
        let free = probe.local_addr()?;
        drop(probe);
        udp_socket(free, true)
    } else {
        udp_socket(addr, false)
    }
}

/// A UDP socket bound to `addr`, in a `SO_REUSEPORT` group when `shared`, with a grown
/// receive buffer.
fn udp_socket(addr: SocketAddr, shared: bool) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let udp = UdpSocket::from_std(socket.into())?;
    grow_receive_buffer(&udp);
    Ok(udp)
}
