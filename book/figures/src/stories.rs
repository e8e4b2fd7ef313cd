//! Two failures the book explains with a sequence diagram: TCP inside TCP
//! (step 02's TCP transport) and the path MTU black hole (steps 02 and
//! 03). No capture holds them, so the rows tell the story; the numbers
//! in it come from the steps' code where the code has them.

use step03_ipv6::clamp::max_mss;

use crate::Figure;
use crate::ladder::{Fate, Ladder, Lane, Msg, Row};
use crate::svg::{Canvas, Paint, TOP, color};

/// The minimum retransmission timeout RFC 6298 §2.4 recommends, in
/// seconds: the timers of the story.
const RTO: u32 = 1;

/// A loss on the underlay under a TCP tunnel: both TCPs retransmit, both
/// back off.
pub fn tcp_over_tcp() -> anyhow::Result<Figure> {
    let (app, out_c, out_s, peer) = (0, 1, 2, 3);
    let mut l = Ladder::new(vec![
        Lane::new("sending app", "inner TCP"),
        Lane::new("tunnel client", "outer TCP"),
        Lane::new("tunnel server", "outer TCP"),
        Lane::new("receiving app", "inner TCP"),
    ]);
    l.time_column = Some("time, s".into());
    l.note_width = 250.0;
    let inner = color::INNER;
    let outer = color::OUTER;
    l.msg(Msg::new(app, out_c, "inner segment 1").color(inner).time("0"));
    l.msg(
        Msg::new(out_c, out_s, "outer segment carrying 1")
            .color(outer)
            .fate(Fate::LostMidway),
    );
    l.msg(Msg::new(app, out_c, "inner segments 2, 3").color(inner));
    l.push(Row::note_over(
        out_c,
        out_s,
        "the outer stream delivers in order: 2 and 3 wait behind the lost bytes",
        Paint::PLAIN,
    ));
    l.push(Row::Note {
        first: app,
        last: app,
        text: format!("inner timer fires after {RTO} s: resend 1; RTO doubles, window drops to one segment"),
        paint: Paint::ERROR,
        time: Some(format!("{RTO}")),
    });
    l.msg(
        Msg::new(app, out_c, "inner segment 1 again")
            .color(inner)
            .dashed(),
    );
    l.push(Row::Note {
        first: out_c,
        last: out_c,
        text: format!("outer timer fires after {RTO} s too: resend; its RTO doubles"),
        paint: Paint::ERROR,
        time: Some(format!("{RTO}")),
    });
    l.msg(
        Msg::new(out_c, out_s, "outer retransmission")
            .detail("1, 2, 3 and 1 again")
            .color(outer),
    );
    l.msg(Msg::new(out_s, peer, "1, 2, 3, 1").color(inner));
    l.push(Row::note(
        peer,
        "the second 1 is a duplicate: it crossed the path for nothing",
        Paint::PLAIN,
    ));
    l.msg(
        Msg::new(peer, app, "ACK 4 (through the tunnel)")
            .color(inner)
            .dashed(),
    );
    l.push(Row::Heading("When the path keeps losing packets".into()));
    l.push(Row::note_over(
        app,
        peer,
        "each loss stalls every inner connection and doubles both timers; the inner TCPs retransmit \
         what the outer one already repairs, and their duplicates load the outer stream: TCP meltdown",
        Paint::ERROR,
    ));
    let mut c = Canvas::new("TCP over TCP: two reliability layers fight");
    l.draw(&mut c, TOP);
    Ok(Figure::from_canvas(
        c,
        &format!(
            "One outer segment is lost on the underlay of a TCP tunnel (step 02 with --transport tcp). \
             The inner TCP sees only a delay, longer than its own timer, and retransmits data that the \
             outer TCP will deliver anyway. Timings are illustrative: {RTO} s is the minimum timeout \
             RFC 6298 §2.4 recommends (Linux uses 200 ms); both timers double on each expiry (§5.5). \
             Over UDP a lost datagram is one lost inner packet, recovered end to end."
        ),
    ))
}

/// The classic path MTU black hole, and the fix step 03 applies.
pub fn pmtu_black_hole() -> anyhow::Result<Figure> {
    const LINK: u16 = 1500;
    const SMALL: u16 = 1400;
    let mss = max_mss(LINK, false);
    let clamped = max_mss(SMALL, false);
    let (client, router, firewall, server) = (0, 1, 2, 3);
    let mut l = Ladder::new(vec![
        Lane::new("client", &format!("link MTU {LINK}")),
        Lane::new("router", &format!("next link MTU {SMALL}")),
        Lane::new("firewall", "drops all ICMP"),
        Lane::new("server", &format!("link MTU {LINK}")),
    ]);
    l.note_width = 260.0;
    l.msg(Msg::new(client, server, "ping: echo request, 84 bytes"));
    l.msg(Msg::new(server, client, "echo reply, 84 bytes"));
    l.push(Row::note(client, "ping works", Paint::GOOD));
    l.msg(Msg::new(client, server, format!("SYN, MSS {mss}")));
    l.msg(Msg::new(server, client, format!("SYN-ACK, MSS {mss}")));
    l.msg(Msg::new(client, server, "TLS client hello: a small segment"));
    l.msg(
        Msg::new(
            server,
            client,
            format!("{LINK}-byte segment with DF: the certificates"),
        )
        .fate(Fate::DroppedAt(router)),
    );
    l.msg(
        Msg::new(router, server, format!("ICMP fragmentation needed, MTU {SMALL}"))
            .color(color::ERROR)
            .fate(Fate::DroppedAt(firewall)),
    );
    l.msg(
        Msg::new(server, client, format!("the same {LINK} bytes, retransmitted"))
            .dashed()
            .fate(Fate::DroppedAt(router)),
    );
    l.push(Row::note_over(
        client,
        server,
        "HTTPS hangs: small packets pass, every full-size one vanishes, and nothing tells the server why",
        Paint::ERROR,
    ));
    l.push(Row::Heading(
        "The fix: the router clamps the MSS of every SYN it forwards (step 03)".into(),
    ));
    l.msg(Msg::new(client, router, format!("SYN, MSS {mss}")));
    l.msg(
        Msg::new(router, server, format!("SYN, MSS {clamped}"))
            .detail(format!("{SMALL} − 20 (IPv4) − 20 (TCP)"))
            .color(color::GOOD),
    );
    l.msg(
        Msg::new(
            server,
            client,
            format!("segments of {clamped} bytes of data, {SMALL} in all"),
        )
        .color(color::GOOD),
    );
    l.push(Row::note(
        client,
        "HTTPS works, with or without ICMP",
        Paint::GOOD,
    ));
    let mut c = Canvas::new("A path MTU black hole: ping works, HTTPS hangs");
    l.draw(&mut c, TOP);
    Ok(Figure::from_canvas(
        c,
        "Path MTU discovery (RFC 1191, RFC 8201) needs the router's ICMP error to reach the \
             sender; a firewall that drops ICMP makes a black hole (RFC 2923 §2.1). A tunnel is such a \
             smaller next link. Clamping the MSS in the SYN (step 03's clamp.rs; the MSS values here \
             come from its max_mss) keeps every segment small enough for TCP; letting ICMP \
             fragmentation-needed and ICMPv6 Packet Too Big through repairs path MTU discovery for \
             everything else.",
    ))
}
