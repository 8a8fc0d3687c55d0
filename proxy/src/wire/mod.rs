//! The PostgreSQL wire protocol as far as qproxy needs it: framing and
//! borrowed, allocation-free decoding of the messages analysis reads.
//!
//! Nothing here does I/O or knows about tokio, so the relay, the unit tests
//! and the fuzz targets share one implementation. Decoders take the bytes of
//! one whole message (tag, length and body) and return views into them; a
//! message that is shorter than its fields claim is an error, never a panic.
//!
//! # Layout
//! - [`framing`]: finding message boundaries in a byte stream by the 5-byte
//!   header, with a size cap.
//! - [`scan`]: splitting a read buffer into messages (whole, passing
//!   through, waited for) for one relay direction.
//! - [`startup`]: the untagged first messages (SSLRequest, GSSENCRequest,
//!   CancelRequest, StartupMessage).
//! - [`frontend`]: client → server messages the tracker inspects.
//! - [`backend`]: server → client messages the tracker inspects, and the
//!   one rewrite the proxy ever makes (SCRAM `-PLUS` mechanisms).
//! - [`error_response`]: the ErrorResponse messages the proxy itself sends.

pub mod backend;
#[cfg(test)]
mod conformance;
pub mod error_response;
pub mod framing;
pub mod frontend;
pub mod scan;
pub mod startup;

use std::borrow::Cow;

/// A message could not be decoded: it is shorter than its fields claim, or a
/// field is not what the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended inside a field.
    #[error("{0} message is truncated")]
    Truncated(&'static str),
    /// A field holds a value the protocol does not allow.
    #[error("{0} message has an invalid field: {1}")]
    Invalid(&'static str, &'static str),
}

/// A cursor over a message body that reads protocol fields without copying.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Fields { buf, what }
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(DecodeError::Truncated(self.what))?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A NUL-terminated string, without its terminator.
    pub fn cstr(&mut self) -> Result<&'a [u8], DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated(self.what))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// A NUL-terminated string as text. SQL may legitimately arrive in a
    /// non-UTF-8 client_encoding (LATIN1, SQL_ASCII), so invalid bytes are
    /// replaced rather than rejected; valid UTF-8 is borrowed, not copied.
    pub fn text(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        let bytes = self.cstr()?;
        // The standard validator first: it checks ASCII a word at a time,
        // several times faster than the lossy conversion's walk, and nearly
        // every SQL text is valid.
        Ok(match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(bytes),
        })
    }
}

/// The body of a whole tagged message (after the 5-byte header).
pub fn body(msg: &[u8]) -> &[u8] {
    msg.get(5..).unwrap_or(&[])
}

#[cfg(test)]
mod text_tests {
    use super::*;

    #[test]
    fn text_borrows_valid_utf8_and_replaces_invalid_bytes() {
        let mut f = Fields::new(b"select 'caf\xc3\xa9'\0select '\xe9t\xe9'\0", "Query");
        assert!(matches!(f.text().unwrap(), Cow::Borrowed("select 'café'")));
        let latin1 = f.text().unwrap();
        assert!(matches!(latin1, Cow::Owned(_)));
        assert_eq!(latin1, "select '\u{fffd}t\u{fffd}'");
        assert!(matches!(f.text(), Err(DecodeError::Truncated("Query"))));
    }
}
