//! Who engaged: the recipients who opened, clicked or replied, per template, per link of a
//! template and per message, and one recipient's copies and timeline.
//!
//! Counted from the events with the hindsight classes of [`crate::classify::hindsight`] (the
//! classes the reports count with), so that a list and a timeline agree with the events exactly.
//! People (`human` + `proxy`) by default; machines on request, with their class and reason.
//!
//! The engagement score of a recipient is the sum, over their people's events, of a weight by
//! kind ([`OPEN_WEIGHT`], [`CLICK_WEIGHT`], [`REPLY_WEIGHT`]) halved for every
//! [`SCORE_HALF_LIFE_DAYS`] days since the event: frequency and recency of human opens, clicks
//! and replies. Machine events never score.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::report::{ClassFilter, ReportFilter, TemplateScope};
use super::InsightsError;
use crate::accounts::visibility::{visible, Params, Viewer};
use crate::classify::hindsight::classified_events_sql;

/// What an open is worth in the engagement score...
pub const OPEN_WEIGHT: i64 = 1;
/// ...a click...
pub const CLICK_WEIGHT: i64 = 3;
/// ...and a reply, on the day it happens.
pub const REPLY_WEIGHT: i64 = 5;
/// Days after which an event is worth half as much.
pub const SCORE_HALF_LIFE_DAYS: i64 = 14;

/// Which engagement a list is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engagement {
    /// Opens, clicks and replies.
    #[default]
    Any,
    Open,
    Click,
    Reply,
}

impl Engagement {
    pub const ALL: [Engagement; 4] = [
        Engagement::Any,
        Engagement::Open,
        Engagement::Click,
        Engagement::Reply,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Engagement::Any => "any",
            Engagement::Open => "open",
            Engagement::Click => "click",
            Engagement::Reply => "reply",
        }
    }

    /// The event kinds it counts, as an SQL list.
    fn kinds_sql(self) -> &'static str {
        match self {
            Engagement::Any => "'open', 'click', 'reply'",
            Engagement::Open => "'open'",
            Engagement::Click => "'click'",
            Engagement::Reply => "'reply'",
        }
    }
}

impl std::str::FromStr for Engagement {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Engagement::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or(())
    }
}

/// Whose copies a list covers.
#[derive(Debug, Clone)]
pub enum Audience {
    /// Every copy of one template of one scope, under the report's filters (dates, sender,
    /// team, CRM; its class is [`PeopleFilter::class`]).
    Template {
        key: String,
        scope: TemplateScope,
        filter: ReportFilter,
    },
    /// Every copy of one message.
    Message(Uuid),
    /// Every copy sent to one address (case-insensitive).
    Recipient(String),
}

/// What a list counts: whose events, which kinds, which link.
#[derive(Debug, Clone, Default)]
pub struct PeopleFilter {
    /// `human`: people's events, and only recipients with some; `all`: machines' too.
    pub class: ClassFilter,
    pub engagement: Engagement,
    /// Clicks on this link only.
    pub url: Option<String>,
}

/// SQL listing the ids (`id`) of the audience's copies that `viewer` may see.
fn copies_sql(audience: &Audience, viewer: Viewer, p: &mut Params) -> String {
    let mut w = vec![visible("m", viewer, p)];
    match audience {
        Audience::Template { key, scope, filter } => {
            w.push(format!("m.template_key = {}", p.push(key.clone())));
            w.push(match scope {
                TemplateScope::Team(t) => format!("m.team_id = {}", p.push(*t)),
                TemplateScope::Sender(s) => {
                    format!("(m.team_id IS NULL AND m.sender_id = {})", p.push(*s))
                }
            });
            let day = "(m.created_at AT TIME ZONE 'UTC')::date";
            if let Some(v) = filter.from {
                w.push(format!("{day} >= {}", p.push(v)));
            }
            if let Some(v) = filter.to {
                w.push(format!("{day} <= {}", p.push(v)));
            }
            if let Some(v) = filter.sender {
                w.push(format!("m.sender_id = {}", p.push(v)));
            }
            if let Some(v) = filter.team {
                w.push(format!("coalesce(m.team_id, 0) = {}", p.push(v)));
            }
            for (col, v) in [
                ("deal", &filter.deal),
                ("lead", &filter.lead),
                ("project", &filter.project),
            ] {
                if let Some(v) = v {
                    w.push(format!("m.{col} = {}", p.push(v.clone())));
                }
            }
        }
        Audience::Message(id) => w.push(format!("m.id = {}", p.push(*id))),
        Audience::Recipient(r) => {
            w.push(format!("lower(c.recipient) = lower({})", p.push(r.clone())))
        }
    }
    format!(
        "SELECT c.id FROM copies c JOIN messages m ON m.id = c.message_id WHERE {}",
        w.join(" AND ")
    )
}

