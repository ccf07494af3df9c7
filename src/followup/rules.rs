//! The named queries behind `/api/automations` and `/api/unsubscribes`.

use serde::Serialize;

use crate::accounts::visibility::{acts_for, acts_for_to, Params, Viewer};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Automation {
    pub id: i64,
    pub name: String,
    pub trigger_template: String,
    pub condition: String,
    pub window_seconds: i32,
    pub followup_template: String,
    pub send_hour: Option<i16>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What the scheduler checks when a follow-up is due.
pub const CONDITIONS: &[&str] = &["no_open", "no_click", "no_reply"];

const COLUMNS: &str =
    "id, name, trigger_template, condition, window_seconds, followup_template, send_hour, created_at";

fn from_row(r: &tokio_postgres::Row) -> Automation {
    Automation {
        id: r.get(0),
        name: r.get(1),
        trigger_template: r.get(2),
        condition: r.get(3),
        window_seconds: r.get(4),
        followup_template: r.get(5),
        send_hour: r.get(6),
        created_at: r.get(7),
    }
}

pub struct NewAutomation<'a> {
    pub owner_id: i64,
    pub name: &'a str,
    pub trigger_template: &'a str,
    pub condition: &'a str,
    pub window_seconds: i32,
    pub followup_template: &'a str,
    pub send_hour: Option<i16>,
}

pub async fn create(
    client: &impl deadpool_postgres::GenericClient,
    a: &NewAutomation<'_>,
) -> Result<Automation, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO automations (owner_id, name, trigger_template, condition,
                     window_seconds, followup_template, send_hour)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
            ),
            &[
                &a.owner_id,
                &a.name,
                &a.trigger_template,
                &a.condition,
                &a.window_seconds,
                &a.followup_template,
                &a.send_hour,
            ],
        )
        .await?;
    Ok(from_row(&row))
}

pub async fn list(
    client: &impl deadpool_postgres::GenericClient,
    owner_id: i64,
) -> Result<Vec<Automation>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM automations WHERE owner_id = $1 AND deleted_at IS NULL
                 ORDER BY id"
            ),
            &[&owner_id],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Stops an automation and cancels its pending follow-ups. False when it is not the owner's.
pub async fn delete(
    client: &impl deadpool_postgres::GenericClient,
    owner_id: i64,
    id: i64,
) -> Result<bool, tokio_postgres::Error> {
    let stopped = client
        .execute(
            "UPDATE automations SET deleted_at = now()
             WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL",
            &[&id, &owner_id],
        )
        .await?;
    if stopped == 0 {
        return Ok(false);
    }
    client
        .execute(
            "UPDATE followups SET status = 'cancelled', reason = 'automation deleted',
                 updated_at = now()
             WHERE automation_id = $1 AND status = 'pending'",
            &[&id],
        )
        .await?;
    Ok(true)
}

/// Records that `viewer` heard from `recipient` that they unsubscribed, and cancels the pending
/// follow-ups of mail the viewer acts for (their own, their team's team or shared mail): one
/// team cannot stop another's
/// follow-ups, nor learn from the count whether another team mails the address. Returns how
/// many were cancelled, which counts mail the viewer acts for only.
pub async fn unsubscribe(
    client: &impl deadpool_postgres::GenericClient,
    viewer: Viewer,
    recipient: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO unsubscribes (recipient, user_id) VALUES (lower($1), $2)
             ON CONFLICT DO NOTHING",
            &[&recipient, &viewer.user_id],
        )
        .await?;
    let mut p = Params::default();
    let r = p.push(recipient.to_string());
    let scope = acts_for("m", viewer, &mut p);
    client
        .execute(
            &format!(
                "UPDATE followups f SET status = 'cancelled', reason = 'unsubscribed',
                     updated_at = now()
                 FROM copies c JOIN messages m ON m.id = c.message_id
                 WHERE c.id = f.copy_id AND lower(f.recipient) = lower({r})
                   AND f.status = 'pending' AND {scope}"
            ),
            &p.refs(),
        )
        .await
}

/// The condition under which an unsubscribe stops a follow-up to `recipient` on `copy` (SQL
/// expressions): one recorded by a user who acts for the copy's message (its sender, or its
/// team for team or shared mail), or one recorded before
/// unsubscribes were scoped (no user: installation-wide, as it was recorded then).
pub fn unsubscribed_sql(copy: &str, recipient: &str) -> String {
    let scope = acts_for_to("um", "x.user_id", "uu.team_id");
    format!(
        "EXISTS (SELECT 1 FROM unsubscribes x
                 JOIN copies uc ON uc.id = {copy}
                 JOIN messages um ON um.id = uc.message_id
                 LEFT JOIN users uu ON uu.id = x.user_id
                 WHERE x.recipient = lower({recipient}) AND (x.user_id IS NULL OR {scope}))"
    )
}

/// Forgets the unsubscribes of `recipient`, whoever recorded them (erasure).
pub async fn forget_unsubscribes(
    client: &impl tokio_postgres::GenericClient,
    recipient: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM unsubscribes WHERE recipient = lower($1)",
            &[&recipient.trim()],
        )
        .await?;
    Ok(())
}
