//! How a query finds one link's URL: a message's tracked links live in its link list
//! (`link_lists`, one row per distinct list), and the `links` view unnests every message's.
//!
//! A join with that view on (message, index) lets the planner unnest every message of the
//! database and hash it, a cost that grows with everything ever sent (seen in the fold: 167,280
//! rows hashed for a batch without one click). [`url_sql`] looks up the one message instead.

/// SQL of the URL of link `idx` of message `message` (SQL expressions), NULL when there is no
/// such link: a scalar subquery per row, in which the message's key reaches the view's
/// `messages` scan, so that its cost is one message's list, whatever the size of the database.
pub fn url_sql(message: &str, idx: &str) -> String {
    format!(
        "(SELECT link_l.url FROM links link_l
          WHERE link_l.message_id = {message} AND link_l.idx = {idx})"
    )
}
