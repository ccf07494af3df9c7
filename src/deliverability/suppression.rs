//! The suppression list: addresses a scope (a team, or a sender without one) must not mail
//! again, with the reason and the copy that caused it. Hard bounces, complaints and
//! unsubscribes add an address; soft bounces add it after a count within a window. Every way of
//! sending (SMTP, group emails, follow-ups) asks [`check`] before anything is queued.
//!
//! Owns the `suppressions` table. Lookups compare the SHA-256 of the lower-cased address, which
//! is also what erasure keeps of a complaint or an unsubscribe: the address itself is gone, and
//! the person is still never mailed again.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::accounts::User;

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    HardBounce,
    SoftBounce,
    Complaint,
    Unsubscribe,
    Manual,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::HardBounce,
        Reason::SoftBounce,
        Reason::Complaint,
        Reason::Unsubscribe,
        Reason::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard_bounce",
            Reason::SoftBounce => "soft_bounce",
            Reason::Complaint => "complaint",
            Reason::Unsubscribe => "unsubscribe",
            Reason::Manual => "manual",
        }
    }

    /// What a refusal tells the sender.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::HardBounce => "it bounced permanently",
            Reason::SoftBounce => "it kept bouncing",
            Reason::Complaint => "its owner reported mail as spam",
            Reason::Unsubscribe => "its owner unsubscribed",
            Reason::Manual => "it was added by hand",
        }
    }

    /// Whether erasure keeps the address's digest: the person asked not to be mailed.
    fn outlives_erasure(self) -> bool {
        matches!(self, Reason::Complaint | Reason::Unsubscribe)
    }
}

impl FromStr for Reason {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// Whose list: a team's, or a sender's own when they have no team (as template keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub team_id: Option<i64>,
    pub owner_id: Option<i64>,
}

impl Scope {
    /// The scope a user sends in.
    pub fn of(user: &User) -> Scope {
        Scope::for_sender(user.id, user.team_id)
    }

    /// The scope of mail sent by `sender_id` under `team_id` (a message's columns).
    pub fn for_sender(sender_id: i64, team_id: Option<i64>) -> Scope {
        match team_id {
            Some(team) => Scope {
                team_id: Some(team),
                owner_id: None,
            },
            None => Scope {
                team_id: None,
                owner_id: Some(sender_id),
            },
        }
    }
}

/// The address as lists keep it: trimmed and lower-cased.
pub fn normal(address: &str) -> String {
    address.trim().to_lowercase()
}

/// The digest lookups compare (and erasure keeps).
pub fn digest(address: &str) -> Vec<u8> {
    Sha256::digest(normal(address).as_bytes()).to_vec()
}

/// The condition for rows of `scope` with parameters `$1` (team) and `$2` (owner).
const IN_SCOPE: &str = "team_id IS NOT DISTINCT FROM $1 AND owner_id IS NOT DISTINCT FROM $2";

/// Puts `address` on the list of `scope`; `false` when it already was (the first reason
/// stays).
pub async fn add(
    client: &impl GenericClient,
    scope: Scope,
    address: &str,
    reason: Reason,
    copy: Option<Uuid>,
    detail: Option<&str>,
    by: Option<i64>,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "INSERT INTO suppressions (team_id, owner_id, address, address_digest, reason, copy_id,
                                       detail, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, left($7, 1000), $8)
             ON CONFLICT (coalesce(team_id, 0), coalesce(owner_id, 0), address_digest)
                 WHERE removed_at IS NULL DO NOTHING",
            &[
                &scope.team_id,
                &scope.owner_id,
                &normal(address),
                &digest(address),
                &reason.as_str(),
                &copy,
                &detail,
                &by,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Takes entry `id` of `scope` off the list, keeping it as history; `false` when no such
/// entry is on it.
pub async fn remove_entry(
    client: &impl GenericClient,
    scope: Scope,
    id: i64,
    by: i64,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            &format!(
                "UPDATE suppressions SET removed_at = now(), removed_by = $4
                 WHERE {IN_SCOPE} AND id = $3 AND removed_at IS NULL"
            ),
            &[&scope.team_id, &scope.owner_id, &id, &by],
        )
        .await?;
    Ok(n > 0)
}

/// Which of `addresses` the list of `scope` holds, by their normal form.
pub async fn check(
    client: &impl deadpool_postgres::GenericClient,
    scope: Scope,
    addresses: &[String],
) -> Result<HashMap<String, Reason>, tokio_postgres::Error> {
    if addresses.is_empty() {
        return Ok(HashMap::new());
    }
    let by_digest: HashMap<Vec<u8>, String> =
        addresses.iter().map(|a| (digest(a), normal(a))).collect();
    let digests: Vec<&Vec<u8>> = by_digest.keys().collect();
    // Asked for every recipient of every message: prepared once per connection, not planned
    // per call.
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT address_digest, reason FROM suppressions
             WHERE {IN_SCOPE} AND removed_at IS NULL AND address_digest = ANY($3)"
        )
    });
    let statement = client.prepare_cached(&SQL).await?;
    let rows = client
        .query(&statement, &[&scope.team_id, &scope.owner_id, &digests])
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let address = by_digest.get(&r.get::<_, Vec<u8>>(0))?.clone();
            let reason = r.get::<_, String>(1).parse().ok()?;
            Some((address, reason))
        })
        .collect())
}

/// One entry as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub id: i64,
    /// Absent once the address was erased (the digest stays).
    pub address: Option<String>,
    pub reason: Reason,
    pub copy_id: Option<Uuid>,
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<i64>,
    pub removed_at: Option<DateTime<Utc>>,
    pub removed_by: Option<i64>,
}

/// The list of `scope`, newest first; with `history`, removed entries too.
pub async fn list(
    client: &impl GenericClient,
    scope: Scope,
    history: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<Entry>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT id, address, reason, copy_id, detail, created_at, created_by, removed_at,
                        removed_by
                 FROM suppressions
                 WHERE {IN_SCOPE} AND ($3 OR removed_at IS NULL)
                 ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
            ),
            &[&scope.team_id, &scope.owner_id, &history, &limit, &offset],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            id: r.get(0),
            address: r.get(1),
            reason: r.get::<_, String>(2).parse().unwrap_or(Reason::Manual),
            copy_id: r.get(3),
            detail: r.get(4),
            created_at: r.get(5),
            created_by: r.get(6),
            removed_at: r.get(7),
            removed_by: r.get(8),
        })
        .collect())
}

/// Erasure of `address` everywhere: entries whose reason outlives erasure keep only the
/// digest (the person is never mailed again); the others go.
pub async fn forget_address(
    client: &impl GenericClient,
    address: &str,
) -> Result<(), tokio_postgres::Error> {
    let kept: Vec<&str> = Reason::ALL
        .into_iter()
        .filter(|r| r.outlives_erasure())
        .map(Reason::as_str)
        .collect();
    let d = digest(address);
    client
        .execute(
            "DELETE FROM suppressions WHERE address_digest = $1 AND reason <> ALL($2)",
            &[&d, &kept],
        )
        .await?;
    client
        .execute(
            "UPDATE suppressions SET address = NULL, detail = NULL WHERE address_digest = $1",
            &[&d],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_compare_in_their_normal_form() {
        assert_eq!(digest(" Ann@Example.COM "), digest("ann@example.com"));
        assert_ne!(digest("ann@example.com"), digest("ann@example.org"));
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
        }
        assert!(Reason::Complaint.outlives_erasure() && !Reason::HardBounce.outlives_erasure());
    }
}
