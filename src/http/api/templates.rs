//! `/api/templates`: stored templates with merge fields (`{{first_name}}`,
//! `{{first_name|there}}`), and `PUT /api/me/signature`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::{single_line, ApiError};
use crate::queue::templates::{self, Template, Written};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
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

pub async fn list(ctx: web::Data<Base>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let all = templates::list(&client, &caller.0).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "templates": all })))
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureBody {
    pub html: Option<String>,
    pub text: Option<String>,
}

/// `PUT /api/me/signature`: appended to everything the caller sends through the API.
pub async fn put_signature(
    ctx: web::Data<Base>,
    caller: Caller,
    body: web::Json<SignatureBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let client = ctx.pool.get().await?;
    crate::accounts::set_signature(&**client, caller.0.id, b.html.as_deref(), b.text.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"html": b.html, "text": b.text})))
}
