//! The I/O shell around [`SecureChannel`] and [`Mux`]: one control
//! connection on a blocking `TcpStream`, driven by plain threads.
//!
//! - A *reader* thread reads TCP, opens records, and hands stream frames
//!   to the mux and session frames (Hello, Expose, ...) to the end's own
//!   logic.
//! - A *writer* thread takes frames from the mux, seals them and writes
//!   them to TCP.
//! - Each visitor stream has two *pump* threads: socket to mux and mux to
//!   socket. A pump blocks only on its own socket, or waits on its own
//!   stream's condition variable for data or credit, so a slow visitor
//!   holds up nobody else (the mux's per-stream windows see to the rest).
//!   A UDP flow has the same two pumps, with a datagram socket and
//!   [`crate::datagram`]'s framing in between.
//! - A *timer* thread runs the [`Keepalive`]: a Ping after 15 s of
//!   silence from the peer, the end after 45 s. It kills the connection
//!   by shutting the socket down, which also frees a writer blocked on a
//!   peer that stopped reading.
//!
//! Everything shared sits behind one mutex: the mux, the channel, and
//! the bookkeeping. Sealing happens under it; for a teaching shell one
//! lock is worth more than the last bit of parallelism.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::datagram::{self, Decoder};
use crate::keepalive::{self, Keepalive};
use crate::mux::{Mux, StreamError};
use crate::secure::{Event, SecureChannel};
use crate::wire::{ErrorCode, Frame, MAX_DATA, Proto, Protos, Repr};

/// How long a server has to answer a client's handshake, and a client
/// to answer its Expose.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Session frames waiting for the end's logic; a peer that sends more
/// breaks the protocol.
const SESSION_QUEUE_LIMIT: usize = 16;
/// Bytes the writer seals before it writes them in one go.
const WRITE_BATCH: usize = 64 * 1024;

/// A session frame, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionFrame {
    Hello { version: u16 },
    Expose { port: u16, protos: Protos },
    Exposed { port: u16 },
    Error { code: ErrorCode, text: String },
}

/// The peer closed the connection in the handshake: on a client, the
/// server's way of saying no (it cannot send a sealed error before the
/// keys exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedDuringHandshake;

impl std::fmt::Display for ClosedDuringHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed during the handshake")
    }
}

impl std::error::Error for ClosedDuringHandshake {}

/// What a handshake record brought (see [`Event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Server: an initiation, with its ephemeral key.
    Initiation { ephemeral: [u8; 32] },
    /// Client: the server's response; the channel is open.
    Established { peer: [u8; 32] },
}

/// Reads from `tcp` until `channel` has the next handshake event, or
/// `deadline` passes.
pub fn next_handshake_event(
    tcp: &mut TcpStream,
    channel: &mut SecureChannel,
    deadline: Instant,
) -> anyhow::Result<Handshake> {
    let mut buf = [0u8; 512];
    loop {
        match channel.poll()? {
            Some(Event::Initiation { ephemeral }) => return Ok(Handshake::Initiation { ephemeral }),
            Some(Event::Established { peer }) => return Ok(Handshake::Established { peer }),
            Some(Event::Frame(_)) => bail!("a frame before the handshake"),
            None => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no handshake in time");
        }
        tcp.set_read_timeout(Some(left))?;
        let n = match tcp.read(&mut buf) {
            Ok(0) => return Err(ClosedDuringHandshake.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(ClosedDuringHandshake.into());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("no handshake in time")
            }
            Err(e) => return Err(anyhow::Error::new(e).context("reading the handshake")),
        };
        channel.push(&buf[..n])?;
    }
}

/// A client's handshake on a fresh connection: writes `first` (its
/// initiation), then reads until the channel is established. Returns the
/// server's public key.
pub fn handshake(tcp: &mut TcpStream, channel: &mut SecureChannel, first: &[u8]) -> anyhow::Result<[u8; 32]> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    tcp.write_all(first).context("sending the handshake")?;
    match next_handshake_event(tcp, channel, deadline)? {
        Handshake::Established { peer } => {
            tcp.set_read_timeout(None)?;
            Ok(peer)
        }
        Handshake::Initiation { .. } => bail!("an initiation from the server"),
    }
}

