//! Step 06's two designs, as lab 06 recorded them: layer 4 (a control
//! connection the client dials, a stream per visitor) and layer 3 (step
//! 05's VPN, DNAT on both ends, route_localnet on the client).

use std::net::SocketAddrV4;

use anyhow::{Context, bail};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use tunlab::lab06;
use tunlab::topology::{TUNNEL_PORT, internet, tunnel, underlay};

use crate::ladder::{Ladder, Lane, Msg, Row};
use crate::svg::{Canvas, Paint, TOP, color};
use crate::{Figure, capture, workspace_root};

/// The frames of the recorded control connection, one per line, as step
/// 06's `control_golden` test decrypts them from `pcaps/step06/` and pins
/// them in its snapshot.
const CONTROL_SNAPSHOT: &str = "steps/step06-localhost/tests/snapshots/control_golden__control.snap";

/// Who sent a frame of the control connection, and what it was.
fn control_frames() -> anyhow::Result<Vec<(bool, String)>> {
    let text = std::fs::read_to_string(workspace_root().join(CONTROL_SNAPSHOT))
        .with_context(|| format!("reading {CONTROL_SNAPSHOT}"))?;
    // The snapshot's body follows its second `---` line.
    let body = text.splitn(3, "---\n").nth(2).context("no snapshot body")?;
    let mut frames = Vec::new();
    for line in body.lines().map(str::trim) {
        if line.starts_with("connection ") {
            if !frames.is_empty() {
                break; // the first connection only
            }
            continue;
        }
        let frame = match line {
            "handshake initiation" => (true, line.to_string()),
            "handshake response" => (false, line.to_string()),
            _ => match line.split_once(": ") {
                Some(("client > server", f)) => (true, f.to_string()),
                Some(("server > client", f)) => (false, f.to_string()),
                _ => bail!("{CONTROL_SNAPSHOT}: a line the figure cannot read: {line:?}"),
            },
        };
        frames.push(frame);
    }
    Ok(frames)
}

/// Layer 4: the client dials the server; each visitor becomes a stream
/// inside that one connection.
pub fn layer4() -> anyhow::Result<Figure> {
    let frames = control_frames()?;
    let (visitor, server, client, service) = (0, 1, 2, 3);
    let public = SocketAddrV4::new(internet::SERVER, lab06::HTTP_PORT);
    let local = format!("127.0.0.1:{}", lab06::HTTP_PORT);
    let mut l = Ladder::new(vec![
        Lane::new("visitor", &internet::HOST.to_string()),
        Lane::new("server", &format!("{}, {}", underlay::SERVER, internet::SERVER)),
        Lane::new("client", &underlay::CLIENT.to_string()),
        Lane::new("web service", &local),
    ]);
    l.note_width = 230.0;
    l.msg(
        Msg::new(
            client,
            server,
            format!("TCP connect {}:{}", underlay::SERVER, lab06::CONTROL_PORT),
        )
        .detail("the client dials out: the control connection")
        .color(color::OUTER),
    );
    let control = |to_server: bool, frame: &str| {
        let (a, b) = if to_server {
            (client, server)
        } else {
            (server, client)
        };
        Msg::new(a, b, frame.to_string()).color(color::SEALED)
    };
    let mut opened = false;
    for (to_server, frame) in &frames {
        let word = frame.split_whitespace().next().unwrap_or("");
        match (word, *to_server) {
            ("open", _) => {
                l.msg(Msg::new(visitor, server, format!("TCP connect {public}")).color(color::INNER));
                l.msg(control(*to_server, frame));
                l.msg(Msg::new(client, service, format!("TCP connect {local}")).color(color::INNER));
                opened = true;
            }
            ("data", false) => {
                let bytes = frame.rsplit_once(' ').map_or("", |(rest, _)| rest);
                let size = bytes.rsplit(' ').next().unwrap_or("");
                l.msg(Msg::new(visitor, server, format!("request, {size} bytes")).color(color::INNER));
                l.msg(control(false, frame));
                l.msg(Msg::new(client, service, format!("{size} bytes")).color(color::INNER));
            }
            ("data", true) => {
                let size = frame.rsplit(' ').nth(1).unwrap_or("");
                l.msg(Msg::new(service, client, format!("page, {size} bytes")).color(color::INNER));
                l.msg(control(true, frame));
                l.msg(Msg::new(server, visitor, format!("{size} bytes")).color(color::INNER));
            }
            ("close", true) => {
                l.msg(Msg::new(service, client, "FIN").color(color::INNER).dashed());
                l.msg(control(true, frame));
                l.msg(Msg::new(server, visitor, "FIN").color(color::INNER).dashed());
            }
            ("close", false) => l.msg(control(false, frame)),
            ("exposed", _) => {
                l.msg(control(*to_server, frame));
                l.push(Row::note(server, format!("listens on {public}"), Paint::GOOD));
            }
            _ => l.msg(control(*to_server, frame)),
        }
    }
    if !opened {
        bail!("{CONTROL_SNAPSHOT}: no stream was opened");
    }
    let mut c = Canvas::new("Step 06, layer 4: one control connection, a stream per visitor");
    l.draw(&mut c, TOP);
    Ok(Figure::from_canvas(
        c,
        "Purple arrows are frames inside the encrypted control connection, as step 06's \
             control_golden test decrypts them from lab 06's recording (pcaps/step06/control.pcap); \
             blue arrows are the visitor's and the service's own TCP connections, which end at the \
             server and at the client. The client needs no open port: it dials out, and the server \
             opens a stream to it for each visitor.",
    ))
}

