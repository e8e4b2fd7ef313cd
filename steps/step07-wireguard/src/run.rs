//! The I/O shell: a TUN device named like the interface, two UDP sockets
//! (IPv4 and IPv6) on the listen port, and the UAPI socket through which
//! `wg` configures the [`Device`].
//!
//! One thread moves packets, as step 02's UDP loop does: it waits in
//! `poll(2)` for the TUN device or a socket, takes what is there, and runs
//! the timers. Each UAPI connection gets a thread of its own, which locks
//! the device only to apply a set (checked whole beforehand) or to write
//! a get. Changing the listen port rebinds the sockets; the packet thread
//! picks up the new ones at its next wake-up.

use std::io::{self, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use step01_ping_tun::Summary;
use step01_ping_tun::host::Shutdown;
use step01_ping_tun::pcap::Recorder;
use step02_plain_tunnel::Action;
use step02_plain_tunnel::run::{enlarge_receive_buffer, send_waiting};
use step04_crypto::entropy::{Entropy, OsEntropy};
use tun_rs::{DeviceBuilder, SyncDevice};

use crate::device::{Device, MAX_OVERHEAD};
use crate::keylog::KeyLog;
use crate::uapi::{self, Request, Sockets};
use crate::wire::MessageSummary;

/// Where the UAPI sockets live (wireguard-go's and boringtun's place).
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// The TUN device's MTU until `ip link` changes it: wireguard-go's
/// default (1500 less 80 bytes of IPv6, UDP and WireGuard headers).
pub const DEFAULT_MTU: u16 = 1420;
/// How long the packet thread waits before it runs the timers.
const TICK: Duration = Duration::from_millis(100);
/// Packets taken from one source before looking at the others.
const BURST: usize = 64;
const MAX_PACKET: usize = 65535;
/// UAPI connections served at once.
const MAX_UAPI_CONNECTIONS: usize = 16;

/// What the program was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub ifname: String,
    /// Record the TUN device's packets here (pcap, LINKTYPE_RAW).
    pub pcap: Option<PathBuf>,
    /// Append each handshake's keys here (test sessions only), for
    /// Wireshark's `wg.keylog_file`: see [`crate::keylog`].
    pub keylog: Option<PathBuf>,
}

/// The path of the UAPI socket of `ifname`.
pub fn socket_path(ifname: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{ifname}.sock"))
}

// ANCHOR: sockets
/// The UDP sockets: one per family, on the same port.
#[derive(Default)]
pub struct Net {
    v4: Option<Arc<UdpSocket>>,
    v6: Option<Arc<UdpSocket>>,
    port: u16,
    fwmark: u32,
}

fn bind_one(addr: SocketAddr) -> io::Result<UdpSocket> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, setsockopt, socket, sockopt,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    match addr {
        SocketAddr::V4(a) => bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => {
            // IPv6 only, so the IPv4 socket can have the same port.
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(a))?
        }
    }
    let socket = UdpSocket::from(fd);
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl Net {
    /// The sockets, for the packet thread.
    fn snapshot(&self) -> (Option<Arc<UdpSocket>>, Option<Arc<UdpSocket>>) {
        (self.v4.clone(), self.v6.clone())
    }

    fn apply_mark(&self, socket: &UdpSocket) -> io::Result<()> {
        if self.fwmark != 0 {
            nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::Mark, &self.fwmark)?;
        }
        Ok(())
    }
}

impl Sockets for Net {
    /// Binds both families to `port` (any free one for 0, then the IPv6
    /// socket to the same). A host without IPv6 gets an IPv4 socket only.
    fn bind(&mut self, port: u16) -> io::Result<u16> {
        if port == self.port && port != 0 && self.v4.is_some() {
            return Ok(port);
        }
        // Close the old sockets first, so the port may be the same.
        self.v4 = None;
        self.v6 = None;
        let v4 = bind_one(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)))?;
        let bound = v4.local_addr()?.port();
        let v6 = match bind_one(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::UNSPECIFIED,
            bound,
            0,
            0,
        ))) {
            Ok(s) => Some(s),
            Err(e) if port == 0 => {
                // The port picked for IPv4 may be taken for IPv6; not
                // worth a retry loop here: IPv4 only.
                log::warn!("no IPv6 socket on port {bound}: {e}");
                None
            }
            Err(e) if matches!(e.raw_os_error(), Some(97) | Some(99)) => {
                log::warn!("no IPv6 on this host ({e}); IPv4 only");
                None
            }
            Err(e) => return Err(e),
        };
        for s in [Some(&v4), v6.as_ref()].into_iter().flatten() {
            enlarge_receive_buffer(s);
            self.apply_mark(s)?;
        }
        log::info!("UDP port {bound}");
        self.v4 = Some(Arc::new(v4));
        self.v6 = v6.map(Arc::new);
        self.port = bound;
        Ok(bound)
    }

    fn set_fwmark(&mut self, mark: u32) -> io::Result<()> {
        self.fwmark = mark;
        for s in [&self.v4, &self.v6].into_iter().flatten() {
            nix::sys::socket::setsockopt(s.as_ref(), nix::sys::socket::sockopt::Mark, &mark)?;
        }
        Ok(())
    }
}
// ANCHOR_END: sockets

