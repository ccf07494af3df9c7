//! Server-side SVG charts of daily series: no script, no external asset. Maud templates, so
//! that every value spliced in is escaped. Each bar carries a `<title>`, the browser's tooltip.

use maud::{html, Markup};

/// One day of the template chart.
pub struct Point {
    pub day: String,
    pub opens: i64,
    pub clicks: i64,
}

/// One named series of a chart: a value per day of the chart's days.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// The `class` of its bars (`bar-opens`, `bar-series-0`, ...).
    pub class: String,
    pub values: Vec<i64>,
}

/// Colours of the series, in order.
pub const COLORS: [&str; 6] = [
    "#2b6cb0", "#dd6b20", "#2f855a", "#9b2c2c", "#6b46c1", "#4a5568",
];

const W: f64 = 720.0;
const H: f64 = 260.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const BOTTOM: f64 = 42.0;
const TOP: f64 = 28.0;

/// A round step for about five ticks up to `max`: 1, 2 or 5 times a power of ten.
fn tick_step(max: i64) -> i64 {
    let raw = (max as f64 / 5.0).max(1.0);
    let pow = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow);
    step.max(1.0) as i64
}

/// Grouped bars (opens, clicks) per day with labelled axes and a legend.
pub fn daily_svg(points: &[Point]) -> Markup {
    let days: Vec<String> = points.iter().map(|p| p.day.clone()).collect();
    let series = [
        Series {
            name: "opens".into(),
            color: COLORS[0],
            class: "bar-opens".into(),
            values: points.iter().map(|p| p.opens).collect(),
        },
        Series {
            name: "clicks".into(),
            color: COLORS[1],
            class: "bar-clicks".into(),
            values: points.iter().map(|p| p.clicks).collect(),
        },
    ];
    series_svg("Opens and clicks per day of sending", &days, &series)
}

/// Grouped bars, one group a day and one bar a series, with a y axis of round ticks, day labels
/// on the x axis and a legend; each bar's `<title>` says its day, value and series.
pub fn series_svg(caption: &str, days: &[String], series: &[Series]) -> Markup {
    let max_value = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let step = tick_step(max_value);
    let top_tick = (max_value + step - 1) / step * step;
    let max = top_tick as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / days.len().max(1) as f64;
    let n = series.len().max(1) as f64;
    let bar = (slot * 0.8 / n).clamp(1.0, 24.0);
    let y0 = TOP + plot_h;
    // Label every day when few, else about eight labels.
    let every = days.len().div_ceil(8).max(1);
    let tenth = |v: f64| format!("{v:.1}");
    let ticks: Vec<i64> = (0..=top_tick / step).map(|i| i * step).collect();
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="chart" width=(W) height=(H)
            viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(caption) {
            title { (caption) }
            @for t in &ticks {
                @let y = y0 - plot_h * *t as f64 / max;
                line class="grid" x1=(LEFT) y1=(tenth(y)) x2=(W - RIGHT) y2=(tenth(y)) stroke="#e2e8f0" {}
                text class="tick-y" x=(LEFT - 6.0) y=(tenth(y + 3.5)) font-size="10" text-anchor="end" { (t) }
            }
            line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(y0) stroke="#888" {}
            line x1=(LEFT) y1=(y0) x2=(W - RIGHT) y2=(y0) stroke="#888" {}
            text x="12" y=(tenth(TOP + plot_h / 2.0)) font-size="10" text-anchor="middle"
                transform={ "rotate(-90 12 " (tenth(TOP + plot_h / 2.0)) ")" } { "events" }
            text x=(tenth(LEFT + plot_w / 2.0)) y=(H - 4.0) font-size="10" text-anchor="middle" { "day of sending (UTC)" }
            @for (i, day) in days.iter().enumerate() {
                @let x = LEFT + slot * i as f64 + (slot - n * bar) / 2.0;
                @for (j, s) in series.iter().enumerate() {
                    @let v = s.values.get(i).copied().unwrap_or(0);
                    @let h = plot_h * v as f64 / max;
                    rect class=(s.class) x=(tenth(x + bar * j as f64)) y=(tenth(y0 - h))
                        width=(tenth(bar)) height=(tenth(h.max(0.0))) fill=(s.color) {
                        title { (day) ": " (v) " " (s.name) }
                    }
                }
                @if i % every == 0 {
                    line x1=(tenth(x + n * bar / 2.0)) y1=(y0) x2=(tenth(x + n * bar / 2.0)) y2=(y0 + 4.0) stroke="#888" {}
                    text class="tick-x" x=(tenth(x + n * bar / 2.0)) y=(y0 + 15.0) font-size="10" text-anchor="middle" {
                        (day.get(5..).unwrap_or(day))
                    }
                }
            }
            @for (j, s) in series.iter().enumerate() {
                @let lx = LEFT + 8.0 + 150.0 * j as f64;
                rect x=(lx) y="8" width="10" height="10" fill=(s.color) {}
                text class="legend" x=(lx + 14.0) y="17" font-size="11" { (s.name) }
            }
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

    #[test]
    fn ticks_are_round_and_labelled() {
        assert_eq!(tick_step(3), 1);
        assert_eq!(tick_step(37), 10);
        assert_eq!(tick_step(120), 50);
        let svg = daily_svg(&[Point {
            day: "2025-01-02".into(),
            opens: 37,
            clicks: 4,
        }])
        .into_string();
        for label in [">0<", ">10<", ">20<", ">30<", ">40<"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        assert!(svg.contains("2025-01-02: 37 opens"));
    }
}
