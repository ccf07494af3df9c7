//! Classification that needs hindsight: what one event cannot tell at ingest, the copy's other
//! events can. Written once as SQL and used both by the aggregation job and by the message
//! timeline, so that a timeline always shows the class the reports counted.
//!
//! Rules (on top of the ingest class; only events the ingest called `human` or `proxy` change):
//! - sweep: a click belonging to a run of [`SWEEP_CLICKS`] or more clicks of the same copy within
//!   [`SWEEP_SECONDS`] seconds is `scanner` (link checkers follow every link at once); it can
//!   re-class clicks already folded, when the rest of the run arrives later;
//! - unknown-delivery window: an open or click whose ingest reason starts with
//!   [`DELIVERY_UNKNOWN_REASON`] (the tracker did not know the delivery time: the delivery cache
//!   had not seen it yet, or PostgreSQL was away) and that happened within [`PREFETCH_SECONDS`]
//!   of the copy's `delivered` event, either side, is `prefetch` (clicks too).
//!
//! These windows are fixed: the ingest windows (`PREFETCH_WINDOW`, `CLICK_SCANNER_WINDOW`) are
//! settings because a sender testing their own mail meets them; a sender meets these only when
//! clicking three links within seconds, or within a second of delivery.
//!
//! Human = `human` + `proxy`, as in DESIGN.md.

use chrono::{DateTime, Utc};

/// A run of this many clicks of one copy...
pub const SWEEP_CLICKS: i64 = 3;
/// ...within this many seconds is a scanner's sweep.
pub const SWEEP_SECONDS: i64 = 5;
/// An open or click this close to delivery (either side) is a prefetch when the ingest could
/// not tell.
pub const PREFETCH_SECONDS: i64 = 10;
/// The ingest reason prefix meaning "the copy's delivery time was unknown at ingest".
pub const DELIVERY_UNKNOWN_REASON: &str = "delivery_time_unknown";
/// The final reason of a click in a sweep (spells out [`SWEEP_CLICKS`] and [`SWEEP_SECONDS`];
/// a test keeps them in step). The Insights page knows the rule by this text.
pub const SWEEP_REASON: &str = "sweep: 3 or more clicks within 5 s";
/// The final reason of a prefetch found in hindsight (spells out [`PREFETCH_SECONDS`]).
pub const UNKNOWN_DELIVERY_WINDOW_REASON: &str = "within 10 s of delivery";

/// SQL yielding every event of the copies listed by `copies_sql` (a query returning `copy_id`),
/// with `final_class` and `final_reason` after hindsight. Columns: id, copy_id, message_id, kind,
/// occurred_at, link_idx, client, device, os, seq, final_class, final_reason.
pub fn classified_events_sql(copies_sql: &str) -> String {
    classified_events_until_sql(copies_sql, None)
}

