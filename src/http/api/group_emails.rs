//! `POST /api/group-emails`: one message to up to 1000 recipients, each copy composed for its
//! recipient alone (`To:` names only them, their merge fields filled in, their own tokens),
//! grouped under one message in reports. An `Idempotency-Key` header makes a retried request
//! answer what the first got and send nothing more.

use std::collections::{BTreeMap, HashSet};

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::accounts::visibility::Visibility;
use crate::accounts::{self, Role, User};
use crate::base::Base;
use crate::compose::{self, ComposeError, Composition, Idempotency, Recipient};
use crate::http::auth::Caller;
use crate::http::errors::{single_line, ApiError};
use crate::queue::budget::OverBudget;
use crate::queue::templates;

/// Most recipients one request may name.
pub const MAX_RECIPIENTS: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupEmailBody {
    /// A stored template's key; or `subject` and `html` inline.
    pub template: Option<String>,
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: Option<String>,
    /// Reports group inline content under this key (default: derived from the subject).
    pub template_key: Option<String>,
    /// The sender's address; the caller's own by default. Admins may send as a user of their
    /// team.
    pub sender: Option<String>,
    pub sender_name: Option<String>,
    /// At most 1000.
    pub recipients: Vec<RecipientBody>,
    /// `private`, `shared` or `team` (default: the sender's).
    pub visibility: Option<String>,
    /// `opens,clicks`, `opens`, `clicks` or `off`, as `X-Mailtally-Track`.
    pub track: Option<String>,
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
    /// Send at this time instead of now.
    pub send_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientBody {
    pub email: String,
    pub name: Option<String>,
    /// Merge fields of this recipient (`{{first_name}}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

fn unprocessable(msg: impl Into<String>) -> ApiError {
    ApiError::Unprocessable(msg.into())
}

fn header_safe(what: &str, v: &Option<String>) -> Result<(), ApiError> {
    match v {
        Some(v) => single_line(what, v, 998),
        None => Ok(()),
    }
}

fn recipients(body: &[RecipientBody]) -> Result<Vec<Recipient>, ApiError> {
    if body.is_empty() || body.len() > MAX_RECIPIENTS {
        return Err(unprocessable(format!(
            "a group email has 1 to {MAX_RECIPIENTS} recipients, not {}",
            body.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(body.len());
    for (i, r) in body.iter().enumerate() {
        let address: lettre::Address = r.email.trim().parse().map_err(|_| {
            unprocessable(format!(
                "recipients[{i}]: `{}` is not an e-mail address",
                r.email
            ))
        })?;
        if !seen.insert(address.to_string().to_ascii_lowercase()) {
            return Err(unprocessable(format!(
                "recipients[{i}]: `{address}` is listed twice"
            )));
        }
        header_safe(&format!("recipients[{i}].name"), &r.name)?;
        let mut fields = BTreeMap::new();
        for (k, v) in &r.fields {
            let text = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(unprocessable(format!(
                        "recipients[{i}].fields.{k}: a field is a string, number or boolean"
                    )))
                }
            };
            fields.insert(k.clone(), text);
        }
        out.push(Recipient {
            address,
            name: r.name.clone().filter(|n| !n.trim().is_empty()),
            fields,
        });
    }
    Ok(out)
}

/// The user the mail goes out as.
async fn sender(ctx: &Base, caller: &User, asked: Option<&str>) -> Result<User, ApiError> {
    let Some(asked) = asked.filter(|a| !a.eq_ignore_ascii_case(&caller.email)) else {
        return Ok(caller.clone());
    };
    let client = ctx.pool.get().await?;
    match accounts::find_by_email(&**client, asked).await? {
        Some(u)
            if caller.role == Role::Admin && u.team_id.is_some() && u.team_id == caller.team_id =>
        {
            Ok(u)
        }
        _ => Err(ApiError::Forbidden),
    }
}

/// Send one message to up to 1000 recipients, each copy for its recipient alone.
///
/// Each copy is addressed to and merged for its recipient only, with its own tokens.
#[utoipa::path(post, path = "/api/group-emails", tag = "group emails",
    operation_id = "create_group_email",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "a retry with the same key and body answers the first response and sends nothing")),
    request_body = GroupEmailBody,
    responses(
        (status = 202, description = "queued", body = QueuedAnswer),
        (status = 200, description = "the same request was queued before", body = QueuedAnswer),
        (status = 403, description = "sending as someone the caller may not send as"),
        (status = 404, description = "no such template the caller may use"),
        (status = 413, description = "what it would queue is over SUBMISSION_MAX_BYTES"),
        (status = 422, description = "a bad field, recipient or merge, or an Idempotency-Key reused with another body"),
    ))]
