//! The I/O shell: the TUN device, the underlay socket, and the loop that
//! moves bytes between them through the [`Tunnel`] core.
//!
//! Over UDP one thread does all the work: it waits in `poll(2)` until the
//! TUN device or the socket has something, takes what is there from each
//! (`encapsulate` and send, or `decapsulate` and write to the TUN device),
//! and runs the timers. Over TCP a frame can arrive in pieces, so each
//! connection gets a thread of its own that reads frames, while the main
//! thread reads the TUN device. Either way the core sits behind a mutex,
//! held only for the microseconds a packet takes.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use signal_hook::consts::SIGUSR1;
use step01_ping_tun::Ipv4Net;
use step01_ping_tun::Summary;
use step01_ping_tun::host::{Shutdown, create_tun};
use step01_ping_tun::logging::DropLog;
use step01_ping_tun::pcap::Recorder;
use tun_rs::SyncDevice;

use crate::framing::{self, FrameReader};
use crate::mtu::{Transport, max_inner, tun_mtu};
use crate::tunnel::{Action, Role, Transmit, Tunnel};
use crate::udp::UdpUnderlay;
use crate::wire::MessageSummary;

/// Which end to run, and where the other end is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Server { listen: SocketAddr },
    Client { server: SocketAddr },
}

/// What `step02-plain-tunnel` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    pub endpoint: Endpoint,
    pub tun: String,
    pub transport: Transport,
    pub keepalive: Option<Duration>,
    pub pcap: Option<PathBuf>,
    /// The MTU of the underlay path, from which the TUN MTU is computed.
    pub underlay_mtu: u16,
}

/// How long a loop waits for input before it runs the timers and looks at
/// the shutdown flag.
const TICK: Duration = Duration::from_millis(200);
/// How many packets the UDP loop takes from one side before it looks at
/// the other, so that neither direction starves the other under load.
const BURST: usize = 64;
/// The largest datagram or packet we handle.
const MAX_PACKET: usize = 65535;
/// Room for what a core adds around an inner packet (headers, tag,
/// padding).
const MAX_OVERHEAD: usize = 128;

// ANCHOR: core
/// The sans-IO core the I/O shell drives: step 02's [`Tunnel`], or a later
/// step's (step 04 encrypts, and has many peers). The shell moves bytes;
/// the core decides what they mean.
pub trait Core: Send + 'static {
    /// Why the core dropped a packet or message.
    type Drop: fmt::Display;

    /// An IP packet read from the TUN device, which the core may change in
    /// place: a message to send, nothing yet (the core keeps the packet
    /// until it can send it), or an answer for the TUN device instead.
    fn encapsulate(
        &mut self,
        packet: &mut [u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Outgoing, Self::Drop>;

    /// A message that arrived from `from` over the underlay.
    fn decapsulate(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, Self::Drop>;

    /// Runs the timers: a message that is due, if any. The shell calls it
    /// until it returns `None`, several times a second.
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit>;

    /// The largest message the core sends or accepts.
    fn max_message(&self) -> usize;

    /// One line (or a few) on the state and the counters, for SIGUSR1.
    fn status(&self) -> String;

    /// A message in one tcpdump-like line, for the logs.
    fn summary(message: &[u8]) -> String;
}

impl Core for Tunnel {
    type Drop = crate::DropReason;

    fn encapsulate(
        &mut self,
        packet: &mut [u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Outgoing, Self::Drop> {
        Tunnel::encapsulate(self, packet, now, out).map(Outgoing::Send)
    }

    fn decapsulate(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, Self::Drop> {
        Tunnel::decapsulate(self, from, message, now, out)
    }

    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        Tunnel::poll(self, now, out)
    }

    fn max_message(&self) -> usize {
        crate::wire::HEADER_LEN + self.mtu().max(self.max_received())
    }

    fn status(&self) -> String {
        let peer = self.peer().map_or("none yet".to_string(), |p| p.to_string());
        format!("peer {peer}; {}", self.counters())
    }

    fn summary(message: &[u8]) -> String {
        MessageSummary(message).to_string()
    }
}
// ANCHOR_END: core

// ANCHOR: hook
/// What becomes of a packet read from the TUN device, as the core decides.
///
/// A later step changes or answers inner packets by wrapping a core in
/// another that implements [`Core`] too: step 03's path policy clamps the
/// TCP MSS, and answers a packet too big for the tunnel with an ICMP error
/// that goes back into the TUN device ([`Outgoing::Answer`]) instead of to
/// the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// Send the message at the start of the output buffer.
    Send(Transmit),
    /// Nothing to send yet: the core keeps the packet (until a handshake
    /// completes, say).
    Held,
    /// Do not send the packet; write the `len`-byte answer at the start of
    /// the output buffer back into the TUN device.
    Answer(usize),
}
// ANCHOR_END: hook

/// What both threads share.
struct Shared<C> {
    core: Mutex<C>,
    device: SyncDevice,
    recorder: Mutex<Option<Recorder>>,
    tun: String,
    /// Drop lines, at most a few a second at the default level.
    drops: DropLog,
}

impl<C: Core> Shared<C> {
    fn core(&self) -> MutexGuard<'_, C> {
        // A panic elsewhere cannot leave the core half-updated: every
        // method finishes its changes before returning.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, packet: &[u8]) {
        let mut recorder = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rec) = recorder.as_mut() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            if let Err(e) = rec.record(now, packet) {
                log::error!("writing the pcap file failed, recording stops: {e}");
                *recorder = None;
            }
        }
    }

    fn write_tun(&self, packet: &[u8]) {
        self.record(packet);
        log::debug!("to {}: {}", self.tun, Summary(packet));
        if let Err(e) = self.device.send(packet) {
            log::warn!("writing to {} failed: {e}", self.tun);
        }
    }
}

