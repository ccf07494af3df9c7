//! Retention: drops monthly event partitions that lie wholly before the retention horizon.
//! Dropping a partition is instant and leaves no dead rows, unlike DELETE; rollups live in their
//! own tables and stay. Events in the default partition (outside every month) are deleted row by
//! row.

use chrono::{NaiveDate, Utc};
use tokio_postgres::GenericClient;

/// The first day of the month after the one a partition named `events_YYYY_MM` holds.
fn partition_end(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix("events_")?;
    let (y, m) = rest.split_once('_')?;
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    let start = NaiveDate::from_ymd_opt(y, m, 1)?;
    start.checked_add_months(chrono::Months::new(1))
}

/// Drops the event partitions older than `keep_days`; returns the names dropped.
pub async fn drop_expired(
    client: &impl GenericClient,
    keep_days: u32,
) -> Result<Vec<String>, tokio_postgres::Error> {
    if keep_days == 0 {
        return Ok(Vec::new());
    }
    let horizon = Utc::now().date_naive() - chrono::Days::new(u64::from(keep_days));
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'events'::regclass ORDER BY c.relname",
            &[],
        )
        .await?;
    let mut dropped = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        if let Some(end) = partition_end(&name) {
            if end <= horizon {
                // The name comes from the catalog and matched events_YYYY_MM: safe to quote.
                client
                    .batch_execute(&format!("DROP TABLE \"{name}\""))
                    .await?;
                tracing::info!(partition = %name, "event partition past retention dropped");
                dropped.push(name);
            }
        }
    }
    let cutoff = horizon.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
    client
        .execute(
            "DELETE FROM events_default WHERE occurred_at < $1",
            &[&cutoff],
        )
        .await?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_give_their_end() {
        assert_eq!(
            partition_end("events_2026_12"),
            NaiveDate::from_ymd_opt(2027, 1, 1)
        );
        assert_eq!(
            partition_end("events_2026_02"),
            NaiveDate::from_ymd_opt(2026, 3, 1)
        );
        assert_eq!(partition_end("events_default"), None);
        assert_eq!(partition_end("events_2026_13"), None);
    }
}
