//! The UDP side: one socket per worker and family, all on the listen
//! port (`SO_REUSEPORT`); many datagrams per system call (`recvmmsg`,
//! `sendmmsg`); and the UDP offloads (`udp(7)`):
//!
//! - **GSO** (`UDP_SEGMENT`, Linux 4.18): one message of up to 64 KB that
//!   the kernel cuts into datagrams of a given size, as late as it can
//!   (in the device, or just before it).
//! - **GRO** (`UDP_GRO`, Linux 5.0): datagrams of one flow that arrive
//!   together are handed over as one message, with their size in a
//!   control message.
//!
//! Each can be missing: a kernel too old for the socket option, or a
//! route whose device cannot checksum for us (the kernel then refuses a
//! GSO send with `EIO`). Then the socket goes on without it.

#![forbid(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self as sock, sockopt};
use step02_plain_tunnel::run::enlarge_receive_buffer;
use step07_wireguard::uapi::Sockets;

use crate::counters::Counters;
use crate::sys::{self, Incoming, Outgoing};

/// Most datagrams one GSO message carries (the kernel's
/// `UDP_MAX_SEGMENTS` was 64 until Linux 6.9).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes one GSO message carries: the largest UDP payload of an IPv4
/// packet.
pub const GSO_MAX_BYTES: usize = 65507;
/// The socket send buffer asked for: a batch of 64 KB messages must fit.
const SEND_BUFFER: usize = 4 << 20;
/// How long a send waits for room in a full socket buffer.
const SEND_WAIT: Duration = Duration::from_millis(100);

// ANCHOR: features
/// Which batching and offloads the UDP side uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `recvmmsg`/`sendmmsg` (else `recvmsg`/`sendmsg`, one message per
    /// call).
    pub mmsg: bool,
    /// UDP GSO on sends.
    pub gso: bool,
    /// UDP GRO on receives.
    pub gro: bool,
}
// ANCHOR_END: features

impl Features {
    pub const ALL: Features = Features {
        mmsg: true,
        gso: true,
        gro: true,
    };
}

/// Whether the kernel refused GSO itself (and the same datagrams, sent
/// one by one, would go): `EIO` when the route's device cannot checksum
/// for us, `EINVAL` when the socket or the message cannot be segmented
/// (a socket without UDP checksums, too many segments).
pub fn gso_refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL))
}

// ANCHOR: sockets
/// The UDP sockets of every worker: one per worker and family, all bound
/// to the listen port with `SO_REUSEPORT`. The kernel picks the socket a
/// datagram goes to by a hash of its addresses and ports, so everything
/// one peer sends arrives at one worker, in order.
pub struct Net {
    workers: usize,
    features: Features,
    v4: Vec<Arc<UdpSocket>>,
    v6: Vec<Arc<UdpSocket>>,
    port: u16,
    fwmark: u32,
    /// Moves each time the sockets are replaced.
    pub generation: u64,
}
// ANCHOR_END: sockets

