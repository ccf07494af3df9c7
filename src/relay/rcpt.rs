//! RCPT TO: recipients of the transaction, up to MAX_RECIPIENTS, none on the sender's
//! suppression list (refused, or accepted and recorded as suppressed, as SUPPRESSED_RECIPIENTS
//! says).

use smtp_proto::RcptTo;

use crate::config::SuppressedRecipients;
use crate::deliverability::suppression::{self, Scope};

use super::session::{Next, Session};
use super::RejectReason;

pub(super) async fn rcpt_to(s: &mut Session, to: RcptTo<String>) -> Next {
    if !s.may_submit() {
        RejectReason::Auth.count();
        s.reply(530, "5.7.0", "Authentication required");
        return Next::Continue;
    }
    let max = s.ctx().settings.relay.max_recipients;
    let Some(tx) = s.tx.as_mut() else {
        s.reply(503, "5.5.1", "Need MAIL before RCPT");
        return Next::Continue;
    };
    if tx.recipients.len() >= max {
        RejectReason::Recipients.count();
        s.reply(452, "4.5.3", "Too many recipients");
        return Next::Continue;
    }
    // Local parts without a domain (RFC 5321 "postmaster") cannot be relayed upstream.
    if to.address.parse::<lettre::Address>().is_err() {
        s.reply(501, "5.1.3", "Bad recipient address syntax");
        return Next::Continue;
    }
    let scope = Scope::of(&tx.sender);
    let found = match s.ctx().pool.get().await {
        Ok(client) => suppression::check(&client, scope, std::slice::from_ref(&to.address))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let reason = match found {
        Ok(found) => found.into_values().next(),
        Err(e) => {
            tracing::warn!(error = %e, "RCPT: cannot read the suppression list");
            RejectReason::Database.count();
            s.reply(451, "4.3.0", "Temporary failure, try again later");
            return Next::Continue;
        }
    };
    let mode = s.ctx().settings.deliverability.suppressed_recipients;
    let Some(tx) = s.tx.as_mut() else {
        return Next::Continue;
    };
    match (reason, mode) {
        (Some(reason), SuppressedRecipients::Refuse) => {
            RejectReason::Suppressed.count();
            // RFC 3463 X.7.1: delivery not authorised; the sender's own list says not to.
            let text = format!(
                "<{}> is on the sender's suppression list: {}",
                super::data::reply_safe(&to.address),
                reason.describe()
            );
            s.reply(550, "5.7.1", &text);
            return Next::Continue;
        }
        (Some(_), SuppressedRecipients::Record) => {
            RejectReason::Suppressed.count();
            tx.suppressed.push(to.address.clone());
        }
        (None, _) => {}
    }
    tx.recipients.push(to.address);
    s.reply(250, "2.1.5", "Ok");
    Next::Continue
}
