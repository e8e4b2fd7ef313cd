//! Header layouts: fields drawn in rows of 32 bits, the way RFCs draw
//! them, from a table of bit ranges.
//!
//! A [`Field`] is a name, a bit range from the start of the header, and
//! optionally a value to show (read from a real packet) and a paint. The
//! same table is what the tests check against etherparse, so the drawing
//! cannot disagree with the bytes.

use std::ops::Range;

use crate::svg::{Anchor, Canvas, Font, Paint, Rect, color};

/// One field of a header.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    /// Bits from the start of the header (bit 0 is the most significant
    /// bit of byte 0, as in the RFCs).
    pub bits: Range<u32>,
    /// A second line: the field's value in an example packet, its size.
    pub value: Option<String>,
    pub paint: Paint,
}

impl Field {
    pub fn new(name: &str, bits: Range<u32>) -> Self {
        Self {
            name: name.to_string(),
            bits,
            value: None,
            paint: Paint::PLAIN,
        }
    }

    /// A field given in bytes.
    pub fn bytes(name: &str, bytes: Range<usize>) -> Self {
        Self::new(name, bytes.start as u32 * 8..bytes.end as u32 * 8)
    }

    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    pub fn paint(mut self, paint: Paint) -> Self {
        self.paint = paint;
        self
    }
}

/// Reads the bits `bits` of `data` as a big-endian number (at most 128
/// bits): how a field of a table is read from a real packet.
pub fn read_bits(data: &[u8], bits: &Range<u32>) -> Option<u128> {
    if bits.end <= bits.start || bits.end - bits.start > 128 {
        return None;
    }
    let mut value: u128 = 0;
    for bit in bits.clone() {
        let byte = *data.get((bit / 8) as usize)?;
        let set = (byte >> (7 - bit % 8)) & 1;
        value = (value << 1) | u128::from(set);
    }
    Some(value)
}