impl Config {
    /// The address of the other end's family: the server's, or the one we
    /// listen on.
    pub fn underlay_family_hint(&self) -> SocketAddr {
        match self.endpoint {
            Endpoint::Server { listen } => listen,
            Endpoint::Client { server } => server,
        }
    }
}

// ANCHOR: run
/// Creates the TUN device and runs until SIGINT or SIGTERM; returns the
/// final status line (the peer and the counters).
pub fn run(config: &Config, address: Ipv4Net, shutdown: &Shutdown) -> anyhow::Result<String> {
    let mtu = tun_mtu(config.underlay_mtu, config.underlay_family_hint());
    let device = create_tun(&config.tun, address, mtu)?;
    log::info!("{} is up with {address} (MTU {mtu})", config.tun);
    let tunnel = step02_tunnel(config, usize::from(mtu));
    run_device(device, config, tunnel, shutdown, |tunnel| tunnel.status())
}

/// Step 02's core for `config`, carrying inner packets of at most
/// `tunnel_mtu` bytes.
pub fn step02_tunnel(config: &Config, tunnel_mtu: usize) -> Tunnel {
    let role = match config.endpoint {
        Endpoint::Server { .. } => Role::Server,
        Endpoint::Client { server } => Role::Client { server },
    };
    Tunnel::new(role, tunnel_mtu, config.keepalive)
        .accepting_up_to(usize::from(max_inner(config.underlay_mtu)))
}

/// Runs `core` over an open TUN device until SIGINT or SIGTERM; returns
/// what `report` makes of the core then (its counters, say).
pub fn run_device<C: Core, R>(
    device: SyncDevice,
    config: &Config,
    core: C,
    shutdown: &Shutdown,
    report: impl FnOnce(&C) -> R,
) -> anyhow::Result<R> {
    let recorder = match &config.pcap {
        Some(path) => Some(Recorder::create(path).with_context(|| format!("creating {}", path.display()))?),
        None => None,
    };
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        device,
        recorder: Mutex::new(recorder),
        tun: config.tun.clone(),
        drops: DropLog::new(),
    });
    print_counters_on_sigusr1(&shared)?;
    shared
        .device
        .set_nonblocking(true)
        .with_context(|| format!("making {} non-blocking", config.tun))?;
    match config.transport {
        Transport::Udp => udp_loop(config, &shared, shutdown)?,
        Transport::Tcp => {
            let sender = start_tcp(config, &shared)?;
            tun_loop(config, &shared, shutdown, &sender)?;
        }
    }
    shared.drops.flush(Instant::now() + Duration::from_secs(1));
    let report = report(&shared.core());
    Ok(report)
}
// ANCHOR_END: run

