//! Network topologies: hosts as boxes listing their interfaces and
//! addresses, links drawn between the interfaces they join.

use crate::svg::{Anchor, Canvas, Font, Paint, Rect, color, line_height, wrap};

/// An interface and its addresses.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub addrs: Vec<String>,
}

impl Iface {
    pub fn new(name: &str, addrs: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// A host (a network namespace in the labs), placed at (x, y), `w` wide.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// What runs there.
    pub role: String,
    pub ifaces: Vec<Iface>,
    /// Lines under the interfaces: what the host does.
    pub notes: Vec<String>,
    pub x: f64,
    pub y: f64,
    pub w: f64,
}

/// A link between two interfaces: (host, interface name) at each end.
#[derive(Debug, Clone)]
pub struct Link {
    pub a: (usize, String),
    pub b: (usize, String),
    pub label: Option<String>,
    pub color: &'static str,
    pub dashed: bool,
}

const PAD: f64 = 8.0;

/// Where each interface of a host is drawn: its name, and the middle of
/// its block, for links to attach to.
fn layout(host: &Host) -> (Vec<(String, f64)>, f64) {
    let mut y = host.y + PAD + line_height(Font::Bold) + line_height(Font::Small);
    let mut anchors = Vec::new();
    for iface in &host.ifaces {
        let h = line_height(Font::Mono) + iface.addrs.len() as f64 * line_height(Font::MonoSmall);
        anchors.push((iface.name.clone(), y + h / 2.0 + 2.0));
        y += h + 4.0;
    }
    let notes: usize = host
        .notes
        .iter()
        .map(|n| wrap(n, Font::Small, host.w - 2.0 * PAD).len())
        .sum();
    y += notes as f64 * line_height(Font::Small) + PAD;
    (anchors, y - host.y)
}

/// Draws the hosts and links; returns the bottom.
pub fn draw(canvas: &mut Canvas, hosts: &[Host], links: &[Link]) -> f64 {
    let layouts: Vec<_> = hosts.iter().map(layout).collect();
    let anchor = |canvas: &mut Canvas, (host, iface): &(usize, String)| -> Option<f64> {
        let found = layouts[*host].0.iter().find(|(n, _)| n == iface).map(|(_, y)| *y);
        if found.is_none() {
            canvas.problem(format!("{} has no interface {iface}", hosts[*host].name));
        }
        found
    };
    // Links first, under the hosts.
    let mut labels = Vec::new();
    for link in links {
        let (Some(ya), Some(yb)) = (anchor(canvas, &link.a), anchor(canvas, &link.b)) else {
            continue;
        };
        let (ha, hb) = (&hosts[link.a.0], &hosts[link.b.0]);
        let (xa, xb) = if ha.x < hb.x {
            (ha.x + ha.w, hb.x)
        } else {
            (ha.x, hb.x + hb.w)
        };
        canvas.line((xa, ya), (xb, yb), link.color, 2.0, link.dashed);
        if let Some(label) = &link.label {
            labels.push(((xa + xb) / 2.0, (ya + yb) / 2.0, label.clone(), link.color));
        }
    }
    let mut bottom: f64 = 0.0;
    for (host, (anchors, h)) in hosts.iter().zip(&layouts) {
        let r = Rect::new(host.x, host.y, host.w, *h);
        canvas.rect(r, Paint::WHITE, 6.0);
        let x = host.x + PAD;
        let mut y = host.y + PAD + line_height(Font::Bold) - 4.0;
        canvas.text_in(r, (x, y), &host.name, Font::Bold, Anchor::Start, color::INK);
        y += line_height(Font::Small);
        canvas.text_in(r, (x, y), &host.role, Font::Small, Anchor::Start, color::MUTED);
        for (iface, (_, mid)) in host.ifaces.iter().zip(anchors) {
            let block = line_height(Font::Mono) + iface.addrs.len() as f64 * line_height(Font::MonoSmall);
            let mut ly = mid - block / 2.0 - 2.0 + line_height(Font::Mono) - 3.0;
            canvas.text_in(r, (x, ly), &iface.name, Font::Mono, Anchor::Start, color::INK);
            for addr in &iface.addrs {
                ly += line_height(Font::MonoSmall);
                canvas.text_in(
                    r,
                    (x + 12.0, ly),
                    addr,
                    Font::MonoSmall,
                    Anchor::Start,
                    color::INK,
                );
            }
            y = ly + 4.0;
        }
        for note in &host.notes {
            for line in wrap(note, Font::Small, host.w - 2.0 * PAD) {
                y += line_height(Font::Small);
                canvas.text_in(r, (x, y), &line, Font::Small, Anchor::Start, color::MUTED);
            }
        }
        bottom = bottom.max(r.bottom());
    }
    // Link labels last, on white, over the lines.
    for (x, y, label, color) in labels {
        let b = Canvas::text_box(x, y - 6.0, &label, Font::Small, Anchor::Middle);
        let white = Paint {
            fill: "#ffffff",
            stroke: "none",
        };
        canvas.rect(Rect::new(b.x - 3.0, b.y - 2.0, b.w + 6.0, b.h + 4.0), white, 2.0);
        canvas.text(x, y - 6.0, &label, Font::Small, Anchor::Middle, color);
    }
    bottom
}
