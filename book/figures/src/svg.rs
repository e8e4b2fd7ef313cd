//! The drawing helpers every figure shares: a canvas that writes SVG as
//! text, one palette, one set of fonts, and text metrics good enough to
//! lay text out without a browser.
//!
//! Every figure is [`WIDTH`] pixels wide, on a white card with a thin
//! border (so it reads the same in mdBook's light and dark themes), with
//! its title at the top and its caption at the bottom. Text stays text
//! (`<text>`), so it can be searched, copied and read by a screen reader.
//!
//! The canvas remembers the box of every piece of text it draws. Text that
//! leaves the card, overlaps other text, or does not fit the shape it was
//! meant for is recorded as a problem, and the tests fail on any problem:
//! a figure that would be clipped or garbled does not get committed.

use std::fmt::Write as _;

/// The width of every figure, in pixels: the width of mdBook's text
/// column, give or take. Browsers scale it down on narrow screens.
pub const WIDTH: f64 = 720.0;
/// The space between the card's edge and what is drawn on it.
pub const MARGIN: f64 = 20.0;

/// Colours, one meaning each across all figures.
pub mod color {
    /// Text and outlines.
    pub const INK: &str = "#1f2328";
    /// Secondary text: units, sources, axis labels.
    pub const MUTED: &str = "#59636e";
    /// Grid lines, lifelines.
    pub const LINE: &str = "#8c959f";
    /// The card's border.
    pub const BORDER: &str = "#d0d7de";
    /// Plain fields and boxes.
    pub const PLAIN_FILL: &str = "#f6f8fa";

    /// Inner traffic: what the applications send, inside the tunnel.
    pub const INNER: &str = "#0969da";
    pub const INNER_FILL: &str = "#ddf4ff";
    /// Outer traffic: the tunnel's own packets, on the underlay.
    pub const OUTER: &str = "#bc4c00";
    pub const OUTER_FILL: &str = "#fff1e5";
    /// Errors, drops, losses.
    pub const ERROR: &str = "#cf222e";
    pub const ERROR_FILL: &str = "#ffebe9";
    /// What works, the fix.
    pub const GOOD: &str = "#1a7f37";
    pub const GOOD_FILL: &str = "#dafbe1";
    /// Sealed (encrypted) bytes.
    pub const SEALED: &str = "#8250df";
    pub const SEALED_FILL: &str = "#fbefff";
    /// Highlighted fields: what the code under discussion checks.
    pub const MARK: &str = "#9a6700";
    pub const MARK_FILL: &str = "#fff1c2";
}

/// The fonts. Sizes are in pixels; widths are measured for DejaVu Sans,
/// the first family asked for, and Verdana, the usual fallback, is about
/// as wide, so text laid out here fits in either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Font {
    Title,
    Body,
    Bold,
    Small,
    Caption,
    Mono,
    MonoSmall,
}

impl Font {
    pub fn size(self) -> f64 {
        match self {
            Font::Title => 17.0,
            Font::Body | Font::Bold => 12.0,
            Font::Caption => 12.5,
            Font::Small => 10.5,
            Font::Mono => 11.5,
            Font::MonoSmall => 10.0,
        }
    }

    fn class(self) -> &'static str {
        match self {
            Font::Title => "ti",
            Font::Body => "bo",
            Font::Bold => "bd",
            Font::Small => "sm",
            Font::Caption => "ca",
            Font::Mono => "mo",
            Font::MonoSmall => "ms",
        }
    }

    fn bold(self) -> bool {
        matches!(self, Font::Title | Font::Bold)
    }

    fn mono(self) -> bool {
        matches!(self, Font::Mono | Font::MonoSmall)
    }

    /// The advance width of `text`, in pixels.
    pub fn width(self, text: &str) -> f64 {
        let per_mille: u32 = text
            .chars()
            .map(|c| {
                if self.mono() {
                    602
                } else {
                    let table = if self.bold() { &SANS_BOLD } else { &SANS };
                    match c {
                        ' '..='~' => u32::from(table[c as usize - 32]),
                        '·' => 318,
                        '…' | '—' => 1000,
                        '–' | '§' => 500,
                        _ => 838, // arrows, ×, ≤, ✕
                    }
                }
            })
            .sum();
        f64::from(per_mille) * self.size() / 1000.0
    }
}