/// What a stream holds on to while it lives (the server's share of its
/// budget for a visitor); dropped when the stream's pumps are done.
pub trait Lease: Send {
    /// The stream was reset for having been idle.
    fn idle(&mut self) {}
}

impl Lease for () {}

/// One TCP stream's socket, its pumps, and what it holds.
struct Spliced {
    socket: TcpStream,
    /// Pumps still running (of two).
    pumps: u8,
    /// When a byte last moved either way.
    active: Instant,
    /// Reset for being idle; its pumps are on their way out.
    reaped: bool,
    lease: Box<dyn Lease>,
}

struct Inner {
    mux: Mux,
    channel: SecureChannel,
    /// Why the connection ended, once it has.
    dead: Option<String>,
    /// Close once what is queued has been written, for this reason.
    closing: Option<String>,
    /// One condition variable per stream, for its two pumps.
    wakers: HashMap<u32, Arc<Condvar>>,
    /// The visitor (or local service) socket of each stream, to shut
    /// down when the connection dies or the stream is idle too long.
    sockets: HashMap<u32, Spliced>,
    /// Streams with no byte moving for this long are reset.
    idle_timeout: Option<Duration>,
    session: VecDeque<SessionFrame>,
    keepalive: Keepalive,
}

impl Inner {
    /// A byte of stream `id` moved.
    fn touch(&mut self, id: u32) {
        if let Some(s) = self.sockets.get_mut(&id) {
            s.active = s.active.max(Instant::now());
        }
    }
}

/// What to do with a stream the peer opened: a TCP visitor or a UDP flow.
pub type OnOpen = Arc<dyn Fn(Arc<Conn>, u32, Proto) + Send + Sync>;

/// A stream that is gone: reset, ended, or the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamGone;

/// One established control connection.
pub struct Conn {
    inner: Mutex<Inner>,
    /// The writer waits here for frames to send.
    tx: Condvar,
    /// The end's logic waits here for session frames and the end.
    session_cv: Condvar,
    /// The timer thread sleeps here until the next keepalive deadline.
    timer_cv: Condvar,
    tcp: TcpStream,
    /// Datagrams from the local service the client dropped because their
    /// flow's stream had no room (see [`Conn::send_whole`]).
    pub datagrams_dropped: AtomicU64,
}

impl Conn {
    /// Starts the reader and writer threads of an established connection.
    /// `idle_timeout`: reset a TCP stream once no byte has moved either
    /// way for this long (the server's visitors); `None`: never.
    pub fn start(
        tcp: TcpStream,
        mux: Mux,
        channel: SecureChannel,
        keepalive: keepalive::Config,
        idle_timeout: Option<Duration>,
        on_open: OnOpen,
    ) -> anyhow::Result<Arc<Conn>> {
        let conn = Arc::new(Conn {
            inner: Mutex::new(Inner {
                mux,
                channel,
                dead: None,
                closing: None,
                wakers: HashMap::new(),
                sockets: HashMap::new(),
                idle_timeout,
                session: VecDeque::new(),
                keepalive: Keepalive::new(keepalive, Instant::now()),
            }),
            tx: Condvar::new(),
            session_cv: Condvar::new(),
            timer_cv: Condvar::new(),
            tcp: tcp.try_clone()?,
            datagrams_dropped: AtomicU64::new(0),
        });
        let reader = conn.clone();
        let read_tcp = tcp.try_clone()?;
        thread::Builder::new()
            .name("control-reader".into())
            .spawn(move || {
                let why = reader.read_loop(read_tcp, &on_open);
                reader.kill(&why);
            })?;
        let writer = conn.clone();
        thread::Builder::new()
            .name("control-writer".into())
            .spawn(move || {
                if let Err(why) = writer.write_loop(tcp) {
                    writer.kill(&why);
                }
            })?;
        let timer = conn.clone();
        thread::Builder::new()
            .name("control-timer".into())
            .spawn(move || timer.timer_loop())?;
        Ok(conn)
    }

