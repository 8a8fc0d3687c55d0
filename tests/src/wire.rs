//! A bare protocol client for exchanges the driver libraries never produce: several statements
//! before one Sync, Flush without Sync, messages written before the previous replies are read.
//! Replies are summarized as short strings so a test can state the exact expected sequence.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A byte stream to a server: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`].
pub type BoxedIo = Box<dyn Io>;

/// The request codes of the 8-byte negotiation messages sent before a StartupMessage.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// Plain TCP to `127.0.0.1:port`.
pub async fn plain(port: u16) -> Result<BoxedIo> {
    Ok(Box::new(TcpStream::connect(("127.0.0.1", port)).await?))
}

/// Sends GSSENCRequest and returns the one-byte answer (`G` or `N`) and the stream.
pub async fn gssenc_request(port: u16) -> Result<(u8, TcpStream)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request = BytesMut::new();
    request.put_i32(8);
    request.put_u32(GSSENC_REQUEST);
    stream.write_all(&request).await?;
    let answer = tokio::time::timeout(Duration::from_secs(20), stream.read_u8())
        .await
        .context("no answer to GSSENCRequest within 20 s")??;
    Ok((answer, stream))
}

/// TLS negotiated the classic way: SSLRequest, `S`, then the handshake; the server's
/// certificate must chain to `ca_cert` and name 127.0.0.1.
pub async fn tls_after_ssl_request(port: u16, ca_cert: &Path) -> Result<BoxedIo> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request = BytesMut::new();
    request.put_i32(8);
    request.put_u32(SSL_REQUEST);
    stream.write_all(&request).await?;
    let answer = tokio::time::timeout(Duration::from_secs(20), stream.read_u8())
        .await
        .context("no answer to SSLRequest within 20 s")??;
    if answer != b'S' {
        bail!("SSLRequest answered with {:?}", answer as char);
    }
    tls_handshake(stream, ca_cert, false).await
}

/// PostgreSQL 17's direct TLS: the ClientHello is the first thing sent, with ALPN `postgresql`.
pub async fn direct_tls(port: u16, ca_cert: &Path) -> Result<BoxedIo> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    tls_handshake(stream, ca_cert, true).await
}

async fn tls_handshake(stream: TcpStream, ca_cert: &Path, alpn: bool) -> Result<BoxedIo> {
    let mut config = crate::certs::client_config_trusting(ca_cert)?;
    if alpn {
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let tls = tokio::time::timeout(Duration::from_secs(20), connector.connect(name, stream))
        .await
        .context("TLS handshake did not finish within 20 s")??;
    Ok(Box::new(tls))
}

/// Frontend messages queued to be written in one go.
#[derive(Debug, Default)]
pub struct Batch {
    buf: BytesMut,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse (`P`) `sql` as statement `name` ("" = unnamed), no declared parameter types.
    pub fn parse(mut self, name: &str, sql: &str) -> Self {
        frontend::parse(name, sql, std::iter::empty(), &mut self.buf).expect("parse message");
        self
    }

    /// Bind (`B`) statement `statement` to `portal` with text parameters.
    pub fn bind(mut self, portal: &str, statement: &str, params: &[&str]) -> Self {
        let result = frontend::bind(
            portal,
            statement,
            std::iter::empty::<i16>(),
            params.iter().copied(),
            |param: &str, buf: &mut BytesMut| {
                buf.extend_from_slice(param.as_bytes());
                Ok(IsNull::No)
            },
            std::iter::empty::<i16>(),
            &mut self.buf,
        );
        if result.is_err() {
            panic!("bind message could not be built");
        }
        self
    }

    /// Describe (`D`) portal `portal`.
    pub fn describe_portal(mut self, portal: &str) -> Self {
        frontend::describe(b'P', portal, &mut self.buf).expect("describe message");
        self
    }

    /// Execute (`E`) `portal` with no row limit.
    pub fn execute(mut self, portal: &str) -> Self {
        frontend::execute(portal, 0, &mut self.buf).expect("execute message");
        self
    }

    /// Parse, bind and execute `sql` unnamed: one extended-protocol statement.
    pub fn statement(self, sql: &str) -> Self {
        self.parse("", sql).bind("", "", &[]).execute("")
    }

    /// Sync (`S`).
    pub fn sync(mut self) -> Self {
        frontend::sync(&mut self.buf);
        self
    }

    /// Flush (`H`).
    pub fn flush(mut self) -> Self {
        frontend::flush(&mut self.buf);
        self
    }

    /// FunctionCall (`F`) of the function with OID `function`, text arguments, text result.
    pub fn function_call(mut self, function: u32, args: &[&str]) -> Self {
        let mut body = BytesMut::new();
        body.put_u32(function);
        body.put_i16(1); // one format code for all arguments:
        body.put_i16(0); // text
        body.put_i16(i16::try_from(args.len()).expect("few arguments"));
        for arg in args {
            body.put_i32(i32::try_from(arg.len()).expect("short argument"));
            body.put_slice(arg.as_bytes());
        }
        body.put_i16(0); // text result
        self.buf.put_u8(b'F');
        self.buf
            .put_i32(i32::try_from(body.len() + 4).expect("short message"));
        self.buf.put_slice(&body);
        self
    }

    /// A message with tag `tag` and exactly this body, whatever it holds: framed correctly,
    /// its content as garbled as a test needs.
    pub fn raw(mut self, tag: u8, body: &[u8]) -> Self {
        self.buf.put_u8(tag);
        self.buf
            .put_i32(i32::try_from(body.len() + 4).expect("short message"));
        self.buf.put_slice(body);
        self
    }

    /// Simple Query (`Q`).
    pub fn query(mut self, sql: &str) -> Self {
        frontend::query(sql, &mut self.buf).expect("query message");
        self
    }
}

/// A connection speaking the protocol by hand; authenticates only `trust` roles.
pub struct WireConn {
    stream: BoxedIo,
    read_buf: BytesMut,
}

impl std::fmt::Debug for WireConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireConn").finish_non_exhaustive()
    }
}

