//! Stored templates: the named queries behind `/api/templates`.
//!
//! A template key is also what reports group by, so a key first seen in mail submitted over
//! SMTP has a row without content; storing content under it claims it. Deleting a template
//! removes its content and keeps the key, which past messages and reports still name.

use serde::Serialize;
use tokio_postgres::Row;

use crate::api::accounts::{Role, User};

#[derive(Debug, Clone, Serialize)]
pub struct Template {
    pub key: String,
    pub name: String,
    pub subject: String,
    pub html: String,
    pub text: Option<String>,
    pub owner_id: Option<i64>,
    pub team_id: Option<i64>,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

const COLUMNS: &str = "key, name, subject, html, text_body, owner_id, team_id, updated_at";

fn from_row(r: &Row) -> Template {
    Template {
        key: r.get(0),
        name: r.get(1),
        subject: r.get::<_, Option<String>>(2).unwrap_or_default(),
        html: r.get(3),
        text: r.get(4),
        owner_id: r.get(5),
        team_id: r.get(6),
        updated_at: r.get(7),
    }
}

/// Templates with content that `user` may use: their own and their team's.
const USABLE: &str =
    "html IS NOT NULL AND (owner_id = $1 OR (team_id IS NOT NULL AND team_id = $2))";

pub async fn list(
    client: &impl deadpool_postgres::GenericClient,
    user: &User,
) -> Result<Vec<Template>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM templates WHERE {USABLE} ORDER BY key"),
            &[&user.id, &user.team_id],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

pub async fn get(
    client: &impl deadpool_postgres::GenericClient,
    user: &User,
    key: &str,
) -> Result<Option<Template>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM templates WHERE key = $3 AND {USABLE}"),
            &[&user.id, &user.team_id, &key],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Created,
    Updated,
    /// The key holds content `user` may not change (another owner's or team's).
    Taken,
    NotFound,
}

/// Whether `user` may change the template `t`: its owner, or an admin of its team.
fn may_change(user: &User, owner_id: Option<i64>, team_id: Option<i64>) -> bool {
    owner_id == Some(user.id)
        || (user.role == Role::Admin && team_id.is_some() && team_id == user.team_id)
}

/// Creates the template, or claims a key known only from sent mail. `create == false`
/// updates an existing one instead.
pub async fn write(
    client: &mut deadpool_postgres::Client,
    user: &User,
    t: &Template,
    create: bool,
) -> Result<Written, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let existing = tx
        .query_opt(
            "SELECT owner_id, team_id, html IS NOT NULL FROM templates WHERE key = $1 FOR UPDATE",
            &[&t.key],
        )
        .await?;
    let outcome = match existing {
        None if create => {
            tx.execute(
                "INSERT INTO templates (key, name, subject, html, text_body, owner_id, team_id,
                     first_subject, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $3, now())",
                &[
                    &t.key,
                    &t.name,
                    &t.subject,
                    &t.html,
                    &t.text,
                    &user.id,
                    &user.team_id,
                ],
            )
            .await?;
            Written::Created
        }
        None => Written::NotFound,
        Some(row) => {
            let (owner, team, has_content): (Option<i64>, Option<i64>, bool) =
                (row.get(0), row.get(1), row.get(2));
            let claimable = !has_content && (owner.is_none() || owner == Some(user.id));
            if !(claimable || may_change(user, owner, team)) {
                if has_content {
                    Written::Taken
                } else {
                    Written::NotFound
                }
            } else if !create && !has_content {
                Written::NotFound
            } else if create && has_content {
                Written::Taken
            } else {
                tx.execute(
                    "UPDATE templates SET name = $2, subject = $3, html = $4, text_body = $5,
                         owner_id = coalesce(owner_id, $6), team_id = coalesce(team_id, $7),
                         updated_at = now()
                     WHERE key = $1",
                    &[
                        &t.key,
                        &t.name,
                        &t.subject,
                        &t.html,
                        &t.text,
                        &user.id,
                        &user.team_id,
                    ],
                )
                .await?;
                if create {
                    Written::Created
                } else {
                    Written::Updated
                }
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Removes the content (the key stays for reports). False when `user` may not or nothing was
/// there.
pub async fn delete(
    client: &impl deadpool_postgres::GenericClient,
    user: &User,
    key: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "UPDATE templates SET html = NULL, subject = NULL, text_body = NULL, updated_at = now()
             WHERE key = $1 AND html IS NOT NULL
               AND (owner_id = $2 OR ($3 AND team_id IS NOT NULL AND team_id = $4))",
            &[&key, &user.id, &(user.role == Role::Admin), &user.team_id],
        )
        .await?;
    Ok(n > 0)
}

/// A user's signature.
pub async fn signature(
    client: &impl deadpool_postgres::GenericClient,
    user_id: i64,
) -> Result<super::Signature, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT signature_html, signature_text FROM users WHERE id = $1",
            &[&user_id],
        )
        .await?;
    Ok(row
        .map(|r| super::Signature {
            html: r.get(0),
            text: r.get(1),
        })
        .unwrap_or_default())
}