/// A TCP SYN or SYN-ACK: its addresses and ports, and which it is.
fn segment(ip: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4, &'static str)> {
    let p = SlicedPacket::from_ip(ip).ok()?;
    let Some(NetSlice::Ipv4(v4)) = p.net else {
        return None;
    };
    let TransportSlice::Tcp(tcp) = p.transport? else {
        return None;
    };
    let kind = match (tcp.syn(), tcp.ack()) {
        (true, false) => "SYN",
        (true, true) => "SYN-ACK",
        _ => return None,
    };
    let h = v4.header();
    Some((
        SocketAddrV4::new(h.source_addr(), tcp.source_port()),
        SocketAddrV4::new(h.destination_addr(), tcp.destination_port()),
        kind,
    ))
}

/// The first SYN and SYN-ACK of a capture.
fn handshake(path: &str) -> anyhow::Result<[(SocketAddrV4, SocketAddrV4); 2]> {
    let segments: Vec<_> = capture(path)?.iter().filter_map(|p| segment(&p.ip)).collect();
    let find = |kind: &str| {
        segments
            .iter()
            .find(|s| s.2 == kind)
            .map(|s| (s.0, s.1))
            .with_context(|| format!("pcaps/{path} has no {kind}"))
    };
    Ok([find("SYN")?, find("SYN-ACK")?])
}

/// Layer 3: the visitor's SYN and the SYN-ACK, address by address.
pub fn layer3() -> anyhow::Result<Figure> {
    let (outside, inside) = ("step06/l3-outside.pcap", "step06/l3-server-tun.pcap");
    let [out_syn, out_ack] = handshake(outside)?;
    let [in_syn, in_ack] = handshake(inside)?;
    let local = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, lab06::HTTP_PORT);
    let delivered = in_syn.0;
    if out_syn.0 != out_ack.1 || in_syn.0 != in_ack.1 || out_syn.0.port() != in_syn.0.port() {
        bail!("pcaps/{outside} and pcaps/{inside} do not hold the same connection");
    }
    if *in_syn.1.ip() != tunnel::CLIENT {
        bail!(
            "pcaps/{inside}: the SYN goes to {}, not the client's tunnel address",
            in_syn.1
        );
    }
    let (visitor, server, client, service) = (0, 1, 2, 3);
    let mut l = Ladder::new(vec![
        Lane::new("visitor", &internet::HOST.to_string()),
        Lane::new("server", &format!("{}, {}", internet::SERVER, in_syn.0.ip())),
        Lane::new("client", &format!("tun0 {}", tunnel::CLIENT)),
        Lane::new("web service", &local.to_string()),
    ]);
    l.note_width = 250.0;
    l.msg(
        Msg::new(
            client,
            server,
            format!("UDP to {}:{}: step 05's tunnel", underlay::SERVER, TUNNEL_PORT),
        )
        .detail("the client dials out; the server forwards a port to it")
        .color(color::OUTER),
    );
    let arrow = " → ";
    l.msg(
        Msg::new(visitor, server, "SYN")
            .detail(format!("{}{arrow}{}", out_syn.0, out_syn.1))
            .color(color::INNER),
    );
    l.push(Row::note(
        server,
        format!(
            "prerouting DNAT: destination\n{}{arrow}{}\nmasquerade into tun0: source {}",
            out_syn.1,
            in_syn.1,
            in_syn.0.ip()
        ),
        Paint::MARK,
    ));
    l.msg(
        Msg::new(server, client, "SYN, sealed in the tunnel")
            .detail(format!("{}{arrow}{}", in_syn.0, in_syn.1))
            .color(color::INNER),
    );
    l.push(Row::note(
        client,
        format!(
            "prerouting DNAT: destination\n{}{arrow}{local}\nroute_localnet=1 on tun0 lets it reach 127.0.0.0/8",
            in_syn.1
        ),
        Paint::MARK,
    ));
    l.msg(
        Msg::new(client, service, "SYN")
            .detail(format!("{delivered}{arrow}{local}"))
            .color(color::INNER),
    );
    l.msg(
        Msg::new(service, client, "SYN-ACK")
            .detail(format!("{local}{arrow}{delivered}"))
            .color(color::INNER),
    );
    l.push(Row::note(
        client,
        format!("conntrack undoes the DNAT: source\n{local}{arrow}{}", in_ack.0),
        Paint::MARK,
    ));
    l.msg(
        Msg::new(client, server, "SYN-ACK, sealed in the tunnel")
            .detail(format!("{}{arrow}{}", in_ack.0, in_ack.1))
            .color(color::INNER),
    );
    l.push(Row::note(
        server,
        format!("conntrack undoes both\n{}{arrow}{}", out_ack.0, out_ack.1),
        Paint::MARK,
    ));
    l.msg(
        Msg::new(server, visitor, "SYN-ACK")
            .detail(format!("{}{arrow}{}", out_ack.0, out_ack.1))
            .color(color::INNER),
    );
    let mut c = Canvas::new("Step 06, layer 3: a forwarded port, delivered to loopback");
    l.draw(&mut c, TOP);
    Ok(Figure::from_canvas(
        c,
        &format!(
            "The server's side is lab 06's recording (pcaps/{outside} outside, pcaps/{inside} in the \
             server's tun0); the client's loopback side follows from its DNAT to 127.0.0.1. Our \
             programs only carry the packets through the tunnel, as in step 05; nftables rewrites \
             their addresses and the kernel routes them. The web service sees every visitor as {}, the server's tunnel address.",
            in_syn.0.ip()
        ),
    ))
}
