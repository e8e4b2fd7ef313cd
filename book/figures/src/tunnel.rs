//! The tunnel's own formats: step 02's encapsulation and step 04's data
//! message and handshake, drawn from the steps' constants, field tables
//! and wire views, and from the captures they were recorded in.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use step02_plain_tunnel::mtu::{IPV4_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN, tun_mtu};
use step02_plain_tunnel::wire::{self as wire02, Repr, udp_payload};
use step04_crypto::crypto::TAG_LEN;
use step04_crypto::wire::{
    DATA_FIELDS, DATA_HEADER_LEN, DataPacket, InitiationPacket, MessageType, ResponsePacket,
};

use crate::headers::is_echo_request_v4;
use crate::ladder::{Ladder, Lane, Msg, Row};
use crate::layout::{Field, Part, bracket, draw_grid, draw_strip};
use crate::svg::{Anchor, Canvas, Font, MARGIN, Paint, TOP, WIDTH, color};
use crate::{Figure, capture};

/// The port both steps listen on in their labs.
const PORT: u16 = 51820;
/// The underlay MTU the figures compute with: Ethernet's.
const ETHERNET_MTU: u16 = 1500;

/// A tunnel message of an underlay capture.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// Since the capture's first record.
    pub(crate) time: Duration,
    pub(crate) from: SocketAddr,
    pub(crate) to: SocketAddr,
    /// The UDP payload.
    pub(crate) bytes: Vec<u8>,
}

/// The tunnel messages of an underlay capture: UDP to or from port 51820.
pub(crate) fn tunnel_messages(path: &str) -> anyhow::Result<Vec<Message>> {
    let mut out = Vec::new();
    for p in capture(path)? {
        let Some((sport, dport, payload)) = udp_payload(&p.ip) else {
            continue;
        };
        if sport != PORT && dport != PORT {
            continue;
        }
        let ip = etherparse::IpSlice::from_slice(&p.ip).context("an unreadable IP packet")?;
        let (src, dst) = (ip.source_addr(), ip.destination_addr());
        out.push(Message {
            time: p.time,
            from: SocketAddr::new(src, sport),
            to: SocketAddr::new(dst, dport),
            bytes: payload.to_vec(),
        });
    }
    Ok(out)
}

/// Step 02's layers around an inner packet, with the bytes each adds, for
/// an IPv4 and an IPv6 underlay.
pub fn encapsulation() -> anyhow::Result<Figure> {
    let tunnel = wire02::HEADER_LEN as u16;
    let mut c = Canvas::new("Encapsulation: a packet inside the tunnel (step 02)");
    let mut y = TOP + 4.0;
    let mut summaries = Vec::new();
    for (family, ip_len, peer) in [
        ("IPv4", IPV4_HEADER_LEN, SocketAddr::from(([192, 0, 2, 1], PORT))),
        (
            "IPv6",
            IPV6_HEADER_LEN,
            SocketAddr::new("2001:db8::1".parse()?, PORT),
        ),
    ] {
        let mtu = tun_mtu(ETHERNET_MTU, peer);
        let overhead = ip_len + UDP_HEADER_LEN + tunnel;
        if ETHERNET_MTU - overhead != mtu {
            bail!(
                "step 02's tun_mtu gives {mtu} for {family}, its constants {}",
                ETHERNET_MTU - overhead
            );
        }
        c.text(
            MARGIN,
            y + 4.0,
            &format!("over {family}: the path's MTU is {ETHERNET_MTU} bytes"),
            Font::Bold,
            Anchor::Start,
            color::INK,
        );
        let parts = [
            Part {
                name: format!("{family} header"),
                size: format!("{ip_len} bytes"),
                paint: Paint::OUTER,
                width: 120.0,
            },
            Part {
                name: "UDP".into(),
                size: format!("{UDP_HEADER_LEN} bytes"),
                paint: Paint::OUTER,
                width: 76.0,
            },
            Part {
                name: "tunnel".into(),
                size: format!("{tunnel} bytes"),
                paint: Paint::MARK,
                width: 76.0,
            },
            Part {
                name: "inner IP packet".into(),
                size: format!("at most {mtu} bytes: the TUN device's MTU"),
                paint: Paint::INNER,
                width: WIDTH - 2.0 * MARGIN - 272.0,
            },
        ];
        let spans = [
            (2, 3, format!("tunnel message (wire.rs): {tunnel} + {mtu}")),
            (1, 3, format!("UDP datagram: {UDP_HEADER_LEN} + {tunnel} + {mtu}")),
            (
                0,
                3,
                format!(
                    "outer packet: {ip_len} + {UDP_HEADER_LEN} + {tunnel} + {mtu} = {ETHERNET_MTU} bytes"
                ),
            ),
        ];
        let bottom = draw_strip(&mut c, MARGIN, y + 12.0, &parts, &spans);
        c.text(
            MARGIN,
            bottom + 18.0,
            &format!(
                "overhead {ip_len} + {UDP_HEADER_LEN} + {tunnel} = {overhead} bytes, so the TUN MTU is \
                 {ETHERNET_MTU} − {overhead} = {mtu}"
            ),
            Font::Body,
            Anchor::Start,
            color::INK,
        );
        summaries.push(format!("{family} {overhead}"));
        y = bottom + 44.0;
    }
    // A recorded example: a ping inside, and the outer packet it became.
    let source = "step02/underlay.pcap";
    let example = capture(source)?.into_iter().find_map(|p| {
        let (sport, dport, payload) = udp_payload(&p.ip)?;
        let Ok(Repr::Data(inner)) = Repr::parse_bytes(payload) else {
            return None;
        };
        ((dport == PORT || sport == PORT) && is_echo_request_v4(inner)).then_some((inner.len(), p.ip.len()))
    });
    let Some((inner, outer)) = example else {
        bail!("pcaps/{source}: no data message carries an echo request");
    };
    let overhead = usize::from(IPV4_HEADER_LEN + UDP_HEADER_LEN + tunnel);
    if outer != inner + overhead {
        bail!(
            "pcaps/{source}: a {inner}-byte packet travels in {outer} bytes, not {}",
            inner + overhead
        );
    }
    Ok(Figure::from_canvas(
        c,
        &format!(
            "Each layer wraps the one inside it; the sizes come from step 02's mtu.rs and wire.rs, and \
             the strips are not to scale. The first echo request in pcaps/{source} is {inner} bytes \
             inside and {outer} bytes on the wire. A packet larger than the TUN MTU would make the \
             outer packet larger than the path allows."
        ),
    ))
}

