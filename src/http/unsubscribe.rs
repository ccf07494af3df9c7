//! `/u/{token}`: the List-Unsubscribe URL of a copy. A `POST` unsubscribes (RFC 8058 one-click,
//! which mail clients send; also the confirmation page's button). A `GET` only shows that page:
//! link scanners fetch every URL of a message, and must never unsubscribe anyone.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup, DOCTYPE};

use crate::base::Base;
use crate::deliverability::unsubscribe::{unsubscribe, Unsubscribed, Way};
use crate::rewrite::{verify, Rewriter, Verified};

/// Nothing but the page's own form: no script, no remote load, no framing.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

fn page(status: actix_web::http::StatusCode, title: &str, body: Markup) -> HttpResponse {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) }
                style { "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.5rem 1.5rem}" }
            }
            body { h1 { (title) } (body) }
        }
    };
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(markup.into_string())
}

fn not_found() -> HttpResponse {
    page(
        actix_web::http::StatusCode::NOT_FOUND,
        "Link not found",
        html! { p { "This unsubscribe link is not valid. Please check that you copied the whole link from the message." } },
    )
}

/// The copy the token names, if it is an unsubscribe token of this installation.
fn copy_of(req: &HttpRequest, rewriter: &Rewriter) -> Option<uuid::Uuid> {
    let token = req.path().strip_prefix("/u/")?;
    match verify(&rewriter.keys, token) {
        Ok(Verified::Unsubscribe { copy }) => Some(copy),
        _ => None,
    }
}

async fn confirm(req: HttpRequest, rewriter: web::Data<Rewriter>) -> HttpResponse {
    if copy_of(&req, &rewriter).is_none() {
        return not_found();
    }
    page(
        actix_web::http::StatusCode::OK,
        "Unsubscribe",
        html! {
            p { "Do you want to stop receiving these messages?" }
            form method="post" { button type="submit" { "Unsubscribe" } }
        },
    )
}

async fn one_click(
    req: HttpRequest,
    ctx: web::Data<Base>,
    rewriter: web::Data<Rewriter>,
    body: web::Bytes,
) -> HttpResponse {
    let Some(copy) = copy_of(&req, &rewriter) else {
        return not_found();
    };
    // RFC 8058: the client posts `List-Unsubscribe=One-Click`; the page's form posts nothing.
    let way = if body.starts_with(b"List-Unsubscribe=One-Click") {
        Way::OneClick
    } else {
        Way::Page
    };
    match unsubscribe(&ctx.pool, copy, way).await {
        // An erased copy answers as a done one: the address is gone or suppressed either way,
        // and the answer must not tell which copies exist.
        Ok(Unsubscribed::Done { .. } | Unsubscribed::UnknownCopy) => page(
            actix_web::http::StatusCode::OK,
            "You are unsubscribed",
            html! { p { "You will not receive these messages any more." } },
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot record an unsubscribe");
            page(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                html! { p { "Your request could not be recorded just now. Please try again in a few minutes." } },
            )
        }
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/u")
            .route("/{token}", web::get().to(confirm))
            .route("/{token}", web::post().to(one_click)),
    );
}