/// DejaVu Sans advance widths of ASCII 32..=126, in thousandths of an em
/// (measured in Chromium with `measureText`).
#[rustfmt::skip]
const SANS: [u16; 95] = [
    318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337,
    636, 636, 636, 636, 636, 636, 636, 636, 636, 636, 337, 337, 838, 838, 838, 531,
    1000, 684, 686, 698, 770, 632, 575, 775, 752, 295, 295, 656, 557, 863, 748, 787,
    603, 787, 695, 635, 611, 732, 684, 989, 685, 611, 685, 390, 337, 390, 838, 500,
    500, 613, 635, 550, 635, 615, 352, 635, 634, 278, 278, 579, 278, 974, 634, 612,
    635, 635, 411, 521, 392, 634, 592, 818, 592, 592, 525, 636, 337, 636, 838,
];

/// The same for DejaVu Sans Bold.
#[rustfmt::skip]
const SANS_BOLD: [u16; 95] = [
    348, 456, 521, 838, 696, 1002, 872, 306, 457, 457, 523, 838, 380, 415, 380, 365,
    696, 696, 696, 696, 696, 696, 696, 696, 696, 696, 400, 400, 838, 838, 838, 580,
    1000, 774, 762, 734, 830, 683, 683, 821, 837, 372, 372, 775, 637, 995, 837, 850,
    733, 850, 770, 720, 682, 812, 774, 1103, 771, 724, 725, 457, 365, 457, 838, 500,
    500, 675, 716, 593, 716, 678, 435, 716, 712, 343, 343, 665, 343, 1042, 712, 687,
    716, 716, 493, 595, 478, 712, 652, 924, 645, 652, 582, 712, 365, 712, 838,
];

/// Where a piece of text sits relative to its x coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// A rectangle: x, y of the top left corner, width, height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn new(x: f64, y: f64, w: f64, h: f64) -> Self {
        Self { x, y, w, h }
    }

    pub fn right(&self) -> f64 {
        self.x + self.w
    }

    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }

    pub fn center_x(&self) -> f64 {
        self.x + self.w / 2.0
    }

    fn overlaps(&self, other: &Rect) -> bool {
        // A pixel of slack: glyph boxes are estimates.
        const SLACK: f64 = 1.0;
        self.x + SLACK < other.right()
            && other.x + SLACK < self.right()
            && self.y + SLACK < other.bottom()
            && other.y + SLACK < self.bottom()
    }

    fn contains(&self, inner: &Rect) -> bool {
        const SLACK: f64 = 0.5;
        inner.x >= self.x - SLACK
            && inner.y >= self.y - SLACK
            && inner.right() <= self.right() + SLACK
            && inner.bottom() <= self.bottom() + SLACK
    }
}

/// Fill and outline of a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint {
    pub fill: &'static str,
    pub stroke: &'static str,
}

impl Paint {
    pub const PLAIN: Paint = Paint {
        fill: color::PLAIN_FILL,
        stroke: color::INK,
    };
    pub const MARK: Paint = Paint {
        fill: color::MARK_FILL,
        stroke: color::MARK,
    };
    pub const INNER: Paint = Paint {
        fill: color::INNER_FILL,
        stroke: color::INNER,
    };
    pub const OUTER: Paint = Paint {
        fill: color::OUTER_FILL,
        stroke: color::OUTER,
    };
    pub const SEALED: Paint = Paint {
        fill: color::SEALED_FILL,
        stroke: color::SEALED,
    };
    pub const GOOD: Paint = Paint {
        fill: color::GOOD_FILL,
        stroke: color::GOOD,
    };
    pub const ERROR: Paint = Paint {
        fill: color::ERROR_FILL,
        stroke: color::ERROR,
    };
    pub const WHITE: Paint = Paint {
        fill: "#ffffff",
        stroke: color::INK,
    };
}