// ANCHOR: from_tun
/// Where a packet read from the TUN device goes on its way, allocated
/// once.
struct Scratch {
    /// The message `encapsulate` makes, or its answer for the TUN device.
    out: Vec<u8>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            out: vec![0u8; MAX_PACKET + MAX_OVERHEAD],
        }
    }
}

/// A packet read from the TUN device: `encapsulate`, then `send` to the
/// peer, or the core's answer back into the TUN device.
fn from_tun<C: Core>(
    shared: &Shared<C>,
    packet: &mut [u8],
    scratch: &mut Scratch,
    send: &impl Fn(&Transmit, &[u8]),
) {
    shared.record(packet);
    let result = shared
        .core()
        .encapsulate(packet, Instant::now(), &mut scratch.out);
    match result {
        Ok(Outgoing::Send(transmit)) => {
            log::debug!("from {}: {}", shared.tun, Summary(packet));
            send(&transmit, &scratch.out[..transmit.len]);
        }
        Ok(Outgoing::Held) => log::debug!("from {} (held): {}", shared.tun, Summary(packet)),
        Ok(Outgoing::Answer(n)) => {
            log::debug!("answered {}: {}", shared.tun, Summary(packet));
            shared.write_tun(&scratch.out[..n]);
        }
        Err(reason) => shared.drops.drop(
            Instant::now(),
            format_args!("drop ({reason}) from {}: {}", shared.tun, Summary(packet)),
        ),
    }
}
// ANCHOR_END: from_tun

// ANCHOR: read_tun
/// The main thread over TCP: TUN device -> encapsulate -> `send`.
fn tun_loop<C: Core>(
    config: &Config,
    shared: &Shared<C>,
    shutdown: &Shutdown,
    send: &impl Fn(&Transmit, &[u8]),
) -> anyhow::Result<()> {
    let mut scratch = Scratch::new();
    let mut packet = vec![0u8; MAX_PACKET];
    // Under load the reads never wait, so the flag is checked here too.
    while !shutdown.requested() {
        let len = match read_tun(&shared.device, &mut packet, shutdown) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading from {}", config.tun)),
        };
        from_tun(shared, &mut packet[..len], &mut scratch, send);
    }
    Ok(())
}

/// Reads the next packet from the non-blocking TUN device. A read returns
/// at once, with a packet or with `WouldBlock`; only then do we wait (poll)
/// for the device to be readable or for the shutdown event. Under load a
/// packet costs one system call instead of two (poll, then read), and the
/// kernel's queue drains as fast as we can take from it.
fn read_tun(device: &SyncDevice, buf: &mut [u8], shutdown: &Shutdown) -> io::Result<usize> {
    loop {
        match device.recv(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => device.wait_readable_intr(shutdown.event())?,
            other => return other,
        }
    }
}
// ANCHOR_END: read_tun

/// Resolves `HOST:PORT` (a name, an IPv4 address, or `[IPv6]:PORT`) to
/// its first address.
pub fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    server
        .to_socket_addrs()
        .with_context(|| format!("`{server}` is not a HOST:PORT"))?
        .next()
        .with_context(|| format!("`{server}` has no address"))
}

fn print_counters_on_sigusr1<C: Core>(shared: &Arc<Shared<C>>) -> anyhow::Result<()> {
    let mut signals =
        signal_hook::iterator::Signals::new([SIGUSR1]).context("installing the SIGUSR1 handler")?;
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("sigusr1".into())
        .spawn(move || {
            for _ in signals.forever() {
                let status = shared.core().status();
                for line in status.lines() {
                    log::info!("{}: {line}", shared.tun);
                }
            }
        })?;
    Ok(())
}

