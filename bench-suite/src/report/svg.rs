//! Small SVG charts built as strings: no fonts to load at build time (plotters' text layout
//! wants a font backend), no JavaScript, nothing fetched by the page. Every mark carries a
//! class and data attributes so a browser test can count and read them.

use std::fmt::Write;

pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Escapes text for HTML and SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Compact number for labels: 3 significant digits, no exponent for everyday magnitudes.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_string();
    }
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    // 1.50 reads as 1.5 and 2.00 as 2.
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A clean axis from 0: a 1-2-2.5-5 step giving about four intervals, and the top tick.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let step = nice_ceiling(max / 4.0);
    (step * (max / step).ceil().max(1.0), step)
}

fn ticks_from_zero(top: f64, step: f64) -> impl Iterator<Item = f64> {
    let n = (top / step).round() as usize;
    (0..=n).map(move |i| step * i as f64)
}

struct Frame {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn plot_w(&self) -> f64 {
        self.width - self.left - self.right
    }
    fn plot_h(&self) -> f64 {
        self.height - self.top - self.bottom
    }
}

fn open(out: &mut String, id: &str, title: &str, f: &Frame) {
    let _ = write!(
        out,
        r#"<svg id="{id}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif" font-size="11">"#,
        id = esc(id),
        w = f.width,
        h = f.height,
        t = esc(title)
    );
    let _ = write!(
        out,
        r##"<title>{t}</title><rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/><text class="chart-title" x="{cx}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{t}</text>"##,
        t = esc(title),
        w = f.width,
        h = f.height,
        cx = f.width / 2.0
    );
}

fn axis_labels(out: &mut String, f: &Frame, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r#"<text x="{x}" y="{y}" text-anchor="middle">{l}</text>"#,
        x = f.left + f.plot_w() / 2.0,
        y = f.height - 6.0,
        l = esc(x_label)
    );
    let _ = write!(
        out,
        r#"<text transform="translate(14 {y}) rotate(-90)" text-anchor="middle">{l}</text>"#,
        y = f.top + f.plot_h() / 2.0,
        l = esc(y_label)
    );
}

/// One bar of a bar chart; `value` None draws a failure marker instead of a bar.
pub struct Bar {
    pub label: String,
    pub value: Option<f64>,
    /// Tooltip and data-note, e.g. the failing verdict.
    pub note: String,
}

/// Bars on a log scale around 1 (speedups): bars grow up from 1 when faster, down when slower.
pub fn speedup_bars(id: &str, title: &str, y_label: &str, bars: &[Bar]) -> String {
    let values: Vec<f64> = bars
        .iter()
        .filter_map(|b| b.value)
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let lo = values.iter().copied().fold(1.0f64, f64::min) / 1.3;
    let hi = values.iter().copied().fold(1.0f64, f64::max) * 1.3;
    let (lo, hi) = (lo.ln(), hi.ln());
    let slot = 18.0f64.max(600.0 / bars.len().max(1) as f64).min(48.0);
    let f = Frame {
        width: (90.0 + slot * bars.len() as f64 + 20.0).max(420.0),
        height: 380.0,
        left: 70.0,
        right: 20.0,
        top: 30.0,
        bottom: 130.0,
    };
    let y_of = |v: f64| f.top + f.plot_h() * (hi - v.ln()) / (hi - lo);
    let mut out = String::new();
    open(&mut out, id, title, &f);
    for t in log_ticks(lo.exp(), hi.exp()) {
        let y = y_of(t);
        let _ = write!(
            out,
            r##"<line class="grid" x1="{x1}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{l}×</text>"##,
            x1 = f.left,
            x2 = f.width - f.right,
            tx = f.left - 6.0,
            ty = y + 4.0,
            l = num(t)
        );
    }
    let y1 = y_of(1.0);
    for (i, b) in bars.iter().enumerate() {
        let x = f.left + slot * i as f64 + slot * 0.15;
        let w = slot * 0.7;
        let cx = x + w / 2.0;
        match b.value.filter(|v| *v > 0.0 && v.is_finite()) {
            Some(v) => {
                let y = y_of(v);
                let (top, h) = if y < y1 { (y, y1 - y) } else { (y1, y - y1) };
                let color = if v > 1.0 { "#2ca02c" } else { "#ff7f0e" };
                let _ = write!(
                    out,
                    r#"<rect class="bar" data-label="{l}" data-value="{v}" x="{x:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="{color}"><title>{l}: {vs}× {n}</title></rect>"#,
                    l = esc(&b.label),
                    vs = num(v),
                    n = esc(&b.note)
                );
            }
            None => {
                let _ = write!(
                    out,
                    r##"<g class="bar failed" data-label="{l}" data-note="{n}"><title>{l}: no correct kernel ({n})</title><path d="M{a:.1} {b:.1} L{c:.1} {d:.1} M{a:.1} {d:.1} L{c:.1} {b:.1}" stroke="#d62728" stroke-width="2"/></g>"##,
                    l = esc(&b.label),
                    n = esc(&b.note),
                    a = cx - 4.0,
                    c = cx + 4.0,
                    b = y1 - 4.0,
                    d = y1 + 4.0
                );
            }
        }
        let _ = write!(
            out,
            r#"<text class="tick" transform="translate({tx:.1} {ty}) rotate(-55)" text-anchor="end" font-size="10">{l}</text>"#,
            tx = cx + 3.0,
            ty = f.height - f.bottom + 12.0,
            l = esc(&shorten(&b.label, 22))
        );
    }
    let _ = write!(
        out,
        r##"<line class="baseline" x1="{x1}" x2="{x2}" y1="{y1:.1}" y2="{y1:.1}" stroke="#333" stroke-dasharray="4 3"/>"##,
        x1 = f.left,
        x2 = f.width - f.right
    );
    axis_labels(&mut out, &f, "", y_label);
    out.push_str("</svg>");
    out
}

