//! A small driver that plays statements through a [`Correlator`] the way the
//! proxy would report them: a clock, server-side transaction status, and the
//! command tag, so each correlation test is a few lines.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use qproxy_analyzer::correlation::{
    extract_tags, ContextId, CorrelationConfig, CorrelationSource, Correlator, EndReason,
    EndedRequest, StatementRole,
};
use qproxy_analyzer::event::{Outcome, Protocol, QueryEvent, TxStatus};
use smallvec::SmallVec;

/// Per-request state used by the tests: the SQL assigned to the request.
pub type Seen = Vec<String>;

/// Where a statement went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub id: ContextId,
    pub source: CorrelationSource,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub route: Option<String>,
    pub role: StatementRole,
}

pub struct Harness {
    pub c: Correlator<Seen>,
    sys: SystemTime,
    inst: Instant,
    elapsed: Duration,
    server_tx: HashMap<u64, TxStatus>,
    app: HashMap<u64, Arc<str>>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::with_config(CorrelationConfig::default())
    }
}

impl Harness {
    pub fn with_config(config: CorrelationConfig) -> Self {
        Harness {
            c: Correlator::new(config),
            sys: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            inst: Instant::now(),
            elapsed: Duration::ZERO,
            server_tx: HashMap::new(),
            app: HashMap::new(),
        }
    }

    pub fn sleep_ms(&mut self, ms: u64) {
        self.elapsed += Duration::from_millis(ms);
    }

    pub fn now(&self) -> Instant {
        self.inst + self.elapsed
    }

    /// The session's application_name as the server last reported it.
    pub fn set_app(&mut self, conn: u64, name: &str) {
        self.app.insert(conn, name.into());
    }

    pub fn stmt(&mut self, conn: u64, sql: &str) -> Stmt<'_> {
        let status = *self.server_tx.get(&conn).unwrap_or(&TxStatus::Idle);
        let ev = QueryEvent {
            connection_id: conn,
            sql: sql.into(),
            statement_index: 0,
            statement_name: None,
            protocol: Protocol::Simple,
            params_hash: None,
            param_hashes: SmallVec::new(),
            result_hashes: Vec::new(),
            offset: None,
            prepared_at: None,
            started_at: self.sys + self.elapsed,
            duration: Duration::from_millis(1),
            rows: 0,
            outcome: Outcome::Complete {
                tag: command_tag(sql).into(),
            },
            tx_status: status,
            application_name: self.app.get(&conn).cloned(),
            database: None,
            user: None,
            text_hold: None,
        };
        Stmt {
            h: self,
            ev,
            track_status: true,
        }
    }

    /// Runs `sql` on `conn` with defaults: simple protocol, 1 ms long,
    /// followed by 1 ms of client think time.
    pub fn run(&mut self, conn: u64, sql: &str) -> Placed {
        self.stmt(conn, sql).run()
    }

    /// Runs each `;`-separated part of `sql` as one multi-statement Query.
    pub fn run_multi(&mut self, conn: u64, sql: &str, parts: u16) -> Vec<Placed> {
        let shared: Arc<str> = sql.into();
        let status = *self.server_tx.get(&conn).unwrap_or(&TxStatus::Idle);
        let mut out = Vec::new();
        for i in 0..parts {
            let part = sql.split(';').nth(usize::from(i)).unwrap_or("").to_owned();
            let mut s = self.stmt(conn, &part);
            s.ev.sql = shared.clone();
            s.ev.statement_index = i;
            s.ev.tx_status = status;
            out.push(s.run());
        }
        out
    }

    pub fn close(&mut self, conn: u64) {
        self.server_tx.remove(&conn);
        self.c.connection_closed(conn);
    }

    pub fn expire(&mut self) {
        let now = self.now();
        self.c.expire_idle(now);
    }

    pub fn ended(&mut self) -> Vec<EndedRequest<Seen>> {
        self.c.drain_ended().collect()
    }

    /// Ended contexts as `(request_id or source, reason, statements)`.
    pub fn ended_summary(&mut self) -> Vec<(String, EndReason, Vec<String>)> {
        self.ended()
            .into_iter()
            .map(|e| {
                let name = e
                    .request
                    .request_id
                    .as_deref()
                    .map(str::to_owned)
                    .unwrap_or_else(|| e.request.source.as_str().to_owned());
                (name, e.reason, e.state)
            })
            .collect()
    }
}

