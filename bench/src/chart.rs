//! The latency chart of docs/benchmarks.md, written as SVG by hand (no
//! plotting dependency): one panel per comparison, each a percentile plot
//! (HdrHistogram style) with the percentile on a "nines" axis
//! (0, 90, 99, 99.9 %) and the latency on a log axis, so medians and tails
//! are both readable.

use std::fmt::Write as _;

use crate::stats::Samples;

/// One line of a panel.
pub struct Series<'a> {
    /// Legend text.
    pub label: String,
    /// The samples.
    pub samples: &'a Samples,
}

/// One panel.
pub struct Panel<'a> {
    /// Title above the panel.
    pub title: String,
    /// Its lines.
    pub series: Vec<Series<'a>>,
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
const PANEL_W: f64 = 480.0;
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 45.0;
/// The x axis ends at 99.9 %: `-log10(1 - q)` = 3.
const MAX_NINES: f64 = 3.0;

/// Renders panels two per row.
pub fn render(panels: &[Panel<'_>]) -> String {
    let cols = 2usize;
    let rows = panels.len().div_ceil(cols).max(1);
    let width = PANEL_W * cols as f64;
    let height = PANEL_H * rows as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    for (i, panel) in panels.iter().enumerate() {
        let x0 = PANEL_W * (i % cols) as f64;
        let y0 = PANEL_H * (i / cols) as f64;
        render_panel(&mut svg, panel, x0, y0);
    }
    svg.push_str("</svg>\n");
    svg
}

fn nines(q: f64) -> f64 {
    (-(1.0 - q).log10()).min(MAX_NINES)
}

fn render_panel(svg: &mut String, panel: &Panel<'_>, x0: f64, y0: f64) {
    let plot_w = PANEL_W - LEFT - RIGHT;
    let plot_h = PANEL_H - TOP - BOTTOM;
    let (px, py) = (x0 + LEFT, y0 + TOP);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        x0 + 10.0,
        y0 + 18.0,
        escape(&panel.title)
    );
    // Latency range over every series, in ms, widened to whole decades.
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for s in &panel.series {
        if let (Some(&a), Some(&b)) = (s.samples.micros().first(), s.samples.micros().last()) {
            lo = lo.min((a.max(1)) as f64 / 1000.0);
            hi = hi.max((b.max(1)) as f64 / 1000.0);
        }
    }
    if lo > hi {
        lo = 0.01;
        hi = 1.0;
    }
    let (dlo, dhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let y_of = |ms: f64| py + plot_h - (ms.max(1e-6).log10() - dlo) / (dhi - dlo) * plot_h;
    let x_of = |n: f64| px + n / MAX_NINES * plot_w;
    let _ = writeln!(
        svg,
        r##"<rect x="{px}" y="{py}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
    );
    // Decade grid lines and labels on the latency axis.
    let mut d = dlo;
    while d <= dhi + 1e-9 {
        let y = y_of(10f64.powf(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{px}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            px + plot_w,
            px - 4.0,
            y + 4.0,
            fmt_ms(10f64.powf(d))
        );
        d += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" transform="rotate(-90 {} {})" text-anchor="middle">latency (log)</text>"#,
        x0 + 14.0,
        py + plot_h / 2.0,
        x0 + 14.0,
        py + plot_h / 2.0
    );
    for (n, label) in [(0.0, "0%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%")] {
        let x = x_of(n);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{py}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            py + plot_h,
            py + plot_h + 14.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        px + plot_w / 2.0,
        py + plot_h + 30.0
    );
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if s.samples.is_empty() {
            continue;
        }
        let v = s.samples.micros();
        let n = v.len();
        let mut points = String::new();
        // One point per sample for small sets, else 400 points spread
        // evenly on the nines axis.
        let steps = n.min(400);
        for k in 0..steps {
            let x_n = MAX_NINES * k as f64 / (steps.max(2) - 1) as f64;
            let q = 1.0 - 10f64.powf(-x_n);
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            let ms = v[rank - 1] as f64 / 1000.0;
            let _ = write!(points, "{:.1},{:.1} ", x_of(nines(q)), y_of(ms));
        }
        let _ = writeln!(
            svg,
            r#"<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.8"/>"#
        );
        let ly = py + 12.0 + 14.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{} (p50 {}, p99 {}, n={n})</text>"#,
            px + 8.0,
            px + 26.0,
            px + 30.0,
            ly + 4.0,
            escape(&s.label),
            fmt_ms(s.samples.p50_ms()),
            fmt_ms(s.samples.p99_ms()),
        );
    }
}

/// Milliseconds with a sensible number of digits.
pub fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() {
        "n/a".to_owned()
    } else if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