pub async fn create(
    ctx: web::Data<Base>,
    rewriter: web::Data<crate::rewrite::Rewriter>,
    caller: Caller,
    req: HttpRequest,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: GroupEmailBody = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let idem = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Idempotency-Key must be 1 to 200 visible characters".into(),
                    )
                })?;
            Some(Idempotency::new(key, &raw))
        }
    };
    let sender = sender(&ctx, &caller.0, body.sender.as_deref()).await?;
    if let Some(idem) = &idem {
        let client = ctx.pool.get().await?;
        if let Some(answer) = compose::earlier_answer(&client, sender.id, idem)
            .await
            .map_err(compose_error)?
        {
            return Ok(HttpResponse::Ok().json(answer));
        }
    }
    let recipients = recipients(&body.recipients)?;
    for (what, v) in [
        ("sender_name", &body.sender_name),
        ("template_key", &body.template_key),
        ("deal", &body.deal),
        ("lead", &body.lead),
        ("project", &body.project),
    ] {
        header_safe(what, v)?;
    }
    let visibility = match body.visibility.as_deref().map(str::to_ascii_lowercase) {
        None => sender.default_visibility.clone(),
        Some(v) if v.parse::<Visibility>().is_ok() => v,
        Some(v) => return Err(unprocessable(format!("unknown visibility `{v}`"))),
    };
    let track = match &body.track {
        None => None,
        Some(t) => Some(
            t.parse::<crate::rewrite::TrackMode>()
                .map_err(|e| unprocessable(e.to_string()))?
                .as_str()
                .to_string(),
        ),
    };

    let client = ctx.pool.get().await?;
    let signature = accounts::signature(&**client, sender.id).await?;
    let mut composition = match (&body.template, &body.subject, &body.html) {
        (Some(key), None, None) => {
            let t = templates::get(&client, &caller.0, key)
                .await?
                .ok_or(ApiError::NotFound("template"))?;
            Composition::new(
                sender.clone(),
                t.key,
                &t.subject,
                &t.html,
                t.text.as_deref(),
                &signature,
            )
        }
        (None, Some(subject), Some(html)) => {
            header_safe("subject", &body.subject)?;
            let key = match &body.template_key {
                Some(k) if !k.trim().is_empty() => k.trim().to_string(),
                _ => crate::rewrite::controls::template_key(subject, &[]),
            };
            Composition::new(
                sender.clone(),
                key,
                subject,
                html,
                body.text.as_deref(),
                &signature,
            )
        }
        _ => {
            return Err(unprocessable(
                "give either `template`, or `subject` and `html` (not both)",
            ))
        }
    };
    drop(client);
    composition.sender_name = body.sender_name.clone();
    composition.visibility = visibility;
    composition.track = track;
    composition.deal = body.deal.clone();
    composition.lead = body.lead.clone();
    composition.project = body.project.clone();
    composition.send_at = body.send_at;

    // Every recipient's merge is checked before anything is written or sent.
    let problems = composition.check(&recipients, 20);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(unprocessable(format!(
            "nothing was sent: {}",
            list.join("; ")
        )));
    }
    // The copies are bounded before any is written (by a lower bound of their size), and
    // again as they are written, before anything is committed.
    let max_bytes = ctx.settings.queue.submission_max_bytes;
    if max_bytes > 0 {
        let merged = composition.merged_bytes(&recipients);
        if merged > max_bytes {
            return Err(ApiError::SubmissionTooLarge(format!(
                "nothing was sent: the copies for {} recipients take at least {merged} bytes, \
                 more than the limit of {max_bytes} bytes per request",
                recipients.len()
            )));
        }
    }
    let bounds = compose::Bounds {
        per_minute: ctx.settings.queue.sender_rate_per_minute,
        max_bytes,
        per_hour: ctx.settings.queue.sender_max_bytes_per_hour,
    };
    let queued = compose::queue_in_chunks(
        &ctx.pool,
        std::sync::Arc::new(composition),
        recipients,
        rewriter.settings.clone(),
        rewriter.keys.clone(),
        bounds,
        idem.as_ref(),
    )
    .await
    .map_err(compose_error)?;
    match queued {
        compose::Queued::Earlier(answer) => Ok(HttpResponse::Ok().json(answer)),
        compose::Queued::New(answer) => Ok(HttpResponse::Accepted().json(answer)),
    }
}

fn compose_error(e: ComposeError) -> ApiError {
    match e {
        ComposeError::Merge { .. }
        | ComposeError::Build(_)
        | ComposeError::IdempotencyMismatch
        | ComposeError::AllSuppressed(_) => ApiError::Unprocessable(e.to_string()),
        ComposeError::TooLarge { .. } => ApiError::SubmissionTooLarge(e.to_string()),
        ComposeError::Pool(p) => ApiError::Unavailable(p),
        ComposeError::Db(d) => ApiError::Db(d),
        ComposeError::Queue(crate::queue::QueueError::Pool(p)) => ApiError::Unavailable(p),
        ComposeError::Queue(crate::queue::QueueError::Db(d)) => ApiError::Db(d),
        ComposeError::Queue(crate::queue::QueueError::OverBudget(over)) => match over {
            OverBudget::Never { .. } => {
                ApiError::SubmissionTooLarge(format!("nothing was sent: {over}"))
            }
            OverBudget::Later { retry_after, .. } => ApiError::BudgetUsedUp {
                retry_after,
                message: format!("nothing was sent: {over}"),
            },
        },
        ComposeError::Queue(q) => ApiError::Unprocessable(q.to_string()),
    }
}
