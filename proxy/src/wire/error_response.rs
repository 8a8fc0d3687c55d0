//! ErrorResponse messages the proxy sends on its own behalf: the upstream is
//! unreachable, the client sent something malformed, the proxy is full or
//! shutting down, or authentication cannot work across it. Each carries one
//! SQLSTATE chosen in one place here.

/// The reasons the proxy itself ends a client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The upstream server could not be reached (08001).
    UpstreamUnreachable,
    /// The client sent a malformed or oversized message (08P01).
    ProtocolViolation,
    /// The proxy is draining for shutdown (57P01, as PostgreSQL's own
    /// "terminating connection due to administrator command", which
    /// drivers already treat as "reconnect").
    ShuttingDown,
    /// The proxy is at its connection limit (53300, as PostgreSQL's "sorry,
    /// too many clients already").
    TooManyConnections,
    /// The StartupMessage asks for a protocol major version other than 3
    /// (0A000, feature_not_supported, as PostgreSQL answers it).
    UnsupportedProtocol,
    /// The client announced SCRAM channel binding support that cannot work
    /// across the proxy's two TLS sessions (08P01, the code PostgreSQL uses
    /// for its own "channel binding negotiation error").
    ChannelBindingImpossible,
}

impl ProxyError {
    /// The SQLSTATE sent with this error.
    pub fn sqlstate(self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable => "08001",
            ProxyError::ProtocolViolation => "08P01",
            ProxyError::ShuttingDown => "57P01",
            ProxyError::TooManyConnections => "53300",
            ProxyError::UnsupportedProtocol => "0A000",
            ProxyError::ChannelBindingImpossible => "08P01",
        }
    }
}

/// Builds a FATAL ErrorResponse with the given reason. NUL bytes in the
/// message are replaced, since they would end the field early.
pub fn fatal(kind: ProxyError, message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + message.len());
    for (code, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', kind.sqlstate())] {
        body.push(code);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(b'M');
    body.extend_from_slice(b"qproxy: ");
    body.extend(message.bytes().map(|b| if b == 0 { b'?' } else { b }));
    body.push(0);
    body.push(0);
    let mut msg = Vec::with_capacity(body.len() + 5);
    msg.push(b'E');
    msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(&body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::backend::ErrorFields;

    #[test]
    fn round_trips_through_the_decoder() {
        let msg = fatal(
            ProxyError::UpstreamUnreachable,
            "connect to 127.0.0.1:1: refused",
        );
        let e = ErrorFields::decode(&msg).unwrap();
        assert_eq!(e.sqlstate(), Some(*b"08001"));
        assert_eq!(e.field(b'S'), Some(&b"FATAL"[..]));
        assert_eq!(
            e.field(b'M'),
            Some(&b"qproxy: connect to 127.0.0.1:1: refused"[..])
        );
    }

    #[test]
    fn nul_in_message_cannot_cut_the_field() {
        let msg = fatal(ProxyError::ProtocolViolation, "a\0b");
        let e = ErrorFields::decode(&msg).unwrap();
        assert_eq!(e.field(b'M'), Some(&b"qproxy: a?b"[..]));
    }
}
