//! `server_settings`: values the installation keeps in its database rather than in its
//! settings, so that every node and every restart agree (the generated tracking secret, the
//! follow-up scheduler's watermark). Owns the `server_settings` table.

use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;

use super::StoreError;

const TRACKING_SECRET: &str = "tracking_secret";

/// The installation's generated tracking secret, made on the first call: two nodes starting
/// together both try, the first insert wins and both read it back.
pub async fn tracking_secret(pool: &Pool) -> Result<String, StoreError> {
    let client = pool.get().await?;
    let fresh = {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        hex::encode(bytes)
    };
    client
        .execute(
            "INSERT INTO server_settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO NOTHING",
            &[&TRACKING_SECRET, &fresh],
        )
        .await?;
    Ok(stored_tracking_secret(&**client)
        .await?
        .expect("the secret was inserted or already there"))
}

/// The generated tracking secret if `serve` has made one; never creates it.
pub async fn stored_tracking_secret(
    client: &impl GenericClient,
) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT value FROM server_settings WHERE key = $1",
            &[&TRACKING_SECRET],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// The value of `key` as an SQL expression (NULL when unset), for a statement of a stage's own.
/// `key` is a constant of the code, never user input.
pub fn value_sql(key: &str) -> String {
    format!("(SELECT value FROM server_settings WHERE key = '{key}')")
}

/// The statement that sets `key` to the SQL expression `value`, for a stage's own statement
/// (so that its watermark moves in the same transaction as its work).
pub fn put_sql(key: &str, value: &str) -> String {
    format!(
        "INSERT INTO server_settings (key, value) VALUES ('{key}', {value})
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    )
}
