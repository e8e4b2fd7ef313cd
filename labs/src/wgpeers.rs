//! WireGuard interoperability: a tunnel of ours (step 07, step 08)
//! against wireguard-go and boringtun, configured by the unmodified `wg`
//! tool. Labs 07 and 08 run these checks, each with its own step.
//!
//! Host `tunlab` runs the step; host `wggo` runs wireguard-go and host
//! `boringtun` runs boringtun-cli, each on a link of its own to `tunlab`;
//! host `attacker` has a third link. Every end is started and configured
//! the same way, with `wg` over its UAPI socket. For each implementation,
//! with the step first as the initiator and then as the responder:
//! ping in both families, a 20 MB transfer with its checksum, iperf3 TCP,
//! the peer moving to a new address, a new handshake while a ping runs,
//! and `wg show` on both hosts showing the other (every session uses a
//! pre-shared key). Then a wrong pre-shared key (no tunnel), `up` and
//! `down` of a wg-quick file, and, for each implementation, a flood of
//! initiations from `attacker` while the real peer connects: the step
//! sends cookie replies, and the peer still gets through. A capture of the
//! first session decrypts in tshark with the step's own key log, when tshark
//! is installed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::env;
use crate::labs::Shell;
use crate::netns::Host;
use crate::process::{Capture, Running, path_arg};
use crate::report::Report;
use crate::topology::{self, Net, wireguard};
use crate::traffic::{iperf3, nc_transfer};

pub const TRANSFER_BYTES: usize = 20 * 1024 * 1024;
/// Step 07's UDP port, and the peer's.
pub const TUNLAB_PORT: u16 = 51820;
pub const PEER_PORT: u16 = 51821;
/// How long the flood of initiations lasts.
pub const FLOOD_SECONDS: u32 = 14;

/// The other implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    WireguardGo,
    Boringtun,
}

impl Peer {
    pub const ALL: [Peer; 2] = [Peer::WireguardGo, Peer::Boringtun];

    pub fn name(self) -> &'static str {
        match self {
            Peer::WireguardGo => "wireguard-go",
            Peer::Boringtun => "boringtun",
        }
    }

    /// Its lab host.
    fn host(self) -> &'static str {
        match self {
            Peer::WireguardGo => "wggo",
            Peer::Boringtun => "boringtun",
        }
    }

    /// Its underlay address.
    fn address(self) -> &'static str {
        match self {
            Peer::WireguardGo => wireguard::WGGO,
            Peer::Boringtun => wireguard::BORINGTUN,
        }
    }

    /// Where the step moves to on the link to it.
    fn tunlab_roamed(self) -> &'static str {
        match self {
            Peer::WireguardGo => wireguard::TUNLAB_TO_WGGO_ROAMED,
            Peer::Boringtun => wireguard::TUNLAB_TO_BORINGTUN_ROAMED,
        }
    }

    /// Step 07's address on the link to it.
    fn tunlab_address(self) -> &'static str {
        match self {
            Peer::WireguardGo => wireguard::TUNLAB_TO_WGGO,
            Peer::Boringtun => wireguard::TUNLAB_TO_BORINGTUN,
        }
    }

    fn tunlab_veth(self) -> &'static str {
        match self {
            Peer::WireguardGo => "veth0",
            Peer::Boringtun => "veth1",
        }
    }

    /// Starts it in the foreground on `host` as interface `name`.
    fn start(self, host: &Host, name: &str, log: &Path) -> anyhow::Result<Running> {
        let _ = std::fs::remove_file(socket(name));
        let running = match self {
            Peer::WireguardGo => Running::start(host, Path::new("wireguard-go"), &["-f", name], log)?,
            Peer::Boringtun => {
                let binary = crate::bench::boringtun_binary().context("boringtun-cli is not installed")?;
                // As root it would drop privileges and then fail to open
                // the TUN device again: keep them.
                Running::start(
                    host,
                    &binary,
                    &["-f", "--disable-drop-privileges", "--threads", "1", name],
                    log,
                )?
            }
        };
        wait_for_socket(name)?;
        Ok(running)
    }
}

/// Who starts the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Step 07 initiates: it has the peer's endpoint and a persistent
    /// keepalive; the peer learns the step's address from the handshake.
    Initiator,
    Responder,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Initiator => "initiator",
            Role::Responder => "responder",
        }
    }
}

/// The tunnel of ours under test.
#[derive(Debug, Clone)]
pub struct Tunnel {
    /// How the checks name it: `step 07`.
    pub name: &'static str,
    /// Its log files' tag: `step07`.
    pub tag: &'static str,
    pub binary: PathBuf,
    /// Arguments before the interface name, after `-f -v --keylog FILE`.
    pub args: Vec<String>,
    /// The start of its interface names: `s7`.
    pub prefix: &'static str,
}

pub fn socket(name: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{name}.sock"))
}

