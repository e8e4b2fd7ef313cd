//! The system calls the standard library and nix do not wrap the way the
//! fast path needs them: `recvmmsg(2)` and `sendmmsg(2)` over buffers the
//! caller owns and reuses, with the UDP GSO and GRO control messages
//! (`UDP_SEGMENT`, `UDP_GRO`, see `udp(7)`). The only unsafe code of the
//! step is here.
//!
//! nix has `recvmmsg` and `sendmmsg`, but its `sendmsg` allocates on every
//! call, its `sendmmsg` gives every message of a call the same control
//! messages (one GSO segment size for all of them), and the lifetimes of
//! its reusable headers tie each call's results to the headers. So: a few
//! small functions that build the `msghdr`s on the stack for one call,
//! point them at the caller's buffers, make the call and read the
//! results. No pointer outlives the call that made it.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// At most this many messages go in one call (headers are on the stack).
pub const MAX_MESSAGES: usize = 128;
/// At most this many buffers (`iovec`s) in one sending call.
pub const MAX_PARTS: usize = 128;
/// Room for the control messages of one message: one `UDP_SEGMENT`
/// (a u16) or `UDP_GRO` (an int) header, with slack for one more.
const CMSG_ROOM: usize = 64;

/// What arrived in one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Incoming {
    /// Bytes in the buffer.
    pub len: usize,
    /// Where it came from.
    pub from: Option<SocketAddr>,
    /// With UDP GRO: the kernel put several datagrams of this size (the
    /// last one may be shorter) back to back in the buffer.
    pub segment: Option<u16>,
    /// The datagram was longer than the buffer (the rest is lost).
    pub truncated: bool,
}

/// One message to send: buffers `first..first + count` of the call's
/// buffers, to `to`; with `segment`, the kernel cuts it into datagrams of
/// that size (UDP GSO; every buffer but the last must then be exactly
/// that long).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub first: usize,
    pub count: usize,
    pub to: SocketAddr,
    pub segment: Option<u16>,
}

/// A socket address in the form the kernel takes, IPv4 or IPv6.
#[repr(C)]
#[derive(Clone, Copy)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

/// Control-message space, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg([u8; CMSG_ROOM]);

