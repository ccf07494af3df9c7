//! `/api/suppressions`: the caller's suppression list (their team's, or their own without a
//! team): list it with or without history, add an address by hand, take one off (kept as
//! history), and export it as CSV.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::base::Base;
use crate::deliverability::suppression::{self, Entry, Reason, Scope};
use crate::http::auth::Caller;
use crate::http::errors::ApiError;

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// `true`: removed entries too, with who removed them and when.
    pub history: Option<bool>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionList {
    pub suppressions: Vec<Entry>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuppression {
    /// The address never to mail again.
    pub address: String,
    /// Why, in a few words (kept with the entry).
    pub note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Added {
    pub address: String,
    /// `false` when the address was already on the list (its first reason stays).
    pub added: bool,
}

fn scope(caller: &Caller) -> Scope {
    Scope::of(&caller.0)
}

/// The caller's suppression list, newest first.
#[utoipa::path(get, path = "/api/suppressions", tag = "suppressions",
    operation_id = "list_suppressions", params(ListQuery),
    responses((status = 200, description = "OK", body = SuppressionList)))]
pub async fn list(
    ctx: web::Data<Base>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let entries = suppression::list(
        &**client,
        scope(&caller),
        query.history.unwrap_or(false),
        query.limit.unwrap_or(100).clamp(1, 1000),
        query.offset.unwrap_or(0).max(0),
    )
    .await?;
    Ok(HttpResponse::Ok().json(SuppressionList {
        suppressions: entries,
    }))
}

/// Adds an address by hand (reason `manual`).
#[utoipa::path(post, path = "/api/suppressions", tag = "suppressions",
    operation_id = "add_suppression", request_body = NewSuppression,
    responses(
        (status = 201, description = "added", body = Added),
        (status = 200, description = "already on the list", body = Added),
        (status = 422, description = "not an e-mail address"),
    ))]
pub async fn add(
    ctx: web::Data<Base>,
    caller: Caller,
    body: web::Json<NewSuppression>,
) -> Result<HttpResponse, ApiError> {
    let address = suppression::normal(&body.address);
    if address.len() > 320 || address.parse::<lettre::Address>().is_err() {
        return Err(ApiError::Unprocessable(
            "address must be an e-mail address".into(),
        ));
    }
    let note = body.note.as_deref().map(|n| {
        n.chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect::<String>()
    });
    let client = ctx.pool.get().await?;
    let added = suppression::add(
        &**client,
        scope(&caller),
        &address,
        Reason::Manual,
        None,
        note.as_deref(),
        Some(caller.0.id),
    )
    .await?;
    let answer = Added { address, added };
    Ok(if added {
        HttpResponse::Created().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
    })
}

/// Takes an entry off the list; it stays in the history.
#[utoipa::path(delete, path = "/api/suppressions/{id}", tag = "suppressions",
    operation_id = "remove_suppression",
    params(("id" = i64, Path, description = "the entry's id")),
    responses(
        (status = 204, description = "removed"),
        (status = 404, description = "no such entry on the caller's list"),
    ))]
pub async fn remove(
    ctx: web::Data<Base>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound("suppression"))?;
    let client = ctx.pool.get().await?;
    if suppression::remove_entry(&**client, scope(&caller), id, caller.0.id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("suppression"))
    }
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line end; a leading
/// `=`, `+`, `-` or `@` is prefixed with `'` so that a spreadsheet does not run it as a formula.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// The caller's active list as CSV (UTF-8, header row): address, reason, since, copy.
#[utoipa::path(get, path = "/api/suppressions.csv", tag = "suppressions",
    operation_id = "export_suppressions",
    responses((status = 200, description = "the list", content_type = "text/csv", body = String)))]
pub async fn export(ctx: web::Data<Base>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let mut out = String::from("address,reason,since,copy_id\r\n");
    let mut offset = 0;
    loop {
        let page = suppression::list(&**client, scope(&caller), false, 1000, offset).await?;
        for e in &page {
            out.push_str(&format!(
                "{},{},{},{}\r\n",
                csv_field(e.address.as_deref().unwrap_or("")),
                e.reason.as_str(),
                e.created_at.to_rfc3339(),
                e.copy_id.map(|c| c.to_string()).unwrap_or_default()
            ));
        }
        if page.len() < 1000 {
            break;
        }
        offset += 1000;
    }
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "content-disposition",
            "attachment; filename=\"suppressions.csv\"",
        ))
        .body(out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(super::csv_field("ann@example.com"), "ann@example.com");
        assert_eq!(super::csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
        assert_eq!(super::csv_field("=cmd()"), "'=cmd()");
    }
}
