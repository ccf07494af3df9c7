//! Report queries. They read per-copy state and rollups only, never the events table, and take
//! their visibility condition from `api::visibility`.

use chrono::NaiveDate;
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::fold::{facets_of, CrmFacet};
use super::InsightsError;
use crate::accounts::visibility::{visible, Params, Viewer};

/// Which events count in the rates: people only (`human` + `proxy`) or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClassFilter {
    #[default]
    Human,
    All,
}

/// Whose a template key is: a team's, or a sender's own when they have no team. Keys are per
/// scope, so two teams' "welcome" are two templates with their own figures and names. Written
/// `team:ID` or `sender:ID` in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateScope {
    Team(i64),
    Sender(i64),
}

impl TemplateScope {
    /// The scope `viewer`'s own mail is filed under.
    pub fn of(viewer: Viewer) -> TemplateScope {
        match viewer.team_id {
            Some(team) => TemplateScope::Team(team),
            None => TemplateScope::Sender(viewer.user_id),
        }
    }

    /// From a rollup's dimensions (team 0: no team).
    fn from_dims(team_id: i64, sender_id: i64) -> TemplateScope {
        if team_id != 0 {
            TemplateScope::Team(team_id)
        } else {
            TemplateScope::Sender(sender_id)
        }
    }

    /// The condition on a row `alias` with `team_id` (0 for none) and `sender_id`.
    fn condition(self, alias: &str, p: &mut Params) -> String {
        match self {
            TemplateScope::Team(t) => format!("{alias}.team_id = {}", p.push(t)),
            TemplateScope::Sender(s) => {
                format!(
                    "({alias}.team_id = 0 AND {alias}.sender_id = {})",
                    p.push(s)
                )
            }
        }
    }
}

impl std::fmt::Display for TemplateScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateScope::Team(t) => write!(f, "team:{t}"),
            TemplateScope::Sender(s) => write!(f, "sender:{s}"),
        }
    }
}

