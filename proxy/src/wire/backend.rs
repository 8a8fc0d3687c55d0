//! Server → client messages the tracker reads, and the SASL mechanism
//! rewrite (the only change the proxy makes to server traffic).

use std::borrow::Cow;

use super::{body, DecodeError, Fields};

/// Backend message tags.
pub mod tag {
    /// Authentication request or result.
    pub const AUTHENTICATION: u8 = b'R';
    /// Process id and secret key for CancelRequest.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// A run-time parameter's value (application_name, ...).
    pub const PARAMETER_STATUS: u8 = b'S';
    /// The server is ready for a new query; carries the transaction status.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// A statement finished; carries the command tag.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// An error.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// Reply to Parse.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// Reply to Bind.
    pub const BIND_COMPLETE: u8 = b'2';
    /// Reply to Close.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// Result columns.
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// Describe of something that returns no rows.
    pub const NO_DATA: u8 = b'n';
    /// One result row (counted, never buffered).
    pub const DATA_ROW: u8 = b'D';
    /// The statement text was empty.
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    /// Execute hit its row limit.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// COPY FROM STDIN starts.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// COPY TO STDOUT starts.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// COPY BOTH (replication) starts.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// Reply to a fast-path FunctionCall.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
}

/// Whether the tracker must see the whole message rather than its header.
/// DataRow, CopyData, notices and notifications stream through unbuffered.
pub fn is_inspected(tag: u8) -> bool {
    matches!(
        tag,
        tag::AUTHENTICATION
            | tag::BACKEND_KEY_DATA
            | tag::PARAMETER_STATUS
            | tag::READY_FOR_QUERY
            | tag::COMMAND_COMPLETE
            | tag::ERROR_RESPONSE
            | tag::PARSE_COMPLETE
            | tag::BIND_COMPLETE
            | tag::CLOSE_COMPLETE
            | tag::ROW_DESCRIPTION
            | tag::NO_DATA
            | tag::EMPTY_QUERY_RESPONSE
            | tag::PORTAL_SUSPENDED
            | tag::COPY_IN_RESPONSE
            | tag::COPY_OUT_RESPONSE
            | tag::COPY_BOTH_RESPONSE
            | tag::FUNCTION_CALL_RESPONSE
    )
}

/// The command tag of a CommandComplete, e.g. `SELECT 3`.
pub fn command_tag(msg: &[u8]) -> Result<Cow<'_, str>, DecodeError> {
    Fields::new(body(msg), "CommandComplete").text()
}

/// The transaction status byte of a ReadyForQuery.
pub fn ready_status(msg: &[u8]) -> Result<u8, DecodeError> {
    let status = Fields::new(body(msg), "ReadyForQuery").u8()?;
    match status {
        b'I' | b'T' | b'E' => Ok(status),
        _ => Err(DecodeError::Invalid("ReadyForQuery", "unknown status")),
    }
}

/// Name and value of a ParameterStatus.
pub fn parameter_status(msg: &[u8]) -> Result<(Cow<'_, str>, Cow<'_, str>), DecodeError> {
    let mut f = Fields::new(body(msg), "ParameterStatus");
    Ok((f.text()?, f.text()?))
}

/// Process id and secret key of a BackendKeyData.
pub fn backend_key_data(msg: &[u8]) -> Result<(i32, &[u8]), DecodeError> {
    let mut f = Fields::new(body(msg), "BackendKeyData");
    let pid = f.i32()?;
    let secret = f.remaining();
    if secret.is_empty() || secret.len() > 256 {
        return Err(DecodeError::Invalid(
            "BackendKeyData",
            "bad secret key length",
        ));
    }
    Ok((pid, secret))
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone)]
pub struct ErrorFields<'a> {
    body: &'a [u8],
}

impl<'a> ErrorFields<'a> {
    /// Checks that every field is terminated, then gives access to them.
    pub fn decode(msg: &'a [u8]) -> Result<Self, DecodeError> {
        let b = body(msg);
        let mut f = Fields::new(b, "ErrorResponse");
        loop {
            let code = f.u8()?;
            if code == 0 {
                break;
            }
            f.cstr()?;
        }
        Ok(ErrorFields { body: b })
    }

    /// The fields whole in `prefix`, the start of a message that did not
    /// arrive whole; a field cut off and everything after it are absent.
    pub fn prefix(prefix: &'a [u8]) -> Self {
        ErrorFields { body: body(prefix) }
    }

