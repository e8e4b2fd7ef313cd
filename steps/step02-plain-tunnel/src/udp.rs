//! The underlay's UDP socket, answering each peer from the address it
//! wrote to.
//!
//! A server listening on 0.0.0.0 or [::] receives on every address of the
//! host. When it sends, the kernel picks the source address by route, and
//! on a host with several addresses that need not be the one the client
//! sent to: the client then sees its server answer from somewhere else. A
//! client that only accepts its server's address drops the answer, and a
//! kill switch that lets only the server's address through cuts the
//! tunnel. So on a wildcard socket we ask the kernel, for each datagram,
//! which of our addresses it was sent to (`IP_PKTINFO`, ip(7);
//! `IPV6_RECVPKTINFO`, RFC 3542 §6, which also reports IPv4 datagrams on a
//! dual-stack socket, as IPv4-mapped addresses), and send to that peer from
//! that address (the same options on `sendmsg`). WireGuard's Linux module
//! does the same: it keeps each peer's source address with its endpoint.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage, recvmsg,
    sendmsg, setsockopt, sockopt,
};

/// Peers whose local address we keep. More peers than this (spoofed
/// sources cannot add any: only valid messages are remembered) start the
/// table afresh; each peer's next message fills it in again.
const MAX_PEERS: usize = 4096;

/// A datagram received: its length, who sent it, and (on a wildcard
/// socket) which of our addresses it was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub local: Option<IpAddr>,
}

/// A UDP socket of the tunnel's underlay.
#[derive(Debug)]
pub struct UdpUnderlay {
    socket: UdpSocket,
    /// Bound to 0.0.0.0 or [::], and the kernel says where each datagram
    /// was sent to.
    wildcard: bool,
    /// Room for the control messages of one datagram, allocated once.
    control: RefCell<Vec<u8>>,
    /// The address each peer last sent a valid message to.
    local: RefCell<HashMap<SocketAddr, IpAddr>>,
}

impl UdpUnderlay {
    /// A client's socket, bound to `addr`: what it sends goes out from the
    /// address the kernel picks by route, so that when the host's address
    /// changes, the client's messages come from the new one (and the
    /// server follows it).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            socket: UdpSocket::bind(addr)?,
            wildcard: false,
            control: RefCell::new(Vec::new()),
            local: RefCell::new(HashMap::new()),
        })
    }

    /// A server's socket, listening on `addr`. On a wildcard address it
    /// also asks the kernel for the destination of each datagram, and
    /// answers each peer from there; where the kernel refuses, replies go
    /// out from the address it picks, as they would without this.
    pub fn listen(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        let wildcard = addr.ip().is_unspecified()
            && match addr {
                SocketAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4PacketInfo, &true),
                SocketAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true),
            }
            .inspect_err(|e| log::warn!("cannot learn which address each datagram was sent to: {e}"))
            .is_ok();
        Ok(Self {
            socket,
            wildcard,
            control: RefCell::new(nix::cmsg_space!(libc::in6_pktinfo)),
            local: RefCell::new(HashMap::new()),
        })
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Receives one datagram into `buf`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        if !self.wildcard {
            let (len, from) = self.socket.recv_from(buf)?;
            return Ok(Received {
                len,
                from,
                local: None,
            });
        }
        let mut control = self.control.borrow_mut();
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::empty(),
        )?;
        let from = msg
            .address
            .as_ref()
            .and_then(socket_addr)
            .ok_or_else(|| io::Error::other("a datagram without a sender address"))?;
        let mut local = None;
        for cmsg in msg.cmsgs()? {
            match cmsg {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    // ip(7): ipi_spec_dst is the local address of the
                    // packet (ipi_addr its header's destination, which
                    // may be a broadcast address).
                    local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr))));
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        Ok(Received {
            len: msg.bytes,
            from,
            local,
        })
    }

    /// Sends to `peer` from the address it last sent a valid message to,
    /// from now on: call it once a message from it has been accepted.
    pub fn remember(&self, received: &Received) {
        let Some(local) = received.local else { return };
        let mut table = self.local.borrow_mut();
        if table.len() >= MAX_PEERS && !table.contains_key(&received.from) {
            table.clear();
        }
        table.insert(received.from, local);
    }

    /// Sends `message` to `to`, from the address `to` last wrote to. If
    /// that address is gone from the host, it is forgotten, and the kernel
    /// picks one.
    pub fn send(&self, message: &[u8], to: SocketAddr) -> io::Result<usize> {
        let local = self.local.borrow().get(&to).copied();
        match self.send_from(message, to, local) {
            Err(e) if local.is_some() && e.kind() != io::ErrorKind::WouldBlock => {
                log::info!("cannot send to {to} from {local:?} any more ({e}); the kernel picks the source");
                self.local.borrow_mut().remove(&to);
                self.socket.send_to(message, to)
            }
            other => other,
        }
    }

    /// Sends `message` to `to` from our address `local`, if given (an
    /// answer to a datagram goes from where that datagram went).
    pub fn send_from(&self, message: &[u8], to: SocketAddr, local: Option<IpAddr>) -> io::Result<usize> {
        let Some(local) = local.filter(|_| self.wildcard) else {
            return self.socket.send_to(message, to);
        };
        let iov = [IoSlice::new(message)];
        let fd = self.socket.as_raw_fd();
        let sent = match (to, local) {
            (SocketAddr::V4(to), IpAddr::V4(local)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(local).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
                sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&SockaddrIn::from(to)))
            }
            // Over IPv6, and IPv4 on a dual-stack socket as IPv4-mapped
            // addresses: Linux takes an IPv4-mapped source for an IPv4
            // destination.
            (SocketAddr::V6(to), IpAddr::V6(local)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: local.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
                sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&SockaddrIn6::from(to)))
            }
            _ => return self.socket.send_to(message, to),
        };
        sent.map_err(io::Error::from)
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}