/// Handles what `decapsulate` made of a message from `from`; `reply` sends
/// a reply back the way the message came. True when the message was
/// accepted.
fn act<C: Core>(
    shared: &Shared<C>,
    from: SocketAddr,
    message: &[u8],
    out: &mut [u8],
    reply: impl FnOnce(&[u8]),
) -> bool {
    let result = shared.core().decapsulate(from, message, Instant::now(), out);
    match result {
        Ok(Action::WriteToTun(len)) => shared.write_tun(&out[..len]),
        Ok(Action::Reply(t)) => reply(&out[..t.len]),
        Ok(Action::Nothing) => {}
        Err(reason) => {
            shared.drops.drop(
                Instant::now(),
                format_args!("drop ({reason}) from {from}: {}", C::summary(message)),
            );
            return false;
        }
    }
    true
}

/// Sends what the core's timers say is due, through `send`.
fn poll_all<C: Core>(shared: &Shared<C>, out: &mut [u8], send: impl Fn(&Transmit, &[u8])) {
    shared.drops.flush(Instant::now());
    loop {
        let due = shared.core().poll(Instant::now(), out);
        let Some(t) = due else { break };
        log::debug!("timer: to {}: {}", t.to, C::summary(&out[..t.len]));
        send(&t, &out[..t.len]);
    }
}

// ANCHOR: receive_buffer
/// How many bytes of datagrams the UDP socket may hold while the network
/// thread is busy: about 2000 full-size datagrams.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Gives the UDP socket a receive buffer of [`RECEIVE_BUFFER`] bytes. The
/// default, 208 KiB (`net.core.rmem_default`), holds about 90 datagrams of
/// a bulk transfer: when decryption falls behind for a moment, the kernel
/// drops the rest (`UdpRcvbufErrors` in `nstat`), and every drop is a TCP
/// loss inside the tunnel, which halves the sender's rate. `SO_RCVBUFFORCE`
/// may exceed `net.core.rmem_max`; it needs CAP_NET_ADMIN, which creating
/// the TUN device needed too. Without it, `SO_RCVBUF` gets what the limit
/// allows.
pub fn enlarge_receive_buffer(socket: &UdpSocket) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &RECEIVE_BUFFER);
    }
    // The kernel reports twice what was asked: half is for its own
    // bookkeeping.
    match getsockopt(socket, sockopt::RcvBuf) {
        Ok(size) => log::info!("UDP receive buffer: {} KiB", size / 2 / 1024),
        Err(e) => log::warn!("reading the UDP receive buffer size failed: {e}"),
    }
}
// ANCHOR_END: receive_buffer

