//! The scheduler inside `serve`: finds the copies each automation applies to, and fires the
//! follow-ups that are due, each exactly once.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use prometheus::IntCounterVec;
use uuid::Uuid;

use super::FollowupError;
use crate::accounts;
use crate::base::Base;
use crate::classify::hindsight::classified_events_sql;
use crate::compose::{Composition, MergeText, Recipient, Target, Thread};
use crate::queue;
use crate::queue::templates;
use crate::rewrite::Rewriter;
use crate::store::server_settings;

pub static FOLLOWUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "followups_total",
        "follow-ups decided, by outcome (sent, skipped, cancelled, failed)",
        &["outcome"],
    )
});

/// Copies delivered longer ago than this are not looked at any more (the scheduler runs every
/// few seconds; this only bounds the scan after a long stop).
const DISCOVER_LOOKBACK: &str = "7 days";

/// Each discovery starts this far before where the last one started: a delivery recorded by
/// a transaction that committed a little after its `delivered_at` is still seen.
const DISCOVER_OVERLAP: &str = "5 minutes";

/// The `server_settings` key of the discovery watermark.
const DISCOVERED_FROM: &str = "followups_discovered_from";

/// One pending follow-up per (automation, delivered copy of its trigger template sent by its
/// owner after it was made), due when the window ends (at the chosen hour of the recipient's
/// day, in their `time_zone` field, when the automation names one). Only copies delivered
/// since the previous discovery (kept in `server_settings`) are scanned, so that the scan
/// does not grow with the mail of the last days.
fn discover_sql() -> String {
    format!(
        "WITH since AS (
             SELECT greatest(
                 coalesce({discovered}::timestamptz, '-infinity')
                     - interval '{DISCOVER_OVERLAP}',
                 now() - interval '{DISCOVER_LOOKBACK}') AS at
         ), found AS (
             INSERT INTO followups (automation_id, copy_id, recipient, due_at)
             SELECT a.id, c.id, c.recipient,
                    CASE WHEN a.send_hour IS NULL
                         THEN c.delivered_at + make_interval(secs => a.window_seconds)
                         ELSE mailtally_at_hour(c.delivered_at + make_interval(secs => a.window_seconds),
                                                c.fields ->> 'time_zone', a.send_hour)
                    END
             FROM copies c
             JOIN messages m ON m.id = c.message_id
             JOIN automations a ON a.trigger_template = m.template_key AND a.owner_id = m.sender_id
             WHERE c.delivered_at > (SELECT at FROM since)
               AND a.deleted_at IS NULL AND c.status = 'delivered'
               AND c.delivered_at >= a.created_at
             ON CONFLICT DO NOTHING
         )
         {record}",
        discovered = server_settings::value_sql(DISCOVERED_FROM),
        record = server_settings::put_sql(DISCOVERED_FROM, "statement_timestamp()::text"),
    )
}