fn raw_addr(addr: &SocketAddr) -> (RawAddr, libc::socklen_t) {
    match addr {
        SocketAddr::V4(a) => {
            let v4 = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            (
                RawAddr { v4 },
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let v6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            (
                RawAddr { v6 },
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

fn socket_addr(raw: &RawAddr, len: libc::socklen_t) -> Option<SocketAddr> {
    // SAFETY: every variant of the union is plain old data, and the
    // family field sits at the same offset in both; reading it is reading
    // initialized bytes (the union was zeroed before the kernel wrote it).
    let family = unsafe { raw.v4.sin_family } as libc::c_int;
    let len = len as usize;
    match family {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel said the address is AF_INET and long
            // enough to be a whole sockaddr_in.
            let a = unsafe { raw.v4 };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for AF_INET6 and sockaddr_in6.
            let a = unsafe { raw.v6 };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn zeroed_headers() -> [libc::mmsghdr; MAX_MESSAGES] {
    // SAFETY: mmsghdr is a C struct of integers and raw pointers, for
    // which all-zero bytes are a valid value (null pointers, zero
    // lengths).
    unsafe { mem::zeroed() }
}

fn zeroed_addrs() -> [RawAddr; MAX_MESSAGES] {
    // SAFETY: sockaddr_in and sockaddr_in6 are plain integers and byte
    // arrays: all-zero is a valid value.
    unsafe { mem::zeroed() }
}

fn empty_iovecs() -> [libc::iovec; MAX_PARTS] {
    [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_PARTS]
}

/// `recvmmsg(2)` (or, with `batch` false, `recvmsg(2)`), without
/// waiting: receives up to `bufs.len()` messages (at most
/// [`MAX_MESSAGES`]), one into each buffer, and describes each in
/// `meta`. Returns how many arrived; `WouldBlock` when none was there.
pub fn recv<B: AsMut<[u8]>>(
    fd: BorrowedFd<'_>,
    bufs: &mut [B],
    meta: &mut [Incoming],
    batch: bool,
) -> io::Result<usize> {
    let n = bufs
        .len()
        .min(meta.len())
        .min(if batch { MAX_MESSAGES } else { 1 });
    if n == 0 {
        return Ok(0);
    }
    let mut hdrs = zeroed_headers();
    let mut addrs = zeroed_addrs();
    let mut iovs = empty_iovecs();
    let mut cmsgs = [Cmsg([0; CMSG_ROOM]); MAX_MESSAGES];
    for i in 0..n {
        let buf = bufs[i].as_mut();
        iovs[i] = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&raw mut addrs[i]).cast();
        h.msg_namelen = mem::size_of::<RawAddr>() as libc::socklen_t;
        h.msg_iov = &raw mut iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = (&raw mut cmsgs[i]).cast();
        h.msg_controllen = CMSG_ROOM as _;
    }
    let fd = fd.as_raw_fd();
    let received = if batch {
        // SAFETY: `hdrs[..n]` are valid msghdrs whose name, iovec and
        // control pointers point into `addrs`, `iovs`, `cmsgs` and the
        // caller's buffers, all alive and exclusively borrowed for this
        // call, with the lengths given; the kernel writes only within
        // them. No timeout pointer.
        unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        }
    } else {
        // SAFETY: as above, for the one msghdr `hdrs[0]`.
        let r = unsafe { libc::recvmsg(fd, &raw mut hdrs[0].msg_hdr, libc::MSG_DONTWAIT) };
        if r >= 0 {
            hdrs[0].msg_len = r as libc::c_uint;
            1
        } else {
            -1
        }
    };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let received = received as usize;
    for i in 0..received {
        let h = &hdrs[i].msg_hdr;
        meta[i] = Incoming {
            len: hdrs[i].msg_len as usize,
            from: socket_addr(&addrs[i], h.msg_namelen),
            segment: gro_segment(h),
            truncated: h.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(received)
}

/// The segment size of a `UDP_GRO` control message in a received header.
fn gro_segment(h: &libc::msghdr) -> Option<u16> {
    if h.msg_controllen == 0 || h.msg_flags & libc::MSG_CTRUNC != 0 {
        return None;
    }
    // SAFETY: `h` is a header the kernel just filled: its control pointer
    // and length describe control messages within the `cmsgs` buffer,
    // which is still alive; CMSG_FIRSTHDR and CMSG_NXTHDR stay within
    // `msg_controllen` and return null at the end.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(h) };
    while !c.is_null() {
        // SAFETY: `c` is non-null and points at a complete cmsghdr inside
        // the control buffer (CMSG_FIRSTHDR/NXTHDR check that).
        let cmsg = unsafe { &*c };
        if cmsg.cmsg_level == libc::SOL_UDP && cmsg.cmsg_type == libc::UDP_GRO {
            // SAFETY: a UDP_GRO message carries one int (udp(7)); read
            // unaligned, as CMSG_DATA promises no alignment.
            let size = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) };
            return u16::try_from(size).ok().filter(|&s| s > 0);
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(h, c) };
    }
    None
}

/// `sendmmsg(2)` (or, with `batch` false, `sendmsg(2)` for the first
/// message only), without waiting: sends `msgs` (at most
/// [`MAX_MESSAGES`], using at most [`MAX_PARTS`] buffers in all), each
/// made of `bufs[i][..lens[i]]` for its buffers. Returns how many
/// messages the kernel took (it stops at the first it refuses; the next
/// call starting there gets that error); `WouldBlock` when the socket's
/// buffer is full.
pub fn send<B: AsRef<[u8]>>(
    fd: BorrowedFd<'_>,
    bufs: &[B],
    lens: &[usize],
    msgs: &[Outgoing],
    batch: bool,
) -> io::Result<usize> {
    let n = msgs.len().min(if batch { MAX_MESSAGES } else { 1 });
    if n == 0 {
        return Ok(0);
    }
    let mut hdrs = zeroed_headers();
    let mut addrs = zeroed_addrs();
    let mut iovs = empty_iovecs();
    let mut cmsgs = [Cmsg([0; CMSG_ROOM]); MAX_MESSAGES];
    let mut part = 0;
    for (i, m) in msgs[..n].iter().enumerate() {
        let end = m
            .first
            .checked_add(m.count)
            .filter(|&e| e <= bufs.len() && e <= lens.len());
        let Some(end) = end.filter(|_| m.count > 0 && part + m.count <= MAX_PARTS) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a message names buffers it has not",
            ));
        };
        let start = part;
        for b in m.first..end {
            let buf = bufs[b].as_ref();
            let len = lens[b].min(buf.len());
            iovs[part] = libc::iovec {
                // The kernel only reads from it (sendmsg's iovecs are
                // const in spirit; the C type is not).
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: len,
            };
            part += 1;
        }
        let (addr, addr_len) = raw_addr(&m.to);
        addrs[i] = addr;
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&raw mut addrs[i]).cast();
        h.msg_namelen = addr_len;
        h.msg_iov = &raw mut iovs[start];
        h.msg_iovlen = m.count as _;
        if let Some(size) = m.segment {
            h.msg_control = (&raw mut cmsgs[i]).cast();
            // SAFETY: CMSG_SPACE is arithmetic on its argument.
            h.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as _;
            // SAFETY: the header's control buffer is `cmsgs[i]`, aligned
            // and CMSG_ROOM bytes long, more than CMSG_SPACE(2), so
            // CMSG_FIRSTHDR returns a pointer to room for one whole
            // cmsghdr and its two bytes of data, which we write.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
            }
        }
    }
    let fd = fd.as_raw_fd();
    let sent = if batch {
        // SAFETY: `hdrs[..n]` are valid msghdrs pointing into `addrs`,
        // `iovs`, `cmsgs` and the caller's buffers (which the kernel only
        // reads), all alive for this call, with the lengths given.
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) }
    } else {
        // SAFETY: as above, for the one msghdr `hdrs[0]`.
        let r = unsafe { libc::sendmsg(fd, &raw const hdrs[0].msg_hdr, libc::MSG_DONTWAIT) };
        if r >= 0 { 1 } else { -1 }
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Turns off UDP checksums on an IPv4 socket (`SO_NO_CHECK`): a socket
/// the kernel then refuses GSO on (`EINVAL`), for the test of the
/// fallback.
#[cfg(test)]
pub fn disable_udp_checksums(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a plain setsockopt with a pointer to an int that lives for
    // the call and its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&raw const one).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn addresses_round_trip_through_the_kernels_form() {
        for a in [
            "192.0.2.1:51820".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        ] {
            let (raw, len) = raw_addr(&a);
            assert_eq!(socket_addr(&raw, len), Some(a));
        }
        let (raw, _) = raw_addr(&"192.0.2.1:1".parse().unwrap());
        assert_eq!(socket_addr(&raw, 4), None, "too short for its family");
    }

    #[test]
    fn one_call_sends_and_receives_several_messages_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let bufs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let lens: Vec<usize> = bufs.iter().map(Vec::len).collect();
        let msgs: Vec<Outgoing> = (0..5)
            .map(|i| Outgoing {
                first: i,
                count: 1,
                to,
                segment: None,
            })
            .collect();
        assert_eq!(send(tx.as_fd(), &bufs, &lens, &msgs, true).unwrap(), 5);
        let mut into = vec![vec![0u8; 64]; 8];
        let mut meta = [Incoming::default(); 8];
        let mut got = 0;
        while got < 5 {
            match recv(rx.as_fd(), &mut into[got..], &mut meta[got..], true) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        for i in 0..5 {
            assert_eq!(meta[i].len, 10 + i);
            assert_eq!(meta[i].from, Some(tx.local_addr().unwrap()));
            assert!(into[i][..meta[i].len].iter().all(|&b| usize::from(b) == i));
        }
        let err = recv(rx.as_fd(), &mut into, &mut meta, true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_message_that_names_missing_buffers_is_refused_before_the_call() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let bufs = [vec![0u8; 4]];
        let m = Outgoing {
            first: 0,
            count: 2,
            to: "127.0.0.1:9".parse().unwrap(),
            segment: None,
        };
        let err = send(tx.as_fd(), &bufs, &[4], &[m], true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
