//! The lease that guards a claimed copy: a copy whose worker died is claimed again once the
//! lease runs out, and the dead (or slow) worker's late outcome is not recorded.

use crate::common;

use std::time::Duration;

use common::smtp::add_user;
use common::TestDb;
use mailtally::queue::{self, NewCopy, NewMessage, Outcome};
use mailtally::relay::MessageFacts;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_copy_records_one_outcome_only() {
    let db = TestDb::migrated();
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || add_user(&url, "ann@example.com", "correct horse"))
        .await
        .unwrap();
    let pool = db.pool();
    let client = db.client().await;
    let sender_id: i64 = client
        .query_one("SELECT id FROM users WHERE email = 'ann@example.com'", &[])
        .await
        .unwrap()
        .get(0);
    let message = NewMessage {
        id: Uuid::now_v7(),
        sender_id,
        team_id: None,
        visibility: "team".into(),
        track: "opens,clicks".into(),
        envelope_from: "ann@example.com".into(),
        size_bytes: 10,
        facts: MessageFacts {
            template_key: "lease".into(),
            ..Default::default()
        },
        links: Vec::new(),
        untouched: None,
        copies: vec![NewCopy {
            id: Uuid::now_v7(),
            recipient: "bob@example.net".into(),
            body: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
            ..Default::default()
        }],
    };
    queue::enqueue(&pool, &message).await.unwrap();

    // Worker A claims the copy with a short lease, then stalls past it.
    let a = queue::claim(&pool, "node-a", Duration::from_millis(300), 8)
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    assert!(
        queue::claim(&pool, "node-b", Duration::from_secs(60), 8)
            .await
            .unwrap()
            .is_empty(),
        "a leased copy is not claimed twice"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = queue::claim(&pool, "node-b", Duration::from_secs(60), 8)
        .await
        .unwrap();
    assert_eq!(b.len(), 1, "reclaimed once the lease ran out");
    assert_eq!(b[0].attempts, 2);

    // A's late outcome is refused; B's is recorded, with one event.
    let late = queue::record(&pool, &[(&a[0], Outcome::Delivered { via: "upstream" })])
        .await
        .unwrap();
    assert!(late.is_empty());
    let recorded = queue::record(&pool, &[(&b[0], Outcome::Delivered { via: "upstream" })])
        .await
        .unwrap();
    assert_eq!(recorded, vec![b[0].copy_id]);
    let again = queue::record(&pool, &[(&b[0], Outcome::Delivered { via: "upstream" })])
        .await
        .unwrap();
    assert!(again.is_empty(), "an outcome is recorded once");
    let events: i64 = client
        .query_one("SELECT count(*) FROM events WHERE kind = 'delivered'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1);

    // A node restarting frees the leases it held before its crash at once.
    let second = NewMessage {
        id: Uuid::now_v7(),
        copies: vec![NewCopy {
            id: Uuid::now_v7(),
            recipient: "carol@example.net".into(),
            body: b"Subject: y\r\n\r\nbody\r\n".to_vec(),
            ..Default::default()
        }],
        ..message
    };
    queue::enqueue(&pool, &second).await.unwrap();
    let held = queue::claim(&pool, "node-c", Duration::from_secs(600), 8)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(queue::release_own_leases(&pool, "node-c").await.unwrap(), 1);
    let again = queue::claim(&pool, "node-c", Duration::from_secs(600), 8)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
}
