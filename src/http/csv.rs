//! CSV answers (RFC 4180: comma-separated, CRLF line ends, a header row, fields quoted when
//! they hold a comma, a quote, CR or LF, quotes doubled; UTF-8), written as the rows arrive.
//! Text that a spreadsheet would run as a formula (it begins with `=`, `+`, `-`, `@`, a tab or
//! a CR: an address or a subject can) gets a leading `'`, as OWASP advises for CSV
//! injection; figures and times never begin so.
//!
//! Owns the format and the streaming body only: what the rows are comes from the stage that
//! made the query.

use actix_web::HttpResponse;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::http::errors::ApiError;
use crate::insights::InsightsError;

/// Bytes gathered before a chunk goes to the socket.
const CHUNK: usize = 64 * 1024;

/// Appends `field` to `out` as one CSV field.
pub fn field(out: &mut BytesMut, field: &str) {
    let formula = field.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let owned;
    let field = if formula {
        owned = format!("'{field}");
        owned.as_str()
    } else {
        field
    };
    if field
        .bytes()
        .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
    {
        out.put_u8(b'"');
        for (i, part) in field.split('"').enumerate() {
            if i > 0 {
                out.put_slice(b"\"\"");
            }
            out.put_slice(part.as_bytes());
        }
        out.put_u8(b'"');
    } else {
        out.put_slice(field.as_bytes());
    }
}

/// Appends one record (a row of fields; `None` is an empty field) with its CRLF.
pub fn record<'a>(out: &mut BytesMut, fields: impl IntoIterator<Item = Option<&'a str>>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        field(out, f.unwrap_or(""));
    }
    out.put_slice(b"\r\n");
}

/// The header of an answer that is a CSV file to save as `filename`.
fn response(filename: &str) -> actix_web::HttpResponseBuilder {
    let mut r = HttpResponse::Ok();
    r.content_type("text/csv; charset=utf-8; header=present")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{}\"", safe_name(filename)),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"));
    r
}

/// A file name of letters, digits, `-`, `_` and `.` only.
fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A CSV answer of rows already in memory (small reports).
pub fn small(filename: &str, header: &[&str], rows: &[Vec<String>]) -> HttpResponse {
    let mut out = BytesMut::new();
    record(&mut out, header.iter().map(|h| Some(*h)));
    for row in rows {
        record(&mut out, row.iter().map(|f| Some(f.as_str())));
    }
    response(filename).body(out.freeze())
}

/// A CSV answer streamed from `rows`, whose every column is text: each chunk is written from
/// the rows PostgreSQL has sent, and the next rows are read only when the socket takes it. An
/// error after the first chunk can only cut the body short (the status is sent): it is logged,
/// and the body ends without its last record.
pub fn streamed(
    filename: &str,
    header: &'static [&'static str],
    rows: impl Stream<Item = Result<tokio_postgres::Row, InsightsError>> + 'static,
) -> HttpResponse {
    let mut head = BytesMut::new();
    record(&mut head, header.iter().map(|h| Some(*h)));
    let columns = header.len();
    let rows = Box::pin(rows);
    let body =
        futures_util::stream::unfold((Some(head), Some(rows)), move |(head, rows)| async move {
            let mut rows = rows?;
            let mut out = head.unwrap_or_else(|| BytesMut::with_capacity(CHUNK + 4096));
            while out.len() < CHUNK {
                match rows.next().await {
                    Some(Ok(row)) => record(
                        &mut out,
                        (0..columns).map(|i| row.get::<_, Option<&str>>(i)),
                    ),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "CSV export failed");
                        return Some((Err(ApiError::from(e)), (None, None)));
                    }
                    None => {
                        return (!out.is_empty())
                            .then(|| (Ok::<Bytes, ApiError>(out.freeze()), (None, None)));
                    }
                }
            }
            Some((Ok(out.freeze()), (None, Some(rows))))
        });
    response(filename).streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(fields: &[&str]) -> String {
        let mut out = BytesMut::new();
        record(&mut out, fields.iter().map(|f| Some(*f)));
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(line(&["a", "b c", "é"]), "a,b c,é\r\n");
        assert_eq!(
            line(&["x,y", "say \"hi\"", "two\r\nlines", "lf\n"]),
            "\"x,y\",\"say \"\"hi\"\"\",\"two\r\nlines\",\"lf\n\"\r\n"
        );
        assert_eq!(line(&["", "\""]), ",\"\"\"\"\r\n");
    }

    #[test]
    fn text_a_spreadsheet_would_run_is_neutralised() {
        assert_eq!(
            line(&[
                "=HYPERLINK(\"http://x\")",
                "+1",
                "-2",
                "@SUM(A1)",
                "\tx",
                "a=b"
            ]),
            "\"'=HYPERLINK(\"\"http://x\"\")\",'+1,'-2,'@SUM(A1),'\tx,a=b\r\n"
        );
    }

    #[test]
    fn file_names_are_plain() {
        assert_eq!(safe_name("promo <b>\"x\".csv"), "promo__b__x_.csv");
    }
}
