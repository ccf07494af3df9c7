//! Users, teams and API tokens. Passwords are kept as Argon2id hashes; API tokens are random
//! 256-bit values shown once and kept as SHA-256 (high entropy makes a slow hash pointless and a
//! fast lookup by hash possible).
//!
//! Owns the `users`, `teams` and `api_tokens` tables, the one visibility rule
//! ([`visibility`]) and the failure limiter ([`limiter`]). It must never know a protocol: the
//! HTTP and SMTP front doors call it, never the other way round.

pub mod limiter;
pub mod visibility;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio_postgres::GenericClient;

/// What a user may do beyond sending mail and reading what they may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Member,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated user, as the relay and the API see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub team_id: Option<i64>,
    pub role: Role,
    pub default_visibility: String,
}

#[derive(Debug, Error)]
pub enum AccountError {
    #[error("`{0}` is not a valid e-mail address")]
    BadEmail(String),
    #[error("the password must have at least 8 characters")]
    WeakPassword,
    #[error("a user with e-mail {0} already exists")]
    Exists(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// A user created by [`add_user`], with the API token shown once.
#[derive(Debug)]
pub struct NewUser {
    pub user: User,
    pub api_token: String,
}

pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Constant-time by construction (argon2 compares digests with `subtle`).
pub fn password_matches(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A fresh API token: `mt_` and 43 base64url characters (256 bits).
pub fn new_api_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "mt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 254
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
}

fn user_from_row(row: &tokio_postgres::Row) -> User {
    User {
        id: row.get("id"),
        email: row.get("email"),
        team_id: row.get("team_id"),
        role: if row.get::<_, &str>("role") == "admin" {
            Role::Admin
        } else {
            Role::Member
        },
        default_visibility: row.get("default_visibility"),
    }
}

const USER_COLUMNS: &str = "u.id, u.email, u.team_id, u.role, u.default_visibility";

/// Creates a user (and their team when named and new) and a first API token.
pub async fn add_user(
    client: &mut deadpool_postgres::Client,
    email: &str,
    password: &str,
    team: Option<&str>,
    role: Role,
) -> Result<NewUser, AccountError> {
    let email = email.trim();
    if !valid_email(email) {
        return Err(AccountError::BadEmail(email.to_string()));
    }
    if password.chars().count() < 8 {
        return Err(AccountError::WeakPassword);
    }
    let hash = {
        let password = password.to_string();
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))??
    };
    let tx = client.transaction().await?;
    let team_id: Option<i64> = match team {
        Some(name) => Some(
            tx.query_one(
                "INSERT INTO teams (name) VALUES ($1)
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                &[&name.trim()],
            )
            .await?
            .get(0),
        ),
        None => None,
    };
    let row = tx
        .query_opt(
            "INSERT INTO users (email, team_id, role, password_hash) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING
             RETURNING id, email, team_id, role, default_visibility",
            &[&email, &team_id, &role.as_str(), &hash],
        )
        .await?
        .ok_or_else(|| AccountError::Exists(email.to_string()))?;
    let user = user_from_row(&row);
    let api_token = new_api_token();
    tx.execute(
        "INSERT INTO api_tokens (user_id, token_hash, label) VALUES ($1, $2, 'first token')",
        &[&user.id, &token_hash(&api_token)],
    )
    .await?;
    tx.commit().await?;
    Ok(NewUser { user, api_token })
}

/// The user with this e-mail and password, if both match and the user is enabled.
pub async fn authenticate_password(
    client: &impl GenericClient,
    email: &str,
    password: &str,
) -> Result<Option<User>, AccountError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {USER_COLUMNS}, u.password_hash FROM users u
                 WHERE lower(u.email) = lower($1) AND u.disabled_at IS NULL"
            ),
            &[&email.trim()],
        )
        .await?;
    // An unknown user costs the same hash as a known one, so timing does not reveal accounts.
    let (hash, user) = match &row {
        Some(row) => (
            row.get::<_, String>("password_hash"),
            Some(user_from_row(row)),
        ),
        None => (DUMMY_HASH.to_string(), None),
    };
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || password_matches(&hash, &password))
        .await
        .unwrap_or(false);
    Ok(if ok { user } else { None })
}

