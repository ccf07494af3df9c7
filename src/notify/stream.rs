//! `GET /api/events/stream`: Server-Sent Events of the caller's visible events, live.
//!
//! The outbox producer publishes each event once with `pg_notify` in the transaction that reads
//! it; every node LISTENs and fans out to its own subscribers, so a client connected to any node
//! sees events recorded on any node.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::metrics::NOTIFY;
use crate::api::accounts::User;
use crate::api::errors::ApiError;
use crate::context::Context;

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "mailtally_events";

/// One event as the stream carries it, with who may see it.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamEvent {
    pub sender_id: i64,
    pub team_id: Option<i64>,
    pub visibility: String,
    /// The event as sent to clients (without the visibility fields).
    #[serde(skip)]
    pub json: String,
}

/// Fan-out of events to this node's stream clients.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<StreamEvent>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: broadcast::channel(4096).0,
        }
    }
}

impl Hub {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StreamEvent>> {
        self.tx.subscribe()
    }

    /// Publishes a notification payload; malformed payloads are dropped.
    pub fn publish(&self, payload: &str) {
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(payload) else {
            return;
        };
        let Ok(mut event) = serde_json::from_value::<StreamEvent>(value.clone()) else {
            return;
        };
        if let Some(obj) = value.as_object_mut() {
            obj.remove("sender_id");
            obj.remove("team_id");
            obj.remove("visibility");
        }
        event.json = value.to_string();
        let _ = self.tx.send(Arc::new(event));
    }
}

/// The visibility rule, for events already in memory: the sender sees everything of theirs,
/// the team sees `team` and `shared` messages of its members, everyone sees `shared` ones.
pub fn may_see(user: &User, event: &StreamEvent) -> bool {
    event.sender_id == user.id
        || event.visibility == "shared"
        || (event.visibility == "team" && user.team_id.is_some() && event.team_id == user.team_id)
}

/// LISTENs on the channel until shutdown, reconnecting after failures.
pub async fn listen(ctx: Context, hub: Hub) {
    let url = ctx.database_url.clone();
    loop {
        if let Err(e) = listen_once(&ctx, &hub, &url).await {
            tracing::warn!(error = %e, "event stream listener lost its connection; reconnecting");
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn listen_once(ctx: &Context, hub: &Hub, url: &str) -> Result<(), tokio_postgres::Error> {
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            payload = rx.recv() => match payload {
                Some(p) => hub.publish(&p),
                None => break,
            },
        }
    }
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// The stream's caller: a bearer token, or the Insights page's cookie (a browser's
/// EventSource cannot set headers; the cookie is HttpOnly and SameSite=Strict).
async fn stream_caller(req: &HttpRequest, ctx: &Context) -> Result<User, ApiError> {
    let token = crate::api::auth::bearer(req)
        .or_else(|| crate::api::auth::cookie(req, crate::api::auth::COOKIE))
        .unwrap_or_default();
    crate::api::auth::user_for_token(ctx, &token)
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
pub async fn stream(req: HttpRequest, ctx: web::Data<Context>) -> HttpResponse {
    let user = match stream_caller(&req, &ctx).await {
        Ok(u) => u,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let mut rx = ctx.event_hub.subscribe();
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
                    Ok(e) if may_see(&user, &e) => {
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
