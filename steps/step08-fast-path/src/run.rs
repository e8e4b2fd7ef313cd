//! The I/O shell: a multi-queue TUN device with offloads, a group of UDP
//! sockets, one worker thread per queue, and step 07's UAPI socket.
//!
//! What is step 07's and reused as it is: the device (the protocol, its
//! timers and configuration), the UAPI socket and its protocol, wg-quick's
//! `up` and `down`. What is new is how packets get in and out: see
//! [`crate::worker`].

#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use step01_ping_tun::host::Shutdown;
use step01_ping_tun::pcap::Recorder;
use step04_crypto::entropy::{Entropy, OsEntropy};
use step07_wireguard::Device;
use step07_wireguard::keylog::KeyLog;
use step07_wireguard::run::{DEFAULT_MTU, accept_uapi, bind_uapi, socket_path};
use step07_wireguard::uapi::Sockets;
use tun_rs::DeviceBuilder;

use crate::counters::Line;
use crate::tun::Queue;
use crate::udp::{Features, Net};
use crate::worker::{Shared, Worker};

/// What the program was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub ifname: String,
    /// Record the TUN device's packets here (pcap, LINKTYPE_RAW). Every
    /// worker then takes the recorder's lock for every packet: slow.
    pub pcap: Option<PathBuf>,
    /// Append each handshake's keys here (test sessions only), for
    /// Wireshark's `wg.keylog_file`: see `step07_wireguard::keylog`.
    pub keylog: Option<PathBuf>,
    /// Workers, and TUN queues (1: one queue, no `SO_REUSEPORT`).
    pub threads: usize,
    /// The TUN device with the virtio-net header (TSO in, GRO out).
    pub offload: bool,
    pub features: Features,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ANCHOR: create
/// Creates the TUN device `name` (down, no address: `ip` sets those) with
/// `threads` queues, with the virtio-net header when `offload`. A kernel
/// or device that cannot do one of them gets the device without it: the
/// returned flag says whether the queues have offloads, and there may be
/// fewer queues than asked.
pub fn create_queues(name: &str, threads: usize, offload: bool) -> anyhow::Result<(Vec<Queue>, bool)> {
    if name.is_empty() || name.len() > 15 || name.contains('/') {
        bail!("the interface name `{name}` must be 1 to 15 characters, without `/`");
    }
    let build = |multi: bool, offload: bool| {
        DeviceBuilder::new()
            .name(name)
            .mtu(DEFAULT_MTU)
            .enable(false)
            .multi_queue(multi)
            .offload(offload)
            .build_sync()
    };
    let mut attempts = vec![(threads > 1, offload)];
    if offload {
        attempts.push((threads > 1, false));
    }
    if threads > 1 {
        attempts.push((false, offload));
        attempts.push((false, false));
    }
    let mut last = None;
    for (multi, with_offload) in attempts {
        match build(multi, with_offload) {
            Ok(first) => {
                if with_offload != offload {
                    log::warn!(
                        "the TUN device has no offloads here ({:?}): one packet per read",
                        last
                    );
                }
                let mut queues = Vec::with_capacity(threads);
                let mut clones = Vec::new();
                if multi {
                    for _ in 1..threads {
                        match first.try_clone() {
                            Ok(q) => clones.push(q),
                            Err(e) => {
                                log::warn!("only {} TUN queue(s): {e}", clones.len() + 1);
                                break;
                            }
                        }
                    }
                } else if threads > 1 {
                    log::warn!("no multi-queue TUN device here: one worker");
                }
                queues.push(Queue::new(first, with_offload)?);
                for q in clones {
                    queues.push(Queue::new(q, with_offload)?);
                }
                return Ok((queues, with_offload));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(anyhow::Error::new(e)
                    .context("/dev/net/tun is missing: load the tun module with `modprobe tun`"))
                .with_context(|| format!("creating TUN device {name}"));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no attempt made"), anyhow::Error::new))
        .with_context(|| format!("creating TUN device {name}"))
}
// ANCHOR_END: create

/// The status lines: the device's (peers, drops), then the workers'
/// counters.
fn status(shared: &Shared) -> Vec<String> {
    let mut lines = lock(&shared.device).status(Instant::now());
    lines.push(Line(&shared.totals()).to_string());
    lines
}

// ANCHOR: serve
/// Runs the interface until SIGINT or SIGTERM, as step 07's `serve` does
/// (`setup` and `ready` alike), with a worker thread per TUN queue.
pub fn serve<G>(
    options: &Options,
    shutdown: &Shutdown,
    setup: impl FnOnce(&mut Device, &mut dyn Sockets) -> anyhow::Result<G>,
    ready: impl FnOnce(),
) -> anyhow::Result<String> {
    let threads = options.threads.max(1);
    let (queues, offload) = create_queues(&options.ifname, threads, options.offload)?;
    let listener = bind_uapi(&options.ifname)?;
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _socket_file = RemoveOnDrop(socket_path(&options.ifname));
    // The key log as step 07 writes it (see step07_wireguard::keylog).
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
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut device = Device::new(usize::from(DEFAULT_MTU), entropy, Instant::now(), unix_now);
    let recorder = match &options.pcap {
        Some(p) => Some(Recorder::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    let mut net = Net::new(queues.len(), options.features);
    // Any free port until `wg` sets one, as wireguard-go does.
    device.listen_port = net.bind(0).context("binding the UDP sockets")?;
    let guard = setup(&mut device, &mut net)?;
    let shared = Arc::new(Shared::new(
        device,
        net,
        queues.len(),
        options.features,
        recorder,
        keylog,
    ));
    status_on_sigusr1(&shared, &options.ifname)?;
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("uapi-accept".into())
            .spawn(move || accept_uapi(listener, shared))
            .context("starting the UAPI thread")?;
    }
    log::info!(
        "{} is up with {} worker(s), TUN offloads {}, {:?}; configure it with `wg setconf {} FILE` or `wg set`",
        options.ifname,
        queues.len(),
        if offload { "on" } else { "off" },
        options.features,
        options.ifname
    );
    ready();
    // A worker whose queue fails stops the others.
    let failed = AtomicBool::new(false);
    let result: anyhow::Result<()> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (i, queue) in queues.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let failed = &failed;
            let handle = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn_scoped(scope, move || {
                    let mut worker = Worker::new(i, shared, queue);
                    let result = worker.run(|| shutdown.requested() || failed.load(Ordering::Relaxed));
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    result
                })
                .context("starting a worker")?;
            handles.push(handle);
        }
        let mut result = Ok(());
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // One worker failed (its TUN queue): the interface
                    // stops.
                    result = Err(anyhow::Error::new(e).context(format!("reading from {}", options.ifname)));
                }
                Err(_) => result = Err(anyhow::anyhow!("a worker panicked")),
            }
        }
        result
    });
    drop(guard);
    result?;
    Ok(status(&shared).join("\n"))
}
// ANCHOR_END: serve

fn status_on_sigusr1(shared: &Arc<Shared>, ifname: &str) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])
        .context("installing the SIGUSR1 handler")?;
    let shared = Arc::clone(shared);
    let ifname = ifname.to_string();
    std::thread::Builder::new()
        .name("sigusr1".into())
        .spawn(move || {
            for _ in signals.forever() {
                for line in status(&shared) {
                    log::info!("{ifname}: {line}");
                }
            }
        })?;
    Ok(())
}
