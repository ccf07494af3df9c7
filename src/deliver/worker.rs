//! One delivery worker: claim a batch, attempt each copy, record the outcomes, repeat; sleep
//! until woken by new mail or the poll interval.

use std::sync::Arc;
use std::time::Duration;

use super::upstream::{Attempt, Transport};
use super::{BATCH, LEASE, METRICS, POLL_INTERVAL};
use crate::base::Base;
use crate::queue::{self, retry, Claimed, Outcome};

pub(super) async fn run(ctx: Base, transport: Arc<Transport>, owner: Arc<str>) {
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        match queue::claim(&ctx.pool, &owner, LEASE, BATCH).await {
            Ok(batch) if !batch.is_empty() => {
                let full = batch.len() as i64 == BATCH;
                deliver_batch(&ctx, &transport, batch).await;
                // More may be due right away; another worker may be asleep, wake it too.
                if full {
                    queue::QUEUED.notify_one();
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim copies");
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = queue::QUEUED.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

async fn deliver_batch(ctx: &Base, transport: &Transport, batch: Vec<Claimed>) {
    for claimed in &batch {
        let attempt = transport
            .send(&claimed.envelope_from, &claimed.recipient, &claimed.body)
            .await;
        let outcome = outcome_of(ctx, claimed, attempt, transport.via());
        // Recorded at once rather than per batch: a crash then re-sends at most the copy in
        // flight per worker, not the batch.
        record(ctx, transport, claimed, outcome).await;
    }
}

async fn record(ctx: &Base, transport: &Transport, claimed: &Claimed, outcome: Outcome) {
    let outcomes = [(claimed, outcome)];
    // The outcome must be recorded even if PostgreSQL blinks: retry for a while before giving
    // up (the lease then expires and the copy is sent again).
    let mut wait = Duration::from_millis(200);
    for _ in 0..8 {
        match queue::record(&ctx.pool, &outcomes).await {
            Ok(recorded) => {
                let [(claimed, outcome)] = &outcomes;
                if recorded.is_empty() {
                    tracing::warn!(copy = %claimed.copy_id, "lease lost before the outcome was recorded");
                    return;
                }
                METRICS
                    .attempts_total
                    .with_label_values(&[outcome.status()])
                    .inc();
                if let Outcome::Bounced { error } = outcome {
                    suppress_refused(ctx, claimed, error).await;
                }
                if matches!(outcome, Outcome::Delivered { .. }) {
                    let latency = (chrono::Utc::now() - claimed.queued_at)
                        .to_std()
                        .unwrap_or_default();
                    METRICS
                        .latency_seconds
                        .with_label_values(&[transport.via()])
                        .observe(latency.as_secs_f64());
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a delivery outcome; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!(copy = %claimed.copy_id, "delivery outcome not recorded; the copy will be retried");
}

/// A permanent refusal puts the address on the sender's suppression list; a failure here is
/// logged, not retried: the bounce itself is recorded.
async fn suppress_refused(ctx: &Base, claimed: &Claimed, error: &str) {
    let result = match ctx.pool.get().await {
        Ok(client) => crate::deliverability::record::refused_at_send(
            &**client,
            claimed.message_id,
            claimed.copy_id,
            &claimed.recipient,
            error,
        )
        .await
        .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::warn!(copy = %claimed.copy_id, error = %e, "cannot add a bounced address to the suppression list");
    }
}

fn outcome_of(ctx: &Base, claimed: &Claimed, attempt: Attempt, via: &'static str) -> Outcome {
    match attempt {
        Attempt::Delivered => Outcome::Delivered { via },
        Attempt::Permanent(error) => Outcome::Bounced { error },
        Attempt::Transient(error) => {
            let age = (chrono::Utc::now() - claimed.queued_at)
                .to_std()
                .unwrap_or_default();
            let attempts = u32::try_from(claimed.attempts).unwrap_or(0);
            match retry::next_delay(
                &ctx.settings.deliver.retry_schedule,
                attempts,
                age,
                ctx.settings.deliver.max_queue_age,
            ) {
                Some(retry_in) => Outcome::Deferred { error, retry_in },
                None => Outcome::Bounced {
                    error: format!("gave up after {attempts} attempts: {error}"),
                },
            }
        }
    }
}