pub fn wait_for_socket(name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket(name).exists() {
        if Instant::now() > deadline {
            bail!("no UAPI socket {} after 10 s", socket(name).display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A private key file (mode 600, from `wg genkey`) and its public key.
#[derive(Debug, Clone)]
pub struct WgKey {
    pub file: PathBuf,
    pub public: String,
}

impl WgKey {
    /// `wg genkey` (or `wg genpsk`) into `file`, made mode 600 first.
    pub fn generate(file: &Path, psk: bool) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(file);
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .with_context(|| format!("creating {}", file.display()))?;
        let status = std::process::Command::new("wg")
            .arg(if psk { "genpsk" } else { "genkey" })
            .stdout(out)
            .status()
            .context("running wg genkey")?;
        if !status.success() {
            bail!("wg genkey failed ({status})");
        }
        let public = if psk {
            String::new()
        } else {
            let key = std::fs::File::open(file)?;
            let out = std::process::Command::new("wg")
                .arg("pubkey")
                .stdin(key)
                .output()?;
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        Ok(Self {
            file: file.to_path_buf(),
            public,
        })
    }

    pub fn path(&self) -> anyhow::Result<String> {
        path_arg(&self.file)
    }
}

/// The lab's hosts and keys.
pub struct Lab {
    pub tunlab: Host,
    pub attacker: Host,
    pub peers: Vec<(Peer, Host)>,
    pub tunlab_key: WgKey,
    pub peer_key: WgKey,
    pub psk: WgKey,
    pub wrong_psk: WgKey,
    pub tunnel: Tunnel,
    pub out: PathBuf,
    /// Interface names carry this run's number: the UAPI sockets are
    /// shared by every namespace.
    pub run: u32,
    _net: Net,
}

/// One session: the step and one peer, configured.
pub struct Session {
    pub step: Running,
    pub peer: Running,
    pub tunlab_if: String,
    pub peer_if: String,
}

pub fn up(out: &Path, report: &mut Report, tunnel: Tunnel) -> anyhow::Result<Lab> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let net = topology::wireguard_peers().build()?;
    let tunlab = net.host("tunlab")?;
    let peers = Peer::ALL
        .iter()
        .map(|p| Ok((*p, net.host(p.host())?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let attacker = net.host("attacker")?;
    report.note(format!(
        "underlay: tunlab {} <-> wggo {}, tunlab {} <-> boringtun {}, tunlab {} <-> attacker {}",
        wireguard::TUNLAB_TO_WGGO,
        wireguard::WGGO,
        wireguard::TUNLAB_TO_BORINGTUN,
        wireguard::BORINGTUN,
        wireguard::TUNLAB_TO_ATTACKER,
        wireguard::ATTACKER
    ));
    Ok(Lab {
        tunlab_key: WgKey::generate(&out.join("tunlab.key"), false)?,
        peer_key: WgKey::generate(&out.join("peer.key"), false)?,
        psk: WgKey::generate(&out.join("psk"), true)?,
        wrong_psk: WgKey::generate(&out.join("wrong-psk"), true)?,
        tunlab,
        attacker,
        peers,
        tunnel,
        out: out.to_path_buf(),
        run: std::process::id() % 10_000,
        _net: net,
    })
}

impl Lab {
    fn peer_host(&self, peer: Peer) -> anyhow::Result<&Host> {
        self.peers
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, h)| h)
            .context("no such peer host")
    }

    /// Starts the step and `peer`, configures both with `wg set` (the
    /// step with `psk`), and brings the interfaces up. `tag` names the files.
    /// Without `keepalive`, the initiator has no persistent keepalive: its
    /// first packet starts the handshake.
    pub fn session(
        &self,
        peer: Peer,
        role: Role,
        psk: &WgKey,
        tag: &str,
        keepalive: bool,
    ) -> anyhow::Result<Session> {
        let host = self.peer_host(peer)?;
        let prefix = self.tunnel.prefix;
        let tunlab_if = format!("{prefix}t{}{}", self.run, tag.len() % 10);
        let peer_if = format!("{prefix}p{}{}", self.run, tag.len() % 10);
        let log = |who: &str| self.out.join(format!("{tag}-{who}.log"));
        let keylog = self.out.join(format!("{tag}.keylog"));
        let _ = std::fs::remove_file(&keylog);
        let _ = std::fs::remove_file(socket(&tunlab_if));
        let mut args = vec![
            "-f".to_string(),
            "-v".to_string(),
            "--keylog".to_string(),
            path_arg(&keylog)?,
        ];
        args.extend(self.tunnel.args.iter().cloned());
        args.push(tunlab_if.clone());
        let step = Running::start(&self.tunlab, &self.tunnel.binary, &args, &log(self.tunnel.tag))?;
        wait_for_socket(&tunlab_if)?;
        let peer_run = peer.start(host, &peer_if, &log(peer.name()))?;
        let peer_address = peer.address();
        let tunlab_endpoint = format!("{}:{TUNLAB_PORT}", peer.tunlab_address());
        let peer_endpoint = format!("{peer_address}:{PEER_PORT}");
        let ka = if keepalive { "25" } else { "0" };
        let (tunlab_extra, peer_extra) = match role {
            Role::Initiator => (
                vec!["endpoint", peer_endpoint.as_str(), "persistent-keepalive", ka],
                vec![],
            ),
            Role::Responder => (
                vec![],
                vec!["endpoint", tunlab_endpoint.as_str(), "persistent-keepalive", ka],
            ),
        };
        let inner = |a: &str, b: &str| format!("{a}/32,{b}/128");
        // The responder first: an initiator configured first would send
        // its first initiation (its keepalive starts one) to a peer that
        // has no key yet, and wait 5 s to retry.
        let configure_peer = || {
            wg_set(
                host,
                &peer_if,
                &self.peer_key,
                PEER_PORT,
                &self.tunlab_key.public,
                &self.psk.path()?,
                &inner(wireguard::TUNLAB_INNER, wireguard::TUNLAB_INNER6),
                &peer_extra,
            )
        };
        let configure_tunlab = || {
            wg_set(
                &self.tunlab,
                &tunlab_if,
                &self.tunlab_key,
                TUNLAB_PORT,
                &self.peer_key.public,
                &psk.path()?,
                &inner(wireguard::PEER_INNER, wireguard::PEER_INNER6),
                &tunlab_extra,
            )
        };
        match role {
            Role::Initiator => {
                configure_peer()?;
                configure_tunlab()?;
            }
            Role::Responder => {
                configure_tunlab()?;
                configure_peer()?;
            }
        }
        for (h, name, v4, v6) in [
            (
                &self.tunlab,
                &tunlab_if,
                wireguard::TUNLAB_INNER,
                wireguard::TUNLAB_INNER6,
            ),
            (host, &peer_if, wireguard::PEER_INNER, wireguard::PEER_INNER6),
        ] {
            h.ip(["address", "add", &format!("{v4}/24"), "dev", name])?;
            h.ip(["address", "add", &format!("{v6}/64"), "dev", name, "nodad"])?;
            h.ip(["link", "set", name, "mtu", "1420", "up"])?;
        }
        Ok(Session {
            step,
            peer: peer_run,
            tunlab_if,
            peer_if,
        })
    }
}

/// `wg set NAME private-key F listen-port P peer PUB preshared-key F
/// allowed-ips A [EXTRA...]`.
#[allow(clippy::too_many_arguments)]
pub fn wg_set(
    host: &Host,
    name: &str,
    key: &WgKey,
    port: u16,
    peer: &str,
    psk: &str,
    allowed: &str,
    extra: &[&str],
) -> anyhow::Result<()> {
    let port = port.to_string();
    let key = key.path()?;
    let mut args = vec![
        "set",
        name,
        "private-key",
        &key,
        "listen-port",
        &port,
        "peer",
        peer,
        "preshared-key",
        psk,
        "allowed-ips",
        allowed,
    ];
    args.extend(extra);
    let out = host.run("wg", &args)?;
    if !out.status.success() {
        bail!(
            "wg set {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One peer line of `wg show NAME dump`.
#[derive(Debug, Clone, Default)]
pub struct DumpPeer {
    pub public: String,
    pub endpoint: String,
    pub allowed: String,
    pub latest_handshake: u64,
    pub rx: u64,
    pub tx: u64,
    pub keepalive: String,
}

/// A latest-handshake time as seconds since 1970. boringtun answers
/// `last_handshake_time_sec` with the seconds *since the handshake*
/// (wireguard-go and steps 07 and 08 with the time, as the protocol says): a value
/// too small to be a date after 2001 is taken as that.
fn since_epoch(secs: u64) -> u64 {
    if secs == 0 || secs >= 1_000_000_000 {
        return secs;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now.saturating_sub(secs)
}

/// `wg show NAME dump`: the peer lines.
pub fn dump(host: &Host, name: &str) -> anyhow::Result<Vec<DumpPeer>> {
    let text = host.stdout("wg", ["show", name, "dump"])?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 8).then(|| DumpPeer {
                public: f[0].to_string(),
                endpoint: f[2].to_string(),
                allowed: f[3].to_string(),
                latest_handshake: since_epoch(f[4].parse().unwrap_or(0)),
                rx: f[5].parse().unwrap_or(0),
                tx: f[6].parse().unwrap_or(0),
                keepalive: f[7].to_string(),
            })
        })
        .collect())
}

/// The lab's hosts and a session with wireguard-go, up for `tunlab shell`.
pub fn shell(out: &Path, report: &mut Report, tunnel: Tunnel) -> anyhow::Result<Shell> {
    let lab = up(out, report, tunnel)?;
    let session = lab.session(Peer::WireguardGo, Role::Initiator, &lab.psk, "shell", true)?;
    let host = lab.tunlab.clone();
    let note = format!(
        "{} is {} here, wireguard-go is {} in host wggo: wg show {}; ping {}",
        lab.tunnel.name,
        session.tunlab_if,
        session.peer_if,
        session.tunlab_if,
        wireguard::PEER_INNER
    );
    Ok(Shell::new((lab, session), host).note(note))
}

/// Every check against both implementations in both roles, with the
/// random file `data` for the transfers.
pub fn interop_all(lab: &Lab, data: &Path, report: &mut Report) -> anyhow::Result<()> {
    for peer in Peer::ALL {
        for role in [Role::Initiator, Role::Responder] {
            interop(lab, peer, role, data, report)?;
        }
    }
    Ok(())
}

// ANCHOR: interop
/// One implementation, one role: every check of the lab's list.
pub fn interop(lab: &Lab, peer: Peer, role: Role, data: &Path, report: &mut Report) -> anyhow::Result<()> {
    let tag = format!("{}-{}", peer.name(), role.as_str());
    let who = format!("{} ({} as {})", peer.name(), lab.tunnel.name, role.as_str());
    let host = lab.peer_host(peer)?.clone();
    let pcap = lab.out.join(format!("{tag}-underlay.pcap"));
    let capture = Capture::start(&lab.tunlab, peer.tunlab_veth(), &pcap)?;
    let mut s = lab.session(peer, role, &lab.psk, &tag, true)?;
    // The initiator's first ping starts the handshake (the persistent
    // keepalive may have started it already).
    let (pinger, target, target6) = match role {
        Role::Initiator => (&lab.tunlab, wireguard::PEER_INNER, wireguard::PEER_INNER6),
        Role::Responder => (&host, wireguard::TUNLAB_INNER, wireguard::TUNLAB_INNER6),
    };
    pinger.ping_check(report, format!("{who}: ping {target}"), target, 3, &[])?;
    pinger.ping_check(report, format!("{who}: ping -6 {target6}"), target6, 3, &[])?;
    let (back, back6) = match role {
        Role::Initiator => (wireguard::TUNLAB_INNER, wireguard::TUNLAB_INNER6),
        Role::Responder => (wireguard::PEER_INNER, wireguard::PEER_INNER6),
    };
    let other = if role == Role::Initiator {
        &host
    } else {
        &lab.tunlab
    };
    other.ping_check(report, format!("{who}: ping back {back}"), back, 3, &[])?;
    other.ping_check(report, format!("{who}: ping -6 back {back6}"), back6, 3, &[])?;

    let received = lab.out.join(format!("{tag}-received.bin"));
    let (intact, secs) = nc_transfer(&lab.tunlab, &host, wireguard::PEER_INNER, data, &received, 60)?;
    report.check(
        format!("{who}: 20 MB arrive intact (sha256 matches)"),
        intact,
        format!("{secs:.1} s"),
    );
    let _ = std::fs::remove_file(&received);
    let (ok, line) = iperf3(&host, &lab.tunlab, wireguard::PEER_INNER)?;
    report.check(format!("{who}: iperf3 TCP runs through"), ok, line);

    wg_show(lab, peer, &s, &who, report)?;
    showconf_syncconf(lab, role, &s, &tag, &who, report)?;
    renewal(lab, peer, role, &s, &who, report)?;
    roaming(lab, peer, &s, &who, report)?;

    let captured = capture.finish()?;
    if role == Role::Initiator && peer == Peer::WireguardGo {
        keylog_decrypts(lab, &tag, &captured.path, report)?;
    }
    stop(lab, &mut s, &who, report)?;
    Ok(())
}
// ANCHOR_END: interop

/// `wg show` on both hosts shows the other end.
fn wg_show(lab: &Lab, peer: Peer, s: &Session, who: &str, report: &mut Report) -> anyhow::Result<()> {
    let host = lab.peer_host(peer)?;
    let ours = dump(&lab.tunlab, &s.tunlab_if)?;
    let theirs = dump(host, &s.peer_if)?;
    let peer_address = peer.address();
    let o = ours.iter().find(|p| p.public == lab.peer_key.public);
    let step = lab.tunnel.name;
    report.check(
        format!("{who}: wg show on {step} shows the peer, its endpoint, a handshake and traffic"),
        o.is_some_and(|p| {
            p.endpoint == format!("{peer_address}:{PEER_PORT}")
                && p.latest_handshake > 0
                && p.rx > 0
                && p.tx > 0
                && p.allowed.contains(wireguard::PEER_INNER)
        }),
        format!("{o:?}"),
    );
    let t = theirs.iter().find(|p| p.public == lab.tunlab_key.public);
    report.check(
        format!(
            "{who}: wg show on {} shows {step}, its endpoint and traffic",
            peer.name()
        ),
        t.is_some_and(|p| {
            p.endpoint == format!("{}:{TUNLAB_PORT}", peer.tunlab_address()) && p.rx > 0 && p.tx > 0
        }),
        format!("{t:?}"),
    );
    // The other side counts what we count: every UDP payload.
    if peer == Peer::WireguardGo
        && let (Some(o), Some(t)) = (o, t)
    {
        report.note(format!(
            "{who}: {step} received {} B and sent {} B; wireguard-go sent {} B and received {} B",
            o.rx, o.tx, t.tx, t.rx
        ));
    }
    Ok(())
}

/// `wg showconf` on our step gives a configuration that `wg syncconf`
/// takes back unchanged: the same configuration again, and the peer's
/// session kept (its latest handshake does not move), as wg promises of
/// syncconf. The file holds our step's private key, so it is mode 600.
/// With our step as the initiator, `wg setconf` of the same file too: it
/// replaces the peers, so the session is gone and a new handshake must
/// follow (as the responder, our step would wait for the peer to notice,
/// up to 15 s, so that role skips it).
fn showconf_syncconf(
    lab: &Lab,
    role: Role,
    s: &Session,
    tag: &str,
    who: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let before = lab.tunlab.stdout("wg", ["showconf", &s.tunlab_if])?;
    let handshake = |peers: &[DumpPeer]| {
        peers
            .iter()
            .find(|p| p.public == lab.peer_key.public)
            .map(|p| p.latest_handshake)
    };
    let handshake_before = handshake(&dump(&lab.tunlab, &s.tunlab_if)?);
    let file = lab.out.join(format!("{tag}-showconf.conf"));
    let _ = std::fs::remove_file(&file);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| f.write_all(before.as_bytes()))
        .with_context(|| format!("writing {}", file.display()))?;
    let synced = lab
        .tunlab
        .run("wg", ["syncconf", &s.tunlab_if, &path_arg(&file)?])?;
    let after = lab.tunlab.stdout("wg", ["showconf", &s.tunlab_if])?;
    let handshake_after = handshake(&dump(&lab.tunlab, &s.tunlab_if)?);
    report.check(
        format!(
            "{who}: wg showconf on {} names the peer, and wg syncconf takes it back unchanged",
            lab.tunnel.name
        ),
        synced.status.success()
            && before.contains(&format!("PublicKey = {}", lab.peer_key.public))
            && before == after
            && handshake_before.is_some_and(|t| t > 0)
            && handshake_after == handshake_before,
        format!(
            "syncconf: {}; latest handshake {handshake_before:?} then {handshake_after:?}; showconf {}",
            if synced.status.success() {
                "ok".to_string()
            } else {
                String::from_utf8_lossy(&synced.stderr).trim().to_string()
            },
            if before == after { "unchanged" } else { "changed" }
        ),
    );
    if role == Role::Initiator {
        let set = lab
            .tunlab
            .run("wg", ["setconf", &s.tunlab_if, &path_arg(&file)?])?;
        let again = lab.tunlab.stdout("wg", ["showconf", &s.tunlab_if])?;
        lab.tunlab.ping_check(
            report,
            format!("{who}: after wg setconf, ping {}", wireguard::PEER_INNER),
            wireguard::PEER_INNER,
            3,
            &[],
        )?;
        // setconf replaced the peer, so its session is gone and the
        // tunnel above ran on a new handshake (the persistent keepalive
        // or the ping started it): the latest handshake moved. The old
        // one is from the session's start, seconds of transfers ago.
        let renewed = handshake(&dump(&lab.tunlab, &s.tunlab_if)?);
        report.check(
            format!(
                "{who}: wg setconf of that file on {} reads back the same, and a new handshake follows",
                lab.tunnel.name
            ),
            set.status.success()
                && again == before
                && renewed.is_some_and(|t| handshake_before.is_some_and(|b| t > b)),
            if set.status.success() {
                format!(
                    "showconf {}; latest handshake {handshake_before:?} then {renewed:?}",
                    if again == before { "unchanged" } else { "changed" }
                )
            } else {
                String::from_utf8_lossy(&set.stderr).trim().to_string()
            },
        );
    }
    Ok(())
}

/// A new handshake while a ping runs: the initiator forgets the peer and
/// is given it again, so its next packet starts a handshake; the ping
/// must hardly notice.
fn renewal(
    lab: &Lab,
    peer: Peer,
    role: Role,
    s: &Session,
    who: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let host = lab.peer_host(peer)?;
    let (pinger, target, initiator, name, peer_pub, allowed, endpoint) = match role {
        Role::Initiator => (
            &lab.tunlab,
            wireguard::PEER_INNER,
            &lab.tunlab,
            &s.tunlab_if,
            &lab.peer_key.public,
            format!("{}/32,{}/128", wireguard::PEER_INNER, wireguard::PEER_INNER6),
            format!("{}:{PEER_PORT}", peer.address()),
        ),
        Role::Responder => (
            host,
            wireguard::TUNLAB_INNER,
            host,
            &s.peer_if,
            &lab.tunlab_key.public,
            format!("{}/32,{}/128", wireguard::TUNLAB_INNER, wireguard::TUNLAB_INNER6),
            format!("{}:{TUNLAB_PORT}", peer.tunlab_address()),
        ),
    };
    let responder_host = if role == Role::Initiator {
        host
    } else {
        &lab.tunlab
    };
    let responder_if = if role == Role::Initiator {
        &s.peer_if
    } else {
        &s.tunlab_if
    };
    let responder_peer = if role == Role::Initiator {
        &lab.tunlab_key.public
    } else {
        &lab.peer_key.public
    };
    let before = dump(responder_host, responder_if)?
        .into_iter()
        .find(|p| &p.public == responder_peer)
        .map_or(0, |p| p.latest_handshake);
    // Handshake times are in seconds: let one pass.
    std::thread::sleep(Duration::from_millis(1100));
    let ping = pinger
        .command("ping")
        .args(["-n", "-c", "60", "-i", "0.05", "-W", "2", target])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(800));
    let remove = initiator.run("wg", ["set", name, "peer", peer_pub, "remove"])?;
    let psk = lab.psk.path()?;
    let add = initiator.run(
        "wg",
        [
            "set",
            name,
            "peer",
            peer_pub,
            "preshared-key",
            &psk,
            "allowed-ips",
            &allowed,
            "endpoint",
            &endpoint,
        ],
    )?;
    let output = ping.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (sent, got) = crate::traffic::ping_counts(&stdout).unwrap_or((0, 0));
    let after = dump(responder_host, responder_if)?
        .into_iter()
        .find(|p| &p.public == responder_peer)
        .map_or(0, |p| p.latest_handshake);
    report.check(
        format!("{who}: a new handshake while a ping runs (the responder's latest handshake moves)"),
        remove.status.success() && add.status.success() && after > before,
        format!("latest handshake {before} -> {after}"),
    );
    report.check(
        format!("{who}: the ping hardly notices the new handshake (at most 5 of 60 lost)"),
        sent == 60 && got + 5 >= sent,
        format!("{got} of {sent} answered"),
    );
    Ok(())
}

/// Step 07 moves to a new underlay address in the middle of a ping: the
/// peer follows it on its first authenticated message from there (the
/// peers pin their own source address, so it is the step, whose sockets
/// do not, that moves). The address is put back afterwards.
fn roaming(lab: &Lab, peer: Peer, s: &Session, who: &str, report: &mut Report) -> anyhow::Result<()> {
    let host = lab.peer_host(peer)?;
    let (old, new) = (peer.tunlab_address(), peer.tunlab_roamed());
    let veth = peer.tunlab_veth();
    // Deleting the primary address would take the new (secondary) one
    // with it, unless the kernel promotes it (DESIGN.md, field notes).
    lab.tunlab.run(
        "sysctl",
        ["-qw", &format!("net.ipv4.conf.{veth}.promote_secondaries=1")],
    )?;
    let ping = lab
        .tunlab
        .command("ping")
        .args(["-n", "-c", "60", "-i", "0.1", "-W", "2", wireguard::PEER_INNER])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1000));
    lab.tunlab
        .ip(["address", "add", &format!("{new}/24"), "dev", veth])?;
    lab.tunlab
        .ip(["address", "del", &format!("{old}/24"), "dev", veth])?;
    let output = ping.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (sent, got) = crate::traffic::ping_counts(&stdout).unwrap_or((0, 0));
    let endpoint = dump(host, &s.peer_if)?
        .into_iter()
        .find(|p| p.public == lab.tunlab_key.public)
        .map(|p| p.endpoint)
        .unwrap_or_default();
    let step = lab.tunnel.name;
    report.check(
        format!("{who}: {step} moves to {new} and {} follows it", peer.name()),
        endpoint == format!("{new}:{TUNLAB_PORT}"),
        format!("its endpoint for {step}: {endpoint}"),
    );
    report.check(
        format!("{who}: the ping goes on while {step} moves (at most 3 of 60 lost)"),
        sent == 60 && got + 3 >= sent,
        format!("{got} of {sent} answered"),
    );
    // Put the address back for the next session.
    lab.tunlab
        .ip(["address", "add", &format!("{old}/24"), "dev", veth])?;
    let _ = lab
        .tunlab
        .ip(["address", "del", &format!("{new}/24"), "dev", veth]);
    Ok(())
}

