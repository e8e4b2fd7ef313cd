//! Sequence diagrams (ladders): one vertical lifeline per host or
//! program, time going down, one arrow per packet or message.
//!
//! A [`Ladder`] is data: lanes and rows. The figures build it from a
//! recorded capture where there is one (the handshake of step 04, the
//! round trip of lab 05) and from the story they tell where there is not
//! (TCP over TCP, the path MTU black hole).

use crate::svg::{Anchor, Canvas, Font, MARGIN, Paint, Rect, WIDTH, color, line_height, wrap};

/// A lifeline: a host or a program.
#[derive(Debug, Clone)]
pub struct Lane {
    pub title: String,
    /// A second line: an address, a role.
    pub sub: String,
}

impl Lane {
    pub fn new(title: &str, sub: &str) -> Self {
        Self {
            title: title.to_string(),
            sub: sub.to_string(),
        }
    }
}

/// What becomes of a message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    Arrives,
    /// Lost on the way, halfway between the two lanes.
    LostMidway,
    /// Dropped by the host of this lane, which it passes through.
    DroppedAt(usize),
}

/// One arrow.
#[derive(Debug, Clone)]
pub struct Msg {
    pub from: usize,
    pub to: usize,
    /// Label lines above the arrow.
    pub lines: Vec<(String, Font)>,
    pub color: &'static str,
    pub fate: Fate,
    pub dashed: bool,
    /// Shown in the time column, left of the lanes.
    pub time: Option<String>,
}

impl Msg {
    pub fn new(from: usize, to: usize, label: impl Into<String>) -> Self {
        Self {
            from,
            to,
            lines: vec![(label.into(), Font::Body)],
            color: color::INK,
            fate: Fate::Arrives,
            dashed: false,
            time: None,
        }
    }

    /// A second line, in the monospace font: addresses, sizes.
    pub fn detail(mut self, text: impl Into<String>) -> Self {
        self.lines.push((text.into(), Font::MonoSmall));
        self
    }

    pub fn color(mut self, color: &'static str) -> Self {
        self.color = color;
        self
    }

    pub fn fate(mut self, fate: Fate) -> Self {
        self.fate = fate;
        self
    }

    pub fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }

    pub fn time(mut self, time: impl Into<String>) -> Self {
        self.time = Some(time.into());
        self
    }
}

/// One row of the ladder.
#[derive(Debug, Clone)]
pub enum Row {
    Msg(Msg),
    /// A box over the lanes `first..=last`, with text: what a host does,
    /// what a timer says. The text is wrapped to the box; `\n` breaks it.
    Note {
        first: usize,
        last: usize,
        text: String,
        paint: Paint,
        time: Option<String>,
    },
    /// Time passes, or messages are left out: a line of muted text.
    Gap(String),
    /// A new part of the story, with a rule across the figure.
    Heading(String),
}

impl Row {
    pub fn note(lane: usize, text: impl Into<String>, paint: Paint) -> Self {
        Row::Note {
            first: lane,
            last: lane,
            text: text.into(),
            paint,
            time: None,
        }
    }

    pub fn note_over(first: usize, last: usize, text: impl Into<String>, paint: Paint) -> Self {
        Row::Note {
            first,
            last,
            text: text.into(),
            paint,
            time: None,
        }
    }
}

/// A whole sequence diagram.
#[derive(Debug, Clone)]
pub struct Ladder {
    pub lanes: Vec<Lane>,
    pub rows: Vec<Row>,
    /// The heading of the time column, if there is one ("ms", "s").
    pub time_column: Option<String>,
    /// The widest a note on one lane may be.
    pub note_width: f64,
}

const TIME_W: f64 = 58.0;
const HEAD_H: f64 = 40.0;

impl Ladder {
    pub fn new(lanes: Vec<Lane>) -> Self {
        Self {
            lanes,
            rows: Vec::new(),
            time_column: None,
            note_width: 200.0,
        }
    }

    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn msg(&mut self, msg: Msg) {
        self.rows.push(Row::Msg(msg));
    }

    fn left(&self) -> f64 {
        MARGIN + if self.time_column.is_some() { TIME_W } else { 0.0 }
    }

    /// The x of a lane's lifeline.
    fn lane_x(&self, lane: usize) -> f64 {
        let left = self.left();
        let span = (WIDTH - MARGIN - left) / self.lanes.len() as f64;
        left + span * (lane as f64 + 0.5)
    }

    fn lane_span(&self) -> f64 {
        (WIDTH - MARGIN - self.left()) / self.lanes.len() as f64
    }

    /// The text lines and box of a note.
    fn note_layout(&self, first: usize, last: usize, text: &str) -> (Rect, Vec<String>) {
        let (x0, x1) = (self.lane_x(first), self.lane_x(last));
        let max_w = if first == last {
            self.note_width
        } else {
            x1 - x0 + self.lane_span() - 12.0
        };
        // A line break in the text starts a new line.
        let lines: Vec<String> = text
            .split('\n')
            .flat_map(|paragraph| wrap(paragraph, Font::Small, max_w - 14.0))
            .collect();
        let text_w = lines.iter().map(|l| Font::Small.width(l)).fold(0.0, f64::max);
        let w = if first == last { text_w + 14.0 } else { max_w };
        let h = lines.len() as f64 * line_height(Font::Small) + 10.0;
        let center = (x0 + x1) / 2.0;
        // Keep the box on the card.
        let x = (center - w / 2.0).clamp(self.left(), WIDTH - MARGIN - w);
        (Rect::new(x, 0.0, w, h), lines)
    }

