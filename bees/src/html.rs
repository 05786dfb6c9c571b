//! The report as one self-contained HTML page: summary tables and line charts drawn as
//! inline SVG (latency over time, subscribers over time, bit rate per track, relay CPU and
//! memory). No script, no stylesheet or font from elsewhere: the file opens offline.

use std::fmt::Write as _;

use crate::report::Report;

/// Series colours, distinguishable in colour and in grey.
const COLOURS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#7f7f7f"];

/// Chart size in SVG user units.
const W: f64 = 720.0;
const H: f64 = 260.0;
/// Margins: left for the y labels, bottom for the x labels.
const ML: f64 = 60.0;
const MR: f64 = 150.0;
const MT: f64 = 28.0;
const MB: f64 = 36.0;

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
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

/// A round step for about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let r = raw / mag;
    let f = if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One named series of (x, y) points.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// A line chart as an `<svg>` element.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let ystep = nice_step(if y1 > 0.0 { y1 } else { 1.0 }, 5.0);
    let ytop = ((y1 / ystep).ceil() * ystep).max(ystep);
    let xstep = nice_step(x1 - x0, 8.0);
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let px = |x: f64| ML + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| MT + ph - y / ytop * ph;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}" font-family="sans-serif" font-size="11">"##,
        t = escape(title)
    );
    let _ = write!(
        svg,
        r##"<text x="{ML}" y="16" font-size="13" font-weight="bold">{}</text>"##,
        escape(title)
    );
    // Grid and y labels.
    let mut y = 0.0;
    while y <= ytop + ystep * 1e-6 {
        let yy = py(y);
        let _ = write!(
            svg,
            r##"<line x1="{ML}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            ML + pw,
            ML - 6.0,
            yy + 4.0,
            fmt_num(y)
        );
        y += ystep;
    }
    let mut x = (x0 / xstep).ceil() * xstep;
    while x <= x1 + xstep * 1e-6 {
        let xx = px(x);
        let _ = write!(
            svg,
            r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#999"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            MT + ph,
            MT + ph + 4.0,
            MT + ph + 16.0,
            fmt_num(x)
        );
        x += xstep;
    }
    let _ = write!(
        svg,
        r##"<rect x="{ML}" y="{MT}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#666"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        ML + pw / 2.0,
        H - 4.0,
        escape(x_label),
        MT + ph / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        if !s.points.is_empty() {
            let pts: Vec<String> =
                s.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
            let _ = write!(
                svg,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{}"/>"##,
                pts.join(" ")
            );
        }
        let ly = MT + 10.0 + i as f64 * 16.0;
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            ML + pw + 10.0,
            ML + pw + 28.0,
            ML + pw + 32.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The whole page.
pub fn render(report: &Report) -> String {
    let t0 = report.timeline.keys().next().copied().unwrap_or(0);
    let x = |k: u64| (k - t0 + 1) as f64;
    let mut latency = vec![
        Series { name: "p50".into(), points: Vec::new() },
        Series { name: "p99".into(), points: Vec::new() },
        Series { name: "max".into(), points: Vec::new() },
    ];
    let mut subscribers = Series { name: "connected".into(), points: Vec::new() };
    let names: std::collections::BTreeSet<&String> =
        report.timeline.values().flat_map(|p| p.bytes.keys()).collect();
    let mut rate: Vec<Series> =
        names.iter().map(|n| Series { name: (*n).clone(), points: Vec::new() }).collect();
    let mut cpu = Series { name: "CPU %".into(), points: Vec::new() };
    let mut rss = Series { name: "RSS MiB".into(), points: Vec::new() };
    for (&k, p) in &report.timeline {
        if let Some(q) = crate::report::quantiles_ms(&p.latency_us) {
            latency[0].points.push((x(k), q.p50));
            latency[1].points.push((x(k), q.p99));
            latency[2].points.push((x(k), q.max));
        }
        subscribers.points.push((x(k), p.subscribers as f64));
        for (s, n) in rate.iter_mut().zip(&names) {
            let b = p.bytes.get(*n).copied().unwrap_or(0);
            s.points.push((x(k), b as f64 * 8.0 / 1e6));
        }
        if let Some(c) = p.relay_cpu_ms {
            cpu.points.push((x(k), c / 10.0));
        }
        if let Some(r) = p.relay_rss_kib {
            rss.points.push((x(k), r as f64 / 1024.0));
        }
    }

    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tiermesh bees report</title>\
         <style>body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}th{background:#f4f4f4}\
         td:first-child,th:first-child{text-align:left}pre{background:#f8f8f8;padding:1em;overflow:auto}</style>\
         </head><body>\n<h1>tiermesh bees</h1>\n",
    );
    let _ = writeln!(h, "<h2>Summary</h2>\n<pre>{}</pre>", escape(&report.to_table()));
    h.push_str("<h2>Shards</h2>\n<table><tr><th>shard</th><th>targets</th><th>subscribers</th><th>publishers</th><th>tracks</th><th>duration s</th><th>ramp s</th></tr>\n");
    for s in &report.shards {
        let _ = writeln!(
            h,
            "<tr><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            s.index,
            s.count,
            escape(&s.targets.join(" ")),
            s.subscribers,
            s.publishers,
            escape(&s.tracks.join(" ")),
            s.duration_s,
            s.ramp_s
        );
    }
    h.push_str("</table>\n<h2>Over time</h2>\n");
    h.push_str(&line_chart("Latency (capture to arrival)", "seconds", "ms", &latency));
    h.push_str(&line_chart("Subscribers", "seconds", "connected", &[subscribers]));
    h.push_str(&line_chart("Bit rate per track (all subscribers)", "seconds", "Mbit/s", &rate));
    if !cpu.points.is_empty() {
        h.push_str(&line_chart("Relay CPU (100 % = one core)", "seconds", "%", &[cpu]));
        h.push_str(&line_chart("Relay memory", "seconds", "MiB", &[rss]));
    }
    h.push_str("\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_escapes_names_and_draws_each_series() {
        let svg = line_chart(
            "a<b",
            "s",
            "ms",
            &[
                Series { name: "x&y".into(), points: vec![(1.0, 2.0), (2.0, 3.0)] },
                Series { name: "z".into(), points: vec![] },
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("a&lt;b") && svg.contains("x&amp;y"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn empty_report_renders() {
        let page = render(&Report::new());
        assert!(page.contains("<svg") && page.ends_with("</html>\n"));
        assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
    }
}