/// SQL of every event of the copies `copies` lists, classified, with its copy's recipient
/// (lowercased), message, link URL and whether a person made it (`human`: replies, and opens
/// and clicks of class `human` or `proxy`). Columns: id, copy_id, message_id, recipient, kind,
/// occurred_at, final_class, final_reason, human, url, client, device, os, seq.
fn events_sql(copies: &str) -> String {
    let classified = classified_events_sql(copies);
    let url = crate::queue::links::url_sql("x.message_id", "x.link_idx");
    format!(
        "SELECT x.id, x.copy_id, x.message_id, lower(c.recipient) AS recipient, x.kind,
                x.occurred_at, x.final_class, x.final_reason,
                (x.kind = 'reply' OR x.final_class IN ('human', 'proxy')) AS human,
                CASE WHEN x.link_idx IS NOT NULL THEN {url} END AS url,
                x.client, x.device, x.os, x.seq
         FROM ({classified}) x JOIN copies c ON c.id = x.copy_id"
    )
}

/// SQL of one row per recipient of the audience who engaged as `filter` says. Columns:
/// recipient, copies, opens, clicks, replies, machine_opens, machine_clicks, first_at, last_at,
/// first_open_at, last_open_at, first_click_at, last_click_at, first_reply_at, last_reply_at,
/// score, machines (JSON), machines_text.
fn people_sql(
    audience: &Audience,
    viewer: Viewer,
    filter: &PeopleFilter,
    p: &mut Params,
) -> String {
    let copies = copies_sql(audience, viewer, p);
    let events = events_sql(&copies);
    let mut w = vec![format!("e.kind IN ({})", filter.engagement.kinds_sql())];
    if let Some(u) = &filter.url {
        w.push(format!(
            "e.kind = 'click' AND e.url = {}",
            p.push(u.clone())
        ));
    }
    let counted = match filter.class {
        ClassFilter::Human => "human",
        ClassFilter::All => "true",
    };
    format!(
        "WITH ev AS (SELECT e.* FROM ({events}) e WHERE {filter}),
         sent AS (SELECT lower(c.recipient) AS recipient, count(*) AS copies
                  FROM copies c WHERE c.id IN ({copies}) GROUP BY 1),
         mach AS (SELECT recipient,
                         json_agg(json_build_object('kind', kind, 'class', final_class,
                                                    'reason', final_reason, 'events', n)
                                  ORDER BY n DESC, kind, final_class, final_reason) AS machines,
                         string_agg(kind || ' ' || coalesce(final_class, '')
                                    || coalesce(' (' || final_reason || ')', '') || ': ' || n,
                                    '; ' ORDER BY n DESC, kind, final_class, final_reason)
                             AS machines_text
                  FROM (SELECT recipient, kind, final_class, final_reason, count(*) AS n
                        FROM ev WHERE NOT human GROUP BY 1, 2, 3, 4) y
                  GROUP BY recipient)
         SELECT g.recipient, coalesce(s.copies, 0)::bigint, g.opens, g.clicks, g.replies,
                g.machine_opens, g.machine_clicks, g.first_at, g.last_at, g.first_open_at,
                g.last_open_at, g.first_click_at, g.last_click_at, g.first_reply_at,
                g.last_reply_at, g.score, mach.machines, coalesce(mach.machines_text, '')
         FROM (SELECT recipient,
                      count(*) FILTER (WHERE kind = 'open' AND human) AS opens,
                      count(*) FILTER (WHERE kind = 'click' AND human) AS clicks,
                      count(*) FILTER (WHERE kind = 'reply') AS replies,
                      count(*) FILTER (WHERE kind = 'open' AND NOT human) AS machine_opens,
                      count(*) FILTER (WHERE kind = 'click' AND NOT human) AS machine_clicks,
                      min(occurred_at) FILTER (WHERE {counted}) AS first_at,
                      max(occurred_at) FILTER (WHERE {counted}) AS last_at,
                      min(occurred_at) FILTER (WHERE kind = 'open' AND human) AS first_open_at,
                      max(occurred_at) FILTER (WHERE kind = 'open' AND human) AS last_open_at,
                      min(occurred_at) FILTER (WHERE kind = 'click' AND human) AS first_click_at,
                      max(occurred_at) FILTER (WHERE kind = 'click' AND human) AS last_click_at,
                      min(occurred_at) FILTER (WHERE kind = 'reply') AS first_reply_at,
                      max(occurred_at) FILTER (WHERE kind = 'reply') AS last_reply_at,
                      coalesce(sum(CASE kind WHEN 'open' THEN {OPEN_WEIGHT}
                                             WHEN 'click' THEN {CLICK_WEIGHT}
                                             ELSE {REPLY_WEIGHT} END
                                   * power(0.5::float8,
                                           greatest(0, extract(epoch FROM now() - occurred_at)::float8)
                                           / ({SCORE_HALF_LIFE_DAYS} * 86400)::float8))
                               FILTER (WHERE human), 0)::float8 AS score
               FROM ev GROUP BY recipient
               HAVING count(*) FILTER (WHERE {counted}) > 0) g
         LEFT JOIN sent s ON s.recipient = g.recipient
         LEFT JOIN mach ON mach.recipient = g.recipient
         ORDER BY g.score DESC, g.last_at DESC, g.recipient",
        filter = w.join(" AND "),
    )
}

