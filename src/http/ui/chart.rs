//! Server-side SVG chart of opens and clicks per day: no script, no external asset. A maud
//! template, so that every value spliced in is escaped.

use maud::{html, Markup};

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
pub fn daily_svg(points: &[Point]) -> Markup {
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
    let y0 = TOP + plot_h;
    // Label every day when few, else about eight labels.
    let every = points.len().div_ceil(8).max(1);
    let tenth = |v: f64| format!("{v:.1}");
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="chart" width=(W) height=(H)
            viewBox={ "0 0 " (W) " " (H) } role="img" aria-label="opens and clicks per day of sending" {
            title { "Opens and clicks per day of sending" }
            line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(y0) stroke="#888" {}
            line x1=(LEFT) y1=(y0) x2=(W - 10.0) y2=(y0) stroke="#888" {}
            text x=(LEFT - 4.0) y=(TOP + 8.0) font-size="10" text-anchor="end" { (max as i64) }
            text x=(LEFT - 4.0) y=(y0) font-size="10" text-anchor="end" { "0" }
            @for (i, p) in points.iter().enumerate() {
                @let x = LEFT + slot * i as f64 + (slot - 2.0 * bar) / 2.0;
                @for (j, (v, color, name)) in [
                    (p.opens, "#2b6cb0", "opens"),
                    (p.clicks, "#dd6b20", "clicks"),
                ].into_iter().enumerate() {
                    @let h = plot_h * v as f64 / max;
                    rect class={ "bar-" (name) } x=(tenth(x + bar * j as f64)) y=(tenth(TOP + plot_h - h))
                        width=(tenth(bar)) height=(tenth(h)) fill=(color) {
                        title { (p.day) ": " (v) " " (name) }
                    }
                }
                @if i % every == 0 {
                    text x=(tenth(x)) y=(H - 12.0) font-size="10" { (p.day.get(5..).unwrap_or(&p.day)) }
                }
            }
            rect x=(W - 130.0) y=(TOP) width="10" height="10" fill="#2b6cb0" {}
            text x=(W - 116.0) y=(TOP + 9.0) font-size="11" { "opens" }
            rect x=(W - 70.0) y=(TOP) width="10" height="10" fill="#dd6b20" {}
            text x=(W - 56.0) y=(TOP + 9.0) font-size="11" { "clicks" }
        }
    }
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
        ])
        .into_string();
        assert_eq!(svg.matches("class=\"bar-opens\"").count(), 2);
        assert_eq!(svg.matches("class=\"bar-clicks\"").count(), 2);
        assert!(!svg.contains("<x>"));
        assert!(daily_svg(&[]).into_string().starts_with("<svg"));
    }
}
