//! The data plane: what a worker needs to seal and open data messages
//! without the device's lock, and the ledger in which it notes what the
//! device must hear about afterwards.
//!
//! Step 07's [`Device`] stays the control plane: handshakes, timers,
//! configuration, under one lock. What the data path reads from it (the
//! allowed IPs, each peer's endpoint and sessions, the MTU) is copied into
//! a [`Plane`] whenever it changes ([`Device::generation`] moves), and
//! every worker holds an `Arc` of the latest copy. A worker then seals and
//! opens a whole batch touching nothing shared but each session's send
//! counter (one atomic addition per peer and batch) and its replay window
//! (a lock of its own, per session). What the device must know (bytes,
//! timers, roaming, a session confirmed) goes into the worker's
//! [`Ledger`], which it hands to the device once per wake-up.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use step04_crypto::crypto::TAG_LEN;
use step07_wireguard::allowed::AllowedIps;
use step07_wireguard::device::{PeerSessions, Session, check_inner, route};
use step07_wireguard::wire::{DATA_HEADER_LEN, Data, MessageType};
use step07_wireguard::{Device, DropReason, PeerId};

/// Where a packet sits in its buffer: after room for the data message's
/// header, which sealing writes in front of it.
pub const OFFSET: usize = DATA_HEADER_LEN;

// ANCHOR: plane
/// A copy of what the data path reads from the device, made when it
/// changes and shared by every worker.
pub struct Plane {
    /// The device's generation this copy was made at.
    pub generation: u64,
    mtu: usize,
    has_key: bool,
    allowed: AllowedIps<PeerId>,
    /// By peer id.
    peers: Vec<Option<PeerSessions>>,
    /// Our session indices: the session a data message names.
    by_index: HashMap<u32, (PeerId, Arc<Session>)>,
}
// ANCHOR_END: plane

impl Plane {
    /// A copy of `device`'s data-path state.
    pub fn of(device: &Device) -> Self {
        let ids = device.peer_ids();
        let mut peers = vec![None; ids.iter().max().map_or(0, |m| m + 1)];
        let mut by_index = HashMap::new();
        for id in ids {
            let Some(p) = device.peer_sessions(id) else {
                continue;
            };
            for s in p.receiving.iter().flatten() {
                by_index.insert(s.local_index(), (id, Arc::clone(s)));
            }
            peers[id] = Some(p);
        }
        Self {
            generation: device.generation(),
            mtu: device.mtu(),
            has_key: device.has_key(),
            allowed: device.allowed_ips().clone(),
            peers,
            by_index,
        }
    }