/// Plain vertical bars from zero (counts, geometric means per run).
pub fn value_bars(
    id: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    bars: &[(String, f64)],
) -> String {
    let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max);
    let (top_v, step) = nice_axis(max);
    let slot = (560.0 / bars.len().max(1) as f64).clamp(28.0, 90.0);
    let f = Frame {
        width: (90.0 + slot * bars.len() as f64 + 20.0).max(9.0 * title.chars().count() as f64),
        height: 320.0,
        left: 70.0,
        right: 20.0,
        top: 30.0,
        bottom: 70.0,
    };
    let y_of = |v: f64| f.top + f.plot_h() * (1.0 - v / top_v);
    let mut out = String::new();
    open(&mut out, id, title, &f);
    for v in ticks_from_zero(top_v, step) {
        let y = y_of(v);
        let _ = write!(
            out,
            r##"<line class="grid" x1="{x1}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{l}</text>"##,
            x1 = f.left,
            x2 = f.width - f.right,
            tx = f.left - 6.0,
            ty = y + 4.0,
            l = num(v)
        );
    }
    for (i, (label, v)) in bars.iter().enumerate() {
        let x = f.left + slot * i as f64 + slot * 0.15;
        let w = slot * 0.7;
        let y = y_of(v.max(0.0));
        let _ = write!(
            out,
            r#"<rect class="bar" data-label="{l}" data-value="{v}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{l}: {vs}</title></rect><text x="{cx:.1}" y="{ly:.1}" text-anchor="middle" font-size="10">{vs}</text><text class="tick" transform="translate({cx:.1} {ty}) rotate(-30)" text-anchor="end" font-size="10">{sl}</text>"#,
            l = esc(label),
            h = f.top + f.plot_h() - y,
            c = PALETTE[i % PALETTE.len()],
            vs = num(*v),
            cx = x + w / 2.0,
            ly = y - 3.0,
            ty = f.height - f.bottom + 14.0,
            sl = esc(&shorten(label, 18))
        );
    }
    axis_labels(&mut out, &f, x_label, y_label);
    out.push_str("</svg>");
    out
}

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw as a right-continuous step function (fast_p over p) rather than straight segments.
    pub step: bool,
}

pub struct LineChart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    /// Fixed y range (e.g. 0..1 for fractions); None fits the data from 0.
    pub y_max: Option<f64>,
    /// Vertical guide lines with labels (e.g. p = 1, 1.5, 2).
    pub markers: &'a [f64],
    pub y_percent: bool,
}

