//! `/insights/compare`: two to five templates side by side (`t=SCOPE:KEY`, repeated), or two
//! periods of one template (`t=SCOPE:KEY&from=&to=&from2=&to2=`): the figures of each, the
//! difference from the first, and their daily series on one chart. Plain GET forms.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use maud::{html, Markup};

use super::chart::{self, Series};
use super::{
    class_name, html as respond, layout, overview, signed_in, switch, url_part, PageError,
};
use crate::accounts::visibility::Viewer;
use crate::base::Base;
use crate::insights::report::{self, ClassFilter, Figures, ReportFilter, TemplateScope};

/// At most this many templates side by side.
const MAX: usize = 5;

/// One column of the comparison.
struct Column {
    label: String,
    /// The first day of its period, when it is one.
    start: Option<NaiveDate>,
    figures: Figures,
    daily: Vec<(NaiveDate, Figures)>,
}

/// `SCOPE:KEY`, the scope being `team:ID` or `sender:ID`.
fn parse_item(s: &str) -> Option<(TemplateScope, String)> {
    let mut parts = s.splitn(3, ':');
    let (kind, id, key) = (parts.next()?, parts.next()?, parts.next()?);
    let scope = format!("{kind}:{id}").parse().ok()?;
    (!key.is_empty()).then(|| (scope, key.to_string()))
}

fn date(pairs: &[(String, String)], name: &str) -> Option<NaiveDate> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d").ok())
}

