//! MAIL FROM: who may start a transaction, and as which user.

use smtp_proto::MailFrom;

use super::session::{Next, Session, Transaction};
use super::RejectReason;
use crate::accounts;

pub(super) async fn mail_from(s: &mut Session, from: MailFrom<String>) -> Next {
    if s.helo.is_none() {
        s.reply(503, "5.5.1", "Send EHLO/HELO first");
        return Next::Continue;
    }
    if !s.may_submit() {
        RejectReason::Auth.count();
        s.reply(530, "5.7.0", "Authentication required");
        return Next::Continue;
    }
    if s.tx.is_some() {
        s.reply(503, "5.5.1", "Nested MAIL command");
        return Next::Continue;
    }
    let max = s.ctx().settings.relay.max_message_size;
    if from.size > max {
        RejectReason::Size.count();
        let (code, enhanced, text) = super::reply::MESSAGE_TOO_BIG;
        s.reply(code, enhanced, text);
        return Next::Continue;
    }
    let address = from.address;
    if !address.is_empty() && address.parse::<lettre::Address>().is_err() {
        s.reply(501, "5.1.7", "Bad sender address syntax");
        return Next::Continue;
    }
    let sender = match &s.user {
        Some(user) => {
            if s.ctx().settings.relay.own_address_only && !user.email.eq_ignore_ascii_case(&address)
            {
                RejectReason::Sender.count();
                s.reply(
                    553,
                    "5.7.1",
                    "Sender address rejected: not owned by the authenticated user",
                );
                return Next::Continue;
            }
            user.clone()
        }
        None => match trusted_sender(s, &address).await {
            Some(user) => user,
            None => return Next::Continue,
        },
    };
    s.tx = Some(Transaction::new(address, sender));
    s.reply(250, "2.1.0", "Ok");
    Next::Continue
}

/// On a trusted network the sender is the user whose address MAIL FROM names.
async fn trusted_sender(s: &mut Session, address: &str) -> Option<accounts::User> {
    if let Some(user) = &s.trusted_sender {
        if user.email.eq_ignore_ascii_case(address) {
            return Some(user.clone());
        }
    }
    let found = match s.ctx().pool.get().await {
        Ok(client) => accounts::find_by_email(&**client, address)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match found {
        Ok(Some(user)) => {
            s.trusted_sender = Some(user.clone());
            Some(user)
        }
        Ok(None) => {
            RejectReason::Sender.count();
            s.reply(550, "5.7.1", "Sender is not a known user; authenticate");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "MAIL FROM: cannot look up the sender");
            s.reply(451, "4.3.0", "Temporary failure, try again later");
            None
        }
    }
}