/// One machine's share of a recipient's events: what fetched, why it counts as a machine.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineEvents {
    pub kind: String,
    pub class: Option<String>,
    pub reason: Option<String>,
    pub events: i64,
}

/// A recipient who engaged.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PersonRow {
    /// The address, lowercased.
    pub recipient: String,
    /// Copies of the audience sent to this address.
    pub copies: i64,
    /// People's opens (`human` + `proxy`).
    pub opens: i64,
    /// People's clicks.
    pub clicks: i64,
    pub replies: i64,
    /// Machines' opens (with `class=all` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_opens: Option<i64>,
    /// Machines' clicks (with `class=all` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_clicks: Option<i64>,
    /// First and last counted event (people's; with `class=all`, machines' too).
    pub first_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
    pub first_open_at: Option<DateTime<Utc>>,
    pub last_open_at: Option<DateTime<Utc>>,
    pub first_click_at: Option<DateTime<Utc>>,
    pub last_click_at: Option<DateTime<Utc>>,
    pub first_reply_at: Option<DateTime<Utc>>,
    pub last_reply_at: Option<DateTime<Utc>>,
    /// The engagement score (see the module's documentation), two decimals.
    pub score: f64,
    /// Machine events by kind, class and reason (with `class=all` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machines: Option<Vec<MachineEvents>>,
}