/// A figure being drawn: SVG elements as text, and the boxes of the text
/// drawn so far.
pub struct Canvas {
    title: String,
    body: String,
    texts: Vec<(Rect, String)>,
    problems: Vec<String>,
    /// The lowest point drawn so far.
    bottom: f64,
}

/// Where the content below the title starts.
pub const TOP: f64 = 52.0;

impl Canvas {
    /// A figure with `title` at the top.
    pub fn new(title: &str) -> Self {
        let mut canvas = Self {
            title: title.to_string(),
            body: String::new(),
            texts: Vec::new(),
            problems: Vec::new(),
            bottom: 0.0,
        };
        canvas.text(MARGIN, 32.0, title, Font::Title, Anchor::Start, color::INK);
        canvas
    }

    /// Records that something does not fit; the tests fail on it.
    pub fn problem(&mut self, what: String) {
        self.problems.push(what);
    }

    fn grow(&mut self, y: f64) {
        self.bottom = self.bottom.max(y);
    }

    /// The box `text` takes when drawn at (x, baseline y).
    pub fn text_box(x: f64, y: f64, text: &str, font: Font, anchor: Anchor) -> Rect {
        let w = font.width(text);
        let left = match anchor {
            Anchor::Start => x,
            Anchor::Middle => x - w / 2.0,
            Anchor::End => x - w,
        };
        let size = font.size();
        Rect::new(left, y - 0.76 * size, w, 0.98 * size)
    }

    /// Draws one line of text with its baseline at `y`.
    pub fn text(&mut self, x: f64, y: f64, text: &str, font: Font, anchor: Anchor, fill: &str) -> Rect {
        let rect = Self::text_box(x, y, text, font, anchor);
        let anchor_attr = match anchor {
            Anchor::Start => "",
            Anchor::Middle => " text-anchor=\"middle\"",
            Anchor::End => " text-anchor=\"end\"",
        };
        // The colour is an attribute of each text, not a rule of the style
        // sheet: a rule would override every attribute.
        let _ = writeln!(
            self.body,
            "<text x=\"{}\" y=\"{}\" class=\"{}\"{anchor_attr} fill=\"{fill}\">{}</text>",
            num(x),
            num(y),
            font.class(),
            escape(text)
        );
        self.texts.push((rect, text.to_string()));
        self.grow(rect.bottom());
        rect
    }

    /// Draws text that must fit inside `within` (a field, a box).
    pub fn text_in(
        &mut self,
        within: Rect,
        (x, y): (f64, f64),
        text: &str,
        font: Font,
        anchor: Anchor,
        fill: &str,
    ) -> Rect {
        let rect = self.text(x, y, text, font, anchor, fill);
        let padded = Rect::new(within.x + 2.0, within.y + 1.0, within.w - 4.0, within.h - 2.0);
        if !padded.contains(&rect) {
            self.problem(format!("{text:?} does not fit its box"));
        }
        rect
    }

    /// Lines of text centred in `within`, each line `(text, font, fill)`.
    pub fn text_block(&mut self, within: Rect, lines: &[(&str, Font, &str)]) {
        let height: f64 = lines.iter().map(|(_, f, _)| line_height(*f)).sum();
        let mut y = within.y + (within.h - height) / 2.0;
        for (text, font, fill) in lines {
            y += line_height(*font);
            let baseline = y - 0.3 * font.size();
            self.text_in(
                within,
                (within.center_x(), baseline),
                text,
                *font,
                Anchor::Middle,
                fill,
            );
        }
    }