/// What became of one due follow-up.
#[derive(Debug)]
enum Outcome {
    Sent(Uuid),
    Skipped(&'static str),
    Cancelled(&'static str),
    Failed(String),
}

impl Outcome {
    fn status(&self) -> &'static str {
        match self {
            Outcome::Sent(_) => "sent",
            Outcome::Skipped(_) => "skipped",
            Outcome::Cancelled(_) => "cancelled",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// A due follow-up with what deciding and composing it needs.
struct Due {
    automation_id: i64,
    copy_id: Uuid,
    recipient: String,
    condition: String,
    followup_template: String,
    owner_id: i64,
    copy_message_id: Option<String>,
    fields: Option<serde_json::Value>,
    message_header_id: Option<String>,
    subject: Option<String>,
    visibility: String,
    deal: Option<String>,
    lead: Option<String>,
    project: Option<String>,
    track: String,
}

/// Finds new follow-ups and fires the due ones; returns how many were decided.
pub async fn run_once(ctx: &Base, rewriter: &Rewriter, limit: i64) -> Result<usize, FollowupError> {
    let mut client = ctx.pool.get().await?;
    client.execute(&discover_sql(), &[]).await?;
    let tx = client.transaction().await?;
    // SKIP LOCKED: another node's scheduler takes other rows, never the same one.
    let rows = tx
        .query(
            "SELECT f.automation_id, f.copy_id, f.recipient, a.condition, a.followup_template,
                    a.owner_id, c.header_message_id, c.fields, m.header_message_id, m.subject,
                    m.visibility, m.deal, m.lead, m.project, m.track
             FROM followups f
             JOIN automations a ON a.id = f.automation_id
             JOIN copies c ON c.id = f.copy_id
             JOIN messages m ON m.id = c.message_id
             WHERE f.status = 'pending' AND f.due_at <= now()
             ORDER BY f.due_at LIMIT $1
             FOR UPDATE OF f SKIP LOCKED",
            &[&limit],
        )
        .await?;
    let mut sent = 0;
    for r in &rows {
        let due = Due {
            automation_id: r.get(0),
            copy_id: r.get(1),
            recipient: r.get(2),
            condition: r.get(3),
            followup_template: r.get(4),
            owner_id: r.get(5),
            copy_message_id: r.get(6),
            fields: r.get(7),
            message_header_id: r.get(8),
            subject: r.get(9),
            visibility: r.get(10),
            deal: r.get(11),
            lead: r.get(12),
            project: r.get(13),
            track: r.get(14),
        };
        let outcome = decide(ctx, rewriter, &tx, &due).await?;
        let (reason, message) = match &outcome {
            Outcome::Sent(id) => (None, Some(*id)),
            Outcome::Skipped(r) | Outcome::Cancelled(r) => (Some(r.to_string()), None),
            Outcome::Failed(r) => (Some(r.clone()), None),
        };
        tx.execute(
            "UPDATE followups SET status = $3, reason = $4, sent_message_id = $5, updated_at = now()
             WHERE automation_id = $1 AND copy_id = $2",
            &[&due.automation_id, &due.copy_id, &outcome.status(), &reason, &message],
        )
        .await?;
        if let Outcome::Failed(why) = &outcome {
            tracing::warn!(automation = due.automation_id, copy = %due.copy_id, reason = %why, "follow-up not sent");
        }
        FOLLOWUPS.with_label_values(&[outcome.status()]).inc();
        sent += matches!(outcome, Outcome::Sent(_)) as usize;
    }
    tx.commit().await?;
    if sent > 0 {
        queue::QUEUED.notify_waiters();
    }
    Ok(rows.len())
}

/// Whether people engaged with the copy in the way `kind` ('open', 'click') says.
async fn engaged(
    tx: &deadpool_postgres::Transaction<'_>,
    copy: Uuid,
    kind: &str,
) -> Result<bool, FollowupError> {
    let classified = classified_events_sql("SELECT $1::uuid");
    let row = tx
        .query_one(
            &format!(
                "SELECT count(*) FROM ({classified}) x
                 WHERE x.kind = $2 AND x.final_class IN ('human', 'proxy')"
            ),
            &[&copy, &kind],
        )
        .await?;
    Ok(row.get::<_, i64>(0) > 0)
}

async fn decide(
    ctx: &Base,
    rewriter: &Rewriter,
    tx: &deadpool_postgres::Transaction<'_>,
    due: &Due,
) -> Result<Outcome, FollowupError> {
    let stop = tx
        .query_one(
            &format!(
                "SELECT {},
                    EXISTS (SELECT 1 FROM copies c2
                            JOIN messages m2 ON m2.id = c2.message_id
                            JOIN events e ON e.copy_id = c2.id
                            WHERE lower(c2.recipient) = lower($1) AND m2.sender_id = $2
                              AND e.kind = 'reply')",
                super::rules::unsubscribed_sql("$3", "$1")
            ),
            &[&due.recipient, &due.owner_id, &due.copy_id],
        )
        .await?;
    if stop.get::<_, bool>(0) {
        return Ok(Outcome::Cancelled("unsubscribed"));
    }
    if stop.get::<_, bool>(1) {
        return Ok(Outcome::Cancelled("replied"));
    }
    match due.condition.as_str() {
        "no_open" if engaged(tx, due.copy_id, "open").await? => {
            return Ok(Outcome::Skipped("opened"))
        }
        "no_click" if engaged(tx, due.copy_id, "click").await? => {
            return Ok(Outcome::Skipped("clicked"))
        }
        _ => {}
    }
    compose_followup(ctx, rewriter, tx, due).await
}

async fn compose_followup(
    ctx: &Base,
    rewriter: &Rewriter,
    tx: &deadpool_postgres::Transaction<'_>,
    due: &Due,
) -> Result<Outcome, FollowupError> {
    let Some(owner) = accounts::find_by_id(&**tx, due.owner_id).await? else {
        return Ok(Outcome::Failed("the automation's owner is disabled".into()));
    };
    // Every way of sending asks the suppression list first.
    let suppressed = crate::deliverability::suppression::check(
        tx,
        crate::deliverability::suppression::Scope::of(&owner),
        std::slice::from_ref(&due.recipient),
    )
    .await?;
    if !suppressed.is_empty() {
        return Ok(Outcome::Cancelled("suppressed"));
    }
    let Some(t) = templates::get(tx, &owner, &due.followup_template).await? else {
        return Ok(Outcome::Failed(format!(
            "template `{}` has no content",
            due.followup_template
        )));
    };
    let fields: BTreeMap<String, String> = due
        .fields
        .as_ref()
        .and_then(|f| f.as_object())
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k.clone(), s.clone())),
                    serde_json::Value::Null => None,
                    other => Some((k.clone(), other.to_string())),
                })
                .collect()
        })
        .unwrap_or_default();
    let Ok(address) = due.recipient.parse::<lettre::Address>() else {
        return Ok(Outcome::Failed(format!(
            "`{}` is not an address",
            due.recipient
        )));
    };
    // The subject the recipient saw: a group email's copy merged its own fields into it.
    let earlier = due.subject.clone().unwrap_or_default();
    let subject = MergeText::parse(&earlier)
        .render(&fields, Target::Header)
        .unwrap_or(earlier);
    let answered = due
        .copy_message_id
        .clone()
        .or(due.message_header_id.clone());
    let signature = accounts::signature(&**tx, owner.id).await?;
    let mut c = Composition::new(
        owner,
        t.key,
        &t.subject,
        &t.html,
        t.text.as_deref(),
        &signature,
    );
    c.thread = Some(Thread {
        in_reply_to: answered.clone(),
        references: answered,
        subject,
    });
    c.visibility = due.visibility.clone();
    c.track = Some(due.track.clone());
    c.deal = due.deal.clone();
    c.lead = due.lead.clone();
    c.project = due.project.clone();
    let recipient = Recipient {
        address,
        name: None,
        fields,
    };
    let mut message = match c.render(&[recipient], &rewriter.settings, &rewriter.keys) {
        Ok(m) => m,
        Err(e) => return Ok(Outcome::Failed(e.to_string())),
    };
    queue::pacing::assign(tx, &mut message, ctx.settings.queue.sender_rate_per_minute).await?;
    queue::insert(tx, &message).await?;
    // Counted, not refused: the sender's other mail waits for the budget this one uses.
    let per_hour = ctx.settings.queue.sender_max_bytes_per_hour;
    queue::budget::record(tx, message.sender_id, message.copy_bytes(), per_hour).await?;
    Ok(Outcome::Sent(message.id))
}

/// Cancels the pending follow-ups that `sender_id`'s automations hold for `recipient` (they
/// replied). Returns how many.
pub async fn cancel_for_recipient(
    client: &impl deadpool_postgres::GenericClient,
    sender_id: i64,
    recipient: &str,
    reason: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE followups f SET status = 'cancelled', reason = $3, updated_at = now()
             FROM automations a
             WHERE a.id = f.automation_id AND a.owner_id = $1
               AND lower(f.recipient) = lower($2) AND f.status = 'pending'",
            &[&sender_id, &recipient, &reason],
        )
        .await
}

/// The scheduler: a run every `FOLLOWUP_CHECK_EVERY` until shutdown; errors are logged and
/// retried at the next tick.
pub async fn serve_loop(ctx: Base, rewriter: Rewriter) {
    let every = ctx
        .settings
        .followup
        .check_every
        .max(std::time::Duration::from_millis(100));
    loop {
        match run_once(&ctx, &rewriter, 100).await {
            Ok(n) if n > 0 => tracing::debug!(decided = n, "follow-ups decided"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "follow-up run failed"),
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