/// Argon2id hash of a random string nobody knows; verified against for unknown users.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5HLfvX4LzmGqJR4Hyq3P1WRE9Y6P6eG9b0aXmSSGJbc";

/// The user owning this API token, if any.
pub async fn authenticate_token(
    client: &impl GenericClient,
    token: &str,
) -> Result<Option<User>, AccountError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE api_tokens t SET last_used_at = now()
                 FROM users u
                 WHERE t.token_hash = $1 AND u.id = t.user_id AND u.disabled_at IS NULL
                 RETURNING {USER_COLUMNS}"
            ),
            &[&token_hash(token)],
        )
        .await?;
    Ok(row.as_ref().map(user_from_row))
}

/// The enabled user with this e-mail (trusted-network submission names its sender this way).
pub async fn find_by_email(
    client: &impl GenericClient,
    email: &str,
) -> Result<Option<User>, AccountError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {USER_COLUMNS} FROM users u
                 WHERE lower(u.email) = lower($1) AND u.disabled_at IS NULL"
            ),
            &[&email.trim()],
        )
        .await?;
    Ok(row.as_ref().map(user_from_row))
}

/// The enabled user with this id.
pub async fn find_by_id(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<User>, AccountError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1 AND u.disabled_at IS NULL"
            ),
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(user_from_row))
}

/// A further API token for `user_id`; returns its id and the token, which is shown once.
pub async fn create_api_token(
    client: &impl GenericClient,
    user_id: i64,
    label: &str,
) -> Result<(i64, String), AccountError> {
    let token = new_api_token();
    let row = client
        .query_one(
            "INSERT INTO api_tokens (user_id, token_hash, label) VALUES ($1, $2, $3) RETURNING id",
            &[&user_id, &token_hash(&token), &label],
        )
        .await?;
    Ok((row.get(0), token))
}

/// A user's signature, appended to what they send through the API.
#[derive(Debug, Clone, Default)]
pub struct Signature {
    pub html: Option<String>,
    pub text: Option<String>,
}

/// A user's signature.
pub async fn signature(
    client: &impl GenericClient,
    user_id: i64,
) -> Result<Signature, AccountError> {
    let row = client
        .query_opt(
            "SELECT signature_html, signature_text FROM users WHERE id = $1",
            &[&user_id],
        )
        .await?;
    Ok(row
        .map(|r| Signature {
            html: r.get(0),
            text: r.get(1),
        })
        .unwrap_or_default())
}

/// The signature appended to everything `user_id` sends through the API.
pub async fn set_signature(
    client: &impl GenericClient,
    user_id: i64,
    html: Option<&str>,
    text: Option<&str>,
) -> Result<(), AccountError> {
    client
        .execute(
            "UPDATE users SET signature_html = $2, signature_text = $3 WHERE id = $1",
            &[&user_id, &html, &text],
        )
        .await?;
    Ok(())
}

pub async fn count_users(client: &impl GenericClient) -> Result<i64, AccountError> {
    Ok(client
        .query_one("SELECT count(*) FROM users", &[])
        .await?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(password_matches(&h, "correct horse"));
        assert!(!password_matches(&h, "correct horsf"));
        assert!(!password_matches("garbage", "x"));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_api_token();
        assert_eq!(a.len(), 46);
        assert_ne!(a, new_api_token());
        assert_eq!(token_hash(&a).len(), 32);
    }

    #[test]
    fn email_validation() {
        assert!(valid_email("ann@example.com"));
        assert!(!valid_email("ann"));
        assert!(!valid_email("ann@localhost"));
        assert!(!valid_email("a nn@example.com"));
        assert!(!valid_email("<ann@example.com>"));
    }
}
