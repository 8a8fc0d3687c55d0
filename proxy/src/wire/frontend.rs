//! Client → server messages the tracker reads. Each decoder takes one whole
//! message (header included) and borrows from it.
//!
//! Password and SASL messages (`p`) have no decoder on purpose: the proxy
//! never looks inside them, so a password cannot reach a log. The one
//! exception reads a single flag byte of a SCRAM SASLInitialResponse
//! ([`sasl_channel_binding_flag`]), which carries no secret.

use std::borrow::Cow;

use super::{body, DecodeError, Fields};

/// Frontend message tags.
pub mod tag {
    /// Simple query.
    pub const QUERY: u8 = b'Q';
    /// Extended protocol: prepare a statement.
    pub const PARSE: u8 = b'P';
    /// Extended protocol: bind parameters to a portal.
    pub const BIND: u8 = b'B';
    /// Extended protocol: run a portal.
    pub const EXECUTE: u8 = b'E';
    /// Extended protocol: describe a statement or portal.
    pub const DESCRIBE: u8 = b'D';
    /// Extended protocol: close a statement or portal.
    pub const CLOSE: u8 = b'C';
    /// Extended protocol: end of a batch; the server answers ReadyForQuery.
    pub const SYNC: u8 = b'S';
    /// Fast-path function call (large objects).
    pub const FUNCTION_CALL: u8 = b'F';
    /// End of COPY FROM STDIN data.
    pub const COPY_DONE: u8 = b'c';
    /// The client aborts COPY FROM STDIN.
    pub const COPY_FAIL: u8 = b'f';
    /// Password, SASL initial and SASL response messages: never decoded.
    pub const PASSWORD: u8 = b'p';
}

/// Whether the tracker must see the whole message (and so the relay must
/// hold it whole in its buffer) rather than only its header.
pub fn is_inspected(tag: u8) -> bool {
    matches!(
        tag,
        tag::QUERY
            | tag::PARSE
            | tag::BIND
            | tag::EXECUTE
            | tag::DESCRIBE
            | tag::CLOSE
            | tag::SYNC
            | tag::FUNCTION_CALL
            | tag::COPY_DONE
            | tag::COPY_FAIL
    )
}

/// The GS2 channel-binding flag that opens the SCRAM client-first-message
/// of a SASLInitialResponse: `n` (the client does not support channel
/// binding), `y` (it does, but thinks the server does not) or `p` (it uses
/// it). `None` when the message carries no initial response. Only the
/// mechanism name, the length and that one byte are read.
pub fn sasl_channel_binding_flag(msg: &[u8]) -> Result<Option<u8>, DecodeError> {
    let mut f = Fields::new(body(msg), "SASLInitialResponse");
    f.cstr()?;
    if f.i32()? <= 0 {
        return Ok(None);
    }
    Ok(Some(f.u8()?))
}

/// A simple Query: the SQL text, possibly several statements.
pub fn query(msg: &[u8]) -> Result<Cow<'_, str>, DecodeError> {
    let mut f = Fields::new(body(msg), "Query");
    f.text()
}

/// A Parse message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Statement name; empty for the unnamed statement.
    pub name: Cow<'a, str>,
    /// The SQL text.
    pub query: Cow<'a, str>,
}

impl<'a> Parse<'a> {
    /// Decodes a Parse message (parameter type OIDs are skipped).
    pub fn decode(msg: &'a [u8]) -> Result<Self, DecodeError> {
        let mut f = Fields::new(body(msg), "Parse");
        let name = f.text()?;
        let query = f.text()?;
        let n = f.i16()?;
        if n < 0 {
            return Err(DecodeError::Invalid(
                "Parse",
                "negative parameter type count",
            ));
        }
        f.bytes(n as usize * 4)?;
        Ok(Parse { name, query })
    }
}