/// What the threads share.
struct Shared {
    device: Mutex<Device>,
    net: Mutex<Net>,
    tun: SyncDevice,
    ifname: String,
    recorder: Mutex<Option<Recorder>>,
    keylog: Option<Mutex<KeyLog>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every method finishes its changes before returning, so a panic
    // elsewhere cannot leave the state half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn record(&self, packet: &[u8]) {
        let mut recorder = lock(&self.recorder);
        if let Some(rec) = recorder.as_mut() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            if let Err(e) = rec.record(now, packet) {
                log::error!("writing the pcap file failed, recording stops: {e}");
                *recorder = None;
            }
        }
    }
}

/// An address as the peer sees it: IPv4 as IPv4 even when it came as an
/// IPv4-mapped IPv6 address.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

// ANCHOR: uapi_socket
/// Creates the UAPI socket of `ifname`, readable and writable by root
/// only, refusing to take over one a live process serves and removing
/// one a dead process left behind.
pub fn bind_uapi(ifname: &str) -> anyhow::Result<UnixListener> {
    let dir = Path::new(SOCKET_DIR);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {SOCKET_DIR}"))?;
    // The directory must be ours and not writable by others: anyone who
    // could write there could put their own socket in our place.
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("checking {SOCKET_DIR}"))?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != euid || meta.permissions().mode() & 0o022 != 0 {
        bail!(
            "{SOCKET_DIR} must be a directory owned by uid {euid} and writable by it only (it is mode {:o}, owner {}): fix or remove it",
            meta.permissions().mode() & 0o7777,
            meta.uid()
        );
    }
    let path = socket_path(ifname);
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket; remove it", path.display());
        }
        if UnixStream::connect(&path).is_ok() {
            bail!(
                "{} is in use: another program serves {ifname} (stop it first)",
                path.display()
            );
        }
        log::info!("removing the stale socket {}", path.display());
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    // Created with mode 600 (a umask of 077 while binding): `wg` runs as
    // root; nobody else may configure the interface or read its keys.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let listener = UnixListener::bind(&path);
    nix::sys::stat::umask(old);
    let listener = listener.with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
// ANCHOR_END: uapi_socket

// ANCHOR: control
/// What the UAPI threads ask of the interface: the answer to a get, and a
/// set applied. Step 07's shell answers from its one device; step 08's
/// also hands its workers the new state after a set.
pub trait Control: Send + Sync + 'static {
    /// The answer to `get=1` (it holds keys: the caller wipes it).
    fn get(&self) -> zeroize::Zeroizing<String>;
    /// Applies a set, checked whole beforehand.
    fn set(&self, ops: Vec<uapi::Op>, now: Instant) -> Result<(), uapi::Errno>;
}
// ANCHOR_END: control

impl Control for Shared {
    fn get(&self) -> zeroize::Zeroizing<String> {
        uapi::get(&lock(&self.device))
    }

    fn set(&self, ops: Vec<uapi::Op>, now: Instant) -> Result<(), uapi::Errno> {
        let mut device = lock(&self.device);
        let mut net = lock(&self.net);
        uapi::apply(&mut device, ops, &mut *net, now)
    }
}

/// Serves one UAPI connection until the client closes it or errs.
fn serve_uapi(stream: UnixStream, control: &impl Control) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let (answer, stop) = match uapi::read_request(&mut reader) {
            Ok(None) => return,
            Ok(Some(Request::Get)) => {
                let text = control.get();
                if writer.write_all(text.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            Ok(Some(Request::Set(ops))) => (uapi::status(control.set(ops, Instant::now())), false),
            // After a bad request the stream is out of step: answer, and
            // close the connection (wireguard-go does the same).
            Err(e) => {
                log::warn!("UAPI request refused: errno {}", e.code());
                (uapi::status(Err(e)), true)
            }
        };
        if writer.write_all(answer.as_bytes()).is_err() || stop {
            return;
        }
    }
}