fn person_row(r: &tokio_postgres::Row, class: ClassFilter) -> PersonRow {
    let all = class == ClassFilter::All;
    let machines: Option<serde_json::Value> = r.get(16);
    PersonRow {
        recipient: r.get(0),
        copies: r.get(1),
        opens: r.get(2),
        clicks: r.get(3),
        replies: r.get(4),
        machine_opens: all.then(|| r.get(5)),
        machine_clicks: all.then(|| r.get(6)),
        first_at: r.get(7),
        last_at: r.get(8),
        first_open_at: r.get(9),
        last_open_at: r.get(10),
        first_click_at: r.get(11),
        last_click_at: r.get(12),
        first_reply_at: r.get(13),
        last_reply_at: r.get(14),
        score: (r.get::<_, f64>(15) * 100.0).round() / 100.0,
        machines: all.then(|| {
            machines
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default()
        }),
    }
}

/// A page of a list: at most `limit` rows after skipping `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

/// The recipients of `audience` who engaged as `filter` says, highest score first.
pub async fn people(
    client: &impl GenericClient,
    viewer: Viewer,
    audience: &Audience,
    filter: &PeopleFilter,
    page: Page,
) -> Result<Vec<PersonRow>, InsightsError> {
    let mut p = Params::default();
    let sql = people_sql(audience, viewer, filter, &mut p);
    let limit = p.push(page.limit);
    let offset = p.push(page.offset);
    let rows = client
        .query(&format!("{sql} LIMIT {limit} OFFSET {offset}"), &p.refs())
        .await?;
    Ok(rows.iter().map(|r| person_row(r, filter.class)).collect())
}

/// One copy sent to a recipient.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PersonCopy {
    pub copy_id: Uuid,
    pub message_id: Uuid,
    pub template: String,
    pub subject: Option<String>,
    pub sender: String,
    pub sent_at: DateTime<Utc>,
    pub status: String,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One event of a recipient's timeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PersonEvent {
    pub id: Uuid,
    pub copy_id: Uuid,
    pub message_id: Uuid,
    pub at: DateTime<Utc>,
    pub kind: String,
    /// `eye` for opens, `cursor` for clicks, `reply` for replies, null for delivery events
    pub icon: Option<&'static str>,
    pub class: Option<String>,
    /// true for people (`human`, `proxy`, replies), false for machines, null for delivery events
    pub human: Option<bool>,
    pub reason: Option<String>,
    pub url: Option<String>,
    pub client: Option<String>,
    pub device: Option<String>,
    pub os: Option<String>,
}

/// The icon of an event kind on a timeline.
pub fn icon_of(kind: &str) -> Option<&'static str> {
    match kind {
        "open" => Some("eye"),
        "click" => Some("cursor"),
        "reply" => Some("reply"),
        _ => None,
    }
}

/// Everything a viewer may see of one recipient.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PersonDetail {
    pub recipient: String,
    pub class: ClassFilter,
    /// Their engagement over every copy shown (zeros when none).
    pub engagement: PersonRow,
    /// Oldest first.
    pub copies: Vec<PersonCopy>,
    /// Every event of those copies, oldest first.
    pub timeline: Vec<PersonEvent>,
}

/// Whether `viewer` may see any copy of `audience`.
pub async fn sees(
    client: &impl GenericClient,
    viewer: Viewer,
    audience: &Audience,
) -> Result<bool, InsightsError> {
    let mut p = Params::default();
    let copies = copies_sql(audience, viewer, &mut p);
    let row = client
        .query_opt(&format!("SELECT 1 FROM ({copies}) c LIMIT 1"), &p.refs())
        .await?;
    Ok(row.is_some())
}

