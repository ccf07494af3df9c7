//! Webhook endpoints: what each user (or team) asked to be told, and what was sent to it.
//! Owns the `webhook_endpoints` table; the API handlers call these.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

/// An endpoint with how its notifications went.
#[derive(Debug, Serialize, ToSchema)]
pub struct Endpoint {
    pub id: i64,
    pub url: String,
    pub scope: String,
    pub event_types: Vec<String>,
    pub include_machine: bool,
    pub failures_in_row: i32,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Notifications waiting to be sent, sent, and given up on.
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// One notification to an endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub id: uuid::Uuid,
    pub event_type: String,
    pub event_id: uuid::Uuid,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    /// The receiver's last HTTP status.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    /// The signed JSON body sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// What a new endpoint is made of (validated by the caller).
pub struct NewEndpoint<'a> {
    pub owner_id: i64,
    pub scope: &'a str,
    pub url: &'a str,
    pub secret: &'a str,
    pub event_types: &'a [String],
    pub include_machine: bool,
}

/// Stores a new endpoint; returns its id and when it was made.
pub async fn create(
    client: &impl GenericClient,
    new: &NewEndpoint<'_>,
) -> Result<(i64, DateTime<Utc>), tokio_postgres::Error> {
    let row = client
        .query_one(
            "INSERT INTO webhook_endpoints (owner_id, scope, url, secret, event_types, include_machine)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at",
            &[
                &new.owner_id,
                &new.scope,
                &new.url,
                &new.secret,
                &new.event_types,
                &new.include_machine,
            ],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The endpoints of `owner_id`, with how their notifications went.
pub async fn list(
    client: &impl GenericClient,
    owner_id: i64,
) -> Result<Vec<Endpoint>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT w.id, w.url, w.scope, w.event_types, w.include_machine, w.failures_in_row,
                    w.disabled_at, w.disabled_reason, w.created_at,
                    count(o.*) FILTER (WHERE o.status = 'pending'),
                    count(o.*) FILTER (WHERE o.status = 'delivered'),
                    count(o.*) FILTER (WHERE o.status = 'failed')
               FROM webhook_endpoints w LEFT JOIN webhook_outbox o ON o.endpoint_id = w.id
              WHERE w.owner_id = $1
              GROUP BY w.id ORDER BY w.id",
            &[&owner_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Endpoint {
            id: r.get(0),
            url: r.get(1),
            scope: r.get(2),
            event_types: r.get(3),
            include_machine: r.get(4),
            failures_in_row: r.get(5),
            disabled_at: r.get(6),
            disabled_reason: r.get(7),
            created_at: r.get(8),
            pending: r.get(9),
            delivered: r.get(10),
            failed: r.get(11),
        })
        .collect())
}

/// The latest 500 notifications sent to endpoint `id` of `owner_id` (none for another's).
pub async fn deliveries(
    client: &impl GenericClient,
    owner_id: i64,
    id: i64,
) -> Result<Vec<Delivery>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT o.id, o.event_type, o.event_id, o.status, o.attempts, o.last_status, o.last_error,
                    o.created_at, o.delivered_at, o.next_attempt_at, o.payload
               FROM webhook_outbox o JOIN webhook_endpoints w ON w.id = o.endpoint_id
              WHERE w.id = $1 AND w.owner_id = $2
              ORDER BY o.created_at DESC LIMIT 500",
            &[&id, &owner_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Delivery {
            id: r.get(0),
            event_type: r.get(1),
            event_id: r.get(2),
            status: r.get(3),
            attempts: r.get(4),
            last_status: r.get(5),
            last_error: r.get(6),
            created_at: r.get(7),
            delivered_at: r.get(8),
            next_attempt_at: r.get(9),
            payload: r.get(10),
        })
        .collect())
}

/// Deletes endpoint `id` of `owner_id`; `false` when there was none.
pub async fn delete(
    client: &impl GenericClient,
    owner_id: i64,
    id: i64,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND owner_id = $2",
            &[&id, &owner_id],
        )
        .await?;
    Ok(n == 1)
}
