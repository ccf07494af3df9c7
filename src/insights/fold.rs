//! The incremental fold of one copy: its state as the rollups count it (`insights_copy_state`,
//! `insights_copy_links`, `insights_copy_clients`) and what the hindsight rules need to judge its
//! next events (`insights_copy_fold`), moved forward by new events without reading the copy's
//! earlier ones. Pure: the job in [`super::aggregate`] loads and stores it.
//!
//! New events are folded in time order. One that happened before the latest event the state
//! has folded (`last_event_at`) cannot be judged from the state: the copy is then recomputed
//! from all of its events, and so is a copy whose first `delivered` event comes after opens or
//! clicks (the unknown-delivery window looks both ways from delivery).

use std::collections::HashMap;

use litemap::LiteMap;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::classify::hindsight::{add_click, class_before_sweeps, is_human, RecentClick};

/// Columns of `insights_copy_state`, in table order.
pub const STATE_COLUMNS: &str = "copy_id, message_id, template_key, sender_id, team_id, visibility,
    day, bounced, delivered_at, opens, human_opens, clicks, human_clicks, first_open_at,
    first_human_open_at, first_click_at, first_human_click_at, last_event_at, replies,
    soft_bounced, complained, unsubscribed, deal, lead, project";

/// The rollup dimensions of a copy (its message's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dims {
    pub template_key: String,
    pub day: NaiveDate,
    pub sender_id: i64,
    pub team_id: i64,
    pub visibility: String,
}

/// What a report can filter a copy by besides its rollup dimensions: its message's deal, lead
/// and project, each one facet of `insights_crm_totals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrmFacet {
    Deal,
    Lead,
    Project,
}

impl CrmFacet {
    /// The value of `insights_crm_totals.facet`, and the column of the copy state (and of the
    /// message) that holds it.
    pub fn as_str(self) -> &'static str {
        match self {
            CrmFacet::Deal => "deal",
            CrmFacet::Lead => "lead",
            CrmFacet::Project => "project",
        }
    }
}

/// A copy's deal, lead and project (its message's, which never change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Crm {
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
}

impl Crm {
    /// The facets the copy has a value for.
    pub fn facets(&self) -> impl Iterator<Item = (CrmFacet, &str)> {
        facets_of(&self.deal, &self.lead, &self.project)
    }
}

/// Each facet of `deal`, `lead` and `project` that has a value, with it.
pub fn facets_of<'a>(
    deal: &'a Option<String>,
    lead: &'a Option<String>,
    project: &'a Option<String>,
) -> impl Iterator<Item = (CrmFacet, &'a str)> {
    [
        (CrmFacet::Deal, deal),
        (CrmFacet::Lead, lead),
        (CrmFacet::Project, project),
    ]
    .into_iter()
    .filter_map(|(f, v)| Some((f, v.as_deref()?)))
}

/// A row key of `insights_crm_totals`: one facet's value within a template's rollup dimensions
/// (no day: the rollup sums every day).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CrmKey {
    pub facet: CrmFacet,
    pub value: String,
    pub template_key: String,
    pub sender_id: i64,
    pub team_id: i64,
    pub visibility: String,
}

/// One row of `insights_copy_state`.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyState {
    pub copy_id: Uuid,
    pub message_id: Uuid,
    pub dims: Dims,
    pub bounced: bool,
    pub delivered_at: Option<DateTime<Utc>>,
    pub opens: i32,
    pub human_opens: i32,
    pub clicks: i32,
    pub human_clicks: i32,
    pub first_open_at: Option<DateTime<Utc>>,
    pub first_human_open_at: Option<DateTime<Utc>>,
    pub first_click_at: Option<DateTime<Utc>>,
    pub first_human_click_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub replies: i32,
    pub soft_bounced: bool,
    pub complained: bool,
    pub unsubscribed: bool,
    pub crm: Crm,
}