// ANCHOR: udp
/// UDP: one socket, every message one datagram, and one thread for both
/// directions. It sleeps in `poll(2)` until the TUN device or the socket is
/// readable (or a [`TICK`] passes), then takes up to [`BURST`] packets from
/// each without waiting, and runs the timers.
///
/// One thread is faster here than one per direction. When the peer's ping
/// arrives, writing it to the TUN device makes the kernel answer at once,
/// and the answer is waiting in the device when the loop looks there next:
/// no other thread has to be woken for it, which on a virtual machine costs
/// tens of microseconds. And the core's mutex is never contended.
fn udp_loop<C: Core>(config: &Config, shared: &Shared<C>, shutdown: &Shutdown) -> anyhow::Result<()> {
    let bind: SocketAddr = match config.endpoint {
        Endpoint::Server { listen } => listen,
        // Any local port, of the server's family.
        Endpoint::Client { server } if server.is_ipv4() => "0.0.0.0:0".parse()?,
        Endpoint::Client { .. } => "[::]:0".parse()?,
    };
    let underlay = match config.endpoint {
        Endpoint::Server { .. } => UdpUnderlay::listen(bind),
        Endpoint::Client { .. } => UdpUnderlay::bind(bind),
    }
    .with_context(|| format!("binding UDP socket to {bind}"))?;
    let socket = underlay.socket();
    enlarge_receive_buffer(socket);
    socket.set_nonblocking(true)?;
    log::info!("UDP socket on {}", socket.local_addr()?);
    let send = |t: &Transmit, message: &[u8]| send_datagram(&underlay, message, t.to, None);
    let mut scratch = Scratch::new();
    let mut packet = vec![0u8; MAX_PACKET];
    let mut datagram = vec![0u8; MAX_PACKET];
    let mut out = vec![0u8; MAX_PACKET];
    while !shutdown.requested() {
        wait_readable(&shared.device, socket)?;
        for _ in 0..BURST {
            match shared.device.recv(&mut packet) {
                Ok(len) => from_tun(shared, &mut packet[..len], &mut scratch, &send),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("reading from {}", config.tun)),
            }
        }
        for _ in 0..BURST {
            match underlay.recv(&mut datagram) {
                Ok(got) => {
                    // A reply goes from the address the datagram went to;
                    // so does all we send to a peer once it is accepted.
                    let accepted = act(shared, got.from, &datagram[..got.len], &mut out, |reply| {
                        send_datagram(&underlay, reply, got.from, got.local)
                    });
                    if accepted {
                        underlay.remember(&got);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error for an earlier datagram (the peer's port
                // was closed, say) is reported once, by this read.
                Err(e) => {
                    log::warn!("receiving on the UDP socket failed: {e}");
                    break;
                }
            }
        }
        poll_all(shared, &mut out, send);
    }
    Ok(())
}

/// Waits until the TUN device or `socket` is readable, for one [`TICK`] at
/// most. A signal ends the wait early; the caller looks at the shutdown
/// flag.
fn wait_readable(device: &SyncDevice, socket: &UdpSocket) -> anyhow::Result<()> {
    let mut fds = [
        PollFd::new(device.as_fd(), PollFlags::POLLIN),
        PollFd::new(socket.as_fd(), PollFlags::POLLIN),
    ];
    let timeout = PollTimeout::try_from(TICK).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e).context("waiting for the TUN device and the socket"),
    }
}

/// Sends one datagram, from our address `local` if given, else from the
/// address `to` last wrote to ([`UdpUnderlay`]); see [`send_waiting`].
fn send_datagram(underlay: &UdpUnderlay, message: &[u8], to: SocketAddr, local: Option<IpAddr>) {
    send_waiting(underlay.socket(), to, || match local {
        Some(_) => underlay.send_from(message, to, local),
        None => underlay.send(message, to),
    });
}

/// Sends one datagram to `to` with `send`, on `socket`. The socket does
/// not block, so when its send buffer is full the datagram waits (for one
/// [`TICK`] at most) until there is room, as a blocking send would; only
/// then is it dropped. Step 07 sends on its own sockets through it.
pub fn send_waiting(socket: &UdpSocket, to: SocketAddr, send: impl Fn() -> io::Result<usize>) {
    let mut result = send();
    if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
        let _ = poll(&mut fds, PollTimeout::try_from(TICK).unwrap_or(PollTimeout::MAX));
        result = send();
    }
    if let Err(e) = result {
        log::warn!("sending to {to} failed: {e}");
    }
}
// ANCHOR_END: udp

/// The TCP connection in use, if any, and a buffer to build frames in.
struct Conn {
    stream: TcpStream,
    frame: Vec<u8>,
}

/// The connection the main thread writes to.
type Current = Arc<Mutex<Option<Conn>>>;

fn write_frame(current: &Current, message: &[u8]) {
    let mut guard = current.lock().unwrap_or_else(|e| e.into_inner());
    let Some(conn) = guard.as_mut() else {
        log::info!("drop (no TCP connection yet): a message for the peer");
        return;
    };
    let Some(prefix) = framing::prefix(message.len()) else {
        return;
    };
    // Prefix and message in one write, so they leave in one segment.
    conn.frame.clear();
    conn.frame.extend_from_slice(&prefix);
    conn.frame.extend_from_slice(message);
    if let Err(e) = conn.stream.write_all(&conn.frame) {
        log::warn!("writing to the TCP connection failed ({e}); closing it");
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        *guard = None;
    }
}