impl Net {
    pub fn new(workers: usize, features: Features) -> Self {
        Self {
            workers: workers.max(1),
            features,
            v4: Vec::new(),
            v6: Vec::new(),
            port: 0,
            fwmark: 0,
            generation: 0,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Worker `i`'s sockets.
    pub fn sockets(&self, i: usize) -> (Option<Arc<UdpSocket>>, Option<Arc<UdpSocket>>) {
        let pick = |v: &Vec<Arc<UdpSocket>>| (!v.is_empty()).then(|| Arc::clone(&v[i % v.len()]));
        (pick(&self.v4), pick(&self.v6))
    }

    fn bind_one(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let family = if addr.is_ipv4() {
            sock::AddressFamily::Inet
        } else {
            sock::AddressFamily::Inet6
        };
        let fd = sock::socket(
            family,
            sock::SockType::Datagram,
            sock::SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        if self.workers > 1 {
            // Every socket of the group must be created by the same user
            // (the kernel checks), so no other user can join it.
            sock::setsockopt(&fd, sockopt::ReusePort, &true)?;
        }
        match addr {
            SocketAddr::V4(a) => sock::bind(fd.as_raw_fd(), &sock::SockaddrIn::from(a))?,
            SocketAddr::V6(a) => {
                sock::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
                sock::bind(fd.as_raw_fd(), &sock::SockaddrIn6::from(a))?
            }
        }
        let socket = UdpSocket::from(fd);
        socket.set_nonblocking(true)?;
        if sock::setsockopt(&socket, sockopt::SndBufForce, &SEND_BUFFER).is_err() {
            let _ = sock::setsockopt(&socket, sockopt::SndBuf, &SEND_BUFFER);
        }
        let gro = self.features.gro
            && match sock::setsockopt(&socket, sockopt::UdpGroSegment, &true) {
                Ok(()) => true,
                Err(e) => {
                    // Linux before 5.0: datagrams come one by one.
                    log::warn!("UDP GRO is not available ({e}): receiving one datagram per message");
                    false
                }
            };
        // ANCHOR: receive_buffer
        // With UDP GRO the kernel queues up to 64 datagrams as one, and a
        // worker takes 128 of those per call: the kernel's default receive
        // buffer (208 KiB) rarely fills, and a larger one would only hold a
        // longer queue for every packet, a ping too, to wait in under load.
        // Received one by one, datagrams need steps 02 to 07's 4 MiB.
        if !gro {
            enlarge_receive_buffer(&socket);
        }
        // ANCHOR_END: receive_buffer
        if self.fwmark != 0 {
            sock::setsockopt(&socket, sockopt::Mark, &self.fwmark)?;
        }
        Ok(socket)
    }

    fn bind_family(&self, v6: bool, port: u16) -> io::Result<(Vec<Arc<UdpSocket>>, u16)> {
        let addr = |port| {
            if v6 {
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0))
            } else {
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
            }
        };
        let first = self.bind_one(addr(port))?;
        let bound = first.local_addr()?.port();
        let mut all = vec![Arc::new(first)];
        for _ in 1..self.workers {
            all.push(Arc::new(self.bind_one(addr(bound))?));
        }
        Ok((all, bound))
    }
}

impl Sockets for Net {
    /// Binds every worker's sockets of both families to `port` (any free
    /// one for 0, then the IPv6 ones to the same). A host without IPv6
    /// gets IPv4 sockets only.
    fn bind(&mut self, port: u16) -> io::Result<u16> {
        if port == self.port && port != 0 && !self.v4.is_empty() {
            return Ok(port);
        }
        // Close the old sockets first, so the port may be the same.
        self.v4.clear();
        self.v6.clear();
        let (v4, bound) = self.bind_family(false, port)?;
        let v6 = match self.bind_family(true, bound) {
            Ok((v6, _)) => v6,
            Err(e) if port == 0 => {
                log::warn!("no IPv6 sockets on port {bound}: {e}");
                Vec::new()
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
                ) =>
            {
                log::warn!("no IPv6 on this host ({e}); IPv4 only");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        log::info!("UDP port {bound}, {} socket(s) per family", v4.len());
        self.v4 = v4;
        self.v6 = v6;
        self.port = bound;
        self.generation += 1;
        Ok(bound)
    }

    fn set_fwmark(&mut self, mark: u32) -> io::Result<()> {
        self.fwmark = mark;
        for s in self.v4.iter().chain(&self.v6) {
            sock::setsockopt(s.as_ref(), sockopt::Mark, &mark)?;
        }
        Ok(())
    }
}

// ANCHOR: plan
/// Groups the messages `i` in `0..lens.len()` that go to an address of
/// the socket's family (`to[i]`) into the messages of a send call, in
/// order: with `gso`, consecutive messages to one address, all of one
/// length but the last (which may be shorter), become one GSO message of
/// at most [`GSO_MAX_SEGMENTS`] datagrams and [`GSO_MAX_BYTES`] bytes.
/// `plan` is cleared first; it grows only past its capacity.
pub fn plan(lens: &[usize], to: &[Option<SocketAddr>], v6: bool, gso: bool, plan: &mut Vec<Outgoing>) {
    plan.clear();
    for (i, (&len, dest)) in lens.iter().zip(to).enumerate() {
        let Some(dest) = *dest else { continue };
        if dest.is_ipv6() != v6 {
            continue;
        }
        if gso
            && let Some(last) = plan.last_mut()
            && last.to == dest
            && last.first + last.count == i
            && last.count < GSO_MAX_SEGMENTS
        {
            let size = lens[last.first];
            let closed = lens[i - 1] < size;
            if !closed && len <= size && (last.count + 1) * size <= GSO_MAX_BYTES {
                last.count += 1;
                last.segment = u16::try_from(size).ok();
                continue;
            }
        }
        plan.push(Outgoing {
            first: i,
            count: 1,
            to: dest,
            segment: None,
        });
    }
}
// ANCHOR_END: plan

// ANCHOR: send
/// Sends the messages `bufs[i][..lens[i]]` to `to[i]` (those of the
/// socket's family: IPv6 when `v6`) as [`plan`] groups them. A full socket buffer is
/// waited for briefly; a GSO send the kernel refuses turns GSO off for
/// this socket (`gso` becomes false) and the rest goes one datagram at a
/// time.
#[allow(clippy::too_many_arguments)]
pub fn send(
    socket: &UdpSocket,
    v6: bool,
    bufs: &[Vec<u8>],
    lens: &[usize],
    to: &[Option<SocketAddr>],
    gso: &mut bool,
    mmsg: bool,
    scratch: &mut Vec<Outgoing>,
    counters: &Counters,
) {
    plan(lens, to, v6, *gso, scratch);
    let mut done = 0;
    while done < scratch.len() {
        counters.udp_send_calls.add(1);
        match sys::send(socket.as_fd(), bufs, lens, &scratch[done..], mmsg) {
            Ok(k) => {
                for m in &scratch[done..done + k] {
                    counters.udp_datagrams_out.add(m.count as u64);
                    if m.segment.is_some() {
                        counters.udp_gso_out.add(1);
                    }
                }
                done += k;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
                let timeout = PollTimeout::try_from(SEND_WAIT).unwrap_or(PollTimeout::MAX);
                if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
                    let lost: usize = scratch[done..].iter().map(|m| m.count).sum();
                    counters.udp_send_errors.add(lost as u64);
                    log::debug!("the UDP socket stayed full: {lost} datagrams dropped");
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if scratch[done].segment.is_some() && e.raw_os_error() == Some(libc::EMSGSIZE) => {
                // Datagrams larger than the route's MTU (a tunnel MTU too
                // big for the path): the kernel will not segment them, but
                // it sends them one by one, in fragments. This batch goes
                // without GSO; the next tries again (another peer's path
                // may take them).
                counters.gso_fallbacks.add(1);
                log::debug!("UDP GSO refused ({e}): datagrams over the path's MTU, sent one by one");
                let first = scratch[done].first;
                plan(&lens[first..], &to[first..], v6, false, scratch);
                for m in scratch.iter_mut() {
                    m.first += first;
                }
                done = 0;
            }
            Err(e) if scratch[done].segment.is_some() && gso_refused(&e) => {
                // The kernel will not segment for us here: from now on,
                // one datagram per message. Split what is left.
                *gso = false;
                counters.gso_fallbacks.add(1);
                log::warn!("UDP GSO refused by the kernel ({e}): sending one datagram per message");
                let first = scratch[done].first;
                plan(&lens[first..], &to[first..], v6, false, scratch);
                for m in scratch.iter_mut() {
                    m.first += first;
                }
                done = 0;
            }
            Err(e) => {
                counters.udp_send_errors.add(scratch[done].count as u64);
                log::debug!("sending to {} failed: {e}", scratch[done].to);
                done += 1;
            }
        }
    }
}
// ANCHOR_END: send

/// Receives what is waiting on `socket`, without waiting, into `bufs`
/// (one message each). Returns how many messages arrived (0 when none).
pub fn recv(
    socket: &UdpSocket,
    bufs: &mut [Vec<u8>],
    meta: &mut [Incoming],
    mmsg: bool,
    counters: &Counters,
) -> io::Result<usize> {
    loop {
        counters.udp_recv_calls.add(1);
        match sys::recv(socket.as_fd(), bufs, meta, mmsg) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // An ICMP error for something we sent earlier, reported on
            // this call: nothing to receive here.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED) | Some(libc::EHOSTUNREACH)
                ) =>
            {
                return Ok(0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The datagrams in one received message: one, or with GRO, every
/// `segment` bytes.
pub fn datagrams<'a>(buf: &'a [u8], meta: &Incoming) -> impl Iterator<Item = &'a [u8]> + 'a {
    let data = &buf[..meta.len.min(buf.len())];
    let size = match meta.segment {
        Some(s) if s > 0 => usize::from(s),
        _ => data.len().max(1),
    };
    data.chunks(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_receive_buffer_is_the_kernels_default_with_gro_and_larger_without() {
        let receive_buffer = |features: Features| {
            let mut net = Net::new(1, features);
            net.bind(0).unwrap();
            let (v4, _) = net.sockets(0);
            sock::getsockopt(v4.unwrap().as_ref(), sockopt::RcvBuf).unwrap()
        };
        let default: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(receive_buffer(Features::ALL), default);
        let one_by_one = Features {
            gro: false,
            ..Features::ALL
        };
        assert!(receive_buffer(one_by_one) > default);
    }

    #[test]
    fn gso_groups_equal_lengths_to_one_address_and_closes_at_a_shorter_one() {
        let a = addr("192.0.2.1:1");
        let b = addr("192.0.2.2:1");
        let lens = [100, 100, 100, 60, 100, 100, 100, 100];
        let to = [a, a, a, a, a, b, None, b];
        let mut p = Vec::new();
        plan(&lens, &to, false, true, &mut p);
        let got: Vec<(usize, usize, Option<u16>)> = p.iter().map(|m| (m.first, m.count, m.segment)).collect();
        // 0..4 (the 60 closes it), 4 alone (b follows), 5 alone (6 is a
        // drop: 7 is not next to 5), 7 alone.
        assert_eq!(got, [(0, 4, Some(100)), (4, 1, None), (5, 1, None), (7, 1, None)]);
        plan(&lens, &to, false, false, &mut p);
        assert_eq!(p.len(), 7);
        plan(&lens, &to, true, true, &mut p);
        assert!(p.is_empty(), "no IPv6 destination");
    }

    #[test]
    fn gso_messages_stay_within_the_kernels_limits() {
        let a = addr("192.0.2.1:1");
        let lens = vec![1452; 200];
        let to = vec![a; 200];
        let mut p = Vec::new();
        plan(&lens, &to, false, true, &mut p);
        assert!(p.iter().all(|m| m.count * 1452 <= GSO_MAX_BYTES));
        assert_eq!(p.iter().map(|m| m.count).sum::<usize>(), 200);
        assert_eq!(p[0].count, GSO_MAX_BYTES / 1452);
        let lens = vec![100; 200];
        plan(&lens, &vec![a; 200], false, true, &mut p);
        assert_eq!(p[0].count, GSO_MAX_SEGMENTS);
    }

    /// Sends `count` datagrams of `size` bytes (numbered in their first
    /// two bytes) with `send`, and returns what `rx` received, in order.
    fn exchange(
        tx: &UdpSocket,
        rx: &UdpSocket,
        gso: &mut bool,
        count: usize,
        size: usize,
        counters: &Counters,
    ) -> Vec<Vec<u8>> {
        let to = rx.local_addr().unwrap();
        let bufs: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let mut b = vec![0xab; size];
                b[..2].copy_from_slice(&(i as u16).to_be_bytes());
                b
            })
            .collect();
        let lens = vec![size; count];
        let dests = vec![Some(to); count];
        let mut scratch = Vec::new();
        send(tx, false, &bufs, &lens, &dests, gso, true, &mut scratch, counters);
        let mut got = Vec::new();
        let mut into = vec![vec![0u8; 65536]; 8];
        let mut meta = [Incoming::default(); 8];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < count && std::time::Instant::now() < deadline {
            let n = recv(rx, &mut into, &mut meta, true, counters).unwrap();
            for k in 0..n {
                got.extend(datagrams(&into[k], &meta[k]).map(<[u8]>::to_vec));
            }
        }
        got
    }

    fn loopback() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        (tx, rx)
    }

    #[test]
    fn gso_sends_arrive_as_datagrams_with_or_without_gro() {
        for gro in [false, true] {
            let (tx, rx) = loopback();
            if gro {
                sock::setsockopt(&rx, sockopt::UdpGroSegment, &true).unwrap();
            }
            let counters = Counters::default();
            let mut gso = true;
            let got = exchange(&tx, &rx, &mut gso, 100, 1000, &counters);
            assert_eq!(got.len(), 100, "gro {gro}");
            for (i, d) in got.iter().enumerate() {
                assert_eq!(d.len(), 1000);
                assert_eq!(u16::from_be_bytes([d[0], d[1]]), i as u16, "in order");
            }
            assert!(gso, "GSO still on");
            // 65507 / 1000: 65 per message, capped at 64.
            assert_eq!(counters.udp_gso_out.get(), 2);
            assert_eq!(counters.udp_datagrams_out.get(), 100);
            assert_eq!(counters.gso_fallbacks.get(), 0);
        }
    }

    // ANCHOR: fallback_test
    #[test]
    fn a_socket_the_kernel_refuses_gso_on_falls_back_to_one_datagram_per_message() {
        let (tx, rx) = loopback();
        // Without UDP checksums, the kernel cannot segment: every GSO send
        // is refused (EINVAL).
        sys::disable_udp_checksums(tx.as_fd()).unwrap();
        let counters = Counters::default();
        let mut gso = true;
        let got = exchange(&tx, &rx, &mut gso, 50, 800, &counters);
        assert_eq!(got.len(), 50, "every datagram arrives anyway");
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, d)| u16::from_be_bytes([d[0], d[1]]) == i as u16)
        );
        assert!(!gso, "GSO is off for this socket from now on");
        assert_eq!(counters.gso_fallbacks.get(), 1);
        assert_eq!(counters.udp_gso_out.get(), 0);
        assert_eq!(counters.udp_send_errors.get(), 0);
        // The next batch goes without trying.
        let got = exchange(&tx, &rx, &mut gso, 10, 800, &counters);
        assert_eq!((got.len(), counters.gso_fallbacks.get()), (10, 1));
    }
    // ANCHOR_END: fallback_test

    #[test]
    fn a_gro_message_splits_at_its_segment_size() {
        let buf: Vec<u8> = (0..250u8).collect();
        let meta = Incoming {
            len: 250,
            from: None,
            segment: Some(100),
            truncated: false,
        };
        let parts: Vec<usize> = datagrams(&buf, &meta).map(<[u8]>::len).collect();
        assert_eq!(parts, [100, 100, 50]);
        let one = Incoming {
            segment: None,
            ..meta
        };
        assert_eq!(datagrams(&buf, &one).count(), 1);
    }
}