impl CopyState {
    /// From a row selected with [`STATE_COLUMNS`].
    pub fn from_row(r: &tokio_postgres::Row) -> CopyState {
        CopyState {
            copy_id: r.get(0),
            message_id: r.get(1),
            dims: Dims {
                template_key: r.get(2),
                sender_id: r.get(3),
                team_id: r.get(4),
                visibility: r.get(5),
                day: r.get(6),
            },
            bounced: r.get(7),
            delivered_at: r.get(8),
            opens: r.get(9),
            human_opens: r.get(10),
            clicks: r.get(11),
            human_clicks: r.get(12),
            first_open_at: r.get(13),
            first_human_open_at: r.get(14),
            first_click_at: r.get(15),
            first_human_click_at: r.get(16),
            last_event_at: r.get(17),
            replies: r.get(18),
            soft_bounced: r.get(19),
            complained: r.get(20),
            unsubscribed: r.get(21),
            crm: Crm {
                deal: r.get(22),
                lead: r.get(23),
                project: r.get(24),
            },
        }
    }

    /// The copy's row of `insights_daily` counts: sent, bounced, opens, human_opens,
    /// unique_opens, human_unique_opens, clicks, human_clicks, unique_clicks,
    /// human_unique_clicks, replies, unique_replies, soft_bounced, complaints, unsubscribes.
    pub fn daily(&self) -> [i64; 15] {
        let b = |v: bool| v as i64;
        [
            1,
            b(self.bounced),
            self.opens.into(),
            self.human_opens.into(),
            b(self.opens > 0),
            b(self.human_opens > 0),
            self.clicks.into(),
            self.human_clicks.into(),
            b(self.clicks > 0),
            b(self.human_clicks > 0),
            self.replies.into(),
            b(self.replies > 0),
            b(self.soft_bounced),
            b(self.complained),
            b(self.unsubscribed),
        ]
    }
}

/// A new event of a copy, as the fold reads it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub copy_id: Uuid,
    pub message_id: Uuid,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub link_idx: Option<i32>,
    pub class: Option<String>,
    pub reason: Option<String>,
    pub client: Option<String>,
    pub device: Option<String>,
    pub txid: i64,
    pub seq: i64,
}

/// Everything the fold keeps of one copy. A copy has a few links and clients, and a batch holds
/// tens of thousands of copies (twice: as loaded and as folded): sorted vectors, not trees
/// whose every node holds room for eleven.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyFold {
    pub state: CopyState,
    /// url -> (clicks, human clicks)
    pub links: LiteMap<String, (i32, i32)>,
    /// (client, device) -> (opens, human opens)
    pub clients: LiteMap<(String, String), (i32, i32)>,
    pub recent_clicks: Vec<RecentClick>,
}

/// The events cannot be folded into the state: recompute the copy from all its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsRecompute;

impl CopyFold {
    /// The fold of a copy of `message` none of whose events was folded yet.
    pub fn empty(copy_id: Uuid, message_id: Uuid, dims: Dims, crm: Crm) -> CopyFold {
        CopyFold {
            state: CopyState {
                copy_id,
                message_id,
                dims,
                bounced: false,
                delivered_at: None,
                opens: 0,
                human_opens: 0,
                clicks: 0,
                human_clicks: 0,
                first_open_at: None,
                first_human_open_at: None,
                first_click_at: None,
                first_human_click_at: None,
                last_event_at: None,
                replies: 0,
                soft_bounced: false,
                complained: false,
                unsubscribed: false,
                crm,
            },
            links: LiteMap::new(),
            clients: LiteMap::new(),
            recent_clicks: Vec::new(),
        }
    }

