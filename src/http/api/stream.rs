//! `GET /api/events/stream`: Server-Sent Events of the caller's visible events, live, fed by
//! the node's [`Hub`]; for the Insights page also its notices (`event: notice`, see
//! [`crate::notify::page`]).

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

/// The Insights page's notices: an entry in the page's feed and a browser notification (once
/// the person allowed them, with the button this adds) for each `notice` of the stream. Text
/// only (textContent), so nothing in an event can become markup. The page works without it.
const LIVE_JS: &str = r#"(function () {
  var feed = document.getElementById('mt-feed');
  if (!feed || !window.EventSource) return;
  function allowed() { return window.Notification && Notification.permission === 'granted'; }
  if (window.Notification && Notification.permission === 'default') {
    var ask = document.createElement('li');
    var button = document.createElement('button');
    button.type = 'button';
    button.id = 'mt-allow';
    button.textContent = 'Notify me when people open or click';
    button.addEventListener('click', function () {
      Notification.requestPermission().then(function () { ask.remove(); });
    });
    ask.appendChild(button);
    feed.appendChild(ask);
  }
  function show(n) {
    var title = (n.recipient || 'Someone') + (n.kind === 'click' ? ' clicked ' : ' opened ') +
      (n.subject || n.template || 'your message');
    var entry = document.createElement('li');
    entry.className = 'mt-notice kind-' + n.kind;
    entry.setAttribute('data-copy', n.copy_id);
    var link = document.createElement('a');
    link.href = '/insights/messages/' + encodeURIComponent(n.message_id);
    link.style.color = '#fff';
    link.textContent = title;
    entry.appendChild(link);
    feed.insertBefore(entry, feed.firstChild);
    while (feed.children.length > 5) feed.removeChild(feed.lastChild);
    if (allowed()) {
      try { new Notification(title, { body: n.template || '', tag: n.copy_id + ':' + n.kind }); } catch (e) {}
    }
  }
  function connect() {
    var source = new EventSource('/api/events/stream');
    source.onopen = function () { feed.setAttribute('data-live', 'open'); };
    source.addEventListener('notice', function (m) {
      try { show(JSON.parse(m.data)); } catch (err) {}
    });
    // Refused (signed out, the database away): try again later, not in a loop.
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 15000);
    };
  }
  connect();
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
    responses((status = 200, description = "one `event` (or `click`) a visible event, JSON in `data`; with the Insights cookie also `notice`, a person's open or click to show; comments keep the connection alive",
        content_type = "text/event-stream", body = String)))]
pub async fn stream(req: HttpRequest, ctx: web::Data<Base>, hub: web::Data<Hub>) -> HttpResponse {
    let user = match stream_caller(&req, &ctx).await {
        Ok(u) => u,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let mut rx = hub.subscribe();
    // The Insights page (its cookie, no bearer token) also gets the page's notices.
    let page = crate::http::auth::bearer(&req).is_none();
    let mut notices = hub.notices.subscribe();
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
                notice = notices.recv(), if page => match notice {
                    Ok(n) if n.seen_by(viewer) => {
                        web::Bytes::from(format!("event: notice\ndata: {}\n\n", n.json))
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
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
