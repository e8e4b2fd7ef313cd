//! Lab 05: its network, and one ping's round trip through the tunnel and
//! the server's NAT, from the recorded captures.

use std::net::Ipv4Addr;

use anyhow::{Context, bail};
use etherparse::{Icmpv4Type, SlicedPacket, TransportSlice};
use tunlab::lab05::Client;
use tunlab::topology::{self as lab_topology, TUN, TUNNEL_PORT, tunnel};

use crate::ladder::{Ladder, Lane, Msg, Row};
use crate::svg::{Canvas, MARGIN, Paint, TOP, WIDTH, color};
use crate::topology::{self, Host, Iface, Link};
use crate::{Figure, capture};

/// Lab 05's hosts, interfaces, addresses and links, read from the lab's
/// topology (`tunlab::topology::full_tunnel`), the data the lab builds its
/// network from; the TUN devices' addresses are the tunnel's, which the
/// steps give their devices.
pub fn network() -> (Vec<Host>, Vec<Link>) {
    let spec = lab_topology::full_tunnel();
    // The host's interfaces in the spec's order, each with its addresses.
    let ifaces = |host: &str| -> Vec<Iface> {
        spec.ends_of(host)
            .map(|(end, _)| {
                let addresses: Vec<String> = end.addresses.iter().map(|a| a.to_string()).collect();
                let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
                Iface::new(end.interface, &addresses)
            })
            .collect()
    };
    let tun =
        |v4: Ipv4Addr, v6: std::net::Ipv6Addr| Iface::new(TUN, &[&format!("{v4}/24"), &format!("{v6}/64")]);
    let client = |c: Client, y: f64, tun_first: bool| {
        let (in4, in6) = c.inner();
        let mut list = ifaces(c.name());
        if tun_first {
            list.insert(0, tun(in4, in6));
        } else {
            list.push(tun(in4, in6));
        }
        let role = match c {
            Client::One => "client --full-tunnel --dns --kill-switch",
            Client::Two => "client --full-tunnel",
        };
        Host {
            name: c.name().into(),
            role: role.into(),
            ifaces: list,
            notes: vec![format!(
                "default route via {}; the full tunnel sends all but the server's address into tun0",
                c.server()
            )],
            x: MARGIN,
            y,
            w: 200.0,
        }
    };
    // The server's links to the clients, its TUN device between them.
    let mut server_ifaces = ifaces("server");
    server_ifaces.insert(1, tun(tunnel::SERVER, tunnel::SERVER6));
    let server = Host {
        name: "server".into(),
        role: "server --nat".into(),
        ifaces: server_ifaces,
        notes: vec![format!(
            "forwards, and masquerades the tunnel's addresses as its own; UDP port {TUNNEL_PORT}"
        )],
        x: 290.0,
        y: TOP + 40.0,
        w: 190.0,
    };
    let internet = Host {
        name: "internet".into(),
        role: "web and name server".into(),
        ifaces: ifaces("internet"),
        notes: vec!["knows the way back to 192.0.2.0/24, and nothing of the tunnel's addresses".into()],
        x: WIDTH - MARGIN - 170.0,
        y: TOP + 100.0,
        w: 170.0,
    };
    let hosts = vec![
        client(Client::One, TOP, false),
        server,
        internet,
        client(Client::Two, TOP + 190.0, true),
    ];
    let index = |name: &str| hosts.iter().position(|h| h.name == name).unwrap_or(0);
    let mut links: Vec<Link> = spec
        .links
        .iter()
        .map(|l| Link {
            a: (index(l.a.host), l.a.interface.into()),
            b: (index(l.b.host), l.b.interface.into()),
            label: l.mtu.map(|mtu| format!("MTU {mtu}")),
            color: color::INK,
            dashed: false,
        })
        .collect();
    for client in [Client::One, Client::Two] {
        links.push(Link {
            a: (index(client.name()), TUN.into()),
            b: (index("server"), TUN.into()),
            label: Some("tunnel".into()),
            color: color::OUTER,
            dashed: true,
        });
    }
    (hosts, links)
}

pub fn topology() -> anyhow::Result<Figure> {
    let (hosts, links) = network();
    let mut c = Canvas::new("Lab 05: two clients, a server with NAT, and the internet");
    topology::draw(&mut c, &hosts, &links);
    Ok(Figure::from_canvas(
        c,
        "Each host is a network namespace; solid lines are veth pairs, dashed lines the tunnel, \
         which runs inside UDP over the veths. Client1's link has the smaller MTU. The internet \
         host only ever sees the server's address.",
    ))
}

/// An ICMP echo in an IPv4 packet: source, destination, identifier, and
/// whether it is the request.
fn echo(ip: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, bool)> {
    let p = SlicedPacket::from_ip(ip).ok()?;
    let Some(etherparse::NetSlice::Ipv4(v4)) = p.net else {
        return None;
    };
    let (src, dst) = (v4.header().source_addr(), v4.header().destination_addr());
    match p.transport? {
        TransportSlice::Icmpv4(icmp) => match icmp.icmp_type() {
            Icmpv4Type::EchoRequest(e) => Some((src, dst, e.id, true)),
            Icmpv4Type::EchoReply(e) => Some((src, dst, e.id, false)),
            _ => None,
        },
        _ => None,
    }
}

