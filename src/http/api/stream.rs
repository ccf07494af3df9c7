//! `GET /api/events/stream`: Server-Sent Events of the caller's visible events, live, fed by
//! the node's [`Hub`].

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use tokio::sync::broadcast;

use crate::accounts::visibility::Viewer;
use crate::accounts::User;
use crate::base::Base;
use crate::http::errors::ApiError;
use crate::notify::metrics::NOTIFY;
use crate::notify::stream::Hub;

/// The stream's caller: a bearer token, or the Insights page's cookie (a browser's
/// EventSource cannot set headers; the cookie is HttpOnly and SameSite=Strict).
async fn stream_caller(req: &HttpRequest, ctx: &Base) -> Result<User, ApiError> {
    let token = crate::http::auth::bearer(req)
        .or_else(|| crate::http::auth::cookie(req, crate::http::auth::COOKIE))
        .unwrap_or_default();
    crate::http::auth::user_for_token(ctx, &token)
        .await?
        .ok_or(ApiError::Unauthorized)
}

/// The Insights page's live notice: "opened just now", from the stream. Text only (textContent),
/// so nothing in an event can become markup.
const LIVE_JS: &str = r#"(function () {
  var box = document.getElementById('mt-live');
  if (!box || !window.EventSource) return;
  var hide;
  new EventSource('/api/events/stream').addEventListener('event', function (m) {
    try {
      var e = JSON.parse(m.data);
      if (e.kind !== 'open' || (e.class && e.class !== 'human' && e.class !== 'proxy')) return;
      box.textContent = 'Opened just now: ' + (e.subject || e.template) + ' by ' + e.recipient;
      box.hidden = false;
      clearTimeout(hide);
      hide = setTimeout(function () { box.hidden = true; }, 10000);
    } catch (err) {}
  });
})();
"#;

async fn live_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .body(LIVE_JS)
}

/// Server-Sent Events of the caller's visible events, live (bearer token or the Insights cookie).
#[utoipa::path(get, path = "/api/events/stream", tag = "events", operation_id = "event_stream",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "one `event` (or `click`) a visible event, JSON in `data`; comments keep the connection alive",
        content_type = "text/event-stream", body = String)))]
pub async fn stream(req: HttpRequest, ctx: web::Data<Base>, hub: web::Data<Hub>) -> HttpResponse {
    let user = match stream_caller(&req, &ctx).await {
        Ok(u) => u,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let mut rx = hub.subscribe();
    let viewer = Viewer::from(&user);
    let shutdown = ctx.shutdown.clone();
    let body = async_stream(move |tx| async move {
        NOTIFY.stream_clients.inc();
        // The first bytes tell the client the stream is open.
        let _ = tx
            .send(web::Bytes::from_static(b": mailtally event stream\n\n"))
            .await;
        let mut keepalive = tokio::time::interval(Duration::from_secs(15));
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = keepalive.tick() => web::Bytes::from_static(b": keepalive\n\n"),
                event = rx.recv() => match event {
                    Ok(e) if e.seen_by(viewer) => {
                        let kind = if e.json.contains("\"kind\":\"click\"") { "click" } else { "event" };
                        web::Bytes::from(format!("event: {kind}\ndata: {}\n\n", e.json))
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        web::Bytes::from(format!(": {n} events skipped (client too slow)\n\n"))
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
        NOTIFY.stream_clients.dec();
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

/// A byte stream fed by a task through a small channel; the task ends when the client leaves.
fn async_stream<F, Fut>(
    f: F,
) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<web::Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    actix_web::rt::spawn(f(tx));
    tokio_stream_from(rx)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<web::Bytes>,
) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/insights/live.js", web::get().to(live_js));
}
