//! SMTP replies (RFC 5321) with enhanced status codes (RFC 3463), written into the session's
//! output buffer; the buffer is flushed when the input is drained (PIPELINING).

/// Appends one single-line reply.
pub(crate) fn push(out: &mut Vec<u8>, code: u16, enhanced: &str, text: &str) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = if enhanced.is_empty() {
        write!(out, "{code} {text}\r\n")
    } else {
        write!(out, "{code} {enhanced} {text}\r\n")
    };
}

/// Appends a multi-line reply: `code-line` for all but the last, `code line` for the last.
pub(crate) fn push_lines(out: &mut Vec<u8>, code: u16, lines: &[String]) {
    use std::io::Write;
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        let sep = if i == last { ' ' } else { '-' };
        let _ = write!(out, "{code}{sep}{line}\r\n");
    }
}

pub(crate) const SHUTDOWN: (u16, &str, &str) = (421, "4.3.2", "Service shutting down, try later");

/// RFC 3463 X.3.4 "message too big for system": the same message will never fit, so 5xx.
pub(crate) const MESSAGE_TOO_BIG: (u16, &str, &str) = (
    552,
    "5.3.4",
    "Message size exceeds fixed maximum message size",
);
