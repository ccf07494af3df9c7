//! The capture sink's HTTP side: a user lists the copies of their own messages that went to
//! the sink, and reads one's raw source.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use crate::api::accounts::{self, User};
use crate::context::Context;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/captured", web::get().to(list))
        .route("/api/captured/{copy_id}/raw", web::get().to(raw));
}

fn error(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message }))
}

/// The caller from `Authorization: Bearer <token>`, or the response to send instead.
async fn caller(req: &HttpRequest, ctx: &Context) -> Result<User, HttpResponse> {
    use actix_web::http::StatusCode;
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "missing bearer token"))?;
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable"))?;
    match accounts::authenticate_token(&**client, token).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(error(StatusCode::UNAUTHORIZED, "invalid token")),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable",
        )),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
}

async fn list(
    req: HttpRequest,
    ctx: web::Data<Context>,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    let user = match caller(&req, &ctx).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let rows = async {
        let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
        client
            .query(
                "SELECT c.id, c.message_id, c.recipient, m.envelope_from, m.subject,
                        m.header_message_id, m.template_key, c.delivered_at, octet_length(c.body)
                 FROM copies c JOIN messages m ON m.id = c.message_id
                 WHERE m.sender_id = $1 AND c.delivered_via = 'capture'
                 ORDER BY c.delivered_at DESC, c.id LIMIT $2",
                &[&user.id, &limit],
            )
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match rows {
        Ok(rows) => {
            let items: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "copy_id": r.get::<_, Uuid>(0),
                        "message_id": r.get::<_, Uuid>(1),
                        "recipient": r.get::<_, String>(2),
                        "envelope_from": r.get::<_, String>(3),
                        "subject": r.get::<_, Option<String>>(4),
                        "header_message_id": r.get::<_, Option<String>>(5),
                        "template_key": r.get::<_, String>(6),
                        "delivered_at": r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(7),
                        "size_bytes": r.get::<_, Option<i32>>(8),
                    })
                })
                .collect();
            HttpResponse::Ok().json(serde_json::json!({ "captured": items }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list captured copies");
            error(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable",
            )
        }
    }
}

async fn raw(req: HttpRequest, ctx: web::Data<Context>, path: web::Path<String>) -> HttpResponse {
    use actix_web::http::StatusCode;
    let user = match caller(&req, &ctx).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let Ok(copy_id) = path.parse::<Uuid>() else {
        return error(StatusCode::NOT_FOUND, "no such captured copy");
    };
    let row = async {
        let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
        client
            .query_opt(
                "SELECT c.body FROM copies c JOIN messages m ON m.id = c.message_id
                 WHERE c.id = $1 AND m.sender_id = $2 AND c.delivered_via = 'capture'",
                &[&copy_id, &user.id],
            )
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match row {
        Ok(Some(row)) => HttpResponse::Ok()
            .content_type("message/rfc822")
            .body(row.get::<_, Option<Vec<u8>>>(0).unwrap_or_default()),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such captured copy"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a captured copy");
            error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}
