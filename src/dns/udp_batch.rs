//! Receiving UDP queries in batches: on Linux one `recvmmsg` call (through nix) takes every
//! datagram waiting on the socket, up to [`BATCH`], where `recv_from` takes one per system
//! call. Under load the socket's queue is rarely empty, so most calls return a full batch.

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams taken per call.
pub const BATCH: usize = 32;
/// The largest query read. A DNS query is a header, one question and an OPT record;
/// anything longer (the datagram is cut, MSG_TRUNC) is not answered.
pub const MAX_QUERY: usize = 4096;

/// One received datagram: its length (0 when it was longer than [`MAX_QUERY`]) and sender.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub src: Option<SocketAddr>,
}

/// Buffers for a batch, reused from call to call.
pub struct BatchReceiver {
    bufs: Vec<Box<[u8]>>,
    received: Vec<Received>,
}

impl Default for BatchReceiver {
    fn default() -> Self {
        BatchReceiver {
            bufs: (0..BATCH)
                .map(|_| vec![0u8; MAX_QUERY].into_boxed_slice())
                .collect(),
            received: Vec::with_capacity(BATCH),
        }
    }
}

impl BatchReceiver {
    /// Waits for datagrams and takes those waiting; returns how many (at least one).
    pub async fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        loop {
            socket.readable().await?;
            match socket.try_io(Interest::READABLE, || self.recv_now(socket)) {
                Ok(0) => continue,
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The `i`th datagram of the last batch.
    pub fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        match (self.received.get(i), self.bufs.get(i)) {
            (Some(r), Some(buf)) => (buf.get(..r.len).unwrap_or_default(), r.src),
            _ => (&[], None),
        }
    }

    #[cfg(target_os = "linux")]
    fn recv_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage};

        // Made per call: it holds raw pointers, so it cannot live in an async task's state.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);

        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        self.received.clear();
        for msg in results {
            let src = msg.address.and_then(|a: SockaddrStorage| {
                if let Some(v4) = a.as_sockaddr_in() {
                    Some(SocketAddr::from(*v4))
                } else {
                    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
                }
                .filter(|_| a.len() > 0)
            });
            let len = if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                0
            } else {
                msg.bytes
            };
            self.received.push(Received { len, src });
        }
        Ok(self.received.len())
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let Some(buf) = self.bufs.first_mut() else {
            return Ok(0);
        };
        let (len, src) = socket.try_recv_from(buf)?;
        self.received.clear();
        self.received.push(Received {
            len,
            src: Some(src),
        });
        Ok(1)
    }
}
