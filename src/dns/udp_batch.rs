//! Receiving UDP queries in batches: on Linux one `recvmmsg` call (through nix) waits for a
//! datagram and takes every one then waiting on the socket, up to [`BATCH`], where
//! `recv_from` takes one per system call. Under load the socket's queue is rarely empty, so
//! most calls return many. The socket is blocking: these calls are made by the socket's
//! own thread (`udp`).

use std::io;
use std::net::{SocketAddr, UdpSocket};

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
    /// The `i`th datagram of the last batch.
    pub fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        match (self.received.get(i), self.bufs.get(i)) {
            (Some(r), Some(buf)) => (buf.get(..r.len).unwrap_or_default(), r.src),
            _ => (&[], None),
        }
    }

    /// Waits for datagrams (as long as the socket's receive timeout) and takes those
    /// waiting; returns how many.
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
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
            MsgFlags::MSG_WAITFORONE,
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
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let Some(buf) = self.bufs.first_mut() else {
            return Ok(0);
        };
        let (len, src) = socket.recv_from(buf)?;
        self.received.clear();
        self.received.push(Received {
            len,
            src: Some(src),
        });
        Ok(1)
    }
}

/// Responses of a batch, sent together: on Linux one `sendmmsg` call for the batch, where
/// `send_to` makes one system call per response.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    dsts: Vec<SocketAddr>,
    len: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            dsts: Vec::with_capacity(BATCH),
            len: 0,
        }
    }
}

impl SendBatch {
    /// Whether no more responses can be queued before the batch is sent.
    pub fn is_full(&self) -> bool {
        self.len >= self.bufs.len()
    }

    /// Queues the response to `dst` that `write` writes into an empty buffer, if it
    /// returns true; nothing is queued when it returns false or the batch is full.
    pub fn queue(&mut self, dst: SocketAddr, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let Some(buf) = self.bufs.get_mut(self.len) else {
            return false;
        };
        buf.clear();
        if !write(buf) || buf.is_empty() {
            return false;
        }
        self.dsts.push(dst);
        self.len += 1;
        true
    }

    /// Sends what is queued, blocking while the socket's buffer is full; a response that
    /// cannot be sent is logged and dropped, as a single send's would be.
    pub fn send(&mut self, socket: &UdpSocket) {
        let mut from = 0;
        while from < self.len {
            match self.send_now(socket, from) {
                Ok(n) => from += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The first unsent response is the one that failed; the rest may go.
                    tracing::debug!(dst = %self.dsts[from], error = %e, "UDP send error");
                    from += 1;
                }
            }
        }
        self.len = 0;
        self.dsts.clear();
    }

    #[cfg(target_os = "linux")]
    fn send_now(&self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;

        use smallvec::SmallVec;

        // On the stack: a batch's headers are built per call (they hold raw pointers, so
        // they cannot be kept in the task's state), and a heap allocation per batch showed.
        let addrs: SmallVec<[socket2::SockAddr; BATCH]> = self.dsts[from..self.len]
            .iter()
            .map(|&a| socket2::SockAddr::from(a))
            .collect();
        let mut iovs: SmallVec<[libc::iovec; BATCH]> = self.bufs[from..self.len]
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr().cast_mut().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut headers: SmallVec<[libc::mmsghdr; BATCH]> = iovs
            .iter_mut()
            .zip(&addrs)
            .map(|(iov, addr)| {
                // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = addr.as_ptr().cast_mut().cast();
                h.msg_hdr.msg_namelen = addr.len();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let count = u32::try_from(headers.len()).unwrap_or(u32::MAX);
        // SAFETY: `headers` holds `count` initialised mmsghdr whose pointers (the
        // addresses, the iovecs, the buffers the iovecs point at) all outlive the call;
        // the kernel only reads them and writes the headers' msg_len fields.
        let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), count, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(sent).unwrap_or(0))
    }

    #[cfg(not(target_os = "linux"))]
    fn send_now(&self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        socket.send_to(&self.bufs[from], self.dsts[from])?;
        Ok(1)
    }
}
