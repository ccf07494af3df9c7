//! The live stream's fan-out: each event recorded on any node reaches this node's stream
//! clients ([`crate::http::api::stream`] serves them as Server-Sent Events).
//!
//! The outbox producer publishes each event once with `pg_notify` in the transaction that reads
//! it; every node LISTENs and fans out to its own subscribers, so a client connected to any node
//! sees events recorded on any node.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::accounts::visibility::{Viewer, Visibility};
use crate::base::Base;

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "mailtally_events";

/// One event as the stream carries it, with who may see it.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamEvent {
    pub sender_id: i64,
    pub team_id: Option<i64>,
    pub visibility: Visibility,
    /// The event as sent to clients (without the visibility fields).
    #[serde(skip)]
    pub json: String,
}

/// Fan-out of events to this node's stream clients.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<StreamEvent>>,
    /// The Insights page's notices made from these events ([`super::page`]).
    pub notices: super::page::Notices,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: broadcast::channel(4096).0,
            notices: super::page::Notices::default(),
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

impl StreamEvent {
    /// The one visibility rule, applied to an event already in memory.
    pub fn seen_by(&self, viewer: Viewer) -> bool {
        viewer.sees(self.sender_id, self.team_id, self.visibility)
    }
}

/// LISTENs on the channel until shutdown, reconnecting after failures.
pub async fn listen(ctx: Base, hub: Hub) {
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

async fn listen_once(ctx: &Base, hub: &Hub, url: &str) -> Result<(), tokio_postgres::Error> {
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