impl WireConn {
    /// Connects to `127.0.0.1:port` as `user` (a `trust` role) and reads up to ReadyForQuery.
    pub async fn connect(port: u16, user: &str, database: &str) -> Result<Self> {
        let params = [("user", user), ("database", database)];
        Ok(Self::start(plain(port).await?, &params).await?.0)
    }

    /// Sends a StartupMessage with `params` over `stream` and reads up to ReadyForQuery,
    /// returning the connection and the summaries of the startup replies (ParameterStatus and
    /// BackendKeyData left out, since they vary).
    pub async fn start(stream: BoxedIo, params: &[(&str, &str)]) -> Result<(Self, Vec<String>)> {
        let mut conn = Self {
            stream,
            read_buf: BytesMut::with_capacity(8192),
        };
        let mut startup = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut startup)?;
        conn.stream.write_all(&startup).await?;
        let mut replies = Vec::new();
        loop {
            let reply = conn.next_summary().await?;
            if reply.starts_with("ParameterStatus") || reply == "BackendKeyData" {
                continue;
            }
            if reply.starts_with("Error") || reply.starts_with("Authentication(") {
                bail!("startup failed at {reply}, after {replies:?}");
            }
            let done = reply.starts_with("ReadyForQuery");
            replies.push(reply);
            if done {
                return Ok((conn, replies));
            }
        }
    }

    /// The SASL mechanisms offered to `user` on a plain connection to `127.0.0.1:port`.
    pub async fn sasl_mechanisms(port: u16, user: &str, database: &str) -> Result<Vec<String>> {
        Self::sasl_mechanisms_over(plain(port).await?, user, database).await
    }

    /// The SASL mechanisms offered to `user` over `stream`; the exchange is abandoned right after
    /// the server's AuthenticationSASL.
    pub async fn sasl_mechanisms_over(
        stream: BoxedIo,
        user: &str,
        database: &str,
    ) -> Result<Vec<String>> {
        let mut conn = Self {
            stream,
            read_buf: BytesMut::with_capacity(8192),
        };
        let mut startup = BytesMut::new();
        frontend::startup_message([("user", user), ("database", database)], &mut startup)?;
        conn.stream.write_all(&startup).await?;
        match conn.next_frame().await? {
            Frame::Known(Message::AuthenticationSasl(body)) => {
                let mut mechanisms = Vec::new();
                let mut iter = body.mechanisms();
                while let Some(mechanism) = iter.next()? {
                    mechanisms.push(mechanism.to_string());
                }
                Ok(mechanisms)
            }
            other => bail!("expected AuthenticationSASL, got {}", other.summary()?),
        }
    }

    /// Writes the whole batch in one write call.
    pub async fn send(&mut self, batch: Batch) -> Result<()> {
        self.stream.write_all(&batch.buf).await?;
        Ok(())
    }

    /// Reads the next backend message (20 s time limit).
    async fn next_frame(&mut self) -> Result<Frame> {
        loop {
            // postgres-protocol does not know FunctionCallResponse and NegotiateProtocolVersion.
            if self.read_buf.len() >= 5 && matches!(self.read_buf[0], b'V' | b'v') {
                let len = u32::from_be_bytes(self.read_buf[1..5].try_into()?) as usize;
                if len < 4 {
                    bail!("invalid message length {len}");
                }
                if self.read_buf.len() > len {
                    let tag = self.read_buf[0];
                    self.read_buf.advance(5);
                    let body = self.read_buf.split_to(len - 4);
                    return Ok(Frame::Other(tag, body));
                }
            } else if let Some(message) = Message::parse(&mut self.read_buf)? {
                return Ok(Frame::Known(message));
            }
            let read = tokio::time::timeout(
                Duration::from_secs(20),
                self.stream.read_buf(&mut self.read_buf),
            )
            .await
            .context("no backend message within 20 s")??;
            if read == 0 {
                bail!("connection closed by the server");
            }
        }
    }

    /// The summary of the next backend message.
    pub async fn next_summary(&mut self) -> Result<String> {
        self.next_frame().await?.summary()
    }

    /// Summaries of the next `n` messages.
    pub async fn read_n(&mut self, n: usize) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_summary().await?);
        }
        Ok(out)
    }

    /// Summaries of messages up to and including the `count`-th ReadyForQuery.
    pub async fn read_until_ready(&mut self, count: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < count {
            let summary = self.next_summary().await?;
            if summary.starts_with("ReadyForQuery") {
                seen += 1;
            }
            out.push(summary);
        }
        Ok(out)
    }
}