    /// Folds `events` (of this copy, sorted by time) into the state. `url_of` names a link
    /// index of the copy's message as the rollups do. Pushes the final class of each new open and
    /// click to `classes`. On `Err` the fold is left half-done and must be dropped.
    pub fn fold(
        &mut self,
        events: &[NewEvent],
        url_of: &dyn Fn(Option<i32>) -> String,
        classes: &mut Vec<(String, String)>,
    ) -> Result<(), NeedsRecompute> {
        // This call's clicks and where their class is in `classes`: a later click of the same
        // events may sweep them, and the final class is what they are counted with.
        let mut pushed_clicks: Vec<(i64, String, usize)> = Vec::new();
        for e in events {
            let s = &mut self.state;
            let t = e.occurred_at;
            if s.last_event_at.is_some_and(|last| t < last) {
                return Err(NeedsRecompute);
            }
            s.last_event_at = Some(t);
            match e.kind.as_str() {
                "delivered" if s.delivered_at.is_none() => {
                    if s.opens > 0 || s.clicks > 0 {
                        return Err(NeedsRecompute);
                    }
                    s.delivered_at = Some(t);
                }
                "bounced" => {
                    let soft = e.reason.as_deref() == Some("soft");
                    s.soft_bounced = if s.bounced {
                        s.soft_bounced && soft
                    } else {
                        soft
                    };
                    s.bounced = true;
                }
                "open" => {
                    let class = class_before_sweeps(
                        e.class.as_deref(),
                        e.reason.as_deref(),
                        t,
                        s.delivered_at,
                    );
                    let human = is_human(&class);
                    s.opens += 1;
                    s.first_open_at.get_or_insert(t);
                    if human {
                        s.human_opens += 1;
                        s.first_human_open_at.get_or_insert(t);
                    }
                    let key = (
                        e.client.clone().unwrap_or_default(),
                        e.device.clone().unwrap_or_default(),
                    );
                    let entry = self.clients.entry(key).or_default();
                    entry.0 += 1;
                    entry.1 += human as i32;
                    classes.push(("open".into(), class));
                }
                "click" => {
                    let mut class = class_before_sweeps(
                        e.class.as_deref(),
                        e.reason.as_deref(),
                        t,
                        s.delivered_at,
                    );
                    let human = is_human(&class);
                    let url = url_of(e.link_idx);
                    s.clicks += 1;
                    s.first_click_at.get_or_insert(t);
                    let entry = self.links.entry(url.clone()).or_default();
                    entry.0 += 1;
                    if human {
                        s.human_clicks += 1;
                        entry.1 += 1;
                    }
                    let at_micros = t.timestamp_micros();
                    let click_url = url.clone();
                    let click = RecentClick {
                        at_micros,
                        url,
                        human,
                    };
                    for c in add_click(&mut self.recent_clicks, click) {
                        s.human_clicks -= 1;
                        if let Some(l) = self.links.get_mut(&c.url) {
                            l.1 -= 1;
                        }
                        if c.at_micros == at_micros && human {
                            class = "scanner".into();
                        }
                        if let Some(&(_, _, i)) = pushed_clicks.iter().find(|(at, url, i)| {
                            *at == c.at_micros && *url == c.url && is_human(&classes[*i].1)
                        }) {
                            classes[i].1 = "scanner".into();
                        }
                    }
                    // The first click counted as a person is re-classed only when it is still
                    // among the recent clicks, and then every later click is there too.
                    let window_start =
                        at_micros - crate::classify::hindsight::SWEEP_SECONDS * 1_000_000;
                    if s.first_human_click_at
                        .is_none_or(|f| f.timestamp_micros() >= window_start)
                    {
                        s.first_human_click_at = self
                            .recent_clicks
                            .iter()
                            .filter(|c| c.human)
                            .map(|c| c.at_micros)
                            .min()
                            .and_then(DateTime::from_timestamp_micros);
                    }
                    pushed_clicks.push((at_micros, click_url, classes.len()));
                    classes.push(("click".into(), class));
                }
                "reply" => s.replies += 1,
                "complaint" => s.complained = true,
                "unsubscribe" => s.unsubscribed = true,
                _ => {}
            }
        }
        Ok(())
    }
}