/// Stops a session: the step must exit cleanly and take its socket.
pub fn stop(lab: &Lab, s: &mut Session, who: &str, report: &mut Report) -> anyhow::Result<()> {
    let step = lab.tunnel.name;
    let status = s.step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
    report.check(
        format!("{who}: {step} exits cleanly on SIGTERM"),
        status.success(),
        format!("{status}"),
    );
    let _ = s.peer.stop(Signal::SIGTERM, Duration::from_secs(5));
    let gone = !socket(&s.tunlab_if).exists();
    report.check(
        format!("{who}: {step} removed its UAPI socket"),
        gone,
        socket(&s.tunlab_if).display().to_string(),
    );
    Ok(())
}

/// How many packets of the capture the key-log check decrypts: the
/// handshake and the pings of the first session are well inside them.
const KEYLOG_PACKETS: u32 = 2000;

// ANCHOR: keylog
/// The key log our step wrote (`--keylog`: for each handshake, our static
/// and ephemeral private keys, the peer's public key and the pre-shared
/// key, as wireguard-tools' extract-handshakes writes them) is all tshark
/// needs: given it as `wg.keylog_file`, it must show the pings inside.
fn keylog_decrypts(lab: &Lab, tag: &str, pcap: &Path, report: &mut Report) -> anyhow::Result<()> {
    if !env::on_path("tshark") {
        report.note("tshark is not installed: the key-log check did not run (apt-get install tshark)");
        return Ok(());
    }
    let keys = lab.out.join(format!("{tag}.keylog"));
    let sessions = std::fs::read_to_string(&keys)?
        .matches("New handshake session:")
        .count();
    // The pings come first in the capture; the 20 MB and iperf3 behind
    // them are some 250,000 packets, which tshark would decrypt and whose
    // inner TCP it would analyse, for minutes on a slow machine.
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-c", &KEYLOG_PACKETS.to_string()])
        .arg("-o")
        .arg(format!("wg.keylog_file:{}", path_arg(&keys)?))
        .args([
            "-Y",
            "icmp.type == 8 || icmp.type == 0",
            "-T",
            "fields",
            "-e",
            "icmp.type",
        ])
        .output()
        .context("running tshark")?;
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    report.check(
        format!(
            "a capture of {} and wireguard-go decrypts in tshark with {}'s own key log (wg.keylog_file)",
            lab.tunnel.name, lab.tunnel.name
        ),
        out.status.success() && sessions > 0 && lines >= 12,
        format!("{lines} ICMP messages decrypted, {sessions} handshake session(s) in the key log"),
    );
    Ok(())
}
// ANCHOR_END: keylog