    // ANCHOR: timer_loop
    /// Runs the keepalive until the connection ends.
    fn timer_loop(&self) {
        let mut g = self.lock();
        loop {
            if g.dead.is_some() {
                return;
            }
            let now = Instant::now();
            match g.keepalive.poll(now) {
                keepalive::Action::Dead(silent) => {
                    drop(g);
                    return self.kill(&format!("nothing from the peer for {silent:.1?}"));
                }
                keepalive::Action::Ping(opaque) => {
                    log::debug!("peer silent: ping {opaque:#x}");
                    if g.mux.send_control(&Repr::Ping { opaque }).is_err() {
                        drop(g);
                        return self.kill("peer does not read");
                    }
                    self.tx.notify_one();
                }
                keepalive::Action::Nothing => {}
            }
            let mut next = g.keepalive.next_deadline();
            if let Some(idle) = g.idle_timeout {
                let reaped = self.reap_idle(&mut g, now, idle);
                if reaped {
                    self.tx.notify_one();
                }
                if let Some(oldest) = g.sockets.values().filter(|s| !s.reaped).map(|s| s.active).min() {
                    next = next.min(oldest + idle);
                }
            }
            let wait = next.saturating_duration_since(now);
            g = self
                .timer_cv
                .wait_timeout(g, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
    // ANCHOR_END: timer_loop

    /// Resets every TCP stream idle for `idle` or longer and shuts its
    /// socket down, so that its pumps end and what it holds is let go: a
    /// visitor that neither sends nor reads (with its socket's buffers
    /// full) holds nothing for ever. Returns whether any was.
    fn reap_idle(&self, g: &mut Inner, now: Instant, idle: Duration) -> bool {
        let expired: Vec<u32> = g
            .sockets
            .iter()
            .filter(|(_, s)| !s.reaped && now.saturating_duration_since(s.active) >= idle)
            .map(|(&id, _)| id)
            .collect();
        for &id in &expired {
            log::debug!("stream #{id}: nothing moved for {idle:?}: reset");
            g.mux.reset(id);
            if let Some(s) = g.sockets.get_mut(&id) {
                let _ = s.socket.shutdown(Shutdown::Both);
                s.reaped = true;
                s.lease.idle();
            }
            if let Some(w) = g.wakers.get(&id) {
                w.notify_all();
            }
        }
        !expired.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in another thread of this connection poisons the lock;
        // the data is still consistent enough to shut down.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the connection (once): every waiting thread wakes up and
    /// sees it.
    pub fn kill(&self, why: &str) {
        let mut g = self.lock();
        if g.dead.is_some() {
            return;
        }
        log::info!("control connection closed: {why}");
        g.dead = Some(why.to_string());
        for s in g.sockets.values() {
            let _ = s.socket.shutdown(Shutdown::Both);
        }
        for w in g.wakers.values() {
            w.notify_all();
        }
        drop(g);
        let _ = self.tcp.shutdown(Shutdown::Both);
        self.tx.notify_all();
        self.session_cv.notify_all();
        self.timer_cv.notify_all();
    }

    /// Why the connection ended, if it has.
    pub fn dead(&self) -> Option<String> {
        self.lock().dead.clone()
    }

    /// Closes the connection once the frames queued so far (an Error
    /// frame saying why, say) have been written.
    pub fn close_after_flush(&self, why: &str) {
        self.lock().closing = Some(why.to_string());
        self.tx.notify_all();
    }

    /// Sends a session frame.
    pub fn send(&self, repr: &Repr<'_>) -> anyhow::Result<()> {
        let mut g = self.lock();
        g.mux.send_control(repr)?;
        drop(g);
        self.tx.notify_one();
        Ok(())
    }

    /// The next session frame, waiting up to `timeout`; `None` on timeout
    /// or when the connection ended.
    pub fn next_session_frame(&self, timeout: Duration) -> Option<SessionFrame> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if let Some(f) = g.session.pop_front() {
                return Some(f);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if g.dead.is_some() || left.is_zero() {
                return None;
            }
            g = self
                .session_cv
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until the connection ends, or `timeout`; returns why it
    /// ended.
    pub fn wait_dead(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if g.dead.is_some() || left.is_zero() {
                return g.dead.clone();
            }
            g = self
                .session_cv
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    // ANCHOR: read_loop
    /// Reads records until the connection fails; returns why.
    fn read_loop(self: &Arc<Self>, mut tcp: TcpStream, on_open: &OnOpen) -> String {
        let mut buf = vec![0u8; MAX_DATA];
        loop {
            let n = match tcp.read(&mut buf) {
                Ok(0) => {
                    let cut = self.lock().channel.has_partial();
                    return if cut {
                        "closed mid-record"
                    } else {
                        "closed by peer"
                    }
                    .into();
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return format!("reading: {e}"),
            };
            let mut opened = Vec::new();
            let mut g = self.lock();
            if g.dead.is_some() {
                return "closed".into();
            }
            let inner = &mut *g;
            if let Err(e) = inner.channel.push(&buf[..n]) {
                return e.to_string();
            }
            // Any bytes count as a sign of life (a record too big for one
            // read arrives in pieces, over a slow path perhaps).
            inner.keepalive.on_receive(Instant::now());
            loop {
                let frame = match inner.channel.poll() {
                    Ok(None) => break,
                    Ok(Some(Event::Frame(f))) => f,
                    Ok(Some(Event::Established { .. } | Event::Initiation { .. })) => {
                        return "handshake again".into();
                    }
                    Err(e) => return e.to_string(),
                };
                let repr = match Repr::parse_bytes(frame) {
                    Ok(r) => r,
                    Err(e) => return format!("bad frame: {e}"),
                };
                log::trace!("<- {repr}");
                let session = match repr {
                    Repr::Hello { version } => SessionFrame::Hello { version },
                    Repr::Expose { port, protos } => SessionFrame::Expose { port, protos },
                    Repr::Exposed { port } => SessionFrame::Exposed { port },
                    Repr::Error { code, text } => SessionFrame::Error {
                        code,
                        text: text.to_string(),
                    },
                    Repr::Ping { opaque } => {
                        if let Err(e) = inner.mux.send_control(&Repr::Pong { opaque }) {
                            return e.to_string();
                        }
                        continue;
                    }
                    Repr::Pong { .. } => continue,
                    _ => {
                        if let Err(e) = inner.mux.handle(&repr) {
                            return e.to_string();
                        }
                        let stream = Frame::new_checked(frame).map_or(0, |f| f.stream());
                        if let Some(w) = inner.wakers.get(&stream) {
                            w.notify_all();
                        }
                        while let Some(opened_stream) = inner.mux.accept() {
                            opened.push(opened_stream);
                        }
                        continue;
                    }
                };
                if inner.session.len() >= SESSION_QUEUE_LIMIT {
                    return "too many session frames".into();
                }
                inner.session.push_back(session);
                self.session_cv.notify_all();
            }
            for &(id, _) in &opened {
                inner.wakers.insert(id, Arc::new(Condvar::new()));
            }
            drop(g);
            // Frames handled may have made some to send (credit, resets).
            self.tx.notify_one();
            for (id, proto) in opened {
                on_open(self.clone(), id, proto);
            }
        }
    }
    // ANCHOR_END: read_loop

    /// Seals and writes frames until the connection fails.
    fn write_loop(&self, mut tcp: TcpStream) -> Result<(), String> {
        let mut frame = Vec::new();
        loop {
            let mut out = Vec::new();
            let mut g = self.lock();
            loop {
                if g.dead.is_some() {
                    return Ok(());
                }
                let inner = &mut *g;
                while out.len() < WRITE_BATCH && inner.mux.poll_transmit(&mut frame) {
                    if let Ok(f) = Frame::new_checked(&frame[..]) {
                        // Data left: its stream has room again.
                        if let Some(w) = inner.wakers.get(&f.stream()) {
                            w.notify_all();
                        }
                    }
                    inner.channel.seal(&frame, &mut out).map_err(|e| e.to_string())?;
                    frame.clear();
                }
                if !out.is_empty() {
                    break;
                }
                if let Some(why) = g.closing.take() {
                    drop(g);
                    self.kill(&why);
                    return Ok(());
                }
                g = self.tx.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            drop(g);
            tcp.write_all(&out).map_err(|e| format!("writing: {e}"))?;
        }
    }

    /// Opens a stream to the peer for `sock` and starts its pumps; the
    /// stream holds `lease` until they are done.
    pub fn open_stream(self: &Arc<Self>, sock: TcpStream, lease: Box<dyn Lease>) -> anyhow::Result<u32> {
        let mut g = self.lock();
        if let Some(why) = &g.dead {
            bail!("control connection closed: {why}");
        }
        let id = g.mux.open(Proto::Tcp)?;
        g.wakers.insert(id, Arc::new(Condvar::new()));
        drop(g);
        // Send the Open now: the visitor may be waiting for the service to
        // speak first (SSH, SMTP), so no data may come to carry it.
        self.tx.notify_one();
        self.splice(id, sock, lease);
        Ok(id)
    }

    /// Resets a stream the peer opened that we cannot serve.
    pub fn refuse(&self, id: u32) {
        let mut g = self.lock();
        g.mux.reset(id);
        if g.sockets.contains_key(&id) {
            // Its other pump wakes up and finds the stream gone.
            if let Some(w) = g.wakers.get(&id) {
                w.notify_all();
            }
        } else {
            g.wakers.remove(&id);
        }
        drop(g);
        self.tx.notify_one();
    }

    // ANCHOR: splice
    /// Starts the two pumps between stream `id` and `sock`; the stream
    /// holds `lease` until both are done.
    pub fn splice(self: &Arc<Self>, id: u32, sock: TcpStream, lease: Box<dyn Lease>) {
        let clones = (sock.try_clone(), sock.try_clone());
        let (Ok(reading), Ok(kept)) = clones else {
            self.refuse(id);
            return;
        };
        {
            let mut g = self.lock();
            if g.dead.is_some() {
                let _ = sock.shutdown(Shutdown::Both);
                return;
            }
            g.sockets.insert(
                id,
                Spliced {
                    socket: kept,
                    pumps: 2,
                    active: Instant::now(),
                    reaped: false,
                    lease,
                },
            );
        }
        // Its idle deadline may come before the timer's next one.
        self.timer_cv.notify_all();
        let up = self.clone();
        let down = self.clone();
        let spawned = thread::Builder::new()
            .name(format!("stream-{id}-up"))
            .spawn(move || up.socket_to_stream(id, reading))
            .and_then(|_| {
                thread::Builder::new()
                    .name(format!("stream-{id}-down"))
                    .spawn(move || down.stream_to_socket(id, sock))
            });
        if spawned.is_err() {
            self.refuse(id);
        }
    }

    /// Socket to mux: read what the visitor sends, write it into the
    /// stream as credit allows; the socket's EOF becomes our Close.
    fn socket_to_stream(&self, id: u32, mut sock: TcpStream) {
        let mut buf = vec![0u8; MAX_DATA];
        loop {
            let n = match sock.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.refuse(id);
                    return self.forget(id);
                }
            };
            let mut g = self.lock();
            g.touch(id);
            if n == 0 {
                g.mux.close(id);
                drop(g);
                self.tx.notify_one();
                return self.forget(id);
            }
            let mut off = 0;
            while off < n {
                if g.dead.is_some() {
                    return;
                }
                match g.mux.write(id, &buf[off..n]) {
                    Ok(k) => {
                        off += k;
                        self.tx.notify_one();
                    }
                    Err(StreamError::WouldBlock) => {
                        let Some(w) = g.wakers.get(&id).cloned() else {
                            return;
                        };
                        g = w.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                    Err(StreamError::Reset | StreamError::Closed) => {
                        let _ = sock.shutdown(Shutdown::Both);
                        drop(g);
                        return self.forget(id);
                    }
                }
            }
        }
    }

    /// Mux to socket: write what arrives on the stream to the visitor;
    /// the peer's Close becomes our socket's FIN.
    fn stream_to_socket(&self, id: u32, mut sock: TcpStream) {
        let mut buf = vec![0u8; MAX_DATA];
        let mut wrote = false;
        loop {
            let mut g = self.lock();
            if wrote {
                g.touch(id);
            }
            let n = loop {
                if g.dead.is_some() {
                    return;
                }
                match g.mux.read(id, &mut buf) {
                    Ok(n) => break n,
                    Err(StreamError::WouldBlock) => {
                        let Some(w) = g.wakers.get(&id).cloned() else {
                            return;
                        };
                        g = w.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                    Err(StreamError::Reset | StreamError::Closed) => {
                        let _ = sock.shutdown(Shutdown::Both);
                        drop(g);
                        return self.forget(id);
                    }
                }
            };
            drop(g);
            // Reading may have made credit to grant.
            self.tx.notify_one();
            if n == 0 {
                let _ = sock.shutdown(Shutdown::Write);
                return self.forget(id);
            }
            if sock.write_all(&buf[..n]).is_err() {
                self.refuse(id);
                return self.forget(id);
            }
            wrote = true;
        }
    }
    // ANCHOR_END: splice

    /// One pump is done; after both, the stream's socket and waker go
    /// (the mux forgets the stream itself once both Closes crossed).
    fn forget(&self, id: u32) {
        let mut g = self.lock();
        let done = match g.sockets.get_mut(&id) {
            Some(s) => {
                s.pumps -= 1;
                s.pumps == 0
            }
            None => false,
        };
        if done {
            g.sockets.remove(&id);
            g.wakers.remove(&id);
        }
    }

    /// Streams open now.
    pub fn stream_count(&self) -> usize {
        self.lock().mux.stream_count()
    }

    /// Bytes buffered now in all streams, both ways.
    pub fn buffered(&self) -> usize {
        self.lock().mux.buffered_total()
    }

    // ANCHOR: udp
    /// Opens a stream for a UDP flow (the server, for a new visitor
    /// address).
    pub fn open_flow(&self) -> anyhow::Result<u32> {
        let mut g = self.lock();
        if let Some(why) = &g.dead {
            bail!("control connection closed: {why}");
        }
        let id = g.mux.open(Proto::Udp)?;
        g.wakers.insert(id, Arc::new(Condvar::new()));
        Ok(id)
    }

    /// Writes `bytes` (one framed datagram) into stream `id` whole, or not
    /// at all: `Ok(false)` when the stream has no room (the caller counts
    /// the drop). A
    /// datagram is never waited for: UDP may lose it, and waiting would
    /// hold up the other flows read from the same socket.
    pub fn send_whole(&self, id: u32, bytes: &[u8]) -> Result<bool, StreamGone> {
        let mut g = self.lock();
        if g.dead.is_some() {
            return Err(StreamGone);
        }
        let room = g.mux.send_capacity(id).ok_or(StreamGone)?;
        if room < bytes.len() {
            return Ok(false);
        }
        g.mux.write(id, bytes).map_err(|_| StreamGone)?;
        drop(g);
        self.tx.notify_one();
        Ok(true)
    }

    /// Whether stream `id` can still be written to.
    pub fn is_open(&self, id: u32) -> bool {
        let g = self.lock();
        g.dead.is_none() && g.mux.send_capacity(id).is_some()
    }

    /// Reads stream `id` and cuts it into datagrams for `send`, until the
    /// stream ends, is reset or the connection dies. Returns how many
    /// datagrams were too long for `max` and skipped.
    pub fn pump_datagrams(&self, id: u32, max: usize, mut send: impl FnMut(&[u8])) -> u64 {
        let mut decoder = Decoder::new(max);
        loop {
            let mut g = self.lock();
            let n = loop {
                if g.dead.is_some() {
                    return decoder.too_long();
                }
                // Straight into the decoder's buffer, which has room for
                // a whole datagram once the whole ones are taken.
                let space = decoder.space();
                if space.is_empty() {
                    return decoder.too_long();
                }
                match g.mux.read(id, space) {
                    Ok(n) => break n,
                    Err(StreamError::WouldBlock) => {
                        let Some(w) = g.wakers.get(&id).cloned() else {
                            return decoder.too_long();
                        };
                        g = w.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                    Err(StreamError::Reset | StreamError::Closed) => return decoder.too_long(),
                }
            };
            drop(g);
            self.tx.notify_one();
            if n == 0 {
                return decoder.too_long();
            }
            decoder.filled(n);
            while let Some(d) = decoder.next_datagram() {
                send(d);
            }
        }
    }

    /// Ends a UDP flow's stream (idle, or its socket failed): resets it,
    /// wakes its pump, and forgets its waker.
    pub fn release(&self, id: u32) {
        let mut g = self.lock();
        g.mux.reset(id);
        if let Some(w) = g.wakers.remove(&id) {
            w.notify_all();
        }
        drop(g);
        self.tx.notify_one();
    }

    /// The client's end of a UDP flow the server opened: a socket
    /// connected to the local service, and two pumps. The flow ends when
    /// the server resets it (its idle timeout) or the connection ends.
    pub fn splice_udp(self: &Arc<Self>, id: u32, sock: UdpSocket) {
        let up_sock = sock.try_clone();
        let Ok(up_sock) = up_sock.and_then(|u| u.set_read_timeout(Some(UDP_POLL)).map(|()| u)) else {
            return self.release(id);
        };
        let up = self.clone();
        let down = self.clone();
        let spawned = thread::Builder::new()
            .name(format!("flow-{id}-up"))
            .spawn(move || up.udp_to_stream(id, up_sock))
            .and_then(|_| {
                thread::Builder::new()
                    .name(format!("flow-{id}-down"))
                    .spawn(move || {
                        down.pump_datagrams(id, datagram::MAX_DATAGRAM, |d| {
                            // A refused send (nobody listens locally yet) loses
                            // the datagram, as UDP would.
                            let _ = sock.send(d);
                        });
                        down.release(id);
                    })
            });
        if spawned.is_err() {
            self.release(id);
        }
    }

    /// Local service to stream: each datagram framed, whole or dropped.
    fn udp_to_stream(&self, id: u32, sock: UdpSocket) {
        let mut buf = vec![0u8; 65_536];
        let mut framed = Vec::with_capacity(buf.len() + datagram::LENGTH_LEN);
        loop {
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                // Timeouts: look whether the flow still exists. Refused:
                // an ICMP port unreachable for an earlier send, which a
                // connected UDP socket reports on the next call.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    if self.is_open(id) {
                        continue;
                    }
                    return;
                }
                Err(e) => {
                    log::debug!("flow #{id}: {e}");
                    return self.release(id);
                }
            };
            framed.clear();
            if datagram::encode(&buf[..n], &mut framed).is_err() {
                continue;
            }
            match self.send_whole(id, &framed) {
                Ok(true) => {}
                Ok(false) => {
                    self.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(StreamGone) => return,
            }
        }
    }
    // ANCHOR_END: udp
}

/// How often a pump blocked on a UDP socket looks whether its flow still
/// exists (a UDP socket cannot be shut down to wake it).
pub const UDP_POLL: Duration = Duration::from_millis(100);

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}