/// `recent_clicks` as stored: a sorted JSON array of [microseconds, url, human].
pub fn recent_clicks_json(clicks: &[RecentClick]) -> serde_json::Value {
    let mut sorted = clicks.to_vec();
    sorted.sort();
    serde_json::Value::Array(
        sorted
            .into_iter()
            .map(|c| serde_json::json!([c.at_micros, c.url, c.human]))
            .collect(),
    )
}

/// The inverse of [`recent_clicks_json`]; `None` for anything else.
pub fn recent_clicks_from_json(v: &serde_json::Value) -> Option<Vec<RecentClick>> {
    v.as_array()?
        .iter()
        .map(|c| {
            Some(RecentClick {
                at_micros: c.get(0)?.as_i64()?,
                url: c.get(1)?.as_str()?.to_string(),
                human: c.get(2)?.as_bool()?,
            })
        })
        .collect()
}

/// The SQL expression `recent_clicks` of one copy from classified events `c` (with `url`) whose
/// copy's latest click is `last_click`: same layout as [`recent_clicks_json`].
pub const RECENT_CLICKS_SQL: &str = "jsonb_agg(jsonb_build_array(
        (extract(epoch FROM c.occurred_at) * 1000000)::bigint, c.url,
        coalesce(c.final_class IN ('human', 'proxy'), false))
    ORDER BY c.occurred_at, c.url COLLATE \"C\", coalesce(c.final_class IN ('human', 'proxy'), false))";

/// What moving copies from their old fold to their new one adds to each rollup, summed by
/// rollup key: the rows that `insights_daily`, `insights_links` and `insights_clients` (and
/// their all-time twins) move by. Keys whose counts cancel out are dropped.
#[derive(Debug, Default, PartialEq)]
pub struct Deltas {
    /// Counts in the order of [`CopyState::daily`].
    pub daily: HashMap<Dims, [i64; 15]>,
    /// (dims, url) -> clicks, human clicks, unique clicks, human unique clicks.
    pub links: HashMap<(Dims, String), [i64; 4]>,
    /// (dims, client, device) -> opens, human opens, unique opens, human unique opens.
    pub clients: HashMap<(Dims, String, String), [i64; 4]>,
    /// Counts as in `daily`, by deal, lead and project.
    pub crm: HashMap<CrmKey, [i64; 15]>,
}

/// A per-copy pair of counts (all, as a person) as the rollups count it.
fn pair(sign: i64, (all, human): (i32, i32)) -> [i64; 4] {
    let (all, human) = (i64::from(all), i64::from(human));
    [
        sign * all,
        sign * human,
        sign * i64::from(all > 0),
        sign * i64::from(human > 0),
    ]
}

fn add_to<K: Eq + std::hash::Hash, const N: usize>(
    map: &mut HashMap<K, [i64; N]>,
    key: K,
    by: [i64; N],
) {
    let e = map.entry(key).or_insert([0; N]);
    for (a, b) in e.iter_mut().zip(by) {
        *a += b;
    }
}

impl Deltas {
    /// Adds `new` and takes away `old` (a copy folded before; `None` for a copy new to the
    /// rollups). Both have the same dimensions: they come from the copy's message.
    pub fn add(&mut self, old: Option<&CopyFold>, new: &CopyFold) {
        let dims = &new.state.dims;
        let mut daily = new.state.daily();
        if let Some(old) = old {
            for (d, o) in daily.iter_mut().zip(old.state.daily()) {
                *d -= o;
            }
        }
        for (facet, value) in new.state.crm.facets() {
            let key = CrmKey {
                facet,
                value: value.to_string(),
                template_key: dims.template_key.clone(),
                sender_id: dims.sender_id,
                team_id: dims.team_id,
                visibility: dims.visibility.clone(),
            };
            add_to(&mut self.crm, key, daily);
        }
        add_to(&mut self.daily, dims.clone(), daily);
        for (url, counts) in &new.links {
            add_to(
                &mut self.links,
                (dims.clone(), url.clone()),
                pair(1, *counts),
            );
        }
        for ((client, device), counts) in &new.clients {
            let key = (dims.clone(), client.clone(), device.clone());
            add_to(&mut self.clients, key, pair(1, *counts));
        }
        if let Some(old) = old {
            for (url, counts) in &old.links {
                add_to(
                    &mut self.links,
                    (dims.clone(), url.clone()),
                    pair(-1, *counts),
                );
            }
            for ((client, device), counts) in &old.clients {
                let key = (dims.clone(), client.clone(), device.clone());
                add_to(&mut self.clients, key, pair(-1, *counts));
            }
        }
    }

