//! `/api/automations` (follow-ups when a recipient stays silent) and `POST /api/unsubscribes`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use crate::base::Base;
use crate::followup::rules::Automation;
use crate::followup::rules::{self, NewAutomation, CONDITIONS};
use crate::http::auth::Caller;
use crate::http::errors::ApiError;
use crate::queue::templates;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutomationBody {
    #[serde(default)]
    pub name: String,
    /// Copies of this template start the automation.
    pub trigger_template: String,
    /// `no_open` (no open by a person), `no_click`, `no_reply`.
    pub condition: String,
    /// The window after delivery; give one of the two.
    pub within_hours: Option<f64>,
    pub within_seconds: Option<i64>,
    /// The template sent as the follow-up.
    pub followup_template: String,
    /// Send at this hour (0-23) of the recipient's day: their `time_zone` field, else UTC.
    pub send_hour: Option<i16>,
}

fn window_seconds(b: &AutomationBody) -> Result<i32, ApiError> {
    let seconds = match (b.within_hours, b.within_seconds) {
        (Some(h), None) if h.is_finite() => (h * 3600.0).round() as i64,
        (None, Some(s)) => s,
        _ => {
            return Err(ApiError::Unprocessable(
                "give the window as `within_hours` or `within_seconds`".into(),
            ))
        }
    };
    match i32::try_from(seconds) {
        Ok(s) if s > 0 && s <= 365 * 86400 => Ok(s),
        _ => Err(ApiError::Unprocessable(
            "the window is between 1 second and a year".into(),
        )),
    }
}

/// Follow up when a recipient of a template does not open, click or reply within a window.
///
/// The follow-up goes in the same thread, at `send_hour` of the recipient's day if given.
#[utoipa::path(post, path = "/api/automations", tag = "automations",
    operation_id = "create_automation",
    request_body = AutomationBody,
    responses(
        (status = 201, description = "created", body = Automation),
        (status = 422, description = "an unknown condition, a bad window or hour, no such follow-up template"),
    ))]
pub async fn create(
    ctx: web::Data<Base>,
    caller: Caller,
    body: web::Json<AutomationBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if !CONDITIONS.contains(&b.condition.as_str()) {
        return Err(ApiError::Unprocessable(format!(
            "condition is one of {}, not `{}`",
            CONDITIONS.join(", "),
            b.condition
        )));
    }
    if b.send_hour.is_some_and(|h| !(0..=23).contains(&h)) {
        return Err(ApiError::Unprocessable("send_hour is 0 to 23".into()));
    }
    if b.trigger_template.trim().is_empty() || b.trigger_template.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "trigger_template is a template key".into(),
        ));
    }
    let window = window_seconds(&b)?;
    let client = ctx.pool.get().await?;
    if templates::get(&client, &caller.0, &b.followup_template)
        .await?
        .is_none()
    {
        return Err(ApiError::Unprocessable(format!(
            "no template `{}` with content to send as the follow-up",
            b.followup_template
        )));
    }
    // The trigger may name a key no mail has used yet: it is the caller's scope's.
    templates::ensure_key(&client, &caller.0, b.trigger_template.trim()).await?;
    let a = rules::create(
        &client,
        &NewAutomation {
            owner_id: caller.0.id,
            name: &b.name,
            trigger_template: b.trigger_template.trim(),
            condition: &b.condition,
            window_seconds: window,
            followup_template: &b.followup_template,
            send_hour: b.send_hour,
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(a))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AutomationList {
    pub automations: Vec<Automation>,
}

/// The caller's automations.
#[utoipa::path(get, path = "/api/automations", tag = "automations",
    operation_id = "list_automations",
    responses((status = 200, description = "OK", body = AutomationList)))]
pub async fn list(ctx: web::Data<Base>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let automations = rules::list(&client, caller.0.id).await?;
    Ok(HttpResponse::Ok().json(AutomationList { automations }))
}

/// Stop an automation and cancel its pending follow-ups.
#[utoipa::path(delete, path = "/api/automations/{id}", tag = "automations",
    operation_id = "delete_automation",
    params(("id" = i64, Path, description = "the automation's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such automation of the caller's"),
    ))]
pub async fn delete(
    ctx: web::Data<Base>,
    caller: Caller,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    if rules::delete(&client, caller.0.id, id.into_inner()).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("automation"))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeBody {
    pub recipient: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Unsubscribed {
    pub recipient: String,
    /// Pending follow-ups to that recipient that will not be sent.
    pub cancelled_followups: u64,
}

/// Record an unsubscribe: no follow-up goes to this recipient.
///
/// Records that a recipient unsubscribed: no follow-up of mail the caller acts for (their own,
/// their team's team or shared mail) goes to them any more. Unknown addresses and addresses mailed only by others get the same answer.
#[utoipa::path(post, path = "/api/unsubscribes", tag = "automations",
    operation_id = "unsubscribe",
    request_body = UnsubscribeBody,
    responses(
        (status = 200, description = "recorded", body = Unsubscribed),
        (status = 422, description = "not an e-mail address"),
    ))]
pub async fn unsubscribe(
    ctx: web::Data<Base>,
    caller: Caller,
    body: web::Json<UnsubscribeBody>,
) -> Result<HttpResponse, ApiError> {
    let r = body.recipient.trim();
    if r.parse::<lettre::Address>().is_err() {
        return Err(ApiError::Unprocessable(format!(
            "`{r}` is not an e-mail address"
        )));
    }
    let client = ctx.pool.get().await?;
    let cancelled = rules::unsubscribe(&client, caller.viewer(), r).await?;
    Ok(HttpResponse::Ok().json(Unsubscribed {
        recipient: r.to_string(),
        cancelled_followups: cancelled,
    }))
}
