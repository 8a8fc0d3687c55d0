//! The untagged messages a client may open a connection with.
//!
//! Each is a four-byte length (counting itself) and a four-byte code. The
//! code is a protocol version for a StartupMessage, or one of the magic
//! numbers below for the requests that come before it.

use std::borrow::Cow;

use super::{DecodeError, Fields};

/// PostgreSQL's own limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// The code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// The first byte of a TLS ClientHello: a PostgreSQL 17 client using
/// `sslnegotiation=direct` starts TLS without an SSLRequest.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// One decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket<'a> {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancel the query running on the backend with this key.
    Cancel {
        /// Backend process id from BackendKeyData.
        pid: i32,
        /// The secret key (4 bytes before protocol 3.2, up to 256 after).
        secret: &'a [u8],
    },
    /// A StartupMessage (or an unknown request code) with a protocol major
    /// version other than 3; the client is told which versions work.
    UnsupportedVersion {
        /// The major version asked for.
        major: u16,
        /// The minor version asked for.
        minor: u16,
    },
    /// The real StartupMessage.
    Startup {
        /// Major protocol version (3).
        major: u16,
        /// Minor protocol version (0, or 2 for PostgreSQL 18 clients).
        minor: u16,
        /// Parameters in the order the client sent them.
        params: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    },
}

impl StartupPacket<'_> {
    /// Looks up a startup parameter by name.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params, .. } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_ref()),
            _ => None,
        }
    }
}

/// Reads the length prefix of a startup packet; `None` until four bytes are
/// there. Lengths below 8 or above [`MAX_STARTUP_LEN`] are rejected.
pub fn peek_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(DecodeError::Invalid("startup", "impossible packet length"));
    }
    Ok(Some(len))
}

/// Decodes one whole startup packet, length prefix included.
pub fn parse(packet: &[u8]) -> Result<StartupPacket<'_>, DecodeError> {
    let mut f = Fields::new(packet, "startup");
    let len = f.i32()? as usize;
    if len != packet.len() {
        return Err(DecodeError::Invalid("startup", "length does not match"));
    }
    let code = f.i32()?;
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let pid = f.i32()?;
            let secret = f.remaining();
            if secret.is_empty() || secret.len() > 256 {
                return Err(DecodeError::Invalid("cancel", "bad secret key length"));
            }
            Ok(StartupPacket::Cancel { pid, secret })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Ok(StartupPacket::UnsupportedVersion { major, minor });
            }
            let mut params = Vec::new();
            loop {
                let key = f.text()?;
                if key.is_empty() {
                    break;
                }
                let value = f.text()?;
                params.push((key, value));
            }
            if !f.is_empty() {
                return Err(DecodeError::Invalid("startup", "data after terminator"));
            }
            Ok(StartupPacket::Startup {
                major,
                minor,
                params,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((8 + rest.len()) as i32).to_be_bytes());
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn decodes_requests() {
        assert_eq!(
            parse(&packet(SSL_REQUEST_CODE, b"")).unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            parse(&packet(GSSENC_REQUEST_CODE, b"")).unwrap(),
            StartupPacket::GssEncRequest
        );
        let c = packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 42, 1, 2, 3, 4]);
        assert_eq!(
            parse(&c).unwrap(),
            StartupPacket::Cancel {
                pid: 42,
                secret: &[1, 2, 3, 4]
            }
        );
    }

    #[test]
    fn decodes_startup_params_in_order() {
        let p = packet(
            196_608,
            b"user\0alice\0database\0shop\0options\0-c search_path=x\0\0",
        );
        let s = parse(&p).unwrap();
        assert_eq!(s.param("user"), Some("alice"));
        assert_eq!(s.param("options"), Some("-c search_path=x"));
        match s {
            StartupPacket::Startup {
                params,
                major: 3,
                minor: 0,
            } => assert_eq!(params.len(), 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_packets() {
        assert!(peek_len(&[0, 0, 0, 7]).is_err());
        assert!(peek_len(&[0, 1, 0, 0]).is_err());
        assert!(parse(&packet(196_608, b"user\0alice")).is_err());
        assert!(parse(&packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 1])).is_err());
    }

    #[test]
    fn other_protocol_versions_are_reported_not_rejected() {
        assert_eq!(
            parse(&packet(0x0002_0000, b"\0")).unwrap(),
            StartupPacket::UnsupportedVersion { major: 2, minor: 0 }
        );
        // An unknown request code in the 1234.x range is an unsupported version too.
        assert_eq!(
            parse(&packet(80_877_110, b"")).unwrap(),
            StartupPacket::UnsupportedVersion {
                major: 1234,
                minor: 5686
            }
        );
    }
}