impl std::str::FromStr for TemplateScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a template scope (`team:ID` or `sender:ID`)");
        let (kind, id) = s.trim().split_once(':').ok_or_else(bad)?;
        let id: i64 = id.parse().map_err(|_| bad())?;
        match kind {
            "team" => Ok(TemplateScope::Team(id)),
            "sender" => Ok(TemplateScope::Sender(id)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for TemplateScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Filters of the template reports. Dates are days of sending (UTC), both ends included.
#[derive(Debug, Clone, Default)]
pub struct ReportFilter {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub sender: Option<i64>,
    pub team: Option<i64>,
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
    pub template: Option<String>,
    /// Whose template: with `template`, one template; alone, one team's or sender's keys.
    pub scope: Option<TemplateScope>,
    pub class: ClassFilter,
}

impl ReportFilter {
    /// The deal, lead and project filtered by.
    fn crm_facets(&self) -> impl Iterator<Item = (CrmFacet, &str)> {
        facets_of(&self.deal, &self.lead, &self.project)
    }

    fn by_crm(&self) -> bool {
        self.crm_facets().next().is_some()
    }

    /// The one deal, lead or project filtered by, when there is exactly one.
    fn one_crm_facet(&self) -> Option<(CrmFacet, &str)> {
        let mut set = self.crm_facets();
        match (set.next(), set.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// Over every day: the all-time rollups hold the same sums in fewer rows.
    fn all_time(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }
}

/// The counts every report row is made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    pub sent: i64,
    pub delivered: i64,
    pub bounced: i64,
    pub opens: i64,
    pub unique_opens: i64,
    pub human_opens: i64,
    pub human_unique_opens: i64,
    pub clicks: i64,
    pub unique_clicks: i64,
    pub human_clicks: i64,
    pub human_unique_clicks: i64,
    /// Replies found in the sender's mailbox (auto-replies and bounces not counted).
    pub replies: i64,
    pub unique_replies: i64,
    /// unique openers / delivered (of the chosen class); null when nothing was delivered
    pub open_rate: Option<f64>,
    /// unique clickers / delivered
    pub click_rate: Option<f64>,
    /// unique clickers / unique openers
    pub click_to_open: Option<f64>,
    /// bounced / sent
    pub bounce_rate: Option<f64>,
    /// Of `bounced`: permanent failures (5.x.x, or the upstream's 5xx at send time)...
    pub hard_bounced: i64,
    /// ...and failures on a transient status (4.x.x) reported later by a DSN.
    pub soft_bounced: i64,
    /// Copies whose recipient reported them as spam (ARF feedback reports).
    pub complaints: i64,
    /// Copies whose recipient unsubscribed (List-Unsubscribe).
    pub unsubscribes: i64,
    /// hard_bounced / sent
    pub hard_bounce_rate: Option<f64>,
    /// soft_bounced / sent
    pub soft_bounce_rate: Option<f64>,
    /// complaints / delivered (Gmail's threshold for bulk senders is 0.3 %)
    pub complaint_rate: Option<f64>,
    /// unsubscribes / delivered
    pub unsubscribe_rate: Option<f64>,
    /// unique repliers / delivered
    pub reply_rate: Option<f64>,
}

fn ratio(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

impl Figures {
    fn from_row(row: &tokio_postgres::Row, offset: usize, class: ClassFilter) -> Figures {
        let g = |i: usize| row.get::<_, i64>(offset + i);
        let (sent, bounced) = (g(0), g(1));
        let mut f = Figures {
            sent,
            delivered: sent - bounced,
            bounced,
            opens: g(2),
            human_opens: g(3),
            unique_opens: g(4),
            human_unique_opens: g(5),
            clicks: g(6),
            human_clicks: g(7),
            unique_clicks: g(8),
            human_unique_clicks: g(9),
            replies: g(10),
            unique_replies: g(11),
            soft_bounced: g(12),
            hard_bounced: bounced - g(12),
            complaints: g(13),
            unsubscribes: g(14),
            ..Figures::default()
        };
        let (openers, clickers) = match class {
            ClassFilter::Human => (f.human_unique_opens, f.human_unique_clicks),
            ClassFilter::All => (f.unique_opens, f.unique_clicks),
        };
        f.open_rate = ratio(openers, f.delivered);
        f.click_rate = ratio(clickers, f.delivered);
        f.click_to_open = ratio(clickers, openers);
        f.bounce_rate = ratio(f.bounced, f.sent);
        f.hard_bounce_rate = ratio(f.hard_bounced, f.sent);
        f.soft_bounce_rate = ratio(f.soft_bounced, f.sent);
        f.complaint_rate = ratio(f.complaints, f.delivered);
        f.unsubscribe_rate = ratio(f.unsubscribes, f.delivered);
        f.reply_rate = ratio(f.unique_replies, f.delivered);
        f
    }
}

/// The sums of [`Figures`]' counts over a source made by [`figures_source`]; fifteen bigints.
const SUMS: &str = "sum(sent)::bigint, sum(bounced)::bigint, sum(opens)::bigint,
    sum(human_opens)::bigint, sum(unique_opens)::bigint, sum(human_unique_opens)::bigint,
    sum(clicks)::bigint, sum(human_clicks)::bigint, sum(unique_clicks)::bigint,
    sum(human_unique_clicks)::bigint, sum(replies)::bigint, sum(unique_replies)::bigint,
    sum(soft_bounced)::bigint, sum(complaints)::bigint, sum(unsubscribes)::bigint";

/// Conditions common to both sources on a row `alias` with template_key, day, sender_id, team_id.
fn dims_where(alias: &str, f: &ReportFilter, viewer: Viewer, p: &mut Params) -> String {
    let mut w = vec![visible(alias, viewer, p)];
    if let Some(v) = f.from {
        w.push(format!("{alias}.day >= {}", p.push(v)));
    }
    if let Some(v) = f.to {
        w.push(format!("{alias}.day <= {}", p.push(v)));
    }
    if let Some(v) = f.sender {
        w.push(format!("{alias}.sender_id = {}", p.push(v)));
    }
    if let Some(v) = f.team {
        w.push(format!("{alias}.team_id = {}", p.push(v)));
    }
    if let Some(v) = &f.template {
        w.push(format!("{alias}.template_key = {}", p.push(v.clone())));
    }
    if let Some(scope) = f.scope {
        w.push(scope.condition(alias, p));
    }
    w.join(" AND ")
}

/// Conditions on the copy state `s` for the CRM filters (its message's deal, lead, project).
fn crm_where(f: &ReportFilter, p: &mut Params) -> String {
    let mut w = vec!["true".to_string()];
    for (facet, v) in f.crm_facets() {
        w.push(format!("s.{} = {}", facet.as_str(), p.push(v.to_string())));
    }
    w.join(" AND ")
}

/// Rows with template_key, sender_id, team_id, the counts and (with `by_day`) day: the all-time
/// or daily rollup; with one deal, lead or project over every day, its all-time rollup; with
/// other CRM filters, the per-copy state of the matching copies (indexed by deal, lead and
/// project).
fn figures_source(f: &ReportFilter, viewer: Viewer, p: &mut Params, by_day: bool) -> String {
    if let Some((facet, value)) = f.one_crm_facet().filter(|_| f.all_time() && !by_day) {
        let dims = dims_where("r", f, viewer, p);
        let facet = p.push(facet.as_str());
        let value = p.push(value.to_string());
        format!(
            "SELECT r.* FROM insights_crm_totals r
             WHERE r.facet = {facet} AND r.value = {value} AND {dims}"
        )
    } else if f.by_crm() {
        let dims = dims_where("s", f, viewer, p);
        let crm = crm_where(f, p);
        format!(
            "SELECT s.template_key, s.day, s.sender_id, s.team_id, 1 AS sent, s.bounced::int AS bounced, s.opens,
                    s.human_opens, (s.opens > 0)::int AS unique_opens,
                    (s.human_opens > 0)::int AS human_unique_opens, s.clicks, s.human_clicks,
                    (s.clicks > 0)::int AS unique_clicks,
                    (s.human_clicks > 0)::int AS human_unique_clicks,
                    s.replies, (s.replies > 0)::int AS unique_replies,
                    s.soft_bounced::int AS soft_bounced, s.complained::int AS complaints,
                    s.unsubscribed::int AS unsubscribes
             FROM insights_copy_state s WHERE {dims} AND {crm}"
        )
    } else {
        let dims = dims_where("r", f, viewer, p);
        let table = rollup(f, by_day, "insights_daily", "insights_totals");
        format!("SELECT r.* FROM {table} r WHERE {dims}")
    }
}

/// The rollup a report reads: `all_time` when the filter covers every day and the report needs
/// no day, else `daily`.
fn rollup(
    f: &ReportFilter,
    by_day: bool,
    daily: &'static str,
    all_time: &'static str,
) -> &'static str {
    if f.all_time() && !by_day {
        all_time
    } else {
        daily
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateRow {
    pub template: String,
    /// Whose template it is (`team:ID`, `sender:ID`); the key is unique within its scope only.
    #[schema(value_type = String)]
    pub scope: TemplateScope,
    /// The name its scope gave it.
    pub name: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// One row per template (scope and key) with something sent that the viewer may see, most
/// sent first.
pub async fn templates(
    client: &impl GenericClient,
    viewer: Viewer,
    filter: &ReportFilter,
) -> Result<Vec<TemplateRow>, InsightsError> {
    let mut p = Params::default();
    let source = figures_source(filter, viewer, &mut p, false);
    // Grouped by scope first, then named from that scope's row only: a name given in one
    // team never shows in another's report.
    let sql = format!(
        "SELECT g.*, coalesce(t.name, '')
         FROM (SELECT x.template_key, x.team_id AS scope_team,
                      CASE WHEN x.team_id = 0 THEN x.sender_id ELSE 0 END AS scope_sender,
                      {SUMS}, sum(sent) AS total_sent
               FROM ({source}) x
               GROUP BY 1, 2, 3
               HAVING sum(sent) > 0) g
         LEFT JOIN templates t ON t.key = g.template_key
              AND coalesce(t.team_id, 0) = g.scope_team
              AND (g.scope_team <> 0 OR t.owner_id = g.scope_sender)
         ORDER BY g.total_sent DESC, g.template_key, g.scope_team, g.scope_sender"
    );
    let rows = client.query(&sql, &p.refs()).await?;
    Ok(rows
        .iter()
        .map(|r| TemplateRow {
            template: r.get(0),
            scope: TemplateScope::from_dims(r.get(1), r.get(2)),
            name: r.get(19),
            figures: Figures::from_row(r, 3, filter.class),
        })
        .collect())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DayRow {
    pub day: NaiveDate,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkRow {
    pub url: String,
    pub clicks: i64,
    pub human_clicks: i64,
    pub unique_clicks: i64,
    pub human_unique_clicks: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClientRow {
    pub client: String,
    pub device: String,
    pub opens: i64,
    pub human_opens: i64,
    pub unique_opens: i64,
    pub human_unique_opens: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateDetail {
    #[serde(flatten)]
    pub row: TemplateRow,
    pub class: ClassFilter,
    /// by day of sending
    pub daily: Vec<DayRow>,
    pub top_links: Vec<LinkRow>,
    pub clients: Vec<ClientRow>,
}

/// The row of one template: of the scope in `filter`, else the viewer's own template of that
/// key when they see one, else the one of the key with most sent; `None` when the viewer sees
/// nothing sent with it.
pub async fn template_row(
    client: &impl GenericClient,
    viewer: Viewer,
    key: &str,
    filter: &ReportFilter,
) -> Result<Option<TemplateRow>, InsightsError> {
    let mut filter = filter.clone();
    filter.template = Some(key.to_string());
    let rows = templates(client, viewer, &filter).await?;
    let own = TemplateScope::of(viewer);
    Ok(rows
        .iter()
        .find(|r| r.scope == own)
        .or_else(|| rows.first())
        .cloned())
}

/// How many links and clients a template report lists.
const TOP: i64 = 20;

/// A template's figures with a daily series, top links and clients; `None` when the viewer
/// sees nothing sent with it. Without a scope in `filter`, the viewer's own template of that
/// key when they see one, else the one of the key with most sent.
pub async fn template(
    client: &impl GenericClient,
    viewer: Viewer,
    key: &str,
    filter: &ReportFilter,
) -> Result<Option<TemplateDetail>, InsightsError> {
    let Some(row) = template_row(client, viewer, key, filter).await? else {
        return Ok(None);
    };
    let mut filter = filter.clone();
    filter.template = Some(key.to_string());
    filter.scope = Some(row.scope);

    let mut p = Params::default();
    let source = figures_source(&filter, viewer, &mut p, true);
    let sql = format!("SELECT x.day, {SUMS} FROM ({source}) x GROUP BY x.day ORDER BY x.day");
    let daily = client
        .query(&sql, &p.refs())
        .await?
        .iter()
        .map(|r| DayRow {
            day: r.get(0),
            figures: Figures::from_row(r, 1, filter.class),
        })
        .collect();

    let mut p = Params::default();
    let order = match filter.class {
        ClassFilter::Human => "sum(human_clicks) DESC, sum(clicks) DESC",
        ClassFilter::All => "sum(clicks) DESC",
    };
    let source = if filter.by_crm() {
        let dims = dims_where("s", &filter, viewer, &mut p);
        let crm = crm_where(&filter, &mut p);
        format!(
            "SELECT l.url, l.clicks, l.human_clicks, (l.clicks > 0)::int AS unique_clicks,
                    (l.human_clicks > 0)::int AS human_unique_clicks
             FROM insights_copy_links l JOIN insights_copy_state s USING (copy_id)
             WHERE {dims} AND {crm}"
        )
    } else {
        let dims = dims_where("r", &filter, viewer, &mut p);
        let table = rollup(&filter, false, "insights_links", "insights_links_totals");
        format!("SELECT r.* FROM {table} r WHERE {dims}")
    };
    let limit = p.push(TOP);
    let sql = format!(
        "SELECT url, sum(clicks)::bigint, sum(human_clicks)::bigint, sum(unique_clicks)::bigint,
                sum(human_unique_clicks)::bigint
         FROM ({source}) x GROUP BY url HAVING sum(clicks) > 0
         ORDER BY {order}, url LIMIT {limit}"
    );
    let top_links = client
        .query(&sql, &p.refs())
        .await?
        .iter()
        .map(|r| LinkRow {
            url: r.get(0),
            clicks: r.get(1),
            human_clicks: r.get(2),
            unique_clicks: r.get(3),
            human_unique_clicks: r.get(4),
        })
        .collect();

    let mut p = Params::default();
    let source = if filter.by_crm() {
        let dims = dims_where("s", &filter, viewer, &mut p);
        let crm = crm_where(&filter, &mut p);
        format!(
            "SELECT c.client, c.device, c.opens, c.human_opens, (c.opens > 0)::int AS unique_opens,
                    (c.human_opens > 0)::int AS human_unique_opens
             FROM insights_copy_clients c JOIN insights_copy_state s USING (copy_id)
             WHERE {dims} AND {crm}"
        )
    } else {
        let dims = dims_where("r", &filter, viewer, &mut p);
        let table = rollup(
            &filter,
            false,
            "insights_clients",
            "insights_clients_totals",
        );
        format!("SELECT r.* FROM {table} r WHERE {dims}")
    };
    let limit = p.push(TOP);
    let sql = format!(
        "SELECT client, device, sum(opens)::bigint, sum(human_opens)::bigint,
                sum(unique_opens)::bigint, sum(human_unique_opens)::bigint
         FROM ({source}) x GROUP BY client, device HAVING sum(opens) > 0
         ORDER BY sum(unique_opens) DESC, client, device LIMIT {limit}"
    );
    let clients = client
        .query(&sql, &p.refs())
        .await?
        .iter()
        .map(|r| ClientRow {
            client: r.get(0),
            device: r.get(1),
            opens: r.get(2),
            human_opens: r.get(3),
            unique_opens: r.get(4),
            human_unique_opens: r.get(5),
        })
        .collect();

    Ok(Some(TemplateDetail {
        row,
        class: filter.class,
        daily,
        top_links,
        clients,
    }))
}