    /// The value of the field with this code (`C` SQLSTATE, `M` message...).
    pub fn field(&self, code: u8) -> Option<&'a [u8]> {
        let mut f = Fields::new(self.body, "ErrorResponse");
        loop {
            let c = f.u8().ok()?;
            if c == 0 {
                return None;
            }
            let v = f.cstr().ok()?;
            if c == code {
                return Some(v);
            }
        }
    }

    /// The five-character SQLSTATE, when present and well formed.
    pub fn sqlstate(&self) -> Option<[u8; 5]> {
        self.field(b'C')?.try_into().ok()
    }
}

/// Authentication request codes the proxy cares about.
pub mod auth {
    /// SASL: the message lists the mechanisms the server offers.
    pub const SASL: i32 = 10;
}

/// If an AuthenticationSASL message offers `-PLUS` (channel binding)
/// mechanisms, returns the message rebuilt without them.
///
/// The proxy must do this when it terminates the client's TLS: channel
/// binding ties SCRAM to the TLS session, and the client's session with the
/// proxy is not the proxy's session with the server, so a client that chose
/// `SCRAM-SHA-256-PLUS` could never authenticate.
pub fn strip_channel_binding(msg: &[u8]) -> Result<Option<Vec<u8>>, DecodeError> {
    let mut f = Fields::new(body(msg), "AuthenticationSASL");
    if f.i32()? != auth::SASL {
        return Ok(None);
    }
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut stripped = false;
    loop {
        let mech = f.cstr()?;
        if mech.is_empty() {
            break;
        }
        if mech.ends_with(b"-PLUS") {
            stripped = true;
        } else {
            kept.push(mech);
        }
    }
    if !stripped {
        return Ok(None);
    }
    let mut out_body = Vec::with_capacity(msg.len());
    out_body.extend_from_slice(&auth::SASL.to_be_bytes());
    for mech in kept {
        out_body.extend_from_slice(mech);
        out_body.push(0);
    }
    out_body.push(0);
    let mut out = Vec::with_capacity(out_body.len() + 5);
    out.push(tag::AUTHENTICATION);
    out.extend_from_slice(&((out_body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&out_body);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_simple_backend_messages() {
        assert_eq!(command_tag(&msg(b'C', b"SELECT 3\0")).unwrap(), "SELECT 3");
        assert_eq!(ready_status(&msg(b'Z', b"T")).unwrap(), b'T');
        assert!(ready_status(&msg(b'Z', b"x")).is_err());
        assert_eq!(
            parameter_status(&msg(b'S', b"application_name\0web\0")).unwrap(),
            ("application_name".into(), "web".into())
        );
        assert_eq!(
            backend_key_data(&msg(b'K', &[0, 0, 1, 0, 9, 9, 9, 9])).unwrap(),
            (256, &[9u8, 9, 9, 9][..])
        );
    }

    #[test]
    fn error_fields() {
        let m = msg(
            b'E',
            b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0\0",
        );
        let e = ErrorFields::decode(&m).unwrap();
        assert_eq!(e.sqlstate(), Some(*b"42P01"));
        assert!(ErrorFields::decode(&msg(b'E', b"SERROR\0C42")).is_err());
    }

    #[test]
    fn sqlstate_from_the_start_of_an_error() {
        let m = msg(b'E', b"SERROR\0VERROR\0CP0001\0Mxxxxxxxxxxxxxxxx\0\0");
        // The message is cut inside its text: the code is there.
        assert_eq!(ErrorFields::prefix(&m[..30]).sqlstate(), Some(*b"P0001"));
        // Cut inside the code, or before it: unknown.
        assert_eq!(ErrorFields::prefix(&m[..22]).sqlstate(), None);
        assert_eq!(ErrorFields::prefix(&m[..3]).sqlstate(), None);
    }

    #[test]
    fn strips_plus_mechanisms_only() {
        let offered = msg(b'R', b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let rewritten = strip_channel_binding(&offered).unwrap().unwrap();
        assert_eq!(rewritten, msg(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0"));
        let plain = msg(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0");
        assert_eq!(strip_channel_binding(&plain).unwrap(), None);
        let ok = msg(b'R', b"\0\0\0\0");
        assert_eq!(strip_channel_binding(&ok).unwrap(), None);
        assert!(strip_channel_binding(&msg(b'R', b"\0\0\0\x0aSCRAM")).is_err());
    }
}
