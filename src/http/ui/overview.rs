//! What every Insights page shares beyond the markup of one view: the headline tiles, the
//! stylesheet that fits a 1,366-pixel screen, and the favicon (served here, no CDN).

use actix_web::HttpResponse;
use maud::{html, Markup};

use crate::insights::report::Figures;

/// The stylesheet of every page. Tables wrap their headers and sit in a box that scrolls on its
/// own when a narrow screen cannot hold them, so the page itself never scrolls sideways.
pub const STYLE: &str = "*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f7f8fa}
main{padding:1rem 1.5rem;max-width:100%}
header.top{display:flex;flex-wrap:wrap;align-items:center;gap:1rem;background:#1a365d;color:#fff;padding:.5rem 1.5rem}
header.top a{color:#fff}header.top .who{margin-left:auto}
.tablebox{max-width:100%;overflow-x:auto;background:#fff;border:1px solid #e2e8f0;border-radius:6px;margin:.5rem 0 1.5rem}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{padding:.3rem .5rem;border-bottom:1px solid #e2e8f0;text-align:right}
th{background:#edf2f7;font-weight:600;vertical-align:bottom}
th:first-child,td:first-child{text-align:left}td.l,th.l{text-align:left}
td.url,td.key{overflow-wrap:anywhere;max-width:28rem}
.machine{color:#999}.machine .icon{opacity:.5}.human .icon{color:#2b6cb0}
.notice{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem .8rem;max-width:60rem}
nav a{margin-right:1rem}.switch a.on{font-weight:bold;text-decoration:none;color:#222}.err{color:#b00}
.tiles{display:flex;flex-wrap:wrap;gap:.75rem;margin:.75rem 0 1.25rem}
.tile{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:.6rem .9rem;min-width:10rem}
.tile .label{font-size:.8rem;color:#4a5568}.tile .human{font-size:1.6rem;font-weight:600;color:#1a365d}
.tile .all{font-size:.8rem;color:#718096;margin-left:.4rem}
svg.chart{max-width:100%;height:auto;background:#fff;border:1px solid #e2e8f0;border-radius:6px}
.views a{margin-right:.8rem}form.search input[type=search]{width:22rem;max-width:100%}
#mt-feed{position:fixed;bottom:1rem;right:1rem;max-width:24rem;z-index:10}
#mt-feed li{list-style:none;background:#2b6cb0;color:#fff;padding:.5rem .8rem;border-radius:6px;margin-top:.4rem}";

/// An SVG favicon: a bar chart in a rounded square.
pub const FAVICON_SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 32 32\">\
<rect width=\"32\" height=\"32\" rx=\"6\" fill=\"#1a365d\"/>\
<rect x=\"6\" y=\"16\" width=\"5\" height=\"10\" fill=\"#63b3ed\"/>\
<rect x=\"13.5\" y=\"10\" width=\"5\" height=\"16\" fill=\"#f6ad55\"/>\
<rect x=\"21\" y=\"6\" width=\"5\" height=\"20\" fill=\"#68d391\"/></svg>";

pub async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(FAVICON_SVG)
}

fn pct(v: Option<f64>) -> String {
    v.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn ratio(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// One headline rate: people's figure first, all events' beside it.
pub struct Tile {
    pub id: &'static str,
    pub label: &'static str,
    pub human: Option<f64>,
    pub all: Option<f64>,
}

/// The five headline rates of `f`, people's and all events'. Bounces are no opens or clicks:
/// their rate is the same in both.
pub fn tiles_of(f: &Figures) -> [Tile; 5] {
    let bounce = ratio(f.bounced, f.sent);
    let reply = ratio(f.unique_replies, f.delivered);
    [
        Tile {
            id: "open-rate",
            label: "Open rate",
            human: ratio(f.human_unique_opens, f.delivered),
            all: ratio(f.unique_opens, f.delivered),
        },
        Tile {
            id: "click-rate",
            label: "Click rate",
            human: ratio(f.human_unique_clicks, f.delivered),
            all: ratio(f.unique_clicks, f.delivered),
        },
        Tile {
            id: "click-to-open",
            label: "Click-to-open",
            human: ratio(f.human_unique_clicks, f.human_unique_opens),
            all: ratio(f.unique_clicks, f.unique_opens),
        },
        Tile {
            id: "reply-rate",
            label: "Reply rate",
            human: reply,
            all: reply,
        },
        Tile {
            id: "bounce-rate",
            label: "Bounce rate",
            human: bounce,
            all: bounce,
        },
    ]
}

/// The headline tiles. Rates only: the page's counts follow its one mode.
pub fn tiles(f: &Figures) -> Markup {
    html! {
        div class="tiles" id="tiles" {
            @for t in tiles_of(f) {
                div class="tile" id={ "tile-" (t.id) } {
                    div class="label" { (t.label) }
                    span class="human" title="people only" { (pct(t.human)) }
                    span class="all" title="all events, machines included" { "all events " (pct(t.all)) }
                }
            }
        }
    }
}

/// The sum of the counts of several rows (the rates are not summed: [`tiles_of`] makes them).
pub fn total(rows: &[&Figures]) -> Figures {
    let mut t = Figures::default();
    for f in rows {
        t.sent += f.sent;
        t.delivered += f.delivered;
        t.bounced += f.bounced;
        t.opens += f.opens;
        t.unique_opens += f.unique_opens;
        t.human_opens += f.human_opens;
        t.human_unique_opens += f.human_unique_opens;
        t.clicks += f.clicks;
        t.unique_clicks += f.unique_clicks;
        t.human_clicks += f.human_clicks;
        t.human_unique_clicks += f.human_unique_clicks;
        t.replies += f.replies;
        t.unique_replies += f.unique_replies;
    }
    t
}

/// A table in its box (see [`STYLE`]).
pub fn boxed(table: Markup) -> Markup {
    html! { div class="tablebox" { (table) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_put_people_first_and_all_events_beside() {
        let f = Figures {
            sent: 10,
            delivered: 8,
            bounced: 2,
            unique_opens: 6,
            human_unique_opens: 4,
            unique_clicks: 3,
            human_unique_clicks: 1,
            ..Figures::default()
        };
        let t = tiles_of(&f);
        assert_eq!((t[0].human, t[0].all), (Some(0.5), Some(0.75)));
        assert_eq!(t[2].human, Some(0.25));
        assert_eq!(t[4].human, Some(0.2));
        let html = tiles(&f).into_string();
        assert!(html.contains("50.0%") && html.contains("all events 75.0%"));
    }
}