/// A Bind message, with the parameter values left in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Destination portal; empty for the unnamed portal.
    pub portal: Cow<'a, str>,
    /// Source prepared statement; empty for the unnamed statement.
    pub statement: Cow<'a, str>,
    /// Raw parameter format codes (2 bytes each).
    pub formats: &'a [u8],
    /// Raw result column format codes (2 bytes each).
    pub result_formats: &'a [u8],
    param_count: u16,
    params: &'a [u8],
}

impl<'a> Bind<'a> {
    /// Decodes a Bind message and checks that every parameter fits.
    pub fn decode(msg: &'a [u8]) -> Result<Self, DecodeError> {
        let mut f = Fields::new(body(msg), "Bind");
        let portal = f.text()?;
        let statement = f.text()?;
        let nfmt = f.i16()?;
        if nfmt < 0 {
            return Err(DecodeError::Invalid("Bind", "negative format count"));
        }
        let formats = f.bytes(nfmt as usize * 2)?;
        let nparams = f.i16()?;
        if nparams < 0 {
            return Err(DecodeError::Invalid("Bind", "negative parameter count"));
        }
        let params_start = f.remaining();
        for _ in 0..nparams {
            let len = f.i32()?;
            if len > 0 {
                f.bytes(len as usize)?;
            } else if len < -1 {
                return Err(DecodeError::Invalid("Bind", "negative parameter length"));
            }
        }
        let params = &params_start[..params_start.len() - f.remaining().len()];
        // Result format codes follow; they must be present and complete.
        let nres = f.i16()?;
        if nres < 0 {
            return Err(DecodeError::Invalid("Bind", "negative result format count"));
        }
        let result_formats = f.bytes(nres as usize * 2)?;
        Ok(Bind {
            portal,
            statement,
            formats,
            result_formats,
            param_count: nparams as u16,
            params,
        })
    }

    /// Whether parameter `i` is sent in binary (format codes: none means
    /// all text, one applies to all, else one per parameter).
    pub fn param_is_binary(&self, i: usize) -> bool {
        format_is_binary(self.formats, i)
    }

    /// The parameter values in order; `None` is SQL NULL.
    pub fn params(&self) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        let mut f = Fields::new(self.params, "Bind");
        (0..self.param_count).map(move |_| {
            // Lengths were validated in decode, so these reads cannot fail.
            let len = f.i32().unwrap_or(-1);
            if len < 0 {
                None
            } else {
                f.bytes(len as usize).ok()
            }
        })
    }
}

/// Reads a list of format codes as Bind carries them: none means all text,
/// one applies to every column, otherwise one per column.
pub fn format_is_binary(codes: &[u8], i: usize) -> bool {
    let code = match codes.len() / 2 {
        0 => return false,
        1 => &codes[..2],
        _ => match codes.get(i * 2..i * 2 + 2) {
            Some(c) => c,
            None => return false,
        },
    };
    code == [0, 1]
}

/// An Execute message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute<'a> {
    /// The portal to run; empty for the unnamed portal.
    pub portal: Cow<'a, str>,
    /// Row limit; 0 means no limit.
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    /// Decodes an Execute message.
    pub fn decode(msg: &'a [u8]) -> Result<Self, DecodeError> {
        let mut f = Fields::new(body(msg), "Execute");
        let portal = f.text()?;
        let max_rows = f.i32()?;
        Ok(Execute { portal, max_rows })
    }
}

/// What a Close or Describe message targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A prepared statement (`S`).
    Statement,
    /// A portal (`P`).
    Portal,
}

/// A Close or Describe message: which object, and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef<'a> {
    /// Statement or portal.
    pub target: Target,
    /// Its name; empty for the unnamed one.
    pub name: Cow<'a, str>,
}

