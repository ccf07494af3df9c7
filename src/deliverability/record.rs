//! What a bounce or a complaint read from a sender's mailbox does: each reported recipient's
//! copy (a copy of the mailbox owner's own mail, matched by the returned Message-ID and the
//! recipient) gets an event, and the address goes on the suppression list: at once for a hard
//! bounce or a complaint, after SOFT_BOUNCE_LIMIT soft bounces within SOFT_BOUNCE_WINDOW.
//!
//! A permanent failure (5.x.x) is a `bounced` event with reason `hard`; a failure on a
//! transient status (4.x.x) is `bounced` with reason `soft`, since the message was not
//! delivered; a `delayed` notice is a `deferred` event (the remote server is still trying).

use std::time::Duration;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::report::{Kind, Report};
use super::suppression::{self, Reason, Scope};

/// When the soft-bounce count suppresses an address.
#[derive(Debug, Clone, Copy)]
pub struct SoftBounces {
    pub limit: u32,
    pub window: Duration,
}

/// What one report came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Events written (0 when the report was read before).
    pub events: u64,
    /// Addresses put on the suppression list.
    pub suppressed: Vec<String>,
    /// Recipients (or the whole report) that matched no copy of the owner's.
    pub unmatched: usize,
}

/// One reported recipient matched to its copy.
struct Hit<'a> {
    copy: &'a Copy,
    kind: Kind,
    action: Option<&'a str>,
    status: Option<&'a str>,
    diagnostic: Option<&'a str>,
}

struct Copy {
    id: Uuid,
    message: Uuid,
    recipient: String,
    scope: Scope,
}

/// The owner's copies that `report` is about: those of the returned Message-ID.
async fn candidates(
    client: &impl GenericClient,
    owner_id: i64,
    report: &Report,
) -> Result<Vec<Copy>, tokio_postgres::Error> {
    let Some(mid) = &report.original_message_id else {
        return Ok(Vec::new());
    };
    let rows = client
        .query(
            "SELECT c.id, c.message_id, c.recipient, m.sender_id, m.team_id FROM copies c
             JOIN messages m ON m.id = c.message_id
             WHERE m.sender_id = $1 AND (c.header_message_id = $2 OR m.header_message_id = $2)",
            &[&owner_id, mid],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Copy {
            id: r.get(0),
            message: r.get(1),
            recipient: r.get(2),
            scope: Scope::for_sender(r.get(3), r.get(4)),
        })
        .collect())
}

/// Records `report`, read from message `key` of `owner_id`'s mailbox (arrived `at`).
pub async fn record(
    client: &impl GenericClient,
    owner_id: i64,
    report: &Report,
    key: &str,
    at: chrono::DateTime<chrono::Utc>,
    soft: SoftBounces,
) -> Result<Recorded, tokio_postgres::Error> {
    let copies = candidates(client, owner_id, report).await?;
    let mut done = Recorded::default();
    // (copy, kind, action, status, diagnostic) per reported recipient; a complaint that names
    // nobody (feedback loops redact) is about the one copy of its message, if there is one.
    let mut hits: Vec<Hit> = Vec::new();
    if report.recipients.is_empty() {
        match copies.as_slice() {
            [only] => hits.push(Hit {
                copy: only,
                kind: report.kind,
                action: None,
                status: None,
                diagnostic: None,
            }),
            _ => done.unmatched += 1,
        }
    }
    for r in &report.recipients {
        match copies
            .iter()
            .find(|c| c.recipient.eq_ignore_ascii_case(&r.address))
        {
            Some(c) => hits.push(Hit {
                copy: c,
                kind: r.kind,
                action: r.action.as_deref(),
                status: r.status.as_deref(),
                diagnostic: r.diagnostic.as_deref(),
            }),
            None => done.unmatched += 1,
        }
    }
    for Hit {
        copy,
        kind,
        action,
        status,
        diagnostic,
    } in hits
    {
        let delayed = action == Some("delayed");
        let (event, reason) = match kind {
            Kind::HardBounce => ("bounced", "hard".to_string()),
            Kind::SoftBounce if delayed => ("deferred", "soft".to_string()),
            Kind::SoftBounce => ("bounced", "soft".to_string()),
            Kind::Complaint => (
                "complaint",
                report
                    .feedback_type
                    .clone()
                    .unwrap_or_else(|| "abuse".into()),
            ),
        };
        // A bounce read from prose, not from a delivery-status part, says so: `(qmail)`.
        let shape = match report.format {
            super::Format::NonStandard(name) => Some(format!("({name})")),
            _ => None,
        };
        let detail: String = [status, diagnostic, shape.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        // Derived from the mailbox message, the copy and the kind: the same report read again
        // (a new UIDVALIDITY, another node) is one event.
        let id = Uuid::new_v5(
            &copy.id,
            format!("{key}\u{0}{event}\u{0}{reason}").as_bytes(),
        );
        done.events += client
            .execute(
                crate::events::sql::INSERT_REPORTED,
                &[&id, &at, &copy.message, &copy.id, &event, &reason, &detail],
            )
            .await?;
        let suppress = match kind {
            Kind::HardBounce => Some(Reason::HardBounce),
            Kind::Complaint => Some(Reason::Complaint),
            Kind::SoftBounce if soft.limit > 0 => {
                let n = soft_bounces(client, copy, soft.window).await?;
                (n >= i64::from(soft.limit)).then_some(Reason::SoftBounce)
            }
            Kind::SoftBounce => None,
        };
        if let Some(reason) = suppress {
            let detail = (!detail.is_empty()).then_some(detail.as_str());
            if suppression::add(
                client,
                copy.scope,
                &copy.recipient,
                reason,
                Some(copy.id),
                detail,
                None,
            )
            .await?
            {
                done.suppressed.push(suppression::normal(&copy.recipient));
            }
        }
    }
    Ok(done)
}

/// Soft bounces of `copy`'s address in its scope within `window` (this one included).
async fn soft_bounces(
    client: &impl GenericClient,
    copy: &Copy,
    window: Duration,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FROM events e
             JOIN copies c ON c.id = e.copy_id JOIN messages m ON m.id = c.message_id
             WHERE lower(c.recipient) = lower($1)
               AND m.team_id IS NOT DISTINCT FROM $2
               AND ($2 IS NOT NULL OR m.sender_id = $3)
               AND e.kind IN ('bounced', 'deferred') AND e.reason = 'soft'
               AND e.occurred_at > now() - make_interval(secs => $4)",
            &[
                &copy.recipient,
                &copy.scope.team_id,
                &copy.scope.owner_id,
                &window.as_secs_f64(),
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// An upstream's permanent refusal at send time: the address goes on the list of the message's
/// scope as a hard bounce (the `bounced` event is the queue's, written with the outcome).
pub async fn refused_at_send(
    client: &impl GenericClient,
    message: Uuid,
    copy: Uuid,
    recipient: &str,
    error: &str,
) -> Result<bool, tokio_postgres::Error> {
    let Some(row) = client
        .query_opt(
            "SELECT sender_id, team_id FROM messages WHERE id = $1",
            &[&message],
        )
        .await?
    else {
        return Ok(false);
    };
    let scope = Scope::for_sender(row.get(0), row.get(1));
    let added = suppression::add(
        client,
        scope,
        recipient,
        Reason::HardBounce,
        Some(copy),
        Some(error),
        None,
    )
    .await?;
    if added {
        super::METRICS
            .suppressed
            .with_label_values(&[Reason::HardBounce.as_str()])
            .inc();
    }
    Ok(added)
}
