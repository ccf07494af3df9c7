//! RCPT TO: recipients of the transaction, up to MAX_RECIPIENTS.

use smtp_proto::RcptTo;

use super::session::{Next, Session};
use super::RejectReason;

pub(super) fn rcpt_to(s: &mut Session, to: RcptTo<String>) -> Next {
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
    tx.recipients.push(to.address);
    s.reply(250, "2.1.5", "Ok");
    Next::Continue
}