/// Serves the UAPI socket: a thread per connection, at most
/// [`MAX_UAPI_CONNECTIONS`] at once. Runs until the listener fails.
pub fn accept_uapi<C: Control>(listener: UnixListener, control: Arc<C>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.load(Ordering::SeqCst) >= MAX_UAPI_CONNECTIONS {
            log::warn!("too many UAPI connections; refusing one");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (control, active) = (Arc::clone(&control), Arc::clone(&active));
        let spawned = std::thread::Builder::new().name("uapi".into()).spawn(move || {
            serve_uapi(stream, &*control);
            active.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            log::warn!("cannot start a UAPI thread");
        }
    }
}

/// Creates the TUN device `name` (down, no address: `ip` sets those, as
/// with wireguard-go).
pub fn create_tun(name: &str) -> anyhow::Result<SyncDevice> {
    if name.is_empty() || name.len() > 15 || name.contains('/') {
        bail!("the interface name `{name}` must be 1 to 15 characters, without `/`");
    }
    DeviceBuilder::new()
        .name(name)
        .mtu(DEFAULT_MTU)
        .enable(false)
        .build_sync()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow::Error::new(e)
                .context("/dev/net/tun is missing: load the tun module with `modprobe tun`"),
            _ => anyhow::Error::new(e),
        })
        .with_context(|| format!("creating TUN device {name}"))
}

// ANCHOR: serve
/// Runs the interface until SIGINT or SIGTERM: the TUN device, the UDP
/// sockets, and the UAPI socket at `/var/run/wireguard/IFNAME.sock`,
/// which is removed again on the way out. `setup` runs once the device
/// exists, before any traffic (`up` configures it there and changes the
/// host); what it returns is dropped when the interface stops, which is
/// where the host is put back. `ready` is called after it, once the
/// socket accepts connections.
pub fn serve<G>(
    options: &Options,
    shutdown: &Shutdown,
    setup: impl FnOnce(&mut Device, &mut Net) -> anyhow::Result<G>,
    ready: impl FnOnce(),
) -> anyhow::Result<String> {
    // The key log first: a refused file leaves nothing to undo.
    let (keylog, entropy): (Option<KeyLog>, Box<dyn Entropy>) = match &options.keylog {
        Some(path) => {
            let (keylog, entropy) = KeyLog::create(path)?;
            log::warn!(
                "writing each handshake's keys to {}: its sessions can be decrypted",
                path.display()
            );
            (Some(keylog), Box::new(entropy))
        }
        None => (None, Box::new(OsEntropy)),
    };
    let tun = create_tun(&options.ifname)?;
    let listener = bind_uapi(&options.ifname)?;
    let path = socket_path(&options.ifname);
    // The socket file goes when we do, however we leave this function.
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _socket_file = RemoveOnDrop(path);
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let device = Device::new(usize::from(DEFAULT_MTU), entropy, Instant::now(), unix_now);
    let recorder = match &options.pcap {
        Some(p) => Some(Recorder::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    tun.set_nonblocking(true)
        .with_context(|| format!("making {} non-blocking", options.ifname))?;
    let mut net = Net::default();
    // Any free port until `wg` sets one, as wireguard-go does.
    net.bind(0).context("binding a UDP socket")?;
    let shared = Arc::new(Shared {
        device: Mutex::new(device),
        net: Mutex::new(net),
        tun,
        ifname: options.ifname.clone(),
        recorder: Mutex::new(recorder),
        keylog: keylog.map(Mutex::new),
    });
    lock(&shared.device).listen_port = lock(&shared.net).port;
    let guard = {
        let mut device = lock(&shared.device);
        let mut net = lock(&shared.net);
        setup(&mut device, &mut net)?
    };
    status_on_sigusr1(&shared)?;
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("uapi-accept".into())
            .spawn(move || accept_uapi(listener, shared))
            .context("starting the UAPI thread")?;
    }
    log::info!(
        "{} is up; configure it with `wg setconf {} FILE` or `wg set`",
        options.ifname,
        options.ifname
    );
    ready();
    let result = packet_loop(&shared, shutdown);
    drop(guard);
    result?;
    let status = lock(&shared.device).status(Instant::now()).join("\n");
    Ok(status)
}
// ANCHOR_END: serve

fn status_on_sigusr1(shared: &Arc<Shared>) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])
        .context("installing the SIGUSR1 handler")?;
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("sigusr1".into())
        .spawn(move || {
            for _ in signals.forever() {
                for line in lock(&shared.device).status(Instant::now()) {
                    log::info!("{}: {line}", shared.ifname);
                }
            }
        })?;
    Ok(())
}