    pub fn rect(&mut self, r: Rect, paint: Paint, radius: f64) {
        let rx = if radius > 0.0 {
            format!(" rx=\"{}\"", num(radius))
        } else {
            String::new()
        };
        let _ = writeln!(
            self.body,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"{rx} fill=\"{}\" stroke=\"{}\"/>",
            num(r.x),
            num(r.y),
            num(r.w),
            num(r.h),
            paint.fill,
            paint.stroke
        );
        self.grow(r.bottom());
    }

    /// A rectangle with a dashed outline and no fill: a group.
    pub fn dashed_rect(&mut self, r: Rect, stroke: &str, radius: f64) {
        let _ = writeln!(
            self.body,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{}\" fill=\"none\" stroke=\"{stroke}\" stroke-dasharray=\"5 3\"/>",
            num(r.x),
            num(r.y),
            num(r.w),
            num(r.h),
            num(radius),
        );
        self.grow(r.bottom());
    }

    pub fn line(
        &mut self,
        (x1, y1): (f64, f64),
        (x2, y2): (f64, f64),
        stroke: &str,
        width: f64,
        dashed: bool,
    ) {
        let dash = if dashed { " stroke-dasharray=\"4 3\"" } else { "" };
        let _ = writeln!(
            self.body,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\" stroke-width=\"{}\"{dash}/>",
            num(x1),
            num(y1),
            num(x2),
            num(y2),
            num(width)
        );
        self.grow(y1.max(y2));
    }

    /// A line from (x1, y1) to (x2, y2) with an arrowhead at the second
    /// end.
    pub fn arrow(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, dashed: bool) {
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-9);
        let (ux, uy) = (dx / len, dy / len);
        const HEAD: f64 = 8.0;
        // The shaft stops where the head starts, so a thick line does not
        // poke through the point.
        self.line(
            (x1, y1),
            (x2 - ux * HEAD * 0.8, y2 - uy * HEAD * 0.8),
            stroke,
            1.6,
            dashed,
        );
        let (bx, by) = (x2 - ux * HEAD, y2 - uy * HEAD);
        let (px, py) = (-uy * HEAD * 0.45, ux * HEAD * 0.45);
        let _ = writeln!(
            self.body,
            "<path d=\"M{} {}L{} {}L{} {}Z\" fill=\"{stroke}\"/>",
            num(x2),
            num(y2),
            num(bx + px),
            num(by + py),
            num(bx - px),
            num(by - py)
        );
    }

    /// A red cross centred at (x, y): where a packet is lost or dropped.
    pub fn cross(&mut self, x: f64, y: f64) {
        const R: f64 = 6.0;
        let _ = writeln!(
            self.body,
            "<path d=\"M{} {}L{} {}M{} {}L{} {}\" stroke=\"{}\" stroke-width=\"2.6\" stroke-linecap=\"round\"/>",
            num(x - R),
            num(y - R),
            num(x + R),
            num(y + R),
            num(x - R),
            num(y + R),
            num(x + R),
            num(y - R),
            color::ERROR
        );
        // The cross is a mark like a letter: keep text off it.
        self.texts
            .push((Rect::new(x - R, y - R, 2.0 * R, 2.0 * R), "✕".into()));
    }

    /// The lowest point drawn so far.
    pub fn bottom(&self) -> f64 {
        self.bottom
    }

    /// Ends the figure: the caption (wrapped) below everything drawn, the
    /// card, and the checks. Returns the SVG text and the problems found.
    pub fn finish(mut self, caption: &str) -> (String, Vec<String>) {
        let mut y = self.bottom + 14.0;
        for line in wrap(caption, Font::Caption, WIDTH - 2.0 * MARGIN) {
            y += line_height(Font::Caption);
            self.text(MARGIN, y, &line, Font::Caption, Anchor::Start, color::MUTED);
        }
        let height = (y + 16.0).ceil();
        let card = Rect::new(0.0, 0.0, WIDTH, height);
        let mut problems = std::mem::take(&mut self.problems);
        for (i, (a, text_a)) in self.texts.iter().enumerate() {
            if !card.contains(a) {
                problems.push(format!("{text_a:?} leaves the figure"));
            }
            for (b, text_b) in &self.texts[i + 1..] {
                if a.overlaps(b) {
                    problems.push(format!("{text_a:?} overlaps {text_b:?}"));
                }
            }
        }
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"t\">",
            w = num(WIDTH),
            h = num(height)
        );
        let _ = writeln!(svg, "<title id=\"t\">{}</title>", escape(&self.title));
        svg.push_str(STYLE);
        let _ = writeln!(
            svg,
            "<rect x=\"0.5\" y=\"0.5\" width=\"{}\" height=\"{}\" rx=\"6\" fill=\"#ffffff\" stroke=\"{}\"/>",
            num(WIDTH - 1.0),
            num(height - 1.0),
            color::BORDER
        );
        svg.push_str(&self.body);
        svg.push_str("</svg>\n");
        (svg, problems)
    }
}