pub fn line_chart(c: &LineChart<'_>) -> String {
    let all = c.series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0f64, f64::max);
    let x_min = all.clone().map(|p| p.0).fold(x_max, f64::min).min(0.0);
    let x_max = if x_max <= x_min { x_min + 1.0 } else { x_max };
    let (y_max, y_step) = match c.y_max {
        Some(m) => (m, m / 4.0),
        None => nice_axis(all.map(|p| p.1).fold(0.0f64, f64::max)),
    };
    let legend_w = 170.0;
    let f = Frame {
        width: 640.0 + legend_w,
        height: 340.0,
        left: 70.0,
        right: 20.0 + legend_w,
        top: 30.0,
        bottom: 50.0,
    };
    let x_of = |x: f64| f.left + f.plot_w() * (x - x_min) / (x_max - x_min);
    let y_of = |y: f64| f.top + f.plot_h() * (1.0 - y / y_max);
    let mut out = String::new();
    open(&mut out, c.id, c.title, &f);
    for v in ticks_from_zero(y_max, y_step) {
        let y = y_of(v);
        let label = if c.y_percent {
            format!("{:.0}%", v * 100.0)
        } else {
            num(v)
        };
        let _ = write!(
            out,
            r##"<line class="grid" x1="{x1}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"##,
            x1 = f.left,
            x2 = f.left + f.plot_w(),
            tx = f.left - 6.0,
            ty = y + 4.0
        );
    }
    for t in linear_ticks(x_min, x_max) {
        let _ = write!(
            out,
            r##"<text x="{x:.1}" y="{y}" text-anchor="middle">{l}</text>"##,
            x = x_of(t),
            y = f.top + f.plot_h() + 16.0,
            l = num(t)
        );
    }
    for &m in c.markers.iter().filter(|m| **m >= x_min && **m <= x_max) {
        let x = x_of(m);
        let _ = write!(
            out,
            r##"<line class="marker" x1="{x:.1}" x2="{x:.1}" y1="{y1}" y2="{y2}" stroke="#999" stroke-dasharray="3 3"/><text x="{tx:.1}" y="{ty}" font-size="10" fill="#666">p={l}</text>"##,
            y1 = f.top,
            y2 = f.top + f.plot_h(),
            tx = x + 3.0,
            ty = f.top + 10.0,
            l = num(m)
        );
    }
    let _ = write!(
        out,
        r##"<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##,
        x = f.left,
        y = f.top,
        w = f.plot_w(),
        h = f.plot_h()
    );
    for (i, s) in c.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut pts = String::new();
        let mut prev: Option<(f64, f64)> = None;
        for &(x, y) in &s.points {
            if let (true, Some((_, py))) = (s.step, prev) {
                let _ = write!(pts, "{:.1},{:.1} ", x_of(x), y_of(py));
            }
            let _ = write!(pts, "{:.1},{:.1} ", x_of(x), y_of(y));
            prev = Some((x, y));
        }
        let _ = write!(
            out,
            r#"<polyline class="series" data-name="{n}" data-points="{np}" points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            n = esc(&s.name),
            np = s.points.len(),
            pts = pts.trim_end()
        );
        for &(x, y) in &s.points {
            let _ = write!(
                out,
                r#"<circle class="point" cx="{cx:.1}" cy="{cy:.1}" r="2.5" fill="{color}"><title>{n}: {xl} → {yl}</title></circle>"#,
                cx = x_of(x),
                cy = y_of(y),
                n = esc(&s.name),
                xl = num(x),
                yl = if c.y_percent {
                    format!("{:.1}%", y * 100.0)
                } else {
                    num(y)
                }
            );
        }
        let ly = f.top + 14.0 + 18.0 * i as f64;
        let lx = f.left + f.plot_w() + 16.0;
        let _ = write!(
            out,
            r#"<g class="legend"><rect x="{lx}" y="{ry:.1}" width="14" height="4" fill="{color}"/><text x="{tx}" y="{ly:.1}">{n}</text></g>"#,
            ry = ly - 5.0,
            tx = lx + 20.0,
            n = esc(&shorten(&s.name, 24))
        );
    }
    axis_labels(&mut out, &f, c.x_label, c.y_label);
    out.push_str("</svg>");
    out
}