    /// An empty plane (before the first copy).
    pub fn empty() -> Self {
        Self {
            generation: u64::MAX,
            mtu: 0,
            has_key: false,
            allowed: AllowedIps::new(),
            peers: Vec::new(),
            by_index: HashMap::new(),
        }
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    // ANCHOR: seal
    /// Seals the packets of `batch` in place, for the peers that own
    /// their destinations. A packet whose peer has no session to send on
    /// is marked for the device ([`Fate::Device`]): it must wait for a
    /// handshake, which only the device can start.
    pub fn seal(&self, batch: &mut Batch, ledger: &mut Ledger, now: Instant) {
        // 1. Route every packet (cryptokey routing by destination).
        for i in 0..batch.n {
            let packet = &batch.bufs[i][OFFSET..OFFSET + batch.sizes[i]];
            batch.fates[i] = if !self.has_key {
                ledger.drop(None, DropReason::NoKey);
                Fate::Dropped
            } else {
                match route(&self.allowed, self.mtu, packet) {
                    Ok(id) => Fate::Peer(id),
                    Err(why) => {
                        ledger.drop(None, why);
                        Fate::Dropped
                    }
                }
            };
        }
        // 2. For each peer in the batch, take its counters in one atomic
        // addition, then seal its packets in their order: counters rise
        // with the order the packets were read in.
        for i in 0..batch.n {
            let Fate::Peer(id) = batch.fates[i] else { continue };
            let count = batch.fates[i..batch.n]
                .iter()
                .filter(|f| **f == Fate::Peer(id))
                .count() as u64;
            let peer = self.peers.get(id).and_then(Option::as_ref);
            let sending = peer.and_then(|p| Some((p.endpoint?, p.current.clone()?)));
            let Some((to, session)) = sending else {
                mark(&mut batch.fates[i..batch.n], id, Fate::Device);
                continue;
            };
            let Some(mut counter) = session.reserve(count, now) else {
                mark(&mut batch.fates[i..batch.n], id, Fate::Device);
                continue;
            };
            let (mut bytes, mut data, mut rekey) = (0u64, false, false);
            for j in i..batch.n {
                if batch.fates[j] != Fate::Peer(id) {
                    continue;
                }
                let len = batch.sizes[j];
                match session.seal(counter, &mut batch.bufs[j], len, self.mtu) {
                    Some(total) => {
                        batch.lens[j] = total;
                        batch.fates[j] = Fate::Send(to);
                        bytes += total as u64;
                        data |= len > 0;
                        rekey |= session.wants_rekey(counter, now);
                    }
                    None => {
                        ledger.drop(Some(id), DropReason::NoRoom);
                        batch.fates[j] = Fate::Dropped;
                    }
                }
                counter += 1;
            }
            if bytes > 0 {
                ledger.sealed(id, bytes, data, rekey);
            }
        }
    }
    // ANCHOR_END: seal

    // ANCHOR: open
    /// Opens the message `message` from `from`: a data message is copied
    /// into `into` and opened there, leaving its packet at
    /// `into[OFFSET..]` (`into` is cut to its end). Handshake messages
    /// are for the device.
    pub fn open(
        &self,
        message: &[u8],
        from: SocketAddr,
        into: &mut Vec<u8>,
        ledger: &mut Ledger,
        now: Instant,
    ) -> Opened {
        match MessageType::of(message) {
            Some(MessageType::Data) => {}
            Some(_) => return Opened::Device,
            None => {
                let why = if message.is_empty() {
                    DropReason::Truncated
                } else {
                    DropReason::BadType
                };
                ledger.drop(None, why);
                return Opened::Dropped;
            }
        }
        let msg = match Data::new_checked(message) {
            Ok(m) => m,
            Err(e) => {
                ledger.drop(None, e.into());
                return Opened::Dropped;
            }
        };
        let index = msg.receiver();
        let Some((id, session)) = self.by_index.get(&index) else {
            ledger.drop(None, DropReason::UnknownIndex);
            return Opened::Dropped;
        };
        let (counter, tag) = (msg.counter(), msg.tag());
        into.clear();
        into.extend_from_slice(message);
        let end = into.len() - TAG_LEN;
        let body = &mut into[OFFSET..end];
        if let Err(why) = session.open(counter, body, &tag, now) {
            ledger.drop(Some(*id), why);
            return Opened::Dropped;
        }
        let data = !body.is_empty();
        ledger.opened(*id, index, from, message.len() as u64, data);
        if !data {
            return Opened::Keepalive;
        }
        match check_inner(&self.allowed, *id, body) {
            Ok(len) => {
                into.truncate(OFFSET + len);
                Opened::Packet
            }
            Err(why) => {
                ledger.drop(Some(*id), why);
                Opened::Dropped
            }
        }
    }
    // ANCHOR_END: open
}

fn mark(fates: &mut [Fate], id: PeerId, to: Fate) {
    for f in fates.iter_mut().filter(|f| **f == Fate::Peer(id)) {
        *f = to;
    }
}

/// What became of a packet read from the TUN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Read, not yet routed.
    Unread,
    /// Routed to this peer, not yet sealed.
    Peer(PeerId),
    /// Sealed: `lens[i]` bytes at the start of the buffer go to this
    /// address.
    Send(SocketAddr),
    /// For the device: its peer has no session to send on.
    Device,
    /// Dropped, and counted.
    Dropped,
}

/// What became of a message received from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A packet for the TUN device, in the buffer at [`OFFSET`].
    Packet,
    /// A keepalive: authenticated, nothing to deliver.
    Keepalive,
    /// A handshake message, for the device.
    Device,
    /// Dropped, and counted.
    Dropped,
}

