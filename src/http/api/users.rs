//! `POST /api/users` (admins: create a user of their team, answer with their first token), `POST /api/tokens`
//! (another token for the caller) and `GET /api/me`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use crate::accounts::{self, Role};
use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::ApiError;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    pub email: String,
    /// For SMTP AUTH; a random one when absent (the user then submits from trusted networks or
    /// gets a password later).
    #[schema(min_length = 8)]
    pub password: Option<String>,
    /// Team name, created when new; an admin of a team may name only their own.
    pub team: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

/// A user as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub team_id: Option<i64>,
    /// `member` or `admin`.
    pub role: &'static str,
    /// `private`, `shared` or `team`: what their mail is without `X-Mailtally-Visibility`.
    pub default_visibility: String,
}

impl From<&accounts::User> for UserView {
    fn from(u: &accounts::User) -> Self {
        UserView {
            id: u.id,
            email: u.email.clone(),
            team_id: u.team_id,
            role: u.role.as_str(),
            default_visibility: u.default_visibility.clone(),
        }
    }
}

/// A new user with their first API token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    pub id: i64,
    pub email: String,
    pub team_id: Option<i64>,
    pub role: &'static str,
    pub token: String,
}

/// Create a user (admins only); answers with their first API token, shown once.
#[utoipa::path(post, path = "/api/users", tag = "users", operation_id = "create_user",
    request_body = NewUserBody,
    responses(
        (status = 201, description = "created", body = CreatedUser),
        (status = 403, description = "not an admin, or another team named"),
        (status = 409, description = "a user with this e-mail exists"),
    ))]
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
    Ok(HttpResponse::Created().json(CreatedUser {
        id: new.user.id,
        email: new.user.email,
        team_id: new.user.team_id,
        role: new.user.role.as_str(),
        token: new.api_token,
    }))
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

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    /// Kept to its first 100 characters.
    pub label: Option<String>,
}

/// An API token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: i64,
    pub label: String,
    pub token: String,
}

/// Another API token for the caller, shown once; the body is optional.
#[utoipa::path(post, path = "/api/tokens", tag = "users", operation_id = "create_token",
    request_body(content = Option<NewTokenBody>, description = "optional"),
    responses((status = 201, description = "created", body = CreatedToken)))]
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
    Ok(HttpResponse::Created().json(CreatedToken { id, label, token }))
}

/// The caller.
#[utoipa::path(get, path = "/api/me", tag = "users", operation_id = "me",
    responses((status = 200, description = "the caller", body = UserView)))]
pub async fn me(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(UserView::from(&caller.0))
}
