//! Who is calling: a bearer token for the API, or the Insights page's cookie holding one.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};

use super::errors::ApiError;
use crate::accounts::visibility::Viewer;
use crate::accounts::{self, User};
use crate::base::Base;

/// The cookie the Insights page signs in with (HttpOnly, SameSite=Strict).
pub const COOKIE: &str = "mailtally_token";

/// An authenticated API caller (bearer token).
#[derive(Debug, Clone)]
pub struct Caller(pub User);

impl Caller {
    pub fn viewer(&self) -> Viewer {
        Viewer::from(&self.0)
    }
}

pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The value of cookie `name` in the request's Cookie header(s).
pub fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// The user owning `token`; None for an unknown, disabled or malformed token.
pub async fn user_for_token(ctx: &Base, token: &str) -> Result<Option<User>, ApiError> {
    // Tokens are short ASCII; anything else cannot be one and needs no database round trip.
    if token.is_empty() || token.len() > 200 || !token.is_ascii() {
        return Ok(None);
    }
    let client = ctx.pool.get().await?;
    Ok(accounts::authenticate_token(&**client, token).await?)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let ctx = req.app_data::<web::Data<Base>>().cloned();
        let token = bearer(req);
        Box::pin(async move {
            let (Some(ctx), Some(token)) = (ctx, token) else {
                return Err(ApiError::Unauthorized);
            };
            match user_for_token(&ctx, &token).await? {
                Some(user) => Ok(Caller(user)),
                None => Err(ApiError::Unauthorized),
            }
        })
    }
}

/// A caller by bearer token or by the Insights page's cookie, for the read-only downloads the
/// page links to (the cookie is HttpOnly and SameSite=Strict, so another site's link carries
/// none).
#[derive(Debug, Clone)]
pub struct TokenOrCookie(pub User);

impl TokenOrCookie {
    pub fn viewer(&self) -> Viewer {
        Viewer::from(&self.0)
    }
}

impl FromRequest for TokenOrCookie {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<TokenOrCookie, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let ctx = req.app_data::<web::Data<Base>>().cloned();
        let token = bearer(req).or_else(|| cookie(req, COOKIE));
        Box::pin(async move {
            let (Some(ctx), Some(token)) = (ctx, token) else {
                return Err(ApiError::Unauthorized);
            };
            match user_for_token(&ctx, &token).await? {
                Some(user) => Ok(TokenOrCookie(user)),
                None => Err(ApiError::Unauthorized),
            }
        })
    }
}