// ANCHOR: batch
/// A batch of packets read from the TUN device, and what became of each:
/// the buffers are allocated once and reused for every batch.
pub struct Batch {
    /// Packet `i` is `bufs[i][OFFSET..OFFSET + sizes[i]]`; once sealed,
    /// its message is `bufs[i][..lens[i]]`.
    pub bufs: Vec<Vec<u8>>,
    pub sizes: Vec<usize>,
    pub lens: Vec<usize>,
    pub fates: Vec<Fate>,
    /// How many buffers hold a packet.
    pub n: usize,
}
// ANCHOR_END: batch

impl Batch {
    /// `count` buffers of `len` bytes each.
    pub fn new(count: usize, len: usize) -> Self {
        Self {
            bufs: vec![vec![0; len]; count],
            sizes: vec![0; count],
            lens: vec![0; count],
            fates: vec![Fate::Unread; count],
            n: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }
}

// ANCHOR: ledger
/// What a worker did that the device must hear about, gathered over a
/// wake-up and handed over in one visit ([`Ledger::settle`]).
pub struct Ledger {
    sent: Vec<Sent>,
    opened: Vec<Received>,
    drops: Vec<(Option<PeerId>, DropReason, u64)>,
}

struct Sent {
    id: PeerId,
    bytes: u64,
    data: bool,
    rekey: bool,
}

struct Received {
    id: PeerId,
    index: u32,
    from: SocketAddr,
    bytes: u64,
    data: u64,
}
// ANCHOR_END: ledger

/// Notes a ledger keeps without growing; past this, it grows (many peers
/// in one wake-up).
const LEDGER_ROOM: usize = 256;

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    pub fn new() -> Self {
        Self {
            sent: Vec::with_capacity(LEDGER_ROOM),
            opened: Vec::with_capacity(LEDGER_ROOM),
            drops: Vec::with_capacity(LEDGER_ROOM),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.opened.is_empty() && self.drops.is_empty()
    }

    fn sealed(&mut self, id: PeerId, bytes: u64, data: bool, rekey: bool) {
        if let Some(s) = self.sent.iter_mut().find(|s| s.id == id) {
            s.bytes += bytes;
            s.data |= data;
            s.rekey |= rekey;
        } else {
            self.sent.push(Sent {
                id,
                bytes,
                data,
                rekey,
            });
        }
    }

    fn opened(&mut self, id: PeerId, index: u32, from: SocketAddr, bytes: u64, data: bool) {
        // Merged only while nothing changes but the counts: a message
        // from a new address or on another session is a note of its own,
        // so the device sees them in their order.
        match self.opened.last_mut() {
            Some(r) if r.id == id && r.index == index && r.from == from => {
                r.bytes += bytes;
                r.data += u64::from(data);
            }
            _ => self.opened.push(Received {
                id,
                index,
                from,
                bytes,
                data: u64::from(data),
            }),
        }
    }

    /// Counts a drop (by peer, when one is known).
    pub fn drop(&mut self, peer: Option<PeerId>, reason: DropReason) {
        if let Some(d) = self.drops.iter_mut().find(|d| d.0 == peer && d.1 == reason) {
            d.2 += 1;
        } else {
            self.drops.push((peer, reason, 1));
        }
    }

    /// How many drops are noted (for the worker's own counters).
    pub fn drop_count(&self) -> u64 {
        self.drops.iter().map(|d| d.2).sum()
    }

    // ANCHOR: settle
    /// Hands everything noted to the device (which the caller has
    /// locked), in the order the device's own loop would have done it:
    /// what was sent, then what was received.
    pub fn settle(&mut self, device: &mut Device, now: Instant) {
        for s in self.sent.drain(..) {
            device.sealed(s.id, s.bytes, s.data, s.rekey, now);
        }
        for r in self.opened.drain(..) {
            device.opened(r.id, r.index, r.from, r.bytes, r.data, now);
        }
        for (peer, reason, n) in self.drops.drain(..) {
            device.count_drops(peer, reason, n);
        }
    }
    // ANCHOR_END: settle
}
