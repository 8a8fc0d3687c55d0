//! Negotiation: everything a client may send before its StartupMessage
//! (SSLRequest, GSSENCRequest, PostgreSQL 17 direct TLS, CancelRequest),
//! time-boxed, and what happens to clients that never get a session: those
//! that fail or send something the proxy must refuse (told why when they
//! can still read it, logged without flooding), and those that arrive while
//! the proxy is at `--max-connections` (answered as PostgreSQL would).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::log_limit::{self, LogLimiter};
use crate::net::stream::MaybeTls;
use crate::session::context::ServerContext;
use crate::session::{send_and_close, ClientStream};
use crate::tracker::SessionInfo;
use crate::wire::error_response::ProxyError;
use crate::wire::startup::{self, StartupPacket};
use crate::wire::DecodeError;

/// The most time a client that arrives while the proxy is full gets to
/// reach its StartupMessage (within `--startup-timeout`): enough for a TLS
/// handshake, short enough that refused clients cannot pile up.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The most time spent writing the error that turns a client away: the
/// message is small, but a client that never reads must not hold the task.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients that failed negotiation (port scans, health checks that connect
/// and hang up, garbage): logged at most once per window.
static NEGOTIATION_FAILURES: LogLimiter =
    LogLimiter::new("failed client negotiations", log_limit::DEFAULT_INTERVAL);
/// Clients turned away at `--max-connections`.
static OVER_LIMIT: LogLimiter = LogLimiter::new(
    "clients refused at --max-connections",
    log_limit::DEFAULT_INTERVAL,
);

/// A client's address for logs: the address, or `unknown` when the socket
/// could not tell.
#[derive(Debug, Clone, Copy)]
pub struct Peer(Option<SocketAddr>);

impl Peer {
    /// The remote address of `socket`.
    pub fn of(socket: &TcpStream) -> Peer {
        Peer(socket.peer_addr().ok())
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("unknown"),
        }
    }
}

/// Why negotiation ended without a StartupMessage to forward (logged; some
/// are also sent to the client, see [`NegotiationError::answer`]).
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    /// Socket error during negotiation.
    #[error("client I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The client did not send a StartupMessage in time.
    #[error("client did not complete startup within {0:?}")]
    StartupTimeout(Duration),
    /// The startup packet was malformed.
    #[error("invalid startup packet: {0}")]
    BadStartup(#[from] DecodeError),
    /// The StartupMessage asks for a protocol other than 3.x.
    #[error("unsupported frontend protocol {major}.{minor}: qproxy supports protocol 3")]
    UnsupportedProtocol {
        /// The major version asked for.
        major: u16,
        /// The minor version asked for.
        minor: u16,
    },
    /// Direct TLS from a client while the proxy has no certificate.
    #[error("client started TLS directly but no --tls-cert/--tls-key are configured")]
    NoTls,
    /// The TLS handshake with the client failed.
    #[error("TLS handshake with client failed: {0}")]
    Handshake(std::io::Error),
    /// More negotiation packets than the protocol allows.
    #[error("too many negotiation requests before the StartupMessage")]
    TooManyRequests,
}

impl NegotiationError {
    /// The error the client is sent, when it can still be told anything:
    /// it speaks the protocol on a stream that works, and sent something
    /// the proxy has to refuse. Socket and TLS failures leave nobody to
    /// tell (a client in the middle of a TLS handshake cannot read an
    /// ErrorResponse).
    fn answer(&self) -> Option<ProxyError> {
        match self {
            NegotiationError::BadStartup(_) | NegotiationError::TooManyRequests => {
                Some(ProxyError::ProtocolViolation)
            }
            NegotiationError::UnsupportedProtocol { .. } => Some(ProxyError::UnsupportedProtocol),
            NegotiationError::Io(_)
            | NegotiationError::StartupTimeout(_)
            | NegotiationError::NoTls
            | NegotiationError::Handshake(_) => None,
        }
    }
}

/// What negotiation produced.
enum Negotiated {
    /// A cancel request was handled; nothing more to do.
    Cancelled,
    /// A StartupMessage to forward.
    Startup {
        client: ClientStream,
        packet: Vec<u8>,
        info: SessionInfo,
    },
    /// The client sent something the proxy refuses; it still speaks the
    /// protocol on `client`, so it is told why.
    Refused {
        client: ClientStream,
        error: NegotiationError,
    },
}

/// Negotiates within `--startup-timeout` and returns the client, its
/// StartupMessage and who it is; `None` when there is no session to start
/// (a cancel request was served, or the client failed or was refused and
/// has been dealt with).
pub(crate) async fn startup(
    socket: TcpStream,
    ctx: &ServerContext,
    peer: Peer,
) -> Option<(ClientStream, Vec<u8>, SessionInfo)> {
    let negotiated = tokio::time::timeout(ctx.config.startup_timeout, negotiate(socket, ctx)).await;
    match negotiated {
        Err(_) => {
            if NEGOTIATION_FAILURES.should_log() {
                tracing::info!(
                    %peer,
                    "{}",
                    NegotiationError::StartupTimeout(ctx.config.startup_timeout)
                );
            }
            None
        }
        Ok(Err(e)) => {
            if NEGOTIATION_FAILURES.should_log() {
                tracing::info!(%peer, error = %e, "connection closed during negotiation");
            }
            None
        }
        Ok(Ok(Negotiated::Cancelled)) => None,
        Ok(Ok(Negotiated::Refused { mut client, error })) => {
            if NEGOTIATION_FAILURES.should_log() {
                tracing::info!(%peer, error = %error, "startup refused");
            }
            if let Some(kind) = error.answer() {
                answer(&mut client, kind, &error.to_string()).await;
            }
            None
        }
        Ok(Ok(Negotiated::Startup {
            client,
            packet,
            info,
        })) => Some((client, packet, info)),
    }
}