/// A histogram of counts per labelled bin.
pub fn histogram(id: &str, title: &str, x_label: &str, bins: &[(String, usize)]) -> String {
    let max = bins.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    // Counts: whole-number ticks.
    let (top_v, step) = nice_axis(max);
    let (top_v, step) = if step < 1.0 {
        (top_v.ceil(), 1.0)
    } else {
        (top_v, step.ceil())
    };
    let f = Frame {
        width: 640.0,
        height: 300.0,
        left: 60.0,
        right: 20.0,
        top: 30.0,
        bottom: 60.0,
    };
    let slot = f.plot_w() / bins.len().max(1) as f64;
    let y_of = |v: f64| f.top + f.plot_h() * (1.0 - v / top_v);
    let mut out = String::new();
    open(&mut out, id, title, &f);
    for v in ticks_from_zero(top_v, step) {
        let y = y_of(v);
        let _ = write!(
            out,
            r##"<line class="grid" x1="{x1}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{l}</text>"##,
            x1 = f.left,
            x2 = f.left + f.plot_w(),
            tx = f.left - 6.0,
            ty = y + 4.0,
            l = num(v)
        );
    }
    for (i, (label, n)) in bins.iter().enumerate() {
        let x = f.left + slot * i as f64 + 1.0;
        let y = y_of(*n as f64);
        let _ = write!(
            out,
            r##"<rect class="bin" data-label="{l}" data-count="{n}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#1f77b4"><title>{l}%: {n}</title></rect><text x="{cx:.1}" y="{ty}" text-anchor="middle" font-size="10">{l}</text>"##,
            l = esc(label),
            w = slot - 2.0,
            h = f.top + f.plot_h() - y,
            cx = x + slot / 2.0,
            ty = f.top + f.plot_h() + 14.0
        );
        if *n > 0 {
            let _ = write!(
                out,
                r#"<text x="{cx:.1}" y="{ly:.1}" text-anchor="middle" font-size="10">{n}</text>"#,
                cx = x + slot / 2.0,
                ly = y - 3.0
            );
        }
    }
    axis_labels(&mut out, &f, x_label, "tasks");
    out.push_str("</svg>");
    out
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// 1-2-5 steps at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut e = lo.log10().floor() as i32 - 1;
    while 10f64.powi(e) <= hi * 10.0 && out.len() < 40 {
        for m in [1.0, 2.0, 5.0] {
            let t = m * 10f64.powi(e);
            if t >= lo && t <= hi {
                out.push(t);
            }
        }
        e += 1;
    }
    out
}

fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let step = nice_ceiling((hi - lo) / 6.0);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 && out.len() < 20 {
        out.push(t);
        t += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn ticks_are_sane() {
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        let t = log_ticks(0.4, 6.0);
        assert_eq!(t, vec![0.5, 1.0, 2.0, 5.0]);
        assert_eq!(
            linear_ticks(0.0, 3.0),
            vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
        );
        assert_eq!(nice_axis(15.0), (15.0, 5.0));
        assert_eq!(nice_axis(2.39), (3.0, 1.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.25));
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(2.39), "2.39");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(123.4), "123");
    }

    #[test]
    fn charts_mark_every_datum() {
        let bars = vec![
            Bar {
                label: "a<b".into(),
                value: Some(2.0),
                note: String::new(),
            },
            Bar {
                label: "c".into(),
                value: None,
                note: "compile_error".into(),
            },
            Bar {
                label: "d".into(),
                value: Some(0.5),
                note: String::new(),
            },
        ];
        let s = speedup_bars("x", "t", "speedup", &bars);
        assert_eq!(s.matches(r#"class="bar""#).count(), 2);
        assert_eq!(s.matches(r#"class="bar failed""#).count(), 1);
        assert!(s.contains("a&lt;b") && !s.contains("a<b"));
        let series = [Series {
            name: "r".into(),
            points: vec![(0.0, 1.0), (2.0, 0.5)],
            step: true,
        }];
        let l = line_chart(&LineChart {
            id: "l",
            title: "t",
            x_label: "p",
            y_label: "fast_p",
            series: &series,
            y_max: Some(1.0),
            markers: &[1.0],
            y_percent: true,
        });
        assert_eq!(l.matches(r#"class="series""#).count(), 1);
        assert_eq!(l.matches(r#"class="point""#).count(), 2);
        let h = histogram(
            "h",
            "t",
            "SOL %",
            &[("0–10".into(), 3), ("10–20".into(), 0)],
        );
        assert_eq!(h.matches(r#"class="bin""#).count(), 2);
        assert!(h.contains(r#"data-count="3""#));
    }
}