/// The echo request and reply of `path`.
type Echo = (Ipv4Addr, Ipv4Addr, u16);
fn echo_pair(path: &str) -> anyhow::Result<(Echo, Echo)> {
    let echoes: Vec<_> = capture(path)?.iter().filter_map(|p| echo(&p.ip)).collect();
    let request = echoes.iter().find(|e| e.3).context("no echo request")?;
    let reply = echoes
        .iter()
        .find(|e| !e.3 && e.2 == request.2)
        .context("no echo reply")?;
    Ok(((request.0, request.1, request.2), (reply.0, reply.1, reply.2)))
}

/// One ping from client1 to the internet host and back: the addresses at
/// each hop.
pub fn round_trip() -> anyhow::Result<Figure> {
    let (inside, outside) = ("step05/server-tun.pcap", "step05/internet.pcap");
    let (in_req, in_rep) = echo_pair(inside).with_context(|| format!("pcaps/{inside}"))?;
    let (out_req, out_rep) = echo_pair(outside).with_context(|| format!("pcaps/{outside}"))?;
    let c1 = Client::One;
    let (client_in, client_out, server_link) = (c1.inner().0, c1.underlay().0, c1.server());
    if in_req.0 != client_in || in_req.1 != out_req.1 || in_rep.0 != out_rep.0 {
        bail!("the captures do not hold one ping from client1 to the internet host and its reply");
    }
    let id = in_req.2;
    let (client, server, internet) = (0, 1, 2);
    let mut l = Ladder::new(vec![
        Lane::new("client1", &format!("{client_out}, tun0 {client_in}")),
        Lane::new("server", &format!("{server_link}, {}", out_req.0)),
        Lane::new("internet", &out_req.1.to_string()),
    ]);
    l.note_width = 230.0;
    let arrow = " → ";
    l.push(Row::note(
        client,
        format!("ping's request enters tun0\n{}{arrow}{}", in_req.0, in_req.1),
        Paint::INNER,
    ));
    l.msg(
        Msg::new(
            client,
            server,
            format!("UDP {client_out}{arrow}{server_link}:{}", TUNNEL_PORT),
        )
        .detail(format!("sealed inside: {}{arrow}{}", in_req.0, in_req.1))
        .color(color::OUTER),
    );
    l.push(Row::note(
        server,
        format!(
            "decrypted and written to tun0 ({inside})\n{}{arrow}{}",
            in_req.0, in_req.1
        ),
        Paint::INNER,
    ));
    l.push(Row::note(
        server,
        format!(
            "masquerade, remembered by conntrack\nsource {}{arrow}{}",
            in_req.0, out_req.0
        ),
        Paint::MARK,
    ));
    l.msg(
        Msg::new(server, internet, format!("{}{arrow}{}", out_req.0, out_req.1))
            .detail(format!("echo request, id {id} ({outside})"))
            .color(color::INNER),
    );
    l.msg(
        Msg::new(internet, server, format!("{}{arrow}{}", out_rep.0, out_rep.1))
            .detail(format!("echo reply, id {} ({outside})", out_rep.2))
            .color(color::INNER),
    );
    l.push(Row::note(
        server,
        format!(
            "conntrack undoes the masquerade\ndestination {}{arrow}{}",
            out_rep.1, in_rep.1
        ),
        Paint::MARK,
    ));
    l.push(Row::note(
        server,
        format!(
            "routed into tun0, read and sealed ({inside})\n{}{arrow}{}",
            in_rep.0, in_rep.1
        ),
        Paint::INNER,
    ));
    l.msg(
        Msg::new(
            server,
            client,
            format!("UDP {server_link}:{}{arrow}{client_out}", TUNNEL_PORT),
        )
        .detail(format!("sealed inside: {}{arrow}{}", in_rep.0, in_rep.1))
        .color(color::OUTER),
    );
    l.push(Row::note(
        client,
        format!(
            "opened, written to tun0, ping prints it\n{}{arrow}{}",
            in_rep.0, in_rep.1
        ),
        Paint::INNER,
    ));
    let mut c = Canvas::new("Lab 05: one ping's round trip, address by address");
    l.draw(&mut c, TOP);
    Ok(Figure::from_canvas(
        c,
        &format!(
            "The inner addresses on the server and outside it are those of pcaps/{inside} and \
             pcaps/{outside} (the ping of lab 05's recording); client1's side and the underlay are \
             the lab's addresses. Inside the tunnel the packet keeps client1's tunnel address; only \
             the server's NAT, on the way out, puts its own address in, and conntrack takes it out \
             of the reply."
        ),
    ))
}