/// With a pre-shared key the step does not share, there is no tunnel, and
/// the step counts why.
pub fn wrong_psk(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let peer = Peer::WireguardGo;
    let mut s = lab.session(peer, Role::Responder, &lab.wrong_psk, "wrong-psk", true)?;
    let host = lab.peer_host(peer)?;
    let pinged = host.ping(wireguard::TUNLAB_INNER, 3, &[])?;
    report.check(
        "a wrong pre-shared key: no ping gets through",
        pinged.none_answered(),
        pinged.to_string(),
    );
    let theirs = dump(host, &s.peer_if)?;
    report.check(
        "a wrong pre-shared key: wireguard-go never completes a handshake",
        theirs.iter().all(|p| p.latest_handshake == 0),
        format!("{theirs:?}"),
    );
    stop(lab, &mut s, "wrong psk", report)?;
    Ok(())
}

// ANCHOR: up_down
/// `up FILE.conf` with a full tunnel to wireguard-go, then `kill -9` of
/// the interface, then `down FILE.conf`: the host (routes, resolver) is as
/// it was. The file's DNS names two servers and a search domain, and the
/// resolver must have all three, in order, as wg-quick sets them.
pub fn up_and_down(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let peer = Peer::WireguardGo;
    let host = lab.peer_host(peer)?;
    let peer_if = format!("{}q{}p", lab.tunnel.prefix, lab.run);
    let log = |who: &str| lab.out.join(format!("up-down-{who}.log"));
    let mut peer_run = peer.start(host, &peer_if, &log(peer.name()))?;
    wg_set(
        host,
        &peer_if,
        &lab.peer_key,
        PEER_PORT,
        &lab.tunlab_key.public,
        &lab.psk.path()?,
        &format!("{}/32,{}/128", wireguard::TUNLAB_INNER, wireguard::TUNLAB_INNER6),
        &[],
    )?;
    host.ip([
        "address",
        "add",
        &format!("{}/24", wireguard::PEER_INNER),
        "dev",
        &peer_if,
    ])?;
    host.ip([
        "address",
        "add",
        &format!("{}/64", wireguard::PEER_INNER6),
        "dev",
        &peer_if,
        "nodad",
    ])?;
    host.ip(["link", "set", &peer_if, "mtu", "1420", "up"])?;

    let resolver = "nameserver 192.0.2.53\n";
    lab.tunlab.set_resolv_conf(resolver)?;
    let routes_before = lab.tunlab.ip(["route"])?;
    let read = |p: &Path| -> anyhow::Result<String> { Ok(std::fs::read_to_string(p)?.trim().to_string()) };
    let ifname = format!("{}q{}", lab.tunnel.prefix, lab.run);
    let conf = lab.out.join(format!("{ifname}.conf"));
    let text = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {}/24, {}/64\nDNS = {}, {}, lab.example\nMTU = 1420\n\n[Peer]\nPublicKey = {}\nPresharedKey = {}\nEndpoint = {}:{PEER_PORT}\nAllowedIPs = 0.0.0.0/0, ::/0\n",
        read(&lab.tunlab_key.file)?,
        wireguard::TUNLAB_INNER,
        wireguard::TUNLAB_INNER6,
        wireguard::PEER_INNER,
        wireguard::PEER_INNER6,
        lab.peer_key.public,
        read(&lab.psk.file)?,
        peer.address(),
    );
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&conf);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&conf)?;
        f.write_all(text.as_bytes())?;
    }
    let conf_arg = path_arg(&conf)?;
    let up = lab
        .tunlab
        .run(&path_arg(&lab.tunnel.binary)?, ["up", conf_arg.as_str()])?;
    let up_text = String::from_utf8_lossy(&up.stdout).to_string() + &String::from_utf8_lossy(&up.stderr);
    report.check(
        "up FILE.conf brings up a full tunnel to wireguard-go",
        up.status.success(),
        up_text.trim(),
    );
    let pinged = lab.tunlab.ping(wireguard::PEER_INNER, 3, &[])?;
    let routes = lab.tunlab.ip(["route"])?;
    let resolv = lab.tunlab.stdout("cat", ["/etc/resolv.conf"])?;
    let wanted = format!(
        "nameserver {}\nnameserver {}\nsearch lab.example\n",
        wireguard::PEER_INNER,
        wireguard::PEER_INNER6
    );
    report.check(
        "after up: ping through the tunnel, everything routed into it, the resolver from DNS (both servers, the search domain)",
        pinged.all_answered(3)
            && routes.contains(&format!("0.0.0.0/1 dev {ifname}"))
            && resolv.contains(&wanted),
        format!(
            "{pinged}; routes: {}; resolver: {}",
            routes.lines().count(),
            resolv.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("; ")
        ),
    );
    // kill -9: the interface cannot undo anything.
    let pid = up_text
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse::<i32>().ok());
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let left = lab.tunlab.stdout("cat", ["/etc/resolv.conf"])?;
    report.check(
        "after kill -9 of the interface, its resolver is still in place (down has work to do)",
        pid.is_some() && left.contains(wireguard::PEER_INNER),
        left.lines().last().unwrap_or("").to_string(),
    );
    let down = lab
        .tunlab
        .run(&path_arg(&lab.tunnel.binary)?, ["down", conf_arg.as_str()])?;
    let down_text = String::from_utf8_lossy(&down.stdout).to_string();
    let routes_after = lab.tunlab.ip(["route"])?;
    let resolv_after = lab.tunlab.stdout("cat", ["/etc/resolv.conf"])?;
    report.check(
        "down FILE.conf after kill -9 puts the routes and the resolver back as they were",
        down.status.success() && routes_after == routes_before && resolv_after == resolver,
        format!("{} lines undone or already gone", down_text.lines().count()),
    );
    let _ = peer_run.stop(Signal::SIGTERM, Duration::from_secs(5));
    Ok(())
}
// ANCHOR_END: up_down