/// One backend message.
enum Frame {
    Known(Message),
    /// A message postgres-protocol does not decode: its tag and body.
    Other(u8, BytesMut),
}

impl Frame {
    fn summary(&self) -> Result<String> {
        match self {
            Frame::Known(message) => summarize(message),
            Frame::Other(b'V', body) => {
                let mut body = &body[..];
                let len = body.get_i32();
                Ok(if len < 0 {
                    "FunctionCallResponse(NULL)".to_string()
                } else {
                    format!("FunctionCallResponse({})", String::from_utf8_lossy(body))
                })
            }
            Frame::Other(b'v', body) => {
                let mut body = &body[..];
                // PostgreSQL before 18 sends its whole version code (3 << 16 | minor) here.
                let version = body.get_i32();
                let minor = version & 0xffff;
                let count = body.get_i32();
                let names: Vec<String> = body
                    .split(|b| *b == 0)
                    .take(usize::try_from(count)?)
                    .map(|name| String::from_utf8_lossy(name).into_owned())
                    .collect();
                Ok(format!(
                    "NegotiateProtocolVersion(3.{minor};{})",
                    names.join(",")
                ))
            }
            Frame::Other(tag, _) => Ok(format!("Unknown({})", *tag as char)),
        }
    }
}

/// A short, stable description of a backend message, e.g. `DataRow(1,x)` or `Error(22012)`.
pub fn summarize(message: &Message) -> Result<String> {
    Ok(match message {
        Message::ParseComplete => "ParseComplete".into(),
        Message::BindComplete => "BindComplete".into(),
        Message::CloseComplete => "CloseComplete".into(),
        Message::NoData => "NoData".into(),
        Message::PortalSuspended => "PortalSuspended".into(),
        Message::EmptyQueryResponse => "EmptyQueryResponse".into(),
        Message::CommandComplete(body) => format!("CommandComplete({})", body.tag()?),
        Message::ReadyForQuery(body) => format!("ReadyForQuery({})", body.status() as char),
        Message::ErrorResponse(body) => format!("Error({})", error_summary(body)?),
        Message::NoticeResponse(body) => {
            let mut fields = body.fields();
            let mut text = String::new();
            while let Some(field) = fields.next()? {
                if field.type_() == b'M' {
                    text = String::from_utf8_lossy(field.value_bytes()).into_owned();
                }
            }
            format!("Notice({text})")
        }
        Message::RowDescription(body) => {
            let names: Vec<String> = body.fields().map(|f| Ok(f.name().to_string())).collect()?;
            format!("RowDescription({})", names.join(","))
        }
        Message::DataRow(body) => {
            let buf = body.buffer();
            let values: Vec<String> = body
                .ranges()
                .map(|range| {
                    Ok(match range {
                        Some(range) => String::from_utf8_lossy(&buf[range]).into_owned(),
                        None => "NULL".to_string(),
                    })
                })
                .collect()?;
            format!("DataRow({})", values.join(","))
        }
        Message::ParameterStatus(body) => format!("ParameterStatus({})", body.name()?),
        Message::CopyInResponse(_) => "CopyInResponse".into(),
        Message::CopyOutResponse(_) => "CopyOutResponse".into(),
        Message::CopyData(_) => "CopyData".into(),
        Message::CopyDone => "CopyDone".into(),
        Message::AuthenticationOk => "AuthenticationOk".into(),
        Message::BackendKeyData(_) => "BackendKeyData".into(),
        Message::AuthenticationSasl(_) => "Authentication(SASL)".into(),
        Message::AuthenticationMd5Password(_) => "Authentication(MD5)".into(),
        Message::AuthenticationCleartextPassword => "Authentication(cleartext)".into(),
        _ => "Other".into(),
    })
}

fn error_summary(body: &postgres_protocol::message::backend::ErrorResponseBody) -> Result<String> {
    let mut fields = body.fields();
    while let Some(field) = fields.next()? {
        if field.type_() == b'C' {
            return Ok(String::from_utf8_lossy(field.value_bytes()).into_owned());
        }
    }
    Ok("no SQLSTATE".to_string())
}