/// Sends the FATAL error that turns a client away, within [`ANSWER_TIMEOUT`].
async fn answer(client: &mut ClientStream, kind: ProxyError, message: &str) {
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, send_and_close(client, kind, message)).await;
}

/// Turns away a client that arrived while the proxy is at
/// `--max-connections`, the way PostgreSQL does: negotiation runs as usual
/// (a libpq client that asked for TLS gets its answer, and then its TLS,
/// before anything else), the StartupMessage is read, and the answer is
/// FATAL 53300 "sorry, too many clients already". A CancelRequest is still
/// forwarded, as PostgreSQL serves those when full too. Time-boxed by
/// [`REFUSAL_TIMEOUT`].
pub async fn refuse(socket: TcpStream, ctx: Arc<ServerContext>) {
    let peer = Peer::of(&socket);
    let limit = ctx.config.startup_timeout.min(REFUSAL_TIMEOUT);
    let (mut client, kind, message) =
        match tokio::time::timeout(limit, negotiate(socket, &ctx)).await {
            Ok(Ok(Negotiated::Startup { client, .. })) => (
                client,
                ProxyError::TooManyConnections,
                "sorry, too many clients already".to_string(),
            ),
            Ok(Ok(Negotiated::Refused { client, error })) => match error.answer() {
                Some(kind) => (client, kind, error.to_string()),
                None => return,
            },
            Ok(Ok(Negotiated::Cancelled)) | Ok(Err(_)) | Err(_) => return,
        };
    if OVER_LIMIT.should_log() {
        tracing::info!(
            %peer,
            max_connections = ctx.config.max_connections,
            "client refused: the proxy is at --max-connections"
        );
    }
    answer(&mut client, kind, &message).await;
}

async fn negotiate(tcp: TcpStream, ctx: &ServerContext) -> Result<Negotiated, NegotiationError> {
    let mut client = ClientStream::Plain(tcp);
    // SSLRequest, GSSENCRequest, then the StartupMessage: three is the most
    // a well-behaved client sends; one more for direct TLS.
    for _ in 0..4 {
        if let MaybeTls::Plain(tcp) = &client {
            let mut first = [0u8; 1];
            if tcp.peek(&mut first).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            if first[0] == startup::TLS_HANDSHAKE_BYTE {
                client = accept_tls(client, ctx).await?;
                continue;
            }
        }
        let packet = match read_startup_packet(&mut client).await {
            Ok(packet) => packet,
            Err(error @ NegotiationError::BadStartup(_)) => {
                return Ok(Negotiated::Refused { client, error })
            }
            Err(e) => return Err(e),
        };
        let parsed = match startup::parse(&packet) {
            Ok(parsed) => parsed,
            Err(e) => {
                return Ok(Negotiated::Refused {
                    client,
                    error: e.into(),
                })
            }
        };
        match parsed {
            StartupPacket::SslRequest => {
                if ctx.tls.is_some() && !client.is_tls() {
                    client.write_all(b"S").await?;
                    client.flush().await?;
                    client = accept_tls(client, ctx).await?;
                } else {
                    client.write_all(b"N").await?;
                    client.flush().await?;
                }
            }
            StartupPacket::GssEncRequest => {
                client.write_all(b"N").await?;
                client.flush().await?;
            }
            StartupPacket::Cancel { pid, secret } => {
                crate::session::cancel::forward(
                    &ctx.upstream,
                    &ctx.cancel_keys,
                    &packet,
                    pid,
                    secret,
                )
                .await;
                return Ok(Negotiated::Cancelled);
            }
            StartupPacket::UnsupportedVersion { major, minor } => {
                return Ok(Negotiated::Refused {
                    client,
                    error: NegotiationError::UnsupportedProtocol { major, minor },
                });
            }
            start @ StartupPacket::Startup { .. } => {
                let user = start.param("user").map(Arc::from);
                let database = start
                    .param("database")
                    .map(Arc::from)
                    .or_else(|| user.clone());
                let application_name = start
                    .param("application_name")
                    .filter(|s| !s.is_empty())
                    .map(Arc::from);
                let info = SessionInfo {
                    connection_id: 0,
                    database,
                    user,
                    application_name,
                };
                return Ok(Negotiated::Startup {
                    client,
                    packet,
                    info,
                });
            }
        }
    }
    Ok(Negotiated::Refused {
        client,
        error: NegotiationError::TooManyRequests,
    })
}

async fn accept_tls(
    client: ClientStream,
    ctx: &ServerContext,
) -> Result<ClientStream, NegotiationError> {
    let (MaybeTls::Plain(tcp), Some(acceptor)) = (client, &ctx.tls) else {
        return Err(NegotiationError::NoTls);
    };
    let tls = acceptor
        .accept(tcp)
        .await
        .map_err(NegotiationError::Handshake)?;
    Ok(MaybeTls::Tls(Box::new(tls)))
}

/// Reads exactly one startup packet: never more, so no bytes meant for a
/// TLS handshake that follows are consumed by mistake.
async fn read_startup_packet<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, NegotiationError> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let total = startup::peek_len(&len)?.unwrap_or(0);
    let mut packet = vec![0u8; total];
    packet[..4].copy_from_slice(&len);
    s.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}