/// The client's first data message that carries an echo request in
/// `pcaps/step04/`: its bytes, and the inner packet's length from the
/// client's TUN recording.
fn recorded_data_message() -> anyhow::Result<(Vec<u8>, usize)> {
    let inner = capture("step04/client-tun.pcap")?
        .into_iter()
        .find(|p| is_echo_request_v4(&p.ip))
        .context("pcaps/step04/client-tun.pcap has no echo request")?
        .ip
        .len();
    let sealed_len = inner.next_multiple_of(16) + TAG_LEN;
    let message = tunnel_messages("step04/underlay.pcap")?
        .into_iter()
        .map(|m| m.bytes)
        .find(|m| MessageType::of(m) == Ok(MessageType::Data) && m.len() == DATA_HEADER_LEN + sealed_len)
        .context("pcaps/step04/underlay.pcap has no data message of an echo request's size")?;
    Ok((message, inner))
}

/// Step 04's data message, from its field table, with the values of a
/// recorded one.
pub fn data_message() -> anyhow::Result<Figure> {
    let (message, inner) = recorded_data_message()?;
    let view = DataPacket::new_checked(&message[..]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut fields = Vec::new();
    for (name, range) in DATA_FIELDS {
        let value = match *name {
            "type" => format!("{} (data)", message[range.start]),
            "reserved" => "0".into(),
            "receiver index" => format!("{:#010x}", view.receiver()),
            "counter" => view.counter().to_string(),
            other => bail!("step 04's DATA_FIELDS has a field the figure does not know: {other}"),
        };
        fields.push(Field::bytes(name, range.clone()).value(value));
    }
    let sealed = DATA_HEADER_LEN..message.len() - TAG_LEN;
    fields.push(
        Field::bytes("inner packet, encrypted", sealed.clone())
            .value(format!("the {inner}-byte echo request, padded"))
            .paint(Paint::SEALED),
    );
    fields.push(Field::bytes("Poly1305 tag", sealed.end..message.len()).paint(Paint::MARK));

    let mut c = Canvas::new("Step 04's data message");
    let (x, w) = (60.0, 440.0);
    let grid = draw_grid(&mut c, x, TOP, w, &fields);
    let bx = x + w + 12.0;
    let header = DATA_HEADER_LEN as u32;
    bracket(
        &mut c,
        bx,
        grid.y_at(0),
        grid.y_at(header),
        &[
            ("header, in clear", Font::Bold),
            ("authenticated as the AEAD's", Font::Small),
            ("associated data", Font::Small),
        ],
    );
    bracket(
        &mut c,
        bx,
        grid.y_at(header),
        grid.y_at(sealed.end as u32),
        &[
            ("ciphertext", Font::Bold),
            ("ChaCha20, key of this direction,", Font::Small),
            ("nonce from the counter", Font::Small),
        ],
    );
    bracket(
        &mut c,
        bx,
        grid.y_at(sealed.end as u32),
        grid.bottom,
        &[("tag", Font::Bold), ("over header and ciphertext", Font::Small)],
    );
    Ok(Figure::from_canvas(
        c,
        &format!(
            "The client's first echo request in pcaps/step04/underlay.pcap, drawn from step 04's \
             DATA_FIELDS and read with its DataPacket view: {} bytes of header, the {inner}-byte \
             packet padded to {} and encrypted, {TAG_LEN} bytes of tag: a {}-byte UDP payload. \
             Numbers are little-endian, as in WireGuard. The receiver index tells the receiver which \
             session's keys to use; the counter is the nonce and feeds the replay window.",
            DATA_HEADER_LEN,
            sealed.len(),
            message.len()
        ),
    ))
}

/// The handshake and the first data messages of lab 04's recorded
/// session, as the underlay capture holds them.
pub fn handshake_ladder() -> anyhow::Result<Figure> {
    let source = "step04/underlay.pcap";
    let messages = tunnel_messages(source)?;
    let first = messages.first().context("no tunnel messages")?;
    let (client, server) = (first.from, first.to);
    if server.port() != PORT {
        bail!("pcaps/{source}: the first message does not go to the server's port");
    }
    let mut ladder = Ladder::new(vec![
        Lane::new("client", &client.to_string()),
        Lane::new("server", &server.to_string()),
    ]);
    ladder.time_column = Some("time, ms".into());
    ladder.note_width = 260.0;
    let start = first.time;
    // Shown: everything up to the server's first data message; the rest
    // is counted, with the highest counter each way.
    let (mut client_data, mut server_data) = (false, false);
    let mut rest = (0, 0u64, 0u64);
    for Message {
        time, from, bytes: m, ..
    } in &messages
    {
        let (a, b) = if *from == client { (0, 1) } else { (1, 0) };
        let ms = format!("{:.1}", (*time - start).as_secs_f64() * 1000.0);
        let note = match MessageType::of(m).ok() {
            Some(MessageType::Initiation) => {
                let p = InitiationPacket::new_checked(&m[..]).map_err(|e| anyhow::anyhow!("{e}"))?;
                ladder.msg(
                    Msg::new(a, b, "handshake initiation")
                        .detail(format!("{} bytes, sender {:#010x}", m.len(), p.sender()))
                        .color(color::OUTER)
                        .time(ms),
                );
                None
            }
            Some(MessageType::Response) => {
                let p = ResponsePacket::new_checked(&m[..]).map_err(|e| anyhow::anyhow!("{e}"))?;
                ladder.msg(
                    Msg::new(a, b, "handshake response")
                        .detail(format!(
                            "{} bytes, sender {:#010x}, receiver {:#010x}",
                            m.len(),
                            p.sender(),
                            p.receiver()
                        ))
                        .color(color::OUTER)
                        .time(ms),
                );
                Some(Row::note(
                    0,
                    "handshake done: the client has its keys and confirms them at once",
                    Paint::GOOD,
                ))
            }
            Some(MessageType::Data) => {
                let p = DataPacket::new_checked(&m[..]).map_err(|e| anyhow::anyhow!("{e}"))?;
                if server_data {
                    rest.0 += 1;
                    let counter = if a == 0 { &mut rest.1 } else { &mut rest.2 };
                    *counter = (*counter).max(p.counter());
                    continue;
                }
                ladder.msg(
                    Msg::new(a, b, format!("data, counter {}", p.counter()))
                        .detail(format!(
                            "{} bytes, receiver {:#010x}, {} bytes sealed",
                            m.len(),
                            p.receiver(),
                            p.ciphertext().len()
                        ))
                        .color(color::SEALED)
                        .time(ms),
                );
                let first = a == 0 && !client_data;
                client_data |= a == 0;
                server_data |= a == 1;
                first.then(|| {
                    Row::note(
                        1,
                        "this first data message confirms the session: the server may send now",
                        Paint::GOOD,
                    )
                })
            }
            _ => bail!("pcaps/{source}: a message of unknown type"),
        };
        if let Some(note) = note {
            ladder.push(note);
        }
    }
    ladder.push(Row::Gap(format!(
        "… {} more data messages (pings both ways), up to counter {} from the client and {} from the server",
        rest.0, rest.1, rest.2
    )));
    let mut c = Canvas::new("Step 04's handshake and first data messages");
    ladder.draw(&mut c, TOP);
    Ok(Figure::from_canvas(
        c,
        &format!(
            "The messages of pcaps/{source} up to the server's first data message, read with step \
             04's wire views: sizes are UDP payloads, indices as recorded, times from the first message. Each side \
             picks its own index and the other puts it in every message it sends back, so a data \
             message names its session in four bytes."
        ),
    ))
}