/// One recipient's copies that `viewer` may see, their timeline and engagement; `None` when
/// the viewer sees no copy sent to that address.
pub async fn person(
    client: &impl GenericClient,
    viewer: Viewer,
    recipient: &str,
    class: ClassFilter,
) -> Result<Option<PersonDetail>, InsightsError> {
    let audience = Audience::Recipient(recipient.trim().to_string());
    let mut p = Params::default();
    let copies = copies_sql(&audience, viewer, &mut p);
    let rows = client
        .query(
            &format!(
                "SELECT c.id, m.id, m.template_key, m.subject, u.email, m.created_at, c.status,
                        c.delivered_at
                 FROM copies c JOIN messages m ON m.id = c.message_id
                 JOIN users u ON u.id = m.sender_id
                 WHERE c.id IN ({copies}) ORDER BY m.created_at, c.id"
            ),
            &p.refs(),
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let copies_out = rows
        .iter()
        .map(|r| PersonCopy {
            copy_id: r.get(0),
            message_id: r.get(1),
            template: r.get(2),
            subject: r.get(3),
            sender: r.get(4),
            sent_at: r.get(5),
            status: r.get(6),
            delivered_at: r.get(7),
        })
        .collect();
    let events = client
        .query(
            &format!(
                "SELECT e.id, e.copy_id, e.message_id, e.occurred_at, e.kind, e.final_class,
                        e.final_reason, e.url, e.client, e.device, e.os, e.human
                 FROM ({}) e ORDER BY e.occurred_at, e.seq",
                events_sql(&copies)
            ),
            &p.refs(),
        )
        .await?;
    let timeline = events
        .iter()
        .map(|e| {
            let kind: String = e.get(4);
            PersonEvent {
                id: e.get(0),
                copy_id: e.get(1),
                message_id: e.get(2),
                at: e.get(3),
                icon: icon_of(&kind),
                human: icon_of(&kind).map(|_| e.get(11)),
                kind,
                class: e.get(5),
                reason: e.get(6),
                url: e.get(7),
                client: e.get(8),
                device: e.get(9),
                os: e.get(10),
            }
        })
        .collect();
    let filter = PeopleFilter {
        class,
        ..PeopleFilter::default()
    };
    let engagement = people(
        client,
        viewer,
        &audience,
        &filter,
        Page {
            limit: 1,
            offset: 0,
        },
    )
    .await?
    .into_iter()
    .next()
    .unwrap_or_else(|| PersonRow {
        recipient: recipient.trim().to_lowercase(),
        copies: rows.len() as i64,
        machine_opens: (class == ClassFilter::All).then_some(0),
        machine_clicks: (class == ClassFilter::All).then_some(0),
        machines: (class == ClassFilter::All).then(Vec::new),
        ..PersonRow::default()
    });
    Ok(Some(PersonDetail {
        recipient: recipient.trim().to_lowercase(),
        class,
        engagement,
        copies: copies_out,
        timeline,
    }))
}

/// A query to stream: its SQL (every column text) and parameters, and the header row.
pub struct Export {
    pub header: &'static [&'static str],
    pub sql: String,
    pub params: Params,
}

