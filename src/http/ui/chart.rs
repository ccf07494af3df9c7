//! Server-side SVG chart of opens and clicks per day: no script, no external asset.

use std::fmt::Write;

use crate::escape::html as esc;

/// One day of the chart.
pub struct Point {
    pub day: String,
    pub opens: i64,
    pub clicks: i64,
}

const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 30.0;
const TOP: f64 = 10.0;

/// Grouped bars (opens, clicks) per day with a y axis and a legend.
pub fn daily_svg(points: &[Point]) -> String {
    let max = points
        .iter()
        .map(|p| p.opens.max(p.clicks))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot_w = W - LEFT - 10.0;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / points.len().max(1) as f64;
    let bar = (slot * 0.4).clamp(1.0, 30.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="opens and clicks per day of sending"><title>Opens and clicks per day of sending</title>"##
    );
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y0}" stroke="#888"/><line x1="{LEFT}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#888"/><text x="{tx}" y="{ty}" font-size="10" text-anchor="end">{max}</text><text x="{tx}" y="{y0}" font-size="10" text-anchor="end">0</text>"##,
        y0 = TOP + plot_h,
        x1 = W - 10.0,
        tx = LEFT - 4.0,
        ty = TOP + 8.0,
        max = max as i64,
    );
    for (i, p) in points.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - 2.0 * bar) / 2.0;
        for (j, (v, color, name)) in [
            (p.opens, "#2b6cb0", "opens"),
            (p.clicks, "#dd6b20", "clicks"),
        ]
        .into_iter()
        .enumerate()
        {
            let h = plot_h * v as f64 / max;
            let _ = write!(
                s,
                r##"<rect class="bar-{name}" x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{color}"><title>{day}: {v} {name}</title></rect>"##,
                x = x + bar * j as f64,
                y = TOP + plot_h - h,
                day = esc(&p.day),
            );
        }
        // Label every day when few, else about eight labels.
        let every = points.len().div_ceil(8).max(1);
        if i % every == 0 {
            let _ = write!(
                s,
                r##"<text x="{x:.1}" y="{y}" font-size="10">{day}</text>"##,
                y = H - 12.0,
                day = esc(p.day.get(5..).unwrap_or(&p.day)),
            );
        }
    }
    let _ = write!(
        s,
        r##"<rect x="{lx}" y="{TOP}" width="10" height="10" fill="#2b6cb0"/><text x="{tx}" y="{ty}" font-size="11">opens</text><rect x="{lx2}" y="{TOP}" width="10" height="10" fill="#dd6b20"/><text x="{tx2}" y="{ty}" font-size="11">clicks</text></svg>"##,
        lx = W - 130.0,
        tx = W - 116.0,
        lx2 = W - 70.0,
        tx2 = W - 56.0,
        ty = TOP + 9.0,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_bar_per_series_and_day_and_escapes() {
        let svg = daily_svg(&[
            Point {
                day: "2025-01-02".into(),
                opens: 3,
                clicks: 1,
            },
            Point {
                day: "<x>".into(),
                opens: 0,
                clicks: 0,
            },
        ]);
        assert_eq!(svg.matches("class=\"bar-opens\"").count(), 2);
        assert_eq!(svg.matches("class=\"bar-clicks\"").count(), 2);
        assert!(!svg.contains("<x>"));
        assert!(daily_svg(&[]).starts_with("<svg"));
    }
}