    /// Drops the keys whose counts summed to zero: they move no rollup.
    pub fn without_zeros(mut self) -> Deltas {
        self.daily.retain(|_, v| v.iter().any(|&c| c != 0));
        self.links.retain(|_, v| v.iter().any(|&c| c != 0));
        self.clients.retain(|_, v| v.iter().any(|&c| c != 0));
        self.crm.retain(|_, v| v.iter().any(|&c| c != 0));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold_of(copy: u128) -> CopyFold {
        let dims = Dims {
            template_key: "t".into(),
            day: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            sender_id: 1,
            team_id: 0,
            visibility: "team".into(),
        };
        let crm = Crm {
            deal: Some("deal-1".into()),
            lead: None,
            project: Some("p".into()),
        };
        CopyFold::empty(Uuid::from_u128(copy), Uuid::from_u128(1), dims, crm)
    }

    #[test]
    fn deltas_add_the_new_fold_and_take_away_the_old() {
        let old = {
            let mut f = fold_of(7);
            f.state.clicks = 2;
            f.state.human_clicks = 2;
            f.links.insert("https://a".into(), (2, 2));
            f
        };
        let mut new = old.clone();
        // A third click swept the two: none of the three counts as a person any more.
        new.state.clicks = 3;
        new.state.human_clicks = 0;
        new.links.insert("https://a".into(), (2, 0));
        new.links.insert("https://b".into(), (1, 0));
        new.clients
            .insert(("Gmail".into(), "desktop".into()), (1, 1));
        let fresh = fold_of(8);

        let mut d = Deltas::default();
        d.add(Some(&old), &new);
        d.add(None, &fresh);
        let d = d.without_zeros();

        let dims = new.state.dims.clone();
        // sent: the fresh copy; clicks +1; human clicks -2; unique human clicks -1.
        assert_eq!(
            d.daily[&dims],
            [1, 0, 0, 0, 0, 0, 1, -2, 0, -1, 0, 0, 0, 0, 0]
        );
        assert_eq!(d.links[&(dims.clone(), "https://a".into())], [0, -2, 0, -1]);
        assert_eq!(d.links[&(dims.clone(), "https://b".into())], [1, 0, 1, 0]);
        assert_eq!(d.links.len(), 2);
        assert_eq!(
            d.clients[&(dims.clone(), "Gmail".into(), "desktop".into())],
            [1, 1, 1, 1]
        );
        // The deal and the project move as the daily row does; the copy has no lead.
        let crm = |facet, value: &str| CrmKey {
            facet,
            value: value.into(),
            template_key: dims.template_key.clone(),
            sender_id: dims.sender_id,
            team_id: dims.team_id,
            visibility: dims.visibility.clone(),
        };
        assert_eq!(d.crm.len(), 2);
        assert_eq!(d.crm[&crm(CrmFacet::Deal, "deal-1")], d.daily[&dims]);
        assert_eq!(d.crm[&crm(CrmFacet::Project, "p")], d.daily[&dims]);

        // Moving a copy to the state it already has moves nothing.
        let mut same = Deltas::default();
        same.add(Some(&old), &old);
        assert_eq!(same.without_zeros(), Deltas::default());
    }
}