/// Writes `value` into the bits `bits` of `data` (big-endian).
pub fn write_bits(data: &mut [u8], bits: &Range<u32>, value: u128) {
    let width = bits.end - bits.start;
    for (i, bit) in bits.clone().enumerate() {
        let set = (value >> (width - 1 - i as u32)) & 1 == 1;
        let byte = &mut data[(bit / 8) as usize];
        let mask = 1u8 << (7 - bit % 8);
        if set {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
}

/// How tall one 32-bit row is.
const ROW: f64 = 38.0;
/// A field that fills several whole rows is drawn at most this many rows
/// tall, with its size in its label: a 128-bit address does not need four.
const MAX_ROWS: u32 = 2;

/// Where the rows of a drawn grid are.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    /// The byte offset each row starts at, and its top.
    pub rows: Vec<(u32, f64)>,
    pub bottom: f64,
}

impl Grid {
    /// The top of the row that starts at byte `offset`, or the bottom of
    /// the grid for the offset just past it.
    pub fn y_at(&self, offset: u32) -> f64 {
        self.rows
            .iter()
            .find(|(o, _)| *o == offset)
            .map_or(self.bottom, |(_, y)| *y)
    }
}

/// Draws `fields` as a grid of 32-bit rows at (x, y), `width` pixels wide
/// (plus the byte offsets to its left, in the `x - 30 .. x` margin).
pub fn draw_grid(canvas: &mut Canvas, x: f64, y: f64, width: f64, fields: &[Field]) -> Grid {
    let mut grid = Grid::default();
    let bit_w = width / 32.0;
    // The ruler: bit numbers of the first bit of each byte, and the last.
    for bit in [0u32, 8, 16, 24, 31] {
        let bx = x + (bit as f64 + 0.5) * bit_w;
        canvas.text(
            bx,
            y + 10.0,
            &bit.to_string(),
            Font::Small,
            Anchor::Middle,
            color::MUTED,
        );
    }
    for bit in 0..=32u32 {
        let tick = if bit % 8 == 0 { 6.0 } else { 3.0 };
        let bx = x + bit as f64 * bit_w;
        canvas.line((bx, y + 20.0 - tick), (bx, y + 20.0), color::LINE, 1.0, false);
    }
    let mut top = y + 20.0;
    let mut row = 0u32;
    let mut i = 0;
    // Every field must start where the one before it ended.
    let gap = |canvas: &mut Canvas, f: &Field, next_bit: u32| {
        let ok = f.bits.start == next_bit;
        if !ok {
            canvas.problem(format!("{}: fields must be in order, without gaps", f.name));
        }
        ok
    };
    let fail = |grid: Grid, top: f64| Grid { bottom: top, ..grid };
    while i < fields.len() {
        let field = &fields[i];
        if !gap(canvas, field, row * 32) {
            return fail(grid, top);
        }
        grid.rows.push((row * 4, top));
        // A field of whole rows gets one box.
        let len = field.bits.end - field.bits.start;
        if field.bits.start.is_multiple_of(32) && len >= 64 && len.is_multiple_of(32) {
            let rows = len / 32;
            let h = ROW * f64::from(rows.min(MAX_ROWS));
            let r = Rect::new(x, top, width, h);
            offset_label(canvas, x, top, row);
            draw_field(canvas, r, field, Some(len));
            top += h;
            row += rows;
            i += 1;
            continue;
        }
        // Otherwise the fields of this row, which must end within it.
        offset_label(canvas, x, top, row);
        let row_end = (row + 1) * 32;
        let mut next_bit = row * 32;
        while i < fields.len() && fields[i].bits.start < row_end {
            let f = &fields[i];
            if !gap(canvas, f, next_bit) {
                return fail(grid, top);
            }
            next_bit = f.bits.end;
            if f.bits.end > row_end {
                canvas.problem(format!("{}: a field crossing a row must fill whole rows", f.name));
                return fail(grid, top);
            }
            let fx = x + f64::from(f.bits.start - row * 32) * bit_w;
            let fw = f64::from(f.bits.end - f.bits.start) * bit_w;
            draw_field(canvas, Rect::new(fx, top, fw, ROW), f, None);
            i += 1;
        }
        if next_bit != row_end && i < fields.len() {
            canvas.problem(format!(
                "{}: fields must be in order, without gaps",
                fields[i].name
            ));
            return fail(grid, top);
        }
        top += ROW;
        row += 1;
    }
    grid.bottom = top;
    grid
}

/// The byte offset of a row, left of the grid.
fn offset_label(canvas: &mut Canvas, x: f64, top: f64, row: u32) {
    canvas.text(
        x - 8.0,
        top + ROW / 2.0 + 4.0,
        &(row * 4).to_string(),
        Font::Small,
        Anchor::End,
        color::MUTED,
    );
}

fn draw_field(canvas: &mut Canvas, r: Rect, field: &Field, whole_rows: Option<u32>) {
    canvas.rect(r, field.paint, 0.0);
    let mut lines: Vec<(String, Font, &str)> = vec![(field.name.clone(), Font::Body, color::INK)];
    // A long field's size goes on its value line.
    let size = whole_rows.map(|bits| format!("{} bytes", bits / 8));
    match (&field.value, size) {
        (Some(v), Some(s)) => lines.push((format!("{v}  ({s})"), Font::Mono, color::MUTED)),
        (Some(v), None) => lines.push((v.clone(), Font::Mono, color::MUTED)),
        (None, Some(s)) => lines.push((s, Font::Small, color::MUTED)),
        (None, None) => {}
    }
    // Narrow fields get the smaller fonts.
    for (text, font, _) in &mut lines {
        if font.width(text) > r.w - 6.0 {
            *font = match *font {
                Font::Body => Font::Small,
                Font::Mono => Font::MonoSmall,
                f => f,
            };
        }
    }
    let refs: Vec<(&str, Font, &str)> = lines.iter().map(|(t, f, c)| (t.as_str(), *f, *c)).collect();
    canvas.text_block(r, &refs);
}

/// One part of a [`draw_strip`]: a header or a payload, side by side.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    /// The second line: its size.
    pub size: String,
    pub paint: Paint,
    /// Its width on the page (a strip is not to scale: a 1468-byte
    /// payload would leave a 4-byte header invisible).
    pub width: f64,
}

