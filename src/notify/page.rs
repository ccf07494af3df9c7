//! The Insights page's notices: "a person opened / clicked your message", from this node's
//! stream of events. Only people's opens and clicks (`human`, `proxy`), a click only after the
//! click hold and only if hindsight (a sweep) did not make it a machine's, and at most one
//! notice per copy and kind within [`WINDOW`], so that no sweep floods anyone. Who may see a
//! notice travels with it; the page's stream applies the one visibility rule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::stream::{Hub, StreamEvent};
use crate::base::Base;
use crate::classify::hindsight::{classified_events_sql, DELIVERY_UNKNOWN_REASON};

/// One notice per copy and kind within this window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How long a notice's class check may wait for PostgreSQL; without an answer, no notice.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The kinds of event a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeKind {
    Open,
    Click,
}

/// The fields of a stream event a notice needs.
#[derive(Debug, Deserialize)]
struct Seen {
    id: Uuid,
    kind: String,
    class: Option<String>,
    reason: Option<String>,
    copy_id: Uuid,
    message_id: Uuid,
    recipient: Option<String>,
    template: Option<String>,
    subject: Option<String>,
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Fan-out of notices to this node's Insights pages.
#[derive(Clone)]
pub struct Notices {
    tx: broadcast::Sender<Arc<StreamEvent>>,
}

impl Default for Notices {
    fn default() -> Self {
        Notices {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Notices {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StreamEvent>> {
        self.tx.subscribe()
    }
}

/// The copies and kinds told of lately, and those waiting for their check.
#[derive(Default)]
struct Recent {
    told: HashMap<(Uuid, NoticeKind), Instant>,
    waiting: HashMap<(Uuid, NoticeKind), Instant>,
}

impl Recent {
    /// Whether a notice for `key` may be prepared now; if so, it waits from now on.
    fn claim(&mut self, key: (Uuid, NoticeKind), now: Instant) -> bool {
        if self.told.len() > 10_000 {
            self.told.retain(|_, at| now.duration_since(*at) < WINDOW);
        }
        let fresh = |at: Option<&Instant>| at.is_some_and(|at| now.duration_since(*at) < WINDOW);
        if fresh(self.told.get(&key)) || fresh(self.waiting.get(&key)) {
            return false;
        }
        self.waiting.insert(key, now);
        true
    }

    fn finish(&mut self, key: (Uuid, NoticeKind), told: bool, now: Instant) {
        self.waiting.remove(&key);
        if told {
            self.told.insert(key, now);
        }
    }
}

fn is_person(class: Option<&str>) -> bool {
    matches!(class, Some("human") | Some("proxy"))
}

/// Runs until shutdown: reads the hub, holds and checks, publishes notices.
pub async fn run(ctx: Base, hub: Hub) {
    let mut rx = hub.subscribe();
    let recent = Arc::new(Mutex::new(Recent::default()));
    loop {
        let event = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            e = rx.recv() => match e {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let Ok(seen) = serde_json::from_str::<Seen>(&event.json) else {
            continue;
        };
        let kind = match seen.kind.as_str() {
            "open" => NoticeKind::Open,
            "click" => NoticeKind::Click,
            _ => continue,
        };
        if !is_person(seen.class.as_deref()) {
            continue;
        }
        let key = (seen.copy_id, kind);
        if !recent
            .lock()
            .expect("notice map")
            .claim(key, Instant::now())
        {
            continue;
        }
        // Hindsight may still make it a machine's: a click within a sweep, an open within the
        // unknown-delivery window. Those wait and are checked; other opens go out at once.
        let unknown_delivery = seen
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with(DELIVERY_UNKNOWN_REASON));
        let hold = match kind {
            NoticeKind::Click => Some(ctx.settings.notify.click_hold),
            NoticeKind::Open if unknown_delivery => Some(Duration::from_secs(
                crate::classify::hindsight::PREFETCH_SECONDS as u64,
            )),
            NoticeKind::Open => None,
        };
        let (ctx, notices, recent, event) = (
            ctx.clone(),
            hub.notices.clone(),
            recent.clone(),
            event.clone(),
        );
        tokio::spawn(async move {
            let told = match hold {
                Some(hold) => {
                    let waited = seen
                        .occurred_at
                        .and_then(|at| (chrono::Utc::now() - at).to_std().ok())
                        .unwrap_or_default();
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => false,
                        _ = tokio::time::sleep(hold.saturating_sub(waited)) => {
                            still_a_person(&ctx, &seen).await
                        }
                    }
                }
                None => true,
            };
            if told {
                let notice = serde_json::json!({
                    "kind": kind,
                    "message_id": seen.message_id,
                    "copy_id": seen.copy_id,
                    "recipient": seen.recipient,
                    "template": seen.template,
                    "subject": seen.subject,
                    "occurred_at": seen.occurred_at,
                });
                let _ = notices.tx.send(Arc::new(StreamEvent {
                    sender_id: event.sender_id,
                    team_id: event.team_id,
                    visibility: event.visibility,
                    json: notice.to_string(),
                }));
            }
            recent
                .lock()
                .expect("notice map")
                .finish((seen.copy_id, kind), told, Instant::now());
        });
    }
}

/// Whether the event still counts as a person's after hindsight; no answer counts as no.
async fn still_a_person(ctx: &Base, seen: &Seen) -> bool {
    let check = async {
        let client = ctx.pool.get().await.ok()?;
        let sql = format!(
            "SELECT final_class FROM ({}) classified WHERE id = $2",
            classified_events_sql("SELECT $1::uuid")
        );
        let row = client
            .query_opt(&sql, &[&seen.copy_id, &seen.id])
            .await
            .ok()??;
        Some(is_person(row.get::<_, Option<&str>>(0)))
    };
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_notice_per_copy_and_kind_within_the_window() {
        let mut r = Recent::default();
        let copy = Uuid::now_v7();
        let now = Instant::now();
        assert!(r.claim((copy, NoticeKind::Click), now));
        assert!(!r.claim((copy, NoticeKind::Click), now), "waiting");
        assert!(r.claim((copy, NoticeKind::Open), now));
        r.finish((copy, NoticeKind::Click), false, now);
        assert!(
            r.claim((copy, NoticeKind::Click), now),
            "a machine's click told nobody"
        );
        r.finish((copy, NoticeKind::Click), true, now);
        assert!(!r.claim((copy, NoticeKind::Click), now + Duration::from_secs(59)));
        assert!(r.claim((copy, NoticeKind::Click), now + WINDOW));
    }
}
