//! `PUT/GET/DELETE /api/me/mailbox`: the IMAP account mailtally watches for replies to the
//! caller's mail. The password is sealed with `MAILBOX_KEY` before it is stored and is never
//! shown again. The host must be one mailtally may reach (see [`crate::netguard`]), and plain
//! IMAP is refused unless `MAILBOX_ALLOW_PLAINTEXT` allows it.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::{single_line, ApiError};
use crate::replies::mailbox::{self, NewMailbox, Security};
use crate::replies::Sealer;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxBody {
    pub host: String,
    pub port: Option<u16>,
    /// `tls` (default, port 993), `starttls` (143) or `none`.
    pub security: Option<String>,
    pub username: String,
    pub password: String,
    pub folder: Option<String>,
}

fn one_line(what: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.trim().is_empty() {
        return Err(ApiError::Unprocessable(format!("`{what}` is required")));
    }
    single_line(what, v, max)
}

/// Set the IMAP mailbox watched for replies.
///
/// Needs the MAILBOX_KEY setting; the password is stored encrypted and never shown. 422 for a
/// host on a refused network (OUTBOUND_ALLOWED_NETWORKS) and for security `none` unless
/// MAILBOX_ALLOW_PLAINTEXT.
#[utoipa::path(put, path = "/api/me/mailbox", tag = "mailbox", operation_id = "put_mailbox",
    request_body = MailboxBody,
    responses(
        (status = 200, description = "watched from now on", body = MailboxStatus),
        (status = 422, description = "no MAILBOX_KEY, a bad field, a refused host or plain IMAP"),
    ))]
pub async fn put(
    ctx: web::Data<Base>,
    caller: Caller,
    body: web::Json<MailboxBody>,
) -> Result<HttpResponse, ApiError> {
    let Some(key) = ctx.settings.replies.mailbox_key.as_deref() else {
        return Err(ApiError::Unprocessable(
            "reply detection is off: the server needs the MAILBOX_KEY setting".into(),
        ));
    };
    let b = body.into_inner();
    one_line("host", &b.host, 253)?;
    one_line("username", &b.username, 320)?;
    one_line("password", &b.password, 1000)?;
    let folder = b.folder.as_deref().unwrap_or("INBOX");
    one_line("folder", folder, 200)?;
    let security = match b.security.as_deref() {
        None => Security::Tls,
        Some(s) => Security::parse(s)
            .ok_or_else(|| ApiError::Unprocessable("security is tls, starttls or none".into()))?,
    };
    let port = b.port.unwrap_or(match security {
        Security::Tls => 993,
        _ => 143,
    });
    if port == 0 {
        return Err(ApiError::Unprocessable("port is 1 to 65535".into()));
    }
    if security == Security::None && !ctx.settings.replies.allow_plaintext {
        return Err(ApiError::Unprocessable(
            "security `none` would send the IMAP password in clear; this server does not allow \
             it (MAILBOX_ALLOW_PLAINTEXT): use tls or starttls"
                .into(),
        ));
    }
    // A clear answer now; every connection checks the address it connects to again.
    crate::netguard::AddressPolicy::from_settings(&ctx.settings)
        .check_host(b.host.trim(), port)
        .await
        .map_err(|e| {
            ApiError::Unprocessable(format!(
                "host is refused: {e}; mailboxes may not be on loopback, private, link-local, \
                 unique-local, multicast or reserved networks unless OUTBOUND_ALLOWED_NETWORKS \
                 lists them"
            ))
        })?;
    let sealed = Sealer::new(key).seal(&b.password);
    let client = ctx.pool.get().await?;
    mailbox::put(
        &client,
        caller.0.id,
        &NewMailbox {
            host: b.host.trim(),
            port,
            security,
            username: &b.username,
            password_sealed: &sealed,
            folder,
        },
    )
    .await?;
    let status = mailbox::status(&client, caller.0.id).await?;
    Ok(HttpResponse::Ok().json(status))
}

/// The watched mailbox and how far it was read.
#[utoipa::path(get, path = "/api/me/mailbox", tag = "mailbox", operation_id = "get_mailbox",
    responses(
        (status = 200, description = "OK", body = MailboxStatus),
        (status = 404, description = "no mailbox is set"),
    ))]
pub async fn get(ctx: web::Data<Base>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    match mailbox::status(&client, caller.0.id).await? {
        Some(s) => Ok(HttpResponse::Ok().json(s)),
        None => Err(ApiError::NotFound("mailbox")),
    }
}

/// Stop watching the mailbox.
#[utoipa::path(delete, path = "/api/me/mailbox", tag = "mailbox", operation_id = "delete_mailbox",
    responses(
        (status = 204, description = "no longer watched"),
        (status = 404, description = "no mailbox is set"),
    ))]
pub async fn delete(ctx: web::Data<Base>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    if mailbox::delete(&client, caller.0.id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("mailbox"))
    }
}