impl<'a> TargetRef<'a> {
    /// Decodes a Close or Describe message (their layout is the same).
    pub fn decode(msg: &'a [u8]) -> Result<Self, DecodeError> {
        let mut f = Fields::new(body(msg), "Close/Describe");
        let target = match f.u8()? {
            b'S' => Target::Statement,
            b'P' => Target::Portal,
            _ => return Err(DecodeError::Invalid("Close/Describe", "unknown target")),
        };
        let name = f.text()?;
        Ok(TargetRef { target, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use postgres_protocol::message::frontend as enc;

    fn encoded(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut b = BytesMut::new();
        f(&mut b);
        b.to_vec()
    }

    #[test]
    fn reads_only_the_channel_binding_flag_of_a_sasl_initial_response() {
        let initial = |data: &[u8]| {
            encoded(|b| enc::sasl_initial_response("SCRAM-SHA-256", data, b).unwrap())
        };
        assert_eq!(
            sasl_channel_binding_flag(&initial(b"y,,n=,r=abc")).unwrap(),
            Some(b'y')
        );
        assert_eq!(
            sasl_channel_binding_flag(&initial(b"n,,n=,r=abc")).unwrap(),
            Some(b'n')
        );
        assert_eq!(sasl_channel_binding_flag(&initial(b"")).unwrap(), None);
        // A cleartext PasswordMessage is just a string: it does not decode
        // as a SASL message.
        let password = encoded(|b| enc::password_message(b"secret", b).unwrap());
        assert!(sasl_channel_binding_flag(&password).is_err());
    }

    #[test]
    fn decodes_what_postgres_protocol_encodes() {
        let q = encoded(|b| enc::query("select 1; select 2", b).unwrap());
        assert_eq!(query(&q).unwrap(), "select 1; select 2");

        let p = encoded(|b| enc::parse("s1", "select $1::int", [23u32], b).unwrap());
        assert_eq!(
            Parse::decode(&p).unwrap(),
            Parse {
                name: "s1".into(),
                query: "select $1::int".into()
            }
        );

        let e = encoded(|b| enc::execute("p1", 50, b).unwrap());
        assert_eq!(
            Execute::decode(&e).unwrap(),
            Execute {
                portal: "p1".into(),
                max_rows: 50
            }
        );

        let c = encoded(|b| enc::close(b'S', "s1", b).unwrap());
        assert_eq!(
            TargetRef::decode(&c).unwrap(),
            TargetRef {
                target: Target::Statement,
                name: "s1".into()
            }
        );
        let d = encoded(|b| enc::describe(b'P', "", b).unwrap());
        assert_eq!(
            TargetRef::decode(&d).unwrap(),
            TargetRef {
                target: Target::Portal,
                name: "".into()
            }
        );
    }

    #[test]
    fn bind_exposes_parameters_including_null() {
        let values: Vec<Option<&[u8]>> = vec![Some(b"42"), None, Some(b"")];
        let msg = encoded(|b| {
            enc::bind(
                "portal",
                "stmt",
                [0i16],
                values.iter(),
                |v, buf| match v {
                    Some(bytes) => {
                        buf.extend_from_slice(bytes);
                        Ok(postgres_protocol::IsNull::No)
                    }
                    None => Ok(postgres_protocol::IsNull::Yes),
                },
                [1i16],
                b,
            )
            .map_err(|_| ())
            .unwrap()
        });
        let bind = Bind::decode(&msg).unwrap();
        assert_eq!(bind.portal, "portal");
        assert_eq!(bind.statement, "stmt");
        assert_eq!(bind.params().count(), 3);
        let got: Vec<_> = bind.params().collect();
        assert_eq!(got, values);
    }

    #[test]
    fn truncated_messages_are_errors() {
        let p = encoded(|b| enc::parse("s1", "select 1", [23u32], b).unwrap());
        for cut in 5..p.len() {
            assert!(Parse::decode(&p[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_bind = vec![b'B', 0, 0, 0, 0];
        bad_bind.extend_from_slice(b"\0\0\0\0\0\x01\0\0\0\x10ab");
        assert!(Bind::decode(&bad_bind).is_err());
    }
}