fn pct(v: Option<f64>) -> String {
    v.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// The compared figures of the page's mode: a name, the count or rate, and whether a rate.
fn rows_of(f: &Figures, class: ClassFilter) -> Vec<(&'static str, Option<f64>, bool)> {
    let h = class == ClassFilter::Human;
    let n = |v: i64| Some(v as f64);
    vec![
        ("Sent", n(f.sent), false),
        ("Delivered", n(f.delivered), false),
        ("Opens", n(if h { f.human_opens } else { f.opens }), false),
        (
            "Unique opens",
            n(if h {
                f.human_unique_opens
            } else {
                f.unique_opens
            }),
            false,
        ),
        (
            "Clicks",
            n(if h { f.human_clicks } else { f.clicks }),
            false,
        ),
        (
            "Unique clicks",
            n(if h {
                f.human_unique_clicks
            } else {
                f.unique_clicks
            }),
            false,
        ),
        ("Open rate", f.open_rate, true),
        ("Click rate", f.click_rate, true),
        ("Click-to-open", f.click_to_open, true),
        ("Reply rate", f.reply_rate, true),
        ("Bounce rate", f.bounce_rate, true),
    ]
}

fn shown(v: Option<f64>, rate: bool) -> String {
    match (v, rate) {
        (None, _) => "-".into(),
        (Some(_), true) => pct(v),
        (Some(x), false) => format!("{x:.0}"),
    }
}

/// The difference from the first column: points for rates, a signed count otherwise.
fn difference(a: Option<f64>, b: Option<f64>, rate: bool) -> String {
    match (a, b) {
        (Some(a), Some(b)) if rate => format!("{:+.1} pts", (b - a) * 100.0),
        (Some(a), Some(b)) => format!("{:+.0}", b - a),
        _ => "-".into(),
    }
}

fn table(columns: &[Column], class: ClassFilter) -> Markup {
    let first = columns.first().map(|c| rows_of(&c.figures, class));
    overview::boxed(html! {
        table id="comparison" {
            thead {
                tr {
                    th { "Figure" }
                    @for (i, c) in columns.iter().enumerate() {
                        th class={ "col-" (i) } { (c.label) }
                        @if i > 0 { th class={ "diff-" (i) } { "Difference" } }
                    }
                }
            }
            tbody {
                @for (r, (name, _, rate)) in first.clone().unwrap_or_default().iter().enumerate() {
                    tr {
                        td { (name) }
                        @for (i, c) in columns.iter().enumerate() {
                            @let v = rows_of(&c.figures, class)[r].1;
                            td class={ "col-" (i) } { (shown(v, *rate)) }
                            @if i > 0 {
                                td class={ "diff-" (i) } {
                                    (difference(first.as_ref().and_then(|f| f[r].1), v, *rate))
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// One chart: each column's opens per day; by date for templates, by day of the period for
/// periods (so that the two periods overlay).
fn chart(columns: &[Column], class: ClassFilter, by_offset: bool) -> Markup {
    let opens = |f: &Figures| match class {
        ClassFilter::Human => f.human_opens,
        ClassFilter::All => f.opens,
    };
    let (days, series): (Vec<String>, Vec<Series>) = if by_offset {
        // Day 1 is each period's first day (or its first day with mail).
        let offsets: Vec<Vec<(usize, i64)>> = columns
            .iter()
            .map(|c| {
                let start = c.start.or(c.daily.first().map(|(d, _)| *d));
                c.daily
                    .iter()
                    .filter_map(|(d, f)| {
                        let i = (*d - start?).num_days();
                        usize::try_from(i).ok().map(|i| (i, opens(f)))
                    })
                    .collect()
            })
            .collect();
        let n = offsets
            .iter()
            .flat_map(|o| o.iter().map(|(i, _)| i + 1))
            .max()
            .unwrap_or(1);
        let days = (1..=n).map(|d| format!("day {d}")).collect();
        let series = columns
            .iter()
            .zip(&offsets)
            .enumerate()
            .map(|(i, (c, o))| {
                let mut values = vec![0; n];
                for (at, v) in o {
                    values[*at] = *v;
                }
                Series {
                    name: c.label.clone(),
                    color: chart::COLORS[i % chart::COLORS.len()],
                    class: format!("bar-series-{i}"),
                    values,
                }
            })
            .collect();
        (days, series)
    } else {
        let mut all: Vec<NaiveDate> = columns
            .iter()
            .flat_map(|c| c.daily.iter().map(|(d, _)| *d))
            .collect();
        all.sort();
        all.dedup();
        let series = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Series {
                name: c.label.clone(),
                color: chart::COLORS[i % chart::COLORS.len()],
                class: format!("bar-series-{i}"),
                values: all
                    .iter()
                    .map(|d| {
                        c.daily
                            .iter()
                            .find(|(x, _)| x == d)
                            .map(|(_, f)| opens(f))
                            .unwrap_or(0)
                    })
                    .collect(),
            })
            .collect();
        (all.iter().map(|d| d.to_string()).collect(), series)
    };
    chart::series_svg("Opens per day, side by side", &days, &series)
}

async fn column(
    client: &tokio_postgres::Client,
    viewer: Viewer,
    (scope, key): &(TemplateScope, String),
    class: ClassFilter,
    period: Option<(Option<NaiveDate>, Option<NaiveDate>)>,
) -> Result<Option<Column>, PageError> {
    let (from, to) = period.unwrap_or((None, None));
    let filter = ReportFilter {
        class,
        scope: Some(*scope),
        from,
        to,
        ..ReportFilter::default()
    };
    let detail = report::template(client, viewer, key, &filter).await?;
    let label = match period {
        Some((f, t)) => format!(
            "{key} {} to {}",
            f.map(|d| d.to_string()).unwrap_or_else(|| "start".into()),
            t.map(|d| d.to_string()).unwrap_or_else(|| "now".into())
        ),
        None => key.clone(),
    };
    Ok(match detail {
        Some(detail) => Some(Column {
            label,
            start: from,
            figures: detail.row.figures,
            daily: detail
                .daily
                .into_iter()
                .map(|d| (d.day, d.figures))
                .collect(),
        }),
        // A period with nothing sent is a column of zeros; a template not seen is none.
        None if period.is_some() => Some(Column {
            label,
            start: from,
            figures: Figures::default(),
            daily: Vec::new(),
        }),
        None => None,
    })
}

pub async fn page(
    ctx: web::Data<Base>,
    req: HttpRequest,
    q: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, PageError> {
    let user = match signed_in(&ctx, &req).await? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let pairs = q.into_inner();
    let class = match pairs.iter().find(|(k, _)| k == "class") {
        Some((_, v)) if v == "all" => ClassFilter::All,
        _ => ClassFilter::Human,
    };
    let mut items: Vec<(TemplateScope, String)> = pairs
        .iter()
        .filter(|(k, _)| k == "t")
        .filter_map(|(_, v)| parse_item(v))
        .collect();
    items.dedup();
    items.truncate(MAX);
    let viewer = Viewer::from(&user);
    let client = ctx.pool.get().await?;
    let periods = (
        date(&pairs, "from"),
        date(&pairs, "to"),
        date(&pairs, "from2"),
        date(&pairs, "to2"),
    );
    let by_period = items.len() == 1 && (periods.2.is_some() || periods.3.is_some());
    let mut columns = Vec::new();
    if by_period {
        for period in [(periods.0, periods.1), (periods.2, periods.3)] {
            if let Some(c) = column(&client, viewer, &items[0], class, Some(period)).await? {
                columns.push(c);
            }
        }
    } else {
        for item in &items {
            if let Some(c) = column(&client, viewer, item, class, None).await? {
                columns.push(c);
            }
        }
    }
    let templates = report::templates(
        &**client,
        viewer,
        &ReportFilter {
            class,
            ..ReportFilter::default()
        },
    )
    .await?;
    let chosen: Vec<String> = items.iter().map(|(s, k)| format!("{s}:{k}")).collect();
    let here: String = chosen
        .iter()
        .map(|c| format!("t={}", url_part(c)))
        .collect::<Vec<_>>()
        .join("&");
    let value = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    let body = html! {
        h1 { "Compare" }
        (switch(&format!("/insights/compare?{here}"), class))
        @if columns.len() >= 2 {
            (table(&columns, class))
            h2 { "Opens per day" }
            (chart(&columns, class, by_period))
        } @else {
            p id="compare-hint" { "Pick two to five templates, or one template and two periods." }
        }
        h2 { "Templates side by side" }
        form method="get" action="/insights/compare" id="compare-templates" {
            input type="hidden" name="class" value=(class_name(class));
            div class="tablebox" style="padding:.5rem" {
                @for r in &templates {
                    @let v = format!("{}:{}", r.scope, r.template);
                    label style="display:inline-block;margin-right:1rem" {
                        input type="checkbox" name="t" value=(v) checked[chosen.contains(&v)];
                        " " (r.template)
                    }
                }
            }
            button type="submit" { "Compare templates" }
        }
        h2 { "Two periods of one template" }
        form method="get" action="/insights/compare" id="compare-periods" {
            input type="hidden" name="class" value=(class_name(class));
            select name="t" {
                @for r in &templates {
                    @let v = format!("{}:{}", r.scope, r.template);
                    option value=(v) selected[chosen.first() == Some(&v)] { (r.template) }
                }
            }
            " from " input type="date" name="from" value=(value(periods.0));
            " to " input type="date" name="to" value=(value(periods.1));
            " against " input type="date" name="from2" value=(value(periods.2));
            " to " input type="date" name="to2" value=(value(periods.3));
            " " button type="submit" { "Compare periods" }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout("Compare", Some(&user), body),
    ))
}