/// The fonts, once per file. Text is dark on the white card whatever the
/// page's theme.
const STYLE: &str = "<style>
text{font-family:'DejaVu Sans',Verdana,sans-serif}
.ti{font-size:17px;font-weight:bold}
.bo{font-size:12px}
.bd{font-size:12px;font-weight:bold}
.sm{font-size:10.5px}
.ca{font-size:12.5px}
.mo{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:11.5px}
.ms{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:10px}
</style>
";

/// The distance between two baselines of `font`.
pub fn line_height(font: Font) -> f64 {
    (font.size() * 1.3).round()
}

/// Splits `text` into lines no wider than `width` in `font`, at spaces.
pub fn wrap(text: &str, font: Font, width: f64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if font.width(&candidate) > width && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
            line = word.to_string();
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A coordinate with at most one decimal, so files stay small and stable.
pub fn num(v: f64) -> String {
    let rounded = (v * 10.0).round() / 10.0;
    if rounded == rounded.trunc() {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded:.1}")
    }
}

/// Text made safe for XML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_add_up_per_character() {
        // "Hi" in DejaVu Sans: H is 752, i is 278 thousandths of an em.
        assert!((Font::Body.width("Hi") - 12.0 * 1.030).abs() < 1e-9);
        assert!((Font::Mono.width("10.0.0.1") - 8.0 * 0.602 * 11.5).abs() < 1e-9);
    }

    #[test]
    fn wrapping_keeps_lines_within_the_width() {
        let text = "one two three four five six seven eight nine ten eleven twelve";
        let lines = wrap(text, Font::Body, 100.0);
        assert!(lines.len() > 1);
        assert_eq!(lines.join(" "), text);
        for line in &lines {
            assert!(Font::Body.width(line) <= 100.0, "{line:?}");
        }
    }

    #[test]
    fn overlapping_and_clipped_text_are_problems() {
        let mut c = Canvas::new("t");
        c.text(100.0, 100.0, "first", Font::Body, Anchor::Start, color::INK);
        c.text(110.0, 102.0, "second", Font::Body, Anchor::Start, color::INK);
        c.text(
            WIDTH - 5.0,
            130.0,
            "off the edge",
            Font::Body,
            Anchor::Start,
            color::INK,
        );
        c.text_in(
            Rect::new(0.0, 140.0, 20.0, 20.0),
            (10.0, 155.0),
            "too wide",
            Font::Body,
            Anchor::Middle,
            color::INK,
        );
        let (svg, problems) = c.finish("caption");
        assert!(svg.starts_with("<svg xmlns"));
        assert_eq!(
            problems,
            [
                "\"too wide\" does not fit its box",
                "\"first\" overlaps \"second\"",
                "\"off the edge\" leaves the figure",
                "\"too wide\" leaves the figure",
            ]
        );
    }

    #[test]
    fn numbers_and_text_are_written_plainly() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(2.25), "2.3");
        assert_eq!(num(-0.04), "0");
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
