//! The dispatcher: claims due outbox rows (SKIP LOCKED, with a lease), re-checks clicks after
//! their hold, POSTs each notification signed as Standard Webhooks says, and records the
//! outcome: delivered, retried with backoff for up to `WEBHOOK_MAX_AGE`, or given up. An endpoint
//! failing `WEBHOOK_DISABLE_AFTER` times in a row is disabled.

use std::time::{Duration, Instant};

use chrono::Utc;
use thiserror::Error;
use uuid::Uuid;

use super::metrics::{DisableReason, WebhookResult, NOTIFY};
use super::signing;
use crate::context::Context;

const LEASE_SECONDS: f64 = 60.0;
const CLAIM: i64 = 32;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum DispatchError {
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}

struct Claimed {
    id: Uuid,
    attempts: i32,
    event_type: String,
    event_id: Uuid,
    copy_id: Uuid,
    payload: serde_json::Value,
    created_at: chrono::DateTime<Utc>,
    endpoint_id: i64,
    url: String,
    secret: String,
    include_machine: bool,
}

/// Runs until shutdown.
pub async fn run(ctx: Context) {
    let http = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mailtally-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are off");
            return;
        }
    };
    loop {
        let pause = match step(&ctx, &http).await {
            Ok(n) if n as i64 >= CLAIM => Duration::ZERO,
            Ok(_) => Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(error = %e, "webhook dispatcher failed; retrying");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn claim(ctx: &Context) -> Result<Vec<Claimed>, DispatchError> {
    let client = ctx.pool.get().await?;
    let rows = client
        .query(
            "UPDATE webhook_outbox o
                SET lease_until = now() + make_interval(secs => $1), attempts = o.attempts + 1
               FROM webhook_endpoints w
              WHERE o.id IN (SELECT id FROM webhook_outbox
                              WHERE status = 'pending' AND next_attempt_at <= now()
                                AND not_before <= now()
                                AND (lease_until IS NULL OR lease_until < now())
                              ORDER BY next_attempt_at LIMIT $2
                              FOR UPDATE SKIP LOCKED)
                AND w.id = o.endpoint_id
          RETURNING o.id, o.attempts, o.event_type, o.event_id, o.copy_id, o.payload, o.created_at,
                    w.id, w.url, w.secret, w.include_machine, w.disabled_at IS NOT NULL",
            &[&LEASE_SECONDS, &CLAIM],
        )
        .await?;
    let mut claimed = Vec::new();
    for r in rows {
        let row = Claimed {
            id: r.get(0),
            attempts: r.get(1),
            event_type: r.get(2),
            event_id: r.get(3),
            copy_id: r.get(4),
            payload: r.get(5),
            created_at: r.get(6),
            endpoint_id: r.get(7),
            url: r.get(8),
            secret: r.get(9),
            include_machine: r.get(10),
        };
        if r.get::<_, bool>(11) {
            finish(ctx, &row, "dropped", None, Some("endpoint disabled")).await?;
            continue;
        }
        claimed.push(row);
    }
    Ok(claimed)
}

/// Whether a click, seen after its hold, turned out to be a machine: the class the reports
/// give it (ingest class plus hindsight: sweeps, prefetch) is not a person's.
async fn click_is_machine(ctx: &Context, row: &Claimed) -> Result<bool, DispatchError> {
    let client = ctx.pool.get().await?;
    let sql = format!(
        "SELECT final_class FROM ({}) classified WHERE id = $2",
        crate::insights::hindsight::classified_events_sql("SELECT $1::uuid")
    );
    let found = client
        .query_opt(&sql, &[&row.copy_id, &row.event_id])
        .await?;
    Ok(match found {
        Some(r) => !matches!(r.get::<_, Option<&str>>(0), Some("human") | Some("proxy")),
        // The event is gone (its message was deleted): nobody is told.
        None => true,
    })
}

async fn step(ctx: &Context, http: &reqwest::Client) -> Result<usize, DispatchError> {
    let claimed = claim(ctx).await?;
    let n = claimed.len();
    let mut sends = Vec::new();
    for row in claimed {
        if row.event_type == "click" && !row.include_machine && click_is_machine(ctx, &row).await? {
            NOTIFY
                .deliveries
                .with_label_values(&[WebhookResult::Dropped.label()])
                .inc();
            finish(
                ctx,
                &row,
                "dropped",
                None,
                Some("machine click (scanner sweep)"),
            )
            .await?;
            continue;
        }
        sends.push(deliver(ctx, http, row));
    }
    for result in futures_util::future::join_all(sends).await {
        result?;
    }
    Ok(n)
}

async fn deliver(ctx: &Context, http: &reqwest::Client, row: Claimed) -> Result<(), DispatchError> {
    let body = serde_json::to_vec(&row.payload).unwrap_or_default();
    let id = format!("msg_{}", row.id.simple());
    let timestamp = Utc::now().timestamp();
    let signature = signing::sign(&row.secret, &id, timestamp, &body);
    let started = Instant::now();
    let sent = http
        .post(&row.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let (result, status, error) = match sent {
        Ok(resp) if resp.status().is_success() => {
            (WebhookResult::Delivered, Some(resp.status().as_u16()), None)
        }
        Ok(resp) => (
            WebhookResult::FailedHttp,
            Some(resp.status().as_u16()),
            Some(format!("HTTP {}", resp.status())),
        ),
        // Never the URL in the error text kept in the database: it may hold credentials.
        Err(e) => (WebhookResult::FailedNetwork, None, Some(describe(&e))),
    };
    NOTIFY
        .delivery_duration
        .with_label_values(&[result.label()])
        .observe(started.elapsed().as_secs_f64());
    NOTIFY.deliveries.with_label_values(&[result.label()]).inc();
    if result == WebhookResult::Delivered {
        finish(ctx, &row, "delivered", status, None).await?;
        let client = ctx.pool.get().await?;
        client
            .execute(
                "UPDATE webhook_endpoints SET failures_in_row = 0 WHERE id = $1",
                &[&row.endpoint_id],
            )
            .await?;
        return Ok(());
    }
    failed(ctx, &row, status, error.unwrap_or_default()).await
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_request() || e.is_body() {
        "request failed".into()
    } else {
        "HTTP error".into()
    }
}

async fn failed(
    ctx: &Context,
    row: &Claimed,
    status: Option<u16>,
    error: String,
) -> Result<(), DispatchError> {
    let client = ctx.pool.get().await?;
    let failures: i32 = client
        .query_one(
            "UPDATE webhook_endpoints SET failures_in_row = failures_in_row + 1 WHERE id = $1
             RETURNING failures_in_row",
            &[&row.endpoint_id],
        )
        .await?
        .get(0);
    if failures >= ctx.settings.webhook_disable_after as i32 {
        let disabled = client
            .execute(
                "UPDATE webhook_endpoints SET disabled_at = now(),
                        disabled_reason = 'failed ' || failures_in_row || ' times in a row'
                  WHERE id = $1 AND disabled_at IS NULL",
                &[&row.endpoint_id],
            )
            .await?;
        if disabled > 0 {
            NOTIFY
                .endpoints_disabled
                .with_label_values(&[DisableReason::Failures.label()])
                .inc();
            tracing::warn!(
                endpoint = row.endpoint_id,
                failures,
                "webhook endpoint disabled"
            );
        }
    }
    let schedule = &ctx.settings.webhook_retry_schedule;
    let index = (row.attempts.max(1) as usize - 1).min(schedule.len() - 1);
    let delay = schedule[index];
    let age = Utc::now() - row.created_at;
    let give_up = age.to_std().unwrap_or_default() + delay > ctx.settings.webhook_max_age;
    let status = status.map(i32::from);
    if give_up {
        NOTIFY
            .deliveries
            .with_label_values(&[WebhookResult::GaveUp.label()])
            .inc();
        client
            .execute(
                "UPDATE webhook_outbox SET status = 'failed', lease_until = NULL,
                        last_status = $3, last_error = $4
                  WHERE id = $1 AND attempts = $2 AND status = 'pending'",
                &[&row.id, &row.attempts, &status, &error],
            )
            .await?;
    } else {
        client
            .execute(
                "UPDATE webhook_outbox SET lease_until = NULL, last_status = $3, last_error = $4,
                        next_attempt_at = now() + make_interval(secs => $5)
                  WHERE id = $1 AND attempts = $2 AND status = 'pending'",
                &[
                    &row.id,
                    &row.attempts,
                    &status,
                    &error,
                    &delay.as_secs_f64(),
                ],
            )
            .await?;
    }
    Ok(())
}

/// Records a final outcome, only if this worker's claim is still the current one.
async fn finish(
    ctx: &Context,
    row: &Claimed,
    status: &str,
    http_status: Option<u16>,
    error: Option<&str>,
) -> Result<(), DispatchError> {
    let client = ctx.pool.get().await?;
    client
        .execute(
            "UPDATE webhook_outbox SET status = $3, lease_until = NULL, last_status = $4,
                    last_error = $5,
                    delivered_at = CASE WHEN $3 = 'delivered' THEN now() END
              WHERE id = $1 AND attempts = $2 AND status = 'pending'",
            &[
                &row.id,
                &row.attempts,
                &status,
                &http_status.map(i32::from),
                &error,
            ],
        )
        .await?;
    tracing::debug!(copy = %row.copy_id, outbox = %row.id, status, "webhook notification finished");
    Ok(())
}
