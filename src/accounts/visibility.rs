//! THE visibility rule, written once: as SQL for queries ([`visible`]) and as a predicate for
//! what is already in memory ([`Viewer::sees`], the live stream). Every query that can reach
//! tracking data (messages, copies, events, per-copy state, rollups, webhook payloads) puts
//! [`visible`] in its WHERE clause.
//!
//! - `private`: only the sender sees the message, its events and its share of every report;
//! - `team`: the sender's team (the team the message was sent under) sees it too;
//! - `shared`: every user sees it.
//!
//! Admins get nothing more: they manage their own team's users and change their own team's
//! messages, not other teams' mail (see the README's security section).

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;

use super::User;

/// Who a message's tracking data is shown to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Private,
    Team,
    Shared,
}

impl Visibility {
    pub const ALL: [Visibility; 3] = [Visibility::Private, Visibility::Team, Visibility::Shared];

    /// The value stored in `messages.visibility` and written in `X-Mailtally-Visibility`.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Team => "team",
            Visibility::Shared => "shared",
        }
    }
}

impl FromStr for Visibility {
    type Err = ();

    /// Exactly the stored names; callers trim and lowercase what a person wrote first.
    fn from_str(s: &str) -> Result<Self, ()> {
        Visibility::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or(())
    }
}

/// Who is looking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: i64,
    pub team_id: Option<i64>,
}

impl From<&User> for Viewer {
    fn from(u: &User) -> Self {
        Viewer {
            user_id: u.id,
            team_id: u.team_id,
        }
    }
}

impl Viewer {
    /// [`visible`] for a message already in memory: its sender, team and visibility.
    pub fn sees(&self, sender_id: i64, team_id: Option<i64>, visibility: Visibility) -> bool {
        visibility == Visibility::Shared
            || sender_id == self.user_id
            || (visibility == Visibility::Team && self.team_id.is_some() && team_id == self.team_id)
    }
}

/// Positional parameters collected while a query is assembled, so that every user-given value
/// travels as a parameter and never as SQL text.
#[derive(Default)]
pub struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Params {
    /// Adds a value and returns its placeholder (`$n`).
    pub fn push<T: ToSql + Sync + Send + 'static>(&mut self, value: T) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The condition under which `viewer` sees the row `alias`, which has the columns `sender_id`,
/// `team_id` and `visibility` (messages, insights_copy_state and every rollup). A viewer without
/// a team matches no team (NULL compares false; rollups store 0 for "no team", never a team id).
pub fn visible(alias: &str, viewer: Viewer, params: &mut Params) -> String {
    let user = params.push(viewer.user_id);
    let team = params.push(viewer.team_id);
    visible_to(alias, &user, &team)
}

/// The same rule for a viewer named by SQL expressions instead of parameters: the user who
/// recorded a row (an unsubscribe) and that user's team, read in the same query.
pub fn visible_to(alias: &str, user_id: &str, team_id: &str) -> String {
    format!(
        "({alias}.visibility = 'shared' OR {alias}.sender_id = {user_id}
          OR ({alias}.visibility = 'team' AND {alias}.team_id = {team_id}))"
    )
}

/// The mail a user acts for as a sender, narrower than what they see: their own, and their
/// team's mail that the team sees (`team` or `shared`; not a teammate's `private`). Shared mail
/// of another team is seen by everyone but acted on (unsubscribes that cancel its follow-ups)
/// by its own team only. `user_id` and `team_id` are SQL expressions, as in [`visible_to`].
pub fn acts_for_to(alias: &str, user_id: &str, team_id: &str) -> String {
    format!(
        "({alias}.sender_id = {user_id}
          OR ({alias}.visibility IN ('team', 'shared') AND {alias}.team_id = {team_id}))"
    )
}

/// [`acts_for_to`] for a viewer given as parameters.
pub fn acts_for(alias: &str, viewer: Viewer, params: &mut Params) -> String {
    let user = params.push(viewer.user_id);
    let team = params.push(viewer.team_id);
    acts_for_to(alias, &user, &team)
}
