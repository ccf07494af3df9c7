//! `POST /api/erase` (administrators): removes every copy, event and stored address of one
//! recipient and corrects the reports, as `mailtally erase --recipient` does.
//!
//! Erasure spans every team on purpose: a data subject's request (GDPR art. 17) is for the
//! installation, not for one team, so it is the one operator action an admin takes on other
//! teams' mail. It reveals nothing of that mail (the answer is a count) and is logged.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use crate::accounts::Role;
use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::ApiError;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseBody {
    pub recipient: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Erased {
    /// How many copies to that recipient were removed.
    pub erased_copies: u64,
}

/// Administrators: erase one recipient (copies, events, address) and correct the reports.
#[utoipa::path(post, path = "/api/erase", tag = "erase", operation_id = "erase",
    request_body = EraseBody,
    responses(
        (status = 200, description = "erased", body = Erased),
        (status = 403, description = "not an admin"),
    ))]
pub async fn erase_handler(
    ctx: web::Data<Base>,
    caller: Caller,
    body: web::Json<EraseBody>,
) -> Result<HttpResponse, ApiError> {
    if caller.0.role != Role::Admin {
        return Err(ApiError::Forbidden);
    }
    let recipient = body.recipient.trim();
    if recipient.is_empty() || recipient.len() > 320 || !recipient.contains('@') {
        return Err(ApiError::BadRequest(
            "recipient must be an e-mail address".into(),
        ));
    }
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let copies = crate::erasure::erase_recipient(&tx, recipient).await?;
    tx.commit().await?;
    tracing::info!(copies, by = caller.0.id, "recipient erased");
    Ok(HttpResponse::Ok().json(Erased {
        erased_copies: copies,
    }))
}