/// An ISO 8601 UTC text of a timestamptz column, for exports.
fn iso(col: &str) -> String {
    format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

/// The columns of [`export_people`].
pub const PEOPLE_COLUMNS: &[&str] = &[
    "recipient",
    "copies",
    "opens",
    "clicks",
    "replies",
    "machine_opens",
    "machine_clicks",
    "first_at",
    "last_at",
    "first_open_at",
    "last_open_at",
    "first_click_at",
    "last_click_at",
    "first_reply_at",
    "last_reply_at",
    "score",
    "machines",
];

/// Every row of [`people`] (no page), as text columns [`PEOPLE_COLUMNS`]; the machine columns
/// are empty in people-only mode.
pub fn export_people(audience: &Audience, viewer: Viewer, filter: &PeopleFilter) -> Export {
    let mut params = Params::default();
    let sql = people_sql(audience, viewer, filter, &mut params);
    let machine = |col: &str| match filter.class {
        ClassFilter::Human => "''".to_string(),
        ClassFilter::All => col.to_string(),
    };
    let times: Vec<String> = [
        "first_at",
        "last_at",
        "first_open_at",
        "last_open_at",
        "first_click_at",
        "last_click_at",
        "first_reply_at",
        "last_reply_at",
    ]
    .iter()
    .map(|c| iso(&format!("q.{c}")))
    .collect();
    let sql = format!(
        "SELECT q.recipient, q.copies::text, q.opens::text, q.clicks::text, q.replies::text,
                {}, {}, {}, to_char(q.score, 'FM999999990.00'), {}
         FROM ({sql}) q (recipient, copies, opens, clicks, replies, machine_opens,
                         machine_clicks, first_at, last_at, first_open_at, last_open_at,
                         first_click_at, last_click_at, first_reply_at, last_reply_at, score,
                         machines, machines_text)",
        machine("q.machine_opens::text"),
        machine("q.machine_clicks::text"),
        times.join(", "),
        machine("q.machines_text"),
    );
    Export {
        header: PEOPLE_COLUMNS,
        sql,
        params,
    }
}

/// The columns of [`export_events`].
pub const EVENT_COLUMNS: &[&str] = &[
    "occurred_at",
    "message_id",
    "copy_id",
    "recipient",
    "template",
    "subject",
    "kind",
    "class",
    "human",
    "reason",
    "url",
    "client",
    "device",
    "os",
];

/// Every event of the audience's copies, oldest first, as text columns [`EVENT_COLUMNS`]. With
/// `class` `human`, machines' opens and clicks are left out (delivery events and replies stay).
pub fn export_events(audience: &Audience, viewer: Viewer, class: ClassFilter) -> Export {
    let mut params = Params::default();
    let copies = copies_sql(audience, viewer, &mut params);
    let events = events_sql(&copies);
    let keep = match class {
        ClassFilter::Human => "(e.kind NOT IN ('open', 'click') OR e.human)",
        ClassFilter::All => "true",
    };
    let sql = format!(
        "SELECT {}, e.message_id::text, e.copy_id::text, e.recipient, m.template_key, m.subject,
                e.kind, e.final_class,
                CASE WHEN e.kind IN ('open', 'click', 'reply') THEN e.human::text END,
                e.final_reason, e.url, e.client, e.device, e.os
         FROM ({events}) e JOIN messages m ON m.id = e.message_id
         WHERE {keep}
         ORDER BY e.occurred_at, e.copy_id, e.seq",
        iso("e.occurred_at")
    );
    Export {
        header: EVENT_COLUMNS,
        sql,
        params,
    }
}

/// SQL of the audience's opens and clicks that a place can be given to: class `human` (not
/// `proxy`: its address is the provider's), with an address. Columns: recipient, kind, ip.
pub(super) fn placeable_events_sql(audience: &Audience, viewer: Viewer, p: &mut Params) -> String {
    let copies = copies_sql(audience, viewer, p);
    let events = events_sql(&copies);
    format!(
        "SELECT x.recipient, x.kind, ev.ip
         FROM ({events}) x
         JOIN events ev ON ev.copy_id = x.copy_id AND ev.occurred_at = x.occurred_at
                       AND ev.id = x.id
         WHERE x.kind IN ('open', 'click') AND x.final_class = 'human' AND ev.ip IS NOT NULL"
    )
}

/// The rows of `export` as PostgreSQL sends them: the stream holds the connection and reads
/// the next rows only as the caller takes them, so that no export is ever held whole.
pub async fn stream(
    client: deadpool_postgres::Object,
    export: Export,
) -> Result<
    impl futures_util::Stream<Item = Result<tokio_postgres::Row, InsightsError>> + 'static,
    InsightsError,
> {
    use futures_util::StreamExt;
    let rows = client.query_raw(&export.sql, export.params.refs()).await?;
    let rows = Box::pin(rows);
    Ok(futures_util::stream::unfold(
        Some((client, rows)),
        |state| async move {
            let (client, mut rows) = state?;
            match rows.next().await {
                Some(Ok(row)) => Some((Ok(row), Some((client, rows)))),
                Some(Err(e)) => Some((Err(InsightsError::from(e)), None)),
                None => None,
            }
        },
    ))
}
