//! The dispatcher: claims due outbox rows (SKIP LOCKED, with a lease), re-checks clicks after
//! their hold, POSTs each notification signed as Standard Webhooks says, and records the
//! outcome: delivered, retried with backoff for up to `WEBHOOK_MAX_AGE`, or given up. An endpoint
//! failing `WEBHOOK_DISABLE_AFTER` times in a row is disabled.
//!
//! Every connection goes through the address policy of [`crate::netguard`]: names through its
//! resolver, address literals checked here, no proxy from the environment, no redirects. What
//! is recorded of a failure is its class, never the receiver's bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use thiserror::Error;
use uuid::Uuid;

use super::metrics::{DisableReason, WebhookResult, NOTIFY};
use super::signing;
use crate::base::Base;
use crate::netguard::{guard_error_in, AddressPolicy, GuardError, GuardedResolver};

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
pub async fn run(ctx: Base) {
    let policy = AddressPolicy::from_settings(&ctx.settings);
    let http = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        // A redirect would lead to a URL nobody checked; a proxy would connect for us.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver {
            policy: policy.clone(),
        }))
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
        let pause = match step(&ctx, &http, &policy).await {
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

async fn claim(ctx: &Base) -> Result<Vec<Claimed>, DispatchError> {
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
async fn click_is_machine(ctx: &Base, row: &Claimed) -> Result<bool, DispatchError> {
    let client = ctx.pool.get().await?;
    let sql = format!(
        "SELECT final_class FROM ({}) classified WHERE id = $2",
        crate::classify::hindsight::classified_events_sql("SELECT $1::uuid")
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

async fn step(
    ctx: &Base,
    http: &reqwest::Client,
    policy: &AddressPolicy,
) -> Result<usize, DispatchError> {
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
        sends.push(deliver(ctx, http, policy, row));
    }
    for result in futures_util::future::join_all(sends).await {
        result?;
    }
    Ok(n)
}

/// Why a delivery failed, as recorded and shown: a class, never the URL (it may hold
/// credentials) nor anything the receiver sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// The receiver answered with a status outside 2xx (the number only, not its reason text).
    HttpStatus(u16),
    /// The address policy refused every address of the host.
    NotAllowed(crate::netguard::Blocked),
    Dns,
    ConnectRefused,
    Connect,
    Timeout,
    Tls,
    /// The receiver closed the connection or answered something that is not HTTP.
    InvalidResponse,
    InvalidUrl,
}

impl std::fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryFailure::HttpStatus(code) => write!(f, "HTTP status {code}"),
            DeliveryFailure::NotAllowed(class) => {
                write!(f, "address not allowed: the host is {class}")
            }
            DeliveryFailure::Dns => f.write_str("DNS lookup failed"),
            DeliveryFailure::ConnectRefused => f.write_str("connection refused"),
            DeliveryFailure::Connect => f.write_str("connection failed"),
            DeliveryFailure::Timeout => f.write_str("timeout"),
            DeliveryFailure::Tls => f.write_str("TLS handshake failed"),
            DeliveryFailure::InvalidResponse => f.write_str("no valid HTTP response"),
            DeliveryFailure::InvalidUrl => f.write_str("invalid URL"),
        }
    }
}

impl DeliveryFailure {
    /// The result label of the delivery metrics.
    fn result(self) -> WebhookResult {
        match self {
            DeliveryFailure::HttpStatus(_) => WebhookResult::FailedHttp,
            DeliveryFailure::NotAllowed(_) => WebhookResult::FailedNotAllowed,
            _ => WebhookResult::FailedNetwork,
        }
    }
}

async fn deliver(
    ctx: &Base,
    http: &reqwest::Client,
    policy: &AddressPolicy,
    row: Claimed,
) -> Result<(), DispatchError> {
    let body = serde_json::to_vec(&row.payload).unwrap_or_default();
    let id = format!("msg_{}", row.id.simple());
    let timestamp = Utc::now().timestamp();
    let signature = signing::sign(&row.secret, &id, timestamp, &body);
    let started = Instant::now();
    let sent = match checked_url(policy, &row.url) {
        Ok(url) => http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| classify(&e)),
        Err(failure) => Err(failure),
    };
    let (result, status, error) = match sent {
        Ok(resp) if resp.status().is_success() => {
            (WebhookResult::Delivered, Some(resp.status().as_u16()), None)
        }
        Ok(resp) => {
            let failure = DeliveryFailure::HttpStatus(resp.status().as_u16());
            (
                failure.result(),
                Some(resp.status().as_u16()),
                Some(failure),
            )
        }
        Err(failure) => (failure.result(), None, Some(failure)),
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
    let error = error.map(|f| f.to_string()).unwrap_or_default();
    failed(ctx, &row, status, error).await
}

/// The URL to post to, when its host may be reached: address literals are checked here,
/// since reqwest connects to them without the resolver.
fn checked_url(policy: &AddressPolicy, url: &str) -> Result<reqwest::Url, DeliveryFailure> {
    let url = reqwest::Url::parse(url).map_err(|_| DeliveryFailure::InvalidUrl)?;
    match policy.check_url_literal(&url) {
        Ok(()) => Ok(url),
        Err(GuardError::NotAllowed(class)) => Err(DeliveryFailure::NotAllowed(class)),
        Err(_) => Err(DeliveryFailure::InvalidUrl),
    }
}

/// The class of a reqwest error, found in its chain of causes.
pub fn classify(e: &reqwest::Error) -> DeliveryFailure {
    if e.is_timeout() {
        return DeliveryFailure::Timeout;
    }
    if let Some(guard) = guard_error_in(e) {
        return match guard {
            GuardError::NotAllowed(class) => DeliveryFailure::NotAllowed(*class),
            GuardError::Dns(_) | GuardError::DnsTimeout | GuardError::NoAddress => {
                DeliveryFailure::Dns
            }
            GuardError::Refused => DeliveryFailure::ConnectRefused,
            GuardError::ConnectTimeout => DeliveryFailure::Timeout,
            GuardError::Connect(_) => DeliveryFailure::Connect,
        };
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = next {
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return DeliveryFailure::Tls;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return DeliveryFailure::ConnectRefused,
                std::io::ErrorKind::TimedOut => return DeliveryFailure::Timeout,
                _ => {}
            }
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return DeliveryFailure::Tls;
            }
        }
        next = cause.source();
    }
    if e.is_connect() {
        DeliveryFailure::Connect
    } else {
        // Connected and sent: the receiver closed or answered something that is not HTTP.
        DeliveryFailure::InvalidResponse
    }
}

async fn failed(
    ctx: &Base,
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
    if failures >= ctx.settings.notify.disable_after as i32 {
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
    let schedule = &ctx.settings.notify.retry_schedule;
    let index = (row.attempts.max(1) as usize - 1).min(schedule.len() - 1);
    let delay = schedule[index];
    let age = Utc::now() - row.created_at;
    let give_up = age.to_std().unwrap_or_default() + delay > ctx.settings.notify.max_age;
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
    ctx: &Base,
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