pub struct Stmt<'h> {
    h: &'h mut Harness,
    pub ev: QueryEvent,
    track_status: bool,
}

impl Stmt<'_> {
    /// Executed from the named prepared statement `name` (extended protocol).
    pub fn named(mut self, name: &str) -> Self {
        self.ev.statement_name = Some(name.into());
        self.ev.protocol = Protocol::Extended;
        self
    }

    pub fn params(mut self, hashes: &[Option<u64>]) -> Self {
        self.ev.param_hashes = hashes.iter().copied().collect();
        self.ev.protocol = Protocol::Extended;
        self
    }

    /// Overrides the reported status (pipelined statements keep the status
    /// of the last ReadyForQuery).
    pub fn status(mut self, status: TxStatus) -> Self {
        self.ev.tx_status = status;
        self
    }

    /// Leaves the simulated server status unchanged (a dropped ReadyForQuery).
    pub fn untracked(mut self) -> Self {
        self.track_status = false;
        self
    }

    pub fn failed(mut self) -> Self {
        self.ev.outcome = Outcome::Error {
            sqlstate: *b"42P01",
        };
        self
    }

    pub fn run(self) -> Placed {
        let Stmt {
            h,
            ev,
            track_status,
        } = self;
        let tags = extract_tags(&ev.sql);
        let now = h.now();
        let obs = h.c.observe(&ev, tags.as_ref(), now);
        obs.state.push(statement_text(&ev));
        let placed = Placed {
            id: obs.request.id,
            source: obs.request.source,
            request_id: obs.request.request_id.as_deref().map(str::to_owned),
            trace_id: obs.request.trace_id.as_deref().map(str::to_owned),
            route: obs.request.route.as_deref().map(str::to_owned),
            role: obs.role,
        };
        if track_status {
            let before = *h
                .server_tx
                .get(&ev.connection_id)
                .unwrap_or(&TxStatus::Idle);
            let next = server_status(&statement_text(&ev), before);
            h.server_tx.insert(ev.connection_id, next);
        }
        h.elapsed += ev.duration + Duration::from_millis(1);
        placed
    }
}

fn statement_text(ev: &QueryEvent) -> String {
    ev.sql
        .split(';')
        .nth(usize::from(ev.statement_index))
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn first_words(sql: &str) -> (String, String) {
    let mut rest = sql.trim();
    // Skip leading comments, as the server does.
    while let Some(r) = rest.strip_prefix("/*") {
        rest = r
            .split_once("*/")
            .map_or("", |(_, after)| after)
            .trim_start();
    }
    let mut words = rest
        .split_whitespace()
        .map(|w| w.trim_end_matches(';').to_ascii_uppercase());
    (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    )
}

/// The CommandComplete tag PostgreSQL would send.
pub fn command_tag(sql: &str) -> String {
    let (first, second) = first_words(sql);
    match first.as_str() {
        "SELECT" => "SELECT 1".into(),
        "INSERT" => "INSERT 0 1".into(),
        "UPDATE" | "DELETE" => format!("{first} 1"),
        "END" => "COMMIT".into(),
        "ABORT" => "ROLLBACK".into(),
        "START" => "START TRANSACTION".into(),
        "DISCARD" => format!("DISCARD {second}"),
        _ => first,
    }
}

/// Transaction status after `sql` ran from `before`.
fn server_status(sql: &str, before: TxStatus) -> TxStatus {
    let (first, second) = first_words(sql);
    match (first.as_str(), second.as_str()) {
        ("BEGIN", _) | ("START", _) => TxStatus::InTransaction,
        ("ROLLBACK", "TO") => before,
        ("COMMIT", _) | ("END", _) | ("ROLLBACK", _) | ("ABORT", _) => TxStatus::Idle,
        _ => before,
    }
}