/// [`classified_events_sql`] over the events up to `until` (txid, seq) only: what the aggregation
/// job has folded when its watermark is there.
pub fn classified_events_until_sql(copies_sql: &str, until: Option<(i64, i64)>) -> String {
    let until = match until {
        Some((txid, seq)) => format!("AND (e.txid, e.seq) <= ({txid}::bigint, {seq}::bigint)"),
        None => String::new(),
    };
    format!(
        "WITH ev AS (
            SELECT e.id, e.copy_id, e.message_id, e.kind, e.occurred_at, e.link_idx, e.class,
                   e.reason, e.client, e.device, e.os, e.seq,
                   min(e.occurred_at) FILTER (WHERE e.kind = 'delivered')
                       OVER (PARTITION BY e.copy_id) AS delivered_at
            FROM events e
            WHERE e.copy_id IN ({copies_sql}) {until}
         ), runs AS (
            SELECT id, copy_id, occurred_at,
                   count(*) OVER w AS n_ahead, max(occurred_at) OVER w AS ahead_end
            FROM ev WHERE kind = 'click'
            WINDOW w AS (PARTITION BY copy_id ORDER BY occurred_at
                         RANGE BETWEEN CURRENT ROW AND interval '{SWEEP_SECONDS} seconds' FOLLOWING)
         ), sweeps AS (
            -- a click is in a sweep when some earlier-or-equal click starts a dense run that
            -- reaches it
            SELECT id, occurred_at,
                   max(CASE WHEN n_ahead >= {SWEEP_CLICKS} THEN ahead_end END)
                       OVER (PARTITION BY copy_id ORDER BY occurred_at
                             RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sweep_until
            FROM runs
         )
         SELECT ev.id, ev.copy_id, ev.message_id, ev.kind, ev.occurred_at, ev.link_idx,
                ev.client, ev.device, ev.os, ev.seq,
                CASE
                  WHEN ev.kind NOT IN ('open', 'click') THEN NULL
                  WHEN coalesce(ev.class, 'human') NOT IN ('human', 'proxy') THEN ev.class
                  WHEN s.sweep_until >= ev.occurred_at THEN 'scanner'
                  WHEN ev.reason LIKE '{DELIVERY_UNKNOWN_REASON}%'
                       AND ev.occurred_at BETWEEN ev.delivered_at - interval '{PREFETCH_SECONDS} seconds'
                                              AND ev.delivered_at + interval '{PREFETCH_SECONDS} seconds'
                    THEN 'prefetch'
                  ELSE coalesce(ev.class, 'human')
                END AS final_class,
                CASE
                  WHEN ev.kind NOT IN ('open', 'click') THEN ev.reason
                  WHEN coalesce(ev.class, 'human') NOT IN ('human', 'proxy') THEN ev.reason
                  WHEN s.sweep_until >= ev.occurred_at
                    THEN '{SWEEP_REASON}'
                  WHEN ev.reason LIKE '{DELIVERY_UNKNOWN_REASON}%'
                       AND ev.occurred_at BETWEEN ev.delivered_at - interval '{PREFETCH_SECONDS} seconds'
                                              AND ev.delivered_at + interval '{PREFETCH_SECONDS} seconds'
                    THEN '{UNKNOWN_DELIVERY_WINDOW_REASON}'
                  ELSE ev.reason
                END AS final_reason
         FROM ev LEFT JOIN sweeps s ON s.id = ev.id AND s.occurred_at = ev.occurred_at"
    )
}

/// The class an open or click ends with before the sweep rule: the ingest class, or `prefetch`
/// by the unknown-delivery window. Same rules as [`classified_events_sql`].
pub fn class_before_sweeps(
    ingest_class: Option<&str>,
    reason: Option<&str>,
    at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
) -> String {
    let class = ingest_class.unwrap_or("human");
    if !is_human(class) {
        return class.to_string();
    }
    let window = chrono::Duration::seconds(PREFETCH_SECONDS);
    match delivered_at {
        Some(d)
            if reason.is_some_and(|r| r.starts_with(DELIVERY_UNKNOWN_REASON))
                && at >= d - window
                && at <= d + window =>
        {
            "prefetch".to_string()
        }
        _ => class.to_string(),
    }
}

/// Whether a final class counts as a person.
pub fn is_human(class: &str) -> bool {
    class == "human" || class == "proxy"
}

/// A click of a copy that a later click may still put in a sweep, or that a later click needs
/// to be judged: one no older than [`SWEEP_SECONDS`] before the copy's latest click that is
/// counted as a person or is one of the copy's last [`SWEEP_CLICKS`] - 1 clicks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecentClick {
    /// Microseconds since the Unix epoch.
    pub at_micros: i64,
    pub url: String,
    /// Counted as a person now.
    pub human: bool,
}

/// Microseconds of [`SWEEP_SECONDS`].
const SWEEP_MICROS: i64 = SWEEP_SECONDS * 1_000_000;