/// Draws `parts` left to right at (x, y), and above them a bracket for
/// each of `spans` (first part, last part, label), innermost first.
/// Returns the bottom of the strip.
pub fn draw_strip(
    canvas: &mut Canvas,
    x: f64,
    y: f64,
    parts: &[Part],
    spans: &[(usize, usize, String)],
) -> f64 {
    const SPAN_H: f64 = 24.0;
    const H: f64 = 44.0;
    let mut lefts = Vec::new();
    let mut px = x;
    for part in parts {
        lefts.push(px);
        px += part.width;
    }
    let top = y + SPAN_H * spans.len() as f64;
    for (level, (first, last, label)) in spans.iter().enumerate() {
        // The innermost span is the lowest.
        let sy = top - 6.0 - SPAN_H * level as f64;
        let (x0, x1) = (lefts[*first] + 1.0, lefts[*last] + parts[*last].width - 1.0);
        canvas.line((x0, sy), (x1, sy), color::INK, 1.0, false);
        canvas.line((x0, sy), (x0, sy + 5.0), color::INK, 1.0, false);
        canvas.line((x1, sy), (x1, sy + 5.0), color::INK, 1.0, false);
        canvas.text(
            (x0 + x1) / 2.0,
            sy - 5.0,
            label,
            Font::Small,
            Anchor::Middle,
            color::INK,
        );
    }
    for (part, left) in parts.iter().zip(&lefts) {
        let r = Rect::new(*left, top, part.width, H);
        canvas.rect(r, part.paint, 0.0);
        canvas.text_block(
            r,
            &[
                (&part.name, Font::Bold, color::INK),
                (&part.size, Font::Small, color::MUTED),
            ],
        );
    }
    top + H
}

/// A bracket beside the rows `y0..y1` of a grid, at `x`, with lines of
/// text to its right: which header the rows are.
pub fn bracket(canvas: &mut Canvas, x: f64, y0: f64, y1: f64, lines: &[(&str, Font)]) {
    let (a, b) = (y0 + 2.0, y1 - 2.0);
    canvas.line((x, a), (x, b), color::INK, 1.2, false);
    canvas.line((x - 5.0, a), (x, a), color::INK, 1.2, false);
    canvas.line((x - 5.0, b), (x, b), color::INK, 1.2, false);
    let height: f64 = lines.iter().map(|(_, f)| crate::svg::line_height(*f)).sum();
    let mut y = (y0 + y1) / 2.0 - height / 2.0;
    for (text, font) in lines {
        y += crate::svg::line_height(*font);
        let fill = if *font == Font::Bold {
            color::INK
        } else {
            color::MUTED
        };
        canvas.text(x + 8.0, y - 3.0, text, *font, Anchor::Start, fill);
    }
}

/// A legend entry: a small swatch and its meaning. Returns the x after it.
pub fn legend(canvas: &mut Canvas, x: f64, y: f64, paint: Paint, text: &str) -> f64 {
    canvas.rect(Rect::new(x, y - 10.0, 14.0, 12.0), paint, 2.0);
    let r = canvas.text(x + 20.0, y, text, Font::Small, Anchor::Start, color::INK);
    r.right() + 18.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_read_and_write_big_endian() {
        let data = [0x45, 0x00, 0x00, 0x54];
        assert_eq!(read_bits(&data, &(0..4)), Some(4));
        assert_eq!(read_bits(&data, &(4..8)), Some(5));
        assert_eq!(read_bits(&data, &(16..32)), Some(84));
        assert_eq!(read_bits(&data, &(24..40)), None);
        let mut out = [0u8; 4];
        write_bits(&mut out, &(0..4), 4);
        write_bits(&mut out, &(4..8), 5);
        write_bits(&mut out, &(16..32), 84);
        assert_eq!(out, data);
        write_bits(&mut out, &(4..8), 0);
        assert_eq!(out, [0x40, 0x00, 0x00, 0x54]);
    }

    #[test]
    fn a_gap_in_the_table_is_a_problem() {
        let mut c = Canvas::new("t");
        draw_grid(
            &mut c,
            60.0,
            60.0,
            480.0,
            &[Field::new("a", 0..32), Field::new("b", 64..96)],
        );
        draw_grid(
            &mut c,
            60.0,
            200.0,
            480.0,
            &[Field::new("c", 0..8), Field::new("d", 16..32)],
        );
        let (_, problems) = c.finish("");
        assert_eq!(
            problems,
            [
                "b: fields must be in order, without gaps",
                "d: fields must be in order, without gaps"
            ]
        );
    }
}
