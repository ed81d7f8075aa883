//! SVG charts drawn on the server: paired histograms (reference against current), a single
//! histogram, a line chart of a metric over runs, and a lineage graph. Plain SVG text, no script,
//! nothing fetched from elsewhere.

use std::fmt::Write;

use sluice_engine::profile::{Binning, ColumnProfile};

use super::html::escape;

/// Colours of the reference and the current data.
const REFERENCE: &str = "#7a8ca5";
const CURRENT: &str = "#e07b39";
/// Display bins of a numeric histogram.
const DISPLAY_BINS: usize = 25;
/// Categories shown.
const TOP: usize = 12;

/// Bars of one column: labels and proportions (values outside the binned range in end bars).
fn bars(column: &ColumnProfile, labels_from: &ColumnProfile) -> Vec<(String, f64)> {
    let total = (column.count.max(1)) as f64;
    match labels_from.binning {
        Binning::Numeric { lo, hi, bins } => {
            let group = bins.div_ceil(DISPLAY_BINS).max(1);
            let width = if hi > lo { (hi - lo) / bins as f64 } else { 0.0 };
            let mut out = Vec::new();
            if column.below.0 > 0 || labels_from.below.0 > 0 {
                out.push((format!("< {}", short(lo)), column.below.0 as f64 / total));
            }
            for (k, g) in column.bins.chunks(group).enumerate() {
                let left = lo + width * (k * group) as f64;
                out.push((short(left), g.iter().sum::<u64>() as f64 / total));
            }
            if column.above.0 > 0 || labels_from.above.0 > 0 {
                out.push((format!("> {}", short(hi)), column.above.0 as f64 / total));
            }
            out
        }
        Binning::Categorical => {
            let mut out: Vec<(String, f64)> = labels_from
                .top(TOP)
                .into_iter()
                .map(|(v, _)| (v.to_string(), column.categories.get(v).copied().unwrap_or(0) as f64 / total))
                .collect();
            let shown: f64 = out.iter().map(|(_, p)| p).sum();
            if shown < 0.999 && column.count > 0 {
                out.push(("other".into(), (1.0 - shown).max(0.0)));
            }
            out
        }
    }
}

