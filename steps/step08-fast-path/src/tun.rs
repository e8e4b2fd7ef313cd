//! The TUN side: many packets per wake-up, and with offloads, many
//! packets per system call.
//!
//! With the virtio-net header (`IFF_VNET_HDR`, tun-rs's `offload(true)`),
//! every read and write on the device starts with a 10-byte header that
//! says whether the packet is one packet or a TCP (or UDP) super-packet
//! of up to 64 KB that the kernel left unsegmented, and at what size to
//! cut it (`gso_size`). The device then advertises TSO, so the kernel's
//! TCP hands it 64 KB at a time; tun-rs's [`SyncDevice::recv_multiple`]
//! reads one super-packet (one system call) and cuts it into
//! MTU-sized packets, each with its own headers and checksums. On the way
//! back, the [`Coalescer`] puts the packets of one TCP flow back together
//! and the worker writes one super-packet per flow.
//!
//! Without the header, a read is one packet and a write is one packet;
//! a wake-up still takes every packet that is waiting.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;

use tun_rs::{SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::counters::Counters;
use crate::gro::Coalescer;
use crate::plane::OFFSET;

/// The largest packet or super-packet a read returns (the IP length
/// field's limit).
pub const MAX_PACKET: usize = 65535;
/// A read of a super-packet needs at least this many free buffers for its
/// segments: 64 KB cut at an MSS of 1024 bytes or more (below that, a
/// super-packet that does not fit is dropped and counted).
pub const SEGMENTS_PER_READ: usize = 64;

// ANCHOR: queue
/// One queue of the TUN device, owned by one worker.
pub enum Queue {
    /// With the virtio-net header: super-packets in, coalesced writes
    /// out.
    Offload {
        device: SyncDevice,
        /// Where a super-packet lands before it is cut up.
        raw: Vec<u8>,
        gro: Coalescer,
    },
    /// Without it: one packet per read and per write.
    Plain(SyncDevice),
    /// A datagram socket standing in for the device, one packet per
    /// datagram: for tests, which run without root.
    Socket(UnixDatagram),
}
// ANCHOR_END: queue

impl Queue {
    /// A queue for `device`, which has the virtio-net header when
    /// `offload` (it was built with `offload(true)`).
    pub fn new(device: SyncDevice, offload: bool) -> io::Result<Self> {
        device.set_nonblocking(true)?;
        Ok(if offload {
            Queue::Offload {
                device,
                raw: vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET],
                gro: Coalescer::new(),
            }
        } else {
            Queue::Plain(device)
        })
    }

    /// A queue over a datagram socket (non-blocking).
    pub fn socket(socket: UnixDatagram) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Queue::Socket(socket))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Queue::Offload { device, .. } | Queue::Plain(device) => device.as_fd(),
            Queue::Socket(s) => s.as_fd(),
        }
    }

    // ANCHOR: read
    /// Reads what is waiting, without waiting, into `bufs` from index
    /// `first`: packet `i` at `bufs[i][OFFSET..OFFSET + sizes[i]]`. Stops
    /// when nothing is left or the buffers are (nearly) full. Returns the
    /// index after the last packet, and whether the queue was found empty.
    pub fn read(
        &mut self,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        first: usize,
        counters: &Counters,
    ) -> io::Result<(usize, bool)> {
        let mut n = first;
        let mut emptied = false;
        match self {
            Queue::Offload { device, raw, .. } => {
                while bufs.len() - n >= SEGMENTS_PER_READ {
                    counters.tun_reads.add(1);
                    match device.recv_multiple(raw, &mut bufs[n..], &mut sizes[n..], OFFSET) {
                        Ok(k) => {
                            if k > 1 {
                                counters.tun_super_in.add(1);
                            }
                            counters.tun_packets_in.add(k as u64);
                            n += k;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            emptied = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // A super-packet that does not split (malformed,
                        // or more segments than buffers): it is gone.
                        Err(e) if e.raw_os_error().is_none() => {
                            counters.tun_bad_in.add(1);
                            log::debug!("a packet from the TUN device dropped: {e}");
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Queue::Plain(device) => {
                while n < bufs.len() {
                    counters.tun_reads.add(1);
                    match device.recv(&mut bufs[n][OFFSET..]) {
                        Ok(len) => {
                            sizes[n] = len;
                            counters.tun_packets_in.add(1);
                            n += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            emptied = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Queue::Socket(socket) => {
                while n < bufs.len() {
                    counters.tun_reads.add(1);
                    match socket.recv(&mut bufs[n][OFFSET..]) {
                        Ok(len) => {
                            sizes[n] = len;
                            counters.tun_packets_in.add(1);
                            n += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            emptied = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok((n, emptied))
    }
    // ANCHOR_END: read

    // ANCHOR: write
    /// Writes the packets `bufs[i][OFFSET..]` for `i < n` (each buffer is
    /// cut to the end of its packet). With offloads, the packets of one
    /// TCP flow go out as one super-packet.
    pub fn write(&mut self, bufs: &mut [Vec<u8>], n: usize, counters: &Counters) {
        counters.tun_packets_out.add(n as u64);
        match self {
            Queue::Offload { device, gro, .. } => {
                // One write per super-packet (or packet that did not
                // coalesce), each with its virtio-net header in front.
                for &i in gro.coalesce(bufs, n) {
                    counters.tun_writes.add(1);
                    if let Err(e) = device.send(&bufs[i][OFFSET - VIRTIO_NET_HDR_LEN..]) {
                        counters.tun_write_errors.add(1);
                        log::debug!("writing to the TUN device failed: {e}");
                    }
                }
            }
            Queue::Plain(device) => {
                for buf in &bufs[..n] {
                    counters.tun_writes.add(1);
                    if let Err(e) = device.send(&buf[OFFSET..]) {
                        counters.tun_write_errors.add(1);
                        log::debug!("writing to the TUN device failed: {e}");
                    }
                }
            }
            Queue::Socket(socket) => {
                for buf in &bufs[..n] {
                    counters.tun_writes.add(1);
                    if let Err(e) = socket.send(&buf[OFFSET..]) {
                        counters.tun_write_errors.add(1);
                        log::debug!("writing to the test socket failed: {e}");
                    }
                }
            }
        }
    }
    // ANCHOR_END: write

    /// The device's MTU (`None` for a socket).
    pub fn mtu(&self) -> Option<u16> {
        match self {
            Queue::Offload { device, .. } | Queue::Plain(device) => device.mtu().ok(),
            Queue::Socket(_) => None,
        }
    }
}
