//! `/api/templates`: stored templates with merge fields (`{{first_name}}`,
//! `{{first_name|there}}`), and `PUT /api/me/signature`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::{single_line, ApiError};
use crate::queue::templates::{self, Template, Written};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// Required to create; on a change, the key of the path if given.
    pub key: Option<String>,
    #[serde(default)]
    pub name: String,
    pub subject: String,
    pub html: String,
    pub text: Option<String>,
}

/// Keys are what reports group by and what `X-Mailtally-Template` names: one header-safe line.
fn check_key(key: &str) -> Result<(), ApiError> {
    if key.trim().is_empty() {
        return Err(ApiError::Unprocessable("a template key is required".into()));
    }
    single_line("key", key, 200)
}

fn check_body(b: &TemplateBody) -> Result<(), ApiError> {
    // A subject of any length is folded when written; only its characters are checked.
    single_line("subject", &b.subject, usize::MAX)?;
    if b.html.trim().is_empty() {
        return Err(ApiError::Unprocessable("the template needs HTML".into()));
    }
    Ok(())
}

fn template(key: String, b: TemplateBody) -> Template {
    Template {
        key,
        name: b.name,
        subject: b.subject,
        html: b.html,
        text: b.text.filter(|t| !t.trim().is_empty()),
        owner_id: None,
        team_id: None,
        updated_at: None,
    }
}

/// Create a template (or claim a key known only from mail sent over SMTP).
#[utoipa::path(post, path = "/api/templates", tag = "templates", operation_id = "create_template",
    request_body = TemplateBody,
    responses(
        (status = 201, description = "created", body = Template),
        (status = 409, description = "the key is taken"),
        (status = 422, description = "no key, a bad key or subject, no HTML"),
    ))]
pub async fn create(
    ctx: web::Data<Base>,
    caller: Caller,
    body: web::Json<TemplateBody>,
) -> Result<HttpResponse, ApiError> {
    let mut body = body.into_inner();
    let key = body
        .key
        .take()
        .ok_or_else(|| ApiError::Unprocessable("`key` is required".into()))?;
    check_key(&key)?;
    check_body(&body)?;
    let t = template(key.trim().to_string(), body);
    let mut client = ctx.pool.get().await?;
    match templates::write(&mut client, &caller.0, &t, true).await? {
        Written::Created | Written::Updated => {}
        Written::Taken | Written::NotFound => {
            return Err(ApiError::Conflict(format!(
                "template `{}` exists already",
                t.key
            )))
        }
    }
    let stored = templates::get(&client, &caller.0, &t.key).await?;
    Ok(HttpResponse::Created().json(stored))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}

/// Templates with content the caller may use (their own and their team's).
#[utoipa::path(get, path = "/api/templates", tag = "templates", operation_id = "list_templates",
    responses((status = 200, description = "OK", body = TemplateList)))]
pub async fn list(ctx: web::Data<Base>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let templates = templates::list(&client, &caller.0).await?;
    Ok(HttpResponse::Ok().json(TemplateList { templates }))
}

/// One template.
#[utoipa::path(get, path = "/api/templates/{key}", tag = "templates", operation_id = "get_template",
    params(("key" = String, Path, description = "the template key")),
    responses(
        (status = 200, description = "OK", body = Template),
        (status = 404, description = "no such template the caller may use"),
    ))]
pub async fn get(
    ctx: web::Data<Base>,
    caller: Caller,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    match templates::get(&client, &caller.0, &key).await? {
        Some(t) => Ok(HttpResponse::Ok().json(t)),
        None => Err(ApiError::NotFound("template")),
    }
}

/// Change a template (its owner, or an admin of its team).
#[utoipa::path(put, path = "/api/templates/{key}", tag = "templates",
    operation_id = "update_template",
    params(("key" = String, Path, description = "the template key")),
    request_body = TemplateBody,
    responses(
        (status = 200, description = "changed", body = Template),
        (status = 404, description = "no such template the caller may change"),
        (status = 422, description = "a bad subject, no HTML, or another key in the body"),
    ))]
pub async fn update(
    ctx: web::Data<Base>,
    caller: Caller,
    key: web::Path<String>,
    body: web::Json<TemplateBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.key.as_deref().is_some_and(|k| k != key.as_str()) {
        return Err(ApiError::Unprocessable(
            "`key` in the body differs from the one in the path".into(),
        ));
    }
    check_body(&body)?;
    let t = template(key.into_inner(), body);
    let mut client = ctx.pool.get().await?;
    match templates::write(&mut client, &caller.0, &t, false).await? {
        Written::Updated | Written::Created => {}
        // Not revealing templates the caller may not see.
        Written::Taken | Written::NotFound => return Err(ApiError::NotFound("template")),
    }
    let stored = templates::get(&client, &caller.0, &t.key).await?;
    Ok(HttpResponse::Ok().json(stored))
}

/// Remove a template's content (the key stays in reports).
#[utoipa::path(delete, path = "/api/templates/{key}", tag = "templates",
    operation_id = "delete_template",
    params(("key" = String, Path, description = "the template key")),
    responses(
        (status = 204, description = "removed"),
        (status = 404, description = "no such template the caller may change"),
    ))]
pub async fn delete(
    ctx: web::Data<Base>,
    caller: Caller,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    if templates::delete(&client, &caller.0, &key).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("template"))
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureBody {
    pub html: Option<String>,
    pub text: Option<String>,
}

/// The caller's signature, appended to what they send through the API.
#[utoipa::path(put, path = "/api/me/signature", tag = "templates", operation_id = "put_signature",
    request_body = SignatureBody,
    responses((status = 200, description = "stored; the answer is the signature", body = SignatureBody)))]
pub async fn put_signature(
    ctx: web::Data<Base>,
    caller: Caller,
    body: web::Json<SignatureBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let client = ctx.pool.get().await?;
    crate::accounts::set_signature(&**client, caller.0.id, b.html.as_deref(), b.text.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(b))
}
