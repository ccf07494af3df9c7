//! `POST /api/users` (admins: create a user of their team, answer with their first token), `POST /api/tokens`
//! (another token for the caller) and `GET /api/me`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::accounts::{self, Role};
use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    pub email: String,
    /// For SMTP AUTH; a random one when absent (the user then submits from trusted networks or
    /// gets a password later).
    pub password: Option<String>,
    pub team: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

pub async fn create_user(
    ctx: web::Data<Base>,
    caller: Caller,
    body: web::Json<NewUserBody>,
) -> Result<HttpResponse, ApiError> {
    if caller.0.role != Role::Admin {
        return Err(ApiError::Forbidden);
    }
    let body = body.into_inner();
    let password = body
        .password
        .unwrap_or_else(|| accounts::new_api_token()[3..27].to_string());
    let role = if body.admin {
        Role::Admin
    } else {
        Role::Member
    };
    let mut client = ctx.pool.get().await?;
    let asked = body
        .team
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let team = team_for_new_user(&**client, &caller, asked).await?;
    let new =
        accounts::add_user(&mut client, &body.email, &password, team.as_deref(), role).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": new.user.id,
        "email": new.user.email,
        "team_id": new.user.team_id,
        "role": new.user.role.as_str(),
        "token": new.api_token,
    })))
}

/// The team a new user joins. An admin of a team manages that team's users only: the user joins
/// the admin's team, and naming another one is refused (403), since a user placed in a team reads
/// its team-only mail. An admin without a team is the installation's operator (made with
/// `mailtally user add --admin` on the host) and places users in any team.
async fn team_for_new_user(
    client: &impl tokio_postgres::GenericClient,
    caller: &Caller,
    asked: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let Some(own) = caller.0.team_id else {
        return Ok(asked.map(str::to_string));
    };
    let own_name: String = client
        .query_one("SELECT name FROM teams WHERE id = $1", &[&own])
        .await?
        .get(0);
    match asked {
        None => Ok(Some(own_name)),
        Some(t) if t == own_name => Ok(Some(own_name)),
        Some(_) => Err(ApiError::Forbidden),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    pub label: Option<String>,
}

pub async fn create_token(
    ctx: web::Data<Base>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // The body is optional, but one that is there must be whole and valid: an oversized or
    // malformed body is refused, not taken for none.
    const LIMIT: usize = 64 * 1024;
    if body.len() > LIMIT {
        return Err(ApiError::PayloadTooLarge(LIMIT));
    }
    let body: NewTokenBody = if body.iter().all(u8::is_ascii_whitespace) {
        NewTokenBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let label: String = body.label.unwrap_or_default().chars().take(100).collect();
    let client = ctx.pool.get().await?;
    let (id, token) = accounts::create_api_token(&**client, caller.0.id, &label).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({"id": id, "label": label, "token": token})))
}

pub async fn me(caller: Caller) -> HttpResponse {
    let u = caller.0;
    HttpResponse::Ok().json(serde_json::json!({
        "id": u.id, "email": u.email, "team_id": u.team_id, "role": u.role.as_str(),
        "default_visibility": u.default_visibility,
    }))
}
