//! Templates: the keys messages are filed under and reported by, and the content stored under
//! them (`/api/templates`). Owns the `templates` table.
//!
//! A template is a key in a scope: a team's, or a sender's own when they have no team. Keys are
//! never global, so one team can neither claim nor probe another's. A template key is also what
//! reports group by, so a key first seen in mail submitted over SMTP has a row in its sender's
//! scope without content; storing content under it claims it. Deleting a template removes its
//! content and keeps the key, which past messages and reports still name.

use serde::Serialize;
use tokio_postgres::Row;

use crate::accounts::{Role, User};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// The rows of the scope of the user `$1` of team `$2`: the team's templates, or the user's own
/// when they have no team. The same scope the queue files sent mail under.
const IN_SCOPE: &str = "(CASE WHEN $2::bigint IS NULL THEN team_id IS NULL AND owner_id = $1
                         ELSE team_id = $2 END)";

pub async fn list(
    client: &impl deadpool_postgres::GenericClient,
    user: &User,
) -> Result<Vec<Template>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM templates WHERE html IS NOT NULL AND {IN_SCOPE}
                 ORDER BY key"
            ),
            &[&user.id, &user.team_id],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// The template with content under `key` in `user`'s scope.
pub async fn get(
    client: &impl deadpool_postgres::GenericClient,
    user: &User,
    key: &str,
) -> Result<Option<Template>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM templates
                 WHERE key = $3 AND html IS NOT NULL AND {IN_SCOPE}"
            ),
            &[&user.id, &user.team_id, &key],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// Makes sure `key` exists in `user`'s scope (an automation may name a key no mail used yet).
pub async fn ensure_key(
    client: &impl deadpool_postgres::GenericClient,
    user: &User,
    key: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO templates (key, team_id, owner_id)
             VALUES ($3, $2, CASE WHEN $2::bigint IS NULL THEN $1::bigint END)
             ON CONFLICT DO NOTHING",
            &[&user.id, &user.team_id, &key],
        )
        .await?;
    Ok(())
}

/// The statement that files a key in its sender's scope when a message first names it: `key`,
/// `subject`, `team` and `owner` are SQL expressions (the message's placeholders).
pub fn register_key_sql(key: &str, subject: &str, team: &str, owner: &str) -> String {
    format!(
        "INSERT INTO templates (key, first_subject, team_id, owner_id)
         VALUES ({key}, {subject}, {team}, CASE WHEN {team}::bigint IS NULL THEN {owner}::bigint END)
         ON CONFLICT DO NOTHING"
    )
}

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Created,
    Updated,
    /// The key holds content of the caller's scope that they may not change (a teammate's).
    Taken,
    NotFound,
}

/// Whether `user` may change a template of their scope written by `owner_id`: its writer, or
/// an admin of its team.
fn may_change(user: &User, owner_id: Option<i64>, team_id: Option<i64>) -> bool {
    owner_id == Some(user.id)
        || (user.role == Role::Admin && team_id.is_some() && team_id == user.team_id)
}

/// Creates the template in `user`'s scope, or claims a key of that scope known only from sent
/// mail. `create == false` updates an existing one instead.
pub async fn write(
    client: &mut deadpool_postgres::Client,
    user: &User,
    t: &Template,
    create: bool,
) -> Result<Written, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let existing = tx
        .query_opt(
            &format!(
                "SELECT id, owner_id, team_id, html IS NOT NULL FROM templates
                 WHERE key = $3 AND {IN_SCOPE} FOR UPDATE"
            ),
            &[&user.id, &user.team_id, &t.key],
        )
        .await?;
    let outcome = match existing {
        None if create => {
            let inserted = tx
                .execute(
                    "INSERT INTO templates (key, name, subject, html, text_body, owner_id,
                         team_id, first_subject, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $3, now())
                     ON CONFLICT DO NOTHING",
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
            // Zero rows: a concurrent request of the same scope stored the key first.
            if inserted == 1 {
                Written::Created
            } else {
                Written::Taken
            }
        }
        None => Written::NotFound,
        Some(row) => {
            let (id, owner, team, has_content): (i64, Option<i64>, Option<i64>, bool) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            // A team's key without content is anyone's of the team to fill; a sender's own
            // scope has only them.
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
                         owner_id = coalesce(owner_id, $6), updated_at = now()
                     WHERE id = $1",
                    &[&id, &t.name, &t.subject, &t.html, &t.text, &user.id],
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
            &format!(
                "UPDATE templates SET html = NULL, subject = NULL, text_body = NULL,
                     updated_at = now()
                 WHERE key = $3 AND html IS NOT NULL AND {IN_SCOPE}
                   AND (owner_id = $1 OR ($4 AND team_id IS NOT NULL))"
            ),
            &[&user.id, &user.team_id, &key, &(user.role == Role::Admin)],
        )
        .await?;
    Ok(n > 0)
}