/// A number short enough for an axis label.
fn short(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() >= 1e4 || x.abs() < 1e-2 {
        format!("{x:.1e}")
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// The reference's and the current data's distributions of one column, side by side per bin.
pub fn paired_histogram(reference: &ColumnProfile, current: &ColumnProfile) -> String {
    // Categories: the union of both sides' most frequent ones, labelled from the reference.
    let mut labels_from = reference.clone();
    // End bars for values outside the reference's range, when either side has some.
    labels_from.below.0 += current.below.0;
    labels_from.above.0 += current.above.0;
    if matches!(reference.binning, Binning::Categorical) {
        for (v, n) in current.top(TOP) {
            labels_from.categories.entry(v.to_string()).or_insert(n.min(1));
        }
    }
    let r = bars(reference, &labels_from);
    let c = bars(current, &labels_from);
    let (w, h, left, bottom) = (560.0, 200.0, 40.0, 36.0);
    let n = r.len().max(1) as f64;
    let top = r.iter().chain(&c).map(|(_, p)| *p).fold(0.0f64, f64::max).max(1e-9);
    let slot = (w - left - 10.0) / n;
    let mut svg = format!(
        r#"<svg class="drift-chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{} histogram, reference and current">"#,
        escape(&reference.name)
    );
    let plot = h - bottom - 10.0;
    let _ = write!(svg, r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#999"/>"##, 10.0 + plot, w - 10.0, 10.0 + plot);
    let _ = write!(svg, r##"<text x="4" y="16" font-size="10" fill="#555">{:.0}%</text>"##, top * 100.0);
    for (i, ((label, rp), (_, cp))) in r.iter().zip(&c).enumerate() {
        let x = left + slot * i as f64;
        let bar = (slot / 2.0 - 1.0).max(1.0);
        let (rh, ch) = (rp / top * plot, cp / top * plot);
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{rh:.1}" fill="{REFERENCE}"><title>reference {}: {:.2}%</title></rect>"#,
            10.0 + plot - rh,
            escape(label),
            rp * 100.0
        );
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="{ch:.1}" fill="{CURRENT}"><title>current {}: {:.2}%</title></rect>"#,
            x + bar + 1.0,
            10.0 + plot - ch,
            escape(label),
            cp * 100.0
        );
        let every = (r.len() / 8).max(1);
        if i % every == 0 {
            let _ = write!(
                svg,
                r##"<text x="{x:.1}" y="{:.1}" font-size="9" fill="#555">{}</text>"##,
                h - bottom + 14.0,
                escape(&label.chars().take(10).collect::<String>())
            );
        }
    }
    let _ = write!(
        svg,
        r##"<rect x="{}" y="{}" width="10" height="10" fill="{REFERENCE}"/><text x="{}" y="{}" font-size="10">reference</text><rect x="{}" y="{}" width="10" height="10" fill="{CURRENT}"/><text x="{}" y="{}" font-size="10">current</text></svg>"##,
        left,
        h - 12.0,
        left + 14.0,
        h - 3.0,
        left + 90.0,
        h - 12.0,
        left + 104.0,
        h - 3.0
    );
    svg
}

/// One column's distribution.
pub fn histogram(column: &ColumnProfile) -> String {
    let b = bars(column, column);
    let (w, h) = (260.0, 70.0);
    let top = b.iter().map(|(_, p)| *p).fold(0.0f64, f64::max).max(1e-9);
    let slot = w / b.len().max(1) as f64;
    let mut svg = format!(r#"<svg class="histogram" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"#);
    for (i, (label, p)) in b.iter().enumerate() {
        let bh = p / top * (h - 2.0);
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{REFERENCE}"><title>{}: {:.2}%</title></rect>"#,
            slot * i as f64,
            h - bh,
            (slot - 1.0).max(0.5),
            escape(label),
            p * 100.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A metric over runs: one line per series of `(run label, value)`, with the threshold dashed.
pub fn line_chart(title: &str, series: &[(String, Vec<(String, f64)>)], threshold: Option<f64>) -> String {
    let (w, h, left, pad) = (560.0, 180.0, 44.0, 14.0);
    let points = series.iter().map(|(_, s)| s.len()).max().unwrap_or(0).max(2) as f64;
    let finite = series.iter().flat_map(|(_, s)| s.iter().map(|(_, v)| *v)).chain(threshold).filter(|v| v.is_finite());
    let top = finite.fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let x = |i: usize| left + (w - left - pad) * i as f64 / (points - 1.0);
    let y = |v: f64| pad + (h - 2.0 * pad - 14.0) * (1.0 - (v / top).clamp(0.0, 1.0));
    let mut svg = format!(
        r##"<svg class="metric-chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><text x="4" y="12" font-size="10" fill="#555">{}</text>"##,
        escape(title),
        escape(title)
    );
    let _ = write!(svg, r##"<text x="4" y="{:.1}" font-size="9" fill="#555">{}</text>"##, y(top / 1.1) + 3.0, short(top / 1.1));
    let _ = write!(svg, r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999"/>"##, y(0.0), w - pad, y(0.0));
    if let Some(t) = threshold.filter(|t| t.is_finite()) {
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c0392b" stroke-dasharray="4 3"><title>threshold {t}</title></line>"##,
            y(t),
            w - pad,
            y(t)
        );
    }
    let palette = ["#2e6da4", "#e07b39", "#3c9a5f", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];
    for (k, (name, s)) in series.iter().enumerate() {
        let colour = palette[k % palette.len()];
        let path: Vec<String> =
            s.iter().enumerate().filter(|(_, (_, v))| v.is_finite()).map(|(i, (_, v))| format!("{:.1},{:.1}", x(i), y(*v))).collect();
        let _ = write!(svg, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#, path.join(" "));
        for (i, (run, v)) in s.iter().enumerate().filter(|(_, (_, v))| v.is_finite()) {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{} {}: {v:.4}</title></circle>"#,
                x(i),
                y(*v),
                escape(name),
                escape(run)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="{colour}">{}</text>"#,
            left + 90.0 * k as f64,
            h - 3.0,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A node of a lineage graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its label.
    pub label: String,
    /// Where clicking it goes.
    pub href: Option<String>,
    /// `source`, `asset`, `model` or `this`.
    pub kind: &'static str,
    /// Its column (0 = furthest upstream).
    pub depth: usize,
}

/// Boxes in columns by depth, arrows from each edge's first node to its second.
pub fn lineage(nodes: &[Node], edges: &[(usize, usize)]) -> String {
    let columns = nodes.iter().map(|n| n.depth).max().map_or(1, |d| d + 1);
    let mut rows_in = vec![0usize; columns];
    let mut at = Vec::with_capacity(nodes.len());
    for n in nodes {
        at.push((n.depth, rows_in[n.depth]));
        rows_in[n.depth] += 1;
    }
    let tallest = rows_in.iter().copied().max().unwrap_or(1).max(1);
    let (bw, bh, gx, gy) = (170.0, 34.0, 60.0, 16.0);
    let w = columns as f64 * (bw + gx);
    let h = tallest as f64 * (bh + gy) + gy;
    let pos = |i: usize| {
        let (c, r) = at[i];
        (10.0 + c as f64 * (bw + gx), gy + r as f64 * (bh + gy))
    };
    let mut svg = format!(
        r##"<svg class="lineage" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}"><defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#777"/></marker></defs>"##
    );
    for (a, b) in edges {
        let ((ax, ay), (bx, by)) = (pos(*a), pos(*b));
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#777" marker-end="url(#arrow)"/>"##,
            ax + bw,
            ay + bh / 2.0,
            bx - 2.0,
            by + bh / 2.0
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = pos(i);
        let fill = match n.kind {
            "this" => "#fde3cf",
            "model" => "#e3d7f5",
            "source" => "#e8e8e8",
            _ => "#d9e7f5",
        };
        let label: String = n.label.chars().take(26).collect();
        let body = format!(
            r##"<rect x="{x:.1}" y="{y:.1}" width="{bw}" height="{bh}" rx="5" fill="{fill}" stroke="#888"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"##,
            x + 8.0,
            y + 21.0,
            escape(&label)
        );
        match &n.href {
            Some(href) => {
                let _ = write!(svg, r#"<a href="{}"><title>{}</title>{body}</a>"#, escape(href), escape(&n.label));
            }
            None => svg.push_str(&body),
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arrow::array::Float64Array;
    use sluice_engine::profile::ColumnSpec;

    use super::*;

    #[test]
    fn charts_are_svg_with_escaped_text() {
        let spec = ColumnSpec { name: "a<b".into(), binning: Binning::Numeric { lo: 0.0, hi: 10.0, bins: 100 } };
        let mut r = ColumnProfile::new(&spec);
        r.add(&Float64Array::from_iter_values((0..100).map(|i| f64::from(i) / 10.0))).unwrap();
        let mut c = ColumnProfile::new(&spec);
        c.add(&Float64Array::from_iter_values((0..100).map(|i| f64::from(i) / 10.0 + 5.0))).unwrap();
        let chart = paired_histogram(&r, &c);
        assert!(chart.starts_with("<svg class=\"drift-chart\"") && chart.ends_with("</svg>"));
        assert!(chart.contains("a&lt;b") && !chart.contains("a<b"));
        // 25 display bins and the bar of values above the range, two bars each.
        assert_eq!(chart.matches("<title>current").count(), 26);
        let line = line_chart("psi", &[("x".into(), vec![("r1".into(), 0.1), ("r2".into(), 0.3)])], Some(0.2));
        assert_eq!(line.matches("<circle").count(), 2);
        let graph = lineage(
            &[
                Node { label: "raw".into(), href: None, kind: "source", depth: 0 },
                Node { label: "x".into(), href: Some("/assets/x".into()), kind: "this", depth: 1 },
            ],
            &[(0, 1)],
        );
        assert!(graph.contains("href=\"/assets/x\"") && graph.contains("marker-end"));
    }
}