    fn row_height(&self, row: &Row) -> f64 {
        match row {
            Row::Msg(m) => m.lines.iter().map(|(_, f)| line_height(*f)).sum::<f64>() + 16.0,
            Row::Note {
                first, last, text, ..
            } => self.note_layout(*first, *last, text).0.h + 10.0,
            Row::Gap(_) => 24.0,
            Row::Heading(_) => 34.0,
        }
    }

    /// Draws the ladder with its lane heads at `y`; returns the bottom.
    pub fn draw(&self, canvas: &mut Canvas, y: f64) -> f64 {
        let body_top = y + HEAD_H + 12.0;
        let total: f64 = self.rows.iter().map(|r| self.row_height(r)).sum();
        let bottom = body_top + total + 4.0;
        // Lifelines first, so that everything else is drawn over them.
        for lane in 0..self.lanes.len() {
            let x = self.lane_x(lane);
            canvas.line((x, y + HEAD_H), (x, bottom), color::LINE, 1.0, true);
        }
        if let Some(unit) = &self.time_column {
            canvas.text(
                MARGIN,
                y + HEAD_H / 2.0 + 4.0,
                unit,
                Font::Small,
                Anchor::Start,
                color::MUTED,
            );
        }
        for (i, lane) in self.lanes.iter().enumerate() {
            let x = self.lane_x(i);
            let w = (self.lane_span() - 10.0).min(
                Font::Bold
                    .width(&lane.title)
                    .max(Font::MonoSmall.width(&lane.sub))
                    + 18.0,
            );
            let r = Rect::new(x - w / 2.0, y, w, HEAD_H);
            canvas.rect(r, Paint::WHITE, 4.0);
            canvas.text_block(
                r,
                &[
                    (&lane.title, Font::Bold, color::INK),
                    (&lane.sub, Font::MonoSmall, color::MUTED),
                ],
            );
        }
        let mut top = body_top;
        for row in &self.rows {
            let h = self.row_height(row);
            match row {
                Row::Msg(m) => self.draw_msg(canvas, m, top),
                Row::Note {
                    first,
                    last,
                    text,
                    paint,
                    time,
                } => {
                    let (mut r, lines) = self.note_layout(*first, *last, text);
                    r.y = top + 2.0;
                    canvas.rect(r, *paint, 3.0);
                    let mut ty = r.y + 5.0;
                    for line in &lines {
                        ty += line_height(Font::Small);
                        canvas.text_in(
                            r,
                            (r.center_x(), ty - 3.0),
                            line,
                            Font::Small,
                            Anchor::Middle,
                            color::INK,
                        );
                    }
                    if let Some(t) = time {
                        self.time_label(canvas, r.y + r.h / 2.0 + 4.0, t);
                    }
                }
                Row::Gap(text) => {
                    let center = (self.lane_x(0) + self.lane_x(self.lanes.len() - 1)) / 2.0;
                    white_under(
                        canvas,
                        Canvas::text_box(center, top + 16.0, text, Font::Small, Anchor::Middle),
                    );
                    canvas.text(
                        center,
                        top + 16.0,
                        text,
                        Font::Small,
                        Anchor::Middle,
                        color::MUTED,
                    );
                }
                Row::Heading(text) => {
                    canvas.line(
                        (MARGIN, top + 8.0),
                        (WIDTH - MARGIN, top + 8.0),
                        color::BORDER,
                        1.0,
                        false,
                    );
                    white_under(
                        canvas,
                        Canvas::text_box(MARGIN, top + 26.0, text, Font::Bold, Anchor::Start),
                    );
                    canvas.text(MARGIN, top + 26.0, text, Font::Bold, Anchor::Start, color::INK);
                }
            }
            top += h;
        }
        bottom
    }

    fn time_label(&self, canvas: &mut Canvas, y: f64, time: &str) {
        canvas.text(MARGIN, y, time, Font::MonoSmall, Anchor::Start, color::MUTED);
    }

    fn draw_msg(&self, canvas: &mut Canvas, m: &Msg, top: f64) {
        let (x1, x2) = (self.lane_x(m.from), self.lane_x(m.to));
        let label_h: f64 = m.lines.iter().map(|(_, f)| line_height(*f)).sum();
        let arrow_y = top + label_h + 8.0;
        // The label, centred over the arrow, on white so lifelines do not
        // run through it.
        let center = (x1 + x2) / 2.0;
        let mut ty = top;
        for (text, font) in &m.lines {
            ty += line_height(*font);
            white_under(
                canvas,
                Canvas::text_box(center, ty - 3.0, text, *font, Anchor::Middle),
            );
            let fill = if *font == Font::Body {
                m.color
            } else {
                color::MUTED
            };
            canvas.text(center, ty - 3.0, text, *font, Anchor::Middle, fill);
        }
        let dir = if x2 >= x1 { 1.0 } else { -1.0 };
        let start = x1 + dir * 3.0;
        match m.fate {
            Fate::Arrives => canvas.arrow(start, arrow_y, x2 - dir * 3.0, arrow_y, m.color, m.dashed),
            Fate::LostMidway | Fate::DroppedAt(_) => {
                let end = match m.fate {
                    Fate::DroppedAt(lane) => self.lane_x(lane),
                    _ => center,
                };
                canvas.line(
                    (start, arrow_y),
                    (end - dir * 6.0, arrow_y),
                    m.color,
                    1.6,
                    m.dashed,
                );
                canvas.cross(end, arrow_y);
            }
        }
        if let Some(t) = &m.time {
            self.time_label(canvas, arrow_y + 4.0, t);
        }
    }
}

/// A white patch under the text of box `b`, so that lifelines do not run
/// through it.
fn white_under(canvas: &mut Canvas, b: Rect) {
    let white = Paint {
        fill: "#ffffff",
        stroke: "none",
    };
    canvas.rect(Rect::new(b.x - 2.0, b.y - 1.0, b.w + 4.0, b.h + 2.0), white, 0.0);
}
