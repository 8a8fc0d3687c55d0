//! A bare protocol client for exchanges the driver libraries never produce: several statements
//! before one Sync, Flush without Sync, messages written before the previous replies are read.
//! Replies are summarized as short strings so a test can state the exact expected sequence.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

    /// Simple Query (`Q`).
    pub fn query(mut self, sql: &str) -> Self {
        frontend::query(sql, &mut self.buf).expect("query message");
        self
    }
}

/// A connection speaking the protocol by hand; authenticates only `trust` roles.
#[derive(Debug)]
pub struct WireConn {
    stream: TcpStream,
    read_buf: BytesMut,
}

impl WireConn {
    /// Connects to `127.0.0.1:port` as `user` (a `trust` role) and reads up to ReadyForQuery.
    pub async fn connect(port: u16, user: &str, database: &str) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut conn = Self {
            stream,
            read_buf: BytesMut::with_capacity(8192),
        };
        let mut startup = BytesMut::new();
        frontend::startup_message([("user", user), ("database", database)], &mut startup)?;
        conn.stream.write_all(&startup).await?;
        loop {
            match conn.next_message().await? {
                Message::AuthenticationOk
                | Message::ParameterStatus(_)
                | Message::BackendKeyData(_) => {}
                Message::ReadyForQuery(_) => return Ok(conn),
                Message::ErrorResponse(body) => {
                    bail!("startup failed: {}", error_summary(&body)?)
                }
                other => bail!("unexpected startup message {}", summarize(&other)?),
            }
        }
    }

    /// Writes the whole batch in one write call.
    pub async fn send(&mut self, batch: Batch) -> Result<()> {
        self.stream.write_all(&batch.buf).await?;
        Ok(())
    }

    /// Reads the next backend message (20 s time limit).
    pub async fn next_message(&mut self) -> Result<Message> {
        loop {
            if let Some(message) = Message::parse(&mut self.read_buf)? {
                return Ok(message);
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

    /// Summaries of the next `n` messages.
    pub async fn read_n(&mut self, n: usize) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(summarize(&self.next_message().await?)?);
        }
        Ok(out)
    }

    /// Summaries of messages up to and including the `count`-th ReadyForQuery.
    pub async fn read_until_ready(&mut self, count: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < count {
            let message = self.next_message().await?;
            if matches!(message, Message::ReadyForQuery(_)) {
                seen += 1;
            }
            out.push(summarize(&message)?);
        }
        Ok(out)
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