/// Adds `click`, which is no earlier than any click of `recent`, to the copy's recent clicks and
/// applies the sweep rule as [`classified_events_sql`] does over all of the copy's clicks. A
/// sweep that takes in the new click is a run of [`SWEEP_CLICKS`] or more clicks within the
/// window that ends at it, so it is enough to count the clicks of that window: when they are
/// enough, every one of them is a scanner's. Returns the clicks that were counted as a person and
/// no longer are (the new one included when it is one of them, so that the caller may count it
/// first and take it back); drops the clicks that have left the window for good.
///
/// Of the clicks in the window only those counted as a person (at most [`SWEEP_CLICKS`] - 1,
/// since that many more would be a sweep) and the last [`SWEEP_CLICKS`] - 1 are kept: a later
/// click's window holds the newest clicks, so it holds enough of them for a sweep exactly when
/// it holds the last [`SWEEP_CLICKS`] - 1; and a sweep changes only clicks counted as a person.
/// Keeping every click of the window let anyone who clicks one link fast enough make the copy's
/// state, and the work of each click, as large as the clicks of five seconds.
pub fn add_click(recent: &mut Vec<RecentClick>, click: RecentClick) -> Vec<RecentClick> {
    let start = click.at_micros - SWEEP_MICROS;
    recent.retain(|c| c.at_micros >= start);
    recent.push(click);
    recent.sort();
    let mut reclassed = Vec::new();
    if recent.len() as i64 >= SWEEP_CLICKS {
        for c in recent.iter_mut().filter(|c| c.human) {
            c.human = false;
            reclassed.push(c.clone());
        }
        recent.sort();
    }
    let last_from = recent.len().saturating_sub(KEPT_LAST);
    let mut at = 0;
    recent.retain(|c| {
        at += 1;
        c.human || at > last_from
    });
    reclassed
}

/// The newest clicks a copy keeps whatever their class: [`SWEEP_CLICKS`] - 1.
pub const KEPT_LAST: usize = SWEEP_CLICKS as usize - 1;

/// SQL condition on a class column: true for the classes that count as a person.
pub fn is_human_sql(class_column: &str) -> String {
    format!("{class_column} IN ('human', 'proxy')")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_spell_out_the_windows() {
        assert_eq!(
            SWEEP_REASON,
            format!("sweep: {SWEEP_CLICKS} or more clicks within {SWEEP_SECONDS} s")
        );
        assert_eq!(
            UNKNOWN_DELIVERY_WINDOW_REASON,
            format!("within {PREFETCH_SECONDS} s of delivery")
        );
    }

    fn click(at_ms: i64, human: bool) -> RecentClick {
        RecentClick {
            at_micros: at_ms * 1000,
            url: format!("u{at_ms}"),
            human,
        }
    }

    /// One link clicked 10,000 times a millisecond apart: the copy keeps a handful of
    /// clicks, not the 5,000 of the window, and every click after the second is a sweep's.
    #[test]
    fn a_copy_clicked_without_pause_keeps_a_few_clicks() {
        let mut recent = Vec::new();
        let mut reclassed = 0;
        let mut largest = 0;
        for i in 0..10_000 {
            let c = RecentClick {
                at_micros: i * 1000,
                url: "https://example.com/a".into(),
                human: true,
            };
            reclassed += add_click(&mut recent, c).len();
            largest = largest.max(recent.len());
        }
        // Every click is taken back: the first two with the third, which swept them, and each
        // later one as it comes (the caller counts it first).
        assert_eq!(reclassed, 10_000);
        assert!(recent.iter().all(|c| !c.human));
        assert!(largest <= SWEEP_CLICKS as usize, "kept {largest} clicks");
        assert_eq!(recent.len(), KEPT_LAST);
    }

    #[test]
    fn a_third_click_within_the_window_re_classes_the_run() {
        let mut recent = Vec::new();
        assert!(add_click(&mut recent, click(0, true)).is_empty());
        assert!(add_click(&mut recent, click(4_000, true)).is_empty());
        // 5 s after the first, inclusive: all three are a sweep, the scanner click included.
        let reclassed = add_click(&mut recent, click(5_000, false));
        assert_eq!(reclassed, vec![click(0, false), click(4_000, false)]);
        assert!(recent.iter().all(|c| !c.human));
    }

    #[test]
    fn clicks_older_than_the_window_are_dropped_and_never_re_classed() {
        let mut recent = Vec::new();
        add_click(&mut recent, click(0, true));
        add_click(&mut recent, click(5_001, true));
        assert_eq!(recent, vec![click(5_001, true)]);
        let reclassed = add_click(&mut recent, click(6_000, true));
        assert!(
            reclassed.is_empty(),
            "two clicks in the window are no sweep"
        );
        let reclassed = add_click(&mut recent, click(6_000, true));
        assert_eq!(reclassed.len(), 3);
    }
}