/// Sends a message on the socket of its destination's family, showing a
/// handshake message to the key log first, if there is one.
fn send(
    shared: &Shared,
    v4: &Option<Arc<UdpSocket>>,
    v6: &Option<Arc<UdpSocket>>,
    message: &[u8],
    to: SocketAddr,
) {
    // Only initiations (1) and responses (2) carry an ephemeral key.
    if let Some(keylog) = &shared.keylog
        && matches!(message.first(), Some(1 | 2))
    {
        lock(keylog).sent(&lock(&shared.device), message);
    }
    let socket = if to.is_ipv4() { v4 } else { v6 };
    match socket {
        Some(s) => send_waiting(s, to, || s.send_to(message, to)),
        None => log::debug!("no socket for {to}: a message dropped"),
    }
}

// ANCHOR: packet_loop
/// The packet thread: TUN device and sockets in, core, sockets and TUN
/// device out; timers at every wake-up.
fn packet_loop(shared: &Shared, shutdown: &Shutdown) -> anyhow::Result<()> {
    let mut packet = vec![0u8; MAX_PACKET];
    let mut datagram = vec![0u8; MAX_PACKET];
    let mut out = vec![0u8; MAX_PACKET + MAX_OVERHEAD];
    let mut last_mtu_check = Instant::now();
    while !shutdown.requested() {
        {
            let (v4, v6) = lock(&shared.net).snapshot();
            wait_readable(&shared.tun, [&v4, &v6])?;
        }
        // The sockets again: a `wg set listen-port` during the wait has
        // replaced them, and a message sent from the old port would get
        // its answer on a socket that is gone.
        let (v4, v6) = lock(&shared.net).snapshot();
        for _ in 0..BURST {
            match shared.tun.recv(&mut packet) {
                Ok(len) => {
                    shared.record(&packet[..len]);
                    let result = lock(&shared.device).encapsulate(&packet[..len], Instant::now(), &mut out);
                    match result {
                        Ok(Some(t)) => send(shared, &v4, &v6, &out[..t.len], t.to),
                        Ok(None) => {
                            log::debug!("from {} (staged): {}", shared.ifname, Summary(&packet[..len]))
                        }
                        Err(why) => {
                            log::debug!("drop ({why}) from {}: {}", shared.ifname, Summary(&packet[..len]))
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("reading from {}", shared.ifname)),
            }
        }
        for socket in [&v4, &v6].into_iter().flatten() {
            for _ in 0..BURST {
                match socket.recv_from(&mut datagram) {
                    Ok((n, from)) => {
                        let from = canonical(from);
                        let result =
                            lock(&shared.device).decapsulate(from, &datagram[..n], Instant::now(), &mut out);
                        match result {
                            Ok(Action::WriteToTun(len)) => {
                                shared.record(&out[..len]);
                                if let Err(e) = shared.tun.send(&out[..len]) {
                                    log::debug!("writing to {} failed: {e}", shared.ifname);
                                }
                            }
                            Ok(Action::Reply(t)) => send(shared, &v4, &v6, &out[..t.len], t.to),
                            Ok(Action::Nothing) => {}
                            Err(why) => {
                                log::debug!("drop ({why}) from {from}: {}", MessageSummary(&datagram[..n]))
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::debug!("receiving on the UDP socket failed: {e}");
                        break;
                    }
                }
            }
        }
        loop {
            let due = lock(&shared.device).poll(Instant::now(), &mut out);
            let Some(t) = due else { break };
            log::debug!("timer: to {}: {}", t.to, MessageSummary(&out[..t.len]));
            send(shared, &v4, &v6, &out[..t.len], t.to);
        }
        // `ip link set mtu` changes the device's MTU under us: follow it
        // once a second, so padding and the size check use the real one.
        if last_mtu_check.elapsed() >= Duration::from_secs(1) {
            last_mtu_check = Instant::now();
            if let Ok(mtu) = shared.tun.mtu() {
                let mut device = lock(&shared.device);
                if device.mtu() != usize::from(mtu) {
                    log::info!("{} MTU is now {mtu}", shared.ifname);
                    device.set_mtu(usize::from(mtu));
                }
            }
        }
    }
    Ok(())
}
// ANCHOR_END: packet_loop

/// Waits until the TUN device or a socket is readable, for one [`TICK`]
/// at most.
fn wait_readable(tun: &SyncDevice, sockets: [&Option<Arc<UdpSocket>>; 2]) -> anyhow::Result<()> {
    let mut fds = vec![PollFd::new(tun.as_fd(), PollFlags::POLLIN)];
    for s in sockets.into_iter().flatten() {
        fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
    }
    let timeout = PollTimeout::try_from(TICK).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e).context("waiting for the TUN device and the sockets"),
    }
}