// ANCHOR: tcp
/// TCP: one connection at a time, messages in length-prefixed frames. The
/// server takes the newest connection; the client connects, and reconnects
/// a second after losing the connection.
fn start_tcp<C: Core>(
    config: &Config,
    shared: &Arc<Shared<C>>,
) -> anyhow::Result<impl Fn(&Transmit, &[u8]) + use<C>> {
    let current: Current = Arc::new(Mutex::new(None));
    let max_message = shared.core().max_message();
    match config.endpoint {
        Endpoint::Server { listen } => {
            let listener = TcpListener::bind(listen).with_context(|| format!("listening on TCP {listen}"))?;
            log::info!("TCP listening on {}", listener.local_addr()?);
            let (current, shared) = (Arc::clone(&current), Arc::clone(shared));
            std::thread::Builder::new()
                .name("tcp-accept".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        match stream {
                            Ok(stream) => {
                                let (current, shared) = (Arc::clone(&current), Arc::clone(&shared));
                                let _ = std::thread::Builder::new()
                                    .name("tcp-conn".into())
                                    .spawn(move || serve_connection(stream, &current, &shared, max_message));
                            }
                            Err(e) => log::warn!("accepting a TCP connection failed: {e}"),
                        }
                    }
                })?;
        }
        Endpoint::Client { server } => {
            let (current, shared) = (Arc::clone(&current), Arc::clone(shared));
            std::thread::Builder::new()
                .name("tcp-connect".into())
                .spawn(move || {
                    loop {
                        match TcpStream::connect_timeout(&server, Duration::from_secs(3)) {
                            Ok(stream) => serve_connection(stream, &current, &shared, max_message),
                            Err(e) => log::info!("connecting to {server} failed ({e}); retrying in 1 s"),
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                })?;
        }
    }
    Ok(move |_: &Transmit, message: &[u8]| write_frame(&current, message))
}

/// Reads frames from one connection until it ends, making it the current
/// one for writing meanwhile.
fn serve_connection<C: Core>(stream: TcpStream, current: &Current, shared: &Shared<C>, max_message: usize) {
    let Ok(peer) = stream.peer_addr() else { return };
    log::info!("TCP connection with {peer}");
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(TICK));
    match stream.try_clone() {
        Ok(writer) => {
            let frame = Vec::with_capacity(framing::PREFIX_LEN + max_message);
            *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Conn {
                stream: writer,
                frame,
            });
        }
        Err(e) => {
            log::warn!("cannot use the connection with {peer}: {e}");
            return;
        }
    }
    let mut reader = FrameReader::new(max_message).with_min(crate::wire::HEADER_LEN);
    let mut stream = stream;
    let mut message = vec![0u8; max_message];
    let mut out = vec![0u8; MAX_PACKET];
    let end = loop {
        match stream.read(reader.space()) {
            Ok(0) => break reader.finish().err().map(|e| e.to_string()),
            Ok(n) => reader.filled(n),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => break Some(e.to_string()),
        }
        let mut failed = None;
        loop {
            match reader.next_frame(&mut message) {
                Ok(Some(len)) => {
                    act(shared, peer, &message[..len], &mut out, |reply| {
                        write_frame(current, reply)
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if failed.is_some() {
            break failed;
        }
        poll_all(shared, &mut out, |_, message| write_frame(current, message));
    };
    match end {
        None => log::info!("TCP connection with {peer} closed"),
        Some(why) => log::info!("TCP connection with {peer} closed: {why}"),
    }
    let mut guard = current.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().and_then(|c| c.stream.peer_addr().ok()) == Some(peer) {
        *guard = None;
    }
}
// ANCHOR_END: tcp