// ANCHOR: flood
/// A flood of initiations with a valid mac1 (anyone who knows the step's
/// public key can make one) from `attacker`, while the real peer
/// connects. Step 07 goes under load, answers with cookie replies instead
/// of Diffie-Hellman work, and the peer, which retries with mac2, still
/// gets through.
pub fn flood(lab: &Lab, peer: Peer, report: &mut Report) -> anyhow::Result<()> {
    let who = format!("flood, {}", peer.name());
    let tag = format!("flood-{}", peer.name());
    let host = lab.peer_host(peer)?;
    let pcap = lab.out.join(format!("{tag}-attacker.pcap"));
    let capture = Capture::start(&lab.attacker, "veth0", &pcap)?;
    // No keepalive: the peer's first ping, once the flood runs, starts its
    // handshake.
    let mut s = lab.session(peer, Role::Responder, &lab.psk, &tag, false)?;
    let script = r#"
import base64, hashlib, os, socket, sys, time
pub = base64.b64decode(sys.argv[1]); dst = (sys.argv[2], int(sys.argv[3])); secs = float(sys.argv[4])
key = hashlib.blake2s(b"mac1----" + pub).digest()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + secs; n = 0
while time.time() < end:
    m = b"\x01\x00\x00\x00" + os.urandom(112)
    m += hashlib.blake2s(m, key=key, digest_size=16).digest() + bytes(16)
    s.sendto(m, dst); n += 1
    if n % 20 == 0: time.sleep(0.01)
    if n == 500: print("flooding", flush=True)
print(n)
"#;
    let mut flood = lab
        .attacker
        .command("python3")
        .args([
            "-c",
            script,
            &lab.tunlab_key.public,
            wireguard::TUNLAB_TO_ATTACKER,
            &TUNLAB_PORT.to_string(),
            &FLOOD_SECONDS.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Wait until 500 initiations are out, so the step is under load (more
    // than 100 in a second) before the real peer starts its handshake.
    let mut stdout = std::io::BufReader::new(flood.stdout.take().context("the flood's stdout")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line)?;
    if line.trim() != "flooding" {
        bail!("the flood did not start: {line:?}");
    }
    // The peer's first initiation gets a cookie reply; its retry, 5 s
    // later, carries mac2 and is answered.
    let started = Instant::now();
    let pinged = host.ping(wireguard::TUNLAB_INNER, 12, &["-i", "1"])?;
    let answered = pinged.counts.map_or(0, |(_, got)| got);
    // The first ping's round-trip time (the answer with the lowest
    // icmp_seq, not the first line: packets that waited for the handshake
    // may be answered after later ones): the first ping waits in the
    // step's peer for the handshake, which needs the retry with mac2.
    let field = |l: &str, name: &str| -> Option<f64> {
        l.split(name).nth(1)?.split_whitespace().next()?.parse().ok()
    };
    let first_rtt_ms = pinged
        .stdout
        .lines()
        .filter_map(|l| Some((field(l, "icmp_seq=")?, field(l, "time=")?)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, ms)| ms);
    // The flood prints its count last, as it ends; its first line was
    // read above, from the same reader.
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest)?;
    flood.wait()?;
    let sent: u64 = rest
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    if let Some(pid) = s.step.pid() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGUSR1);
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = s.step.log_text();
    let replies = log
        .lines()
        .rev()
        .find_map(|l| l.split("cookie replies sent ").nth(1))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let captured = capture.finish()?;
    let cookies_on_wire = count_cookie_replies(&captured.path).unwrap_or(0);
    let step = lab.tunnel.name;
    report.check(
        format!("{who}: {step} answers the flood with cookie replies"),
        sent > 0 && replies > 0 && cookies_on_wire > 0,
        format!("{sent} initiations sent; {replies} cookie replies counted, {cookies_on_wire} seen on the attacker's link"),
    );
    report.check(
        format!("{who}: the real peer still connects during the flood, after a cookie round trip"),
        answered >= 3 && first_rtt_ms.is_some_and(|ms| ms >= 4000.0),
        format!(
            "{answered} of 12 pings (1 s apart) answered, the first after {} ms (a handshake retry is 5 s), in {:.1} s",
            first_rtt_ms.map_or("-".into(), |ms| format!("{ms:.0}")),
            started.elapsed().as_secs_f64()
        ),
    );
    let status = s.step.log_line("unattributed:").unwrap_or_default();
    report.note(format!("{who}: {step}'s status: {}", status.trim()));
    stop(lab, &mut s, &who, report)?;
    Ok(())
}
// ANCHOR_END: flood

/// Cookie replies (UDP payloads starting 3, 0, 0, 0, 64 bytes) in a capture.
fn count_cookie_replies(pcap: &Path) -> anyhow::Result<usize> {
    let (_, frames) = step01_ping_tun::pcap::read_any(pcap)?;
    Ok(frames
        .iter()
        .filter_map(|f| step01_ping_tun::pcap::ip_in_ethernet(&f.data))
        .filter(|ip| ip.first().is_some_and(|b| b >> 4 == 4) && ip.len() == 20 + 8 + 64 && ip[9] == 17)
        .filter(|ip| ip[28..32] == [3, 0, 0, 0])
        .count())
}
