//! The named queries behind `/api/automations` and `/api/unsubscribes`.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
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
    // The trigger may name a template no mail has used yet.
    client
        .execute(
            "INSERT INTO templates (key) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&a.trigger_template],
        )
        .await?;
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

/// Records an unsubscribe and cancels every pending follow-up to that recipient.
pub async fn unsubscribe(
    client: &impl deadpool_postgres::GenericClient,
    recipient: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO unsubscribes (recipient) VALUES (lower($1)) ON CONFLICT DO NOTHING",
            &[&recipient],
        )
        .await?;
    client
        .execute(
            "UPDATE followups SET status = 'cancelled', reason = 'unsubscribed', updated_at = now()
             WHERE lower(recipient) = lower($1) AND status = 'pending'",
            &[&recipient],
        )
        .await
}
