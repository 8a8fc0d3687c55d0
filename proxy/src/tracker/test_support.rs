//! What the tracker's tests share: a harness that feeds a tracker and reads
//! its outbox, and builders for the messages real clients and servers send.

use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use postgres_protocol::message::frontend as fe;
use qproxy_analyzer::event::{QueryEvent, SessionEvent};

use super::{Effect, Now, SessionInfo, Tracker, TrackerLimits, Verdict};

/// The clocks, as the relay reads them for each batch.
pub(super) fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: SystemTime::now(),
    }
}

/// A tracker past authentication, and what it reported.
pub(super) struct Harness {
    pub(super) t: Tracker,
    /// Events reported and not yet taken, oldest first.
    events: Vec<SessionEvent>,
    /// Every effect other than an event, in order.
    pub(super) effects: Vec<Effect>,
}

pub(super) fn harness() -> Harness {
    harness_with(TrackerLimits::default(), false)
}

pub(super) fn harness_with(limits: TrackerLimits, strip: bool) -> Harness {
    let info = SessionInfo {
        connection_id: 7,
        database: Some("shop".into()),
        user: Some("app".into()),
        application_name: None,
    };
    let mut h = Harness::new(Tracker::new(info, limits, strip, now()));
    h.server(&[b('R', &[0, 0, 0, 0]), b('Z', b"I")]);
    assert!(h.t.is_idle());
    h
}

impl Harness {
    /// Follows `t` from where it is.
    pub(super) fn new(t: Tracker) -> Harness {
        Harness {
            t,
            events: Vec::new(),
            effects: Vec::new(),
        }
    }

    pub(super) fn client(&mut self, msgs: &[Vec<u8>]) {
        for m in msgs {
            assert_eq!(self.t.frontend(m, now()), Verdict::Forward);
        }
        self.collect();
    }

    pub(super) fn server(&mut self, msgs: &[Vec<u8>]) {
        for m in msgs {
            if crate::wire::backend::is_inspected(m[0]) {
                self.t.backend(m, now());
            } else {
                self.t.backend_streamed(m[0], Some(m));
            }
        }
        self.collect();
    }

    /// Drains the outbox, as the relay does after each batch.
    pub(super) fn collect(&mut self) {
        for effect in self.t.drain_effects() {
            match effect {
                Effect::Event(e) => self.events.push(e),
                other => self.effects.push(other),
            }
        }
    }

    /// The query events reported since the last call.
    pub(super) fn events(&mut self) -> Vec<QueryEvent> {
        self.collect();
        std::mem::take(&mut self.events)
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::Query(q) => Some(q),
                _ => None,
            })
            .collect()
    }

    /// Closes the session, as the relay does when either side ends.
    pub(super) fn close(&mut self) {
        self.t.close(now());
        self.collect();
    }

    /// Every event reported since the last call, queries and the close.
    pub(super) fn session_events(&mut self) -> Vec<SessionEvent> {
        self.collect();
        std::mem::take(&mut self.events)
    }

    /// How many effects so far match `which`.
    pub(super) fn count(&mut self, which: impl Fn(&Effect) -> bool) -> u64 {
        self.collect();
        self.effects.iter().filter(|e| which(e)).count() as u64
    }
}

/// A backend message.
pub(super) fn b(tag: char, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag as u8];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub(super) fn cc(tag: &str) -> Vec<u8> {
    b('C', format!("{tag}\0").as_bytes())
}

pub(super) fn err(code: &str) -> Vec<u8> {
    b(
        'E',
        format!("SERROR\0VERROR\0C{code}\0Mboom\0\0").as_bytes(),
    )
}

pub(super) fn row() -> Vec<u8> {
    b('D', &[0, 1, 0, 0, 0, 1, b'1'])
}

pub(super) fn rows(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|_| row()).collect()
}

/// PortalSuspended.
pub(super) fn suspended() -> Vec<u8> {
    b('s', b"")
}

pub(super) fn enc(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut buf = BytesMut::new();
    f(&mut buf);
    buf.to_vec()
}

pub(super) fn query(sql: &str) -> Vec<u8> {
    enc(|b| fe::query(sql, b).unwrap())
}

pub(super) fn parse(name: &str, sql: &str) -> Vec<u8> {
    enc(|b| fe::parse(name, sql, [], b).unwrap())
}

pub(super) fn bind(portal: &str, stmt: &str, params: &[Option<&str>]) -> Vec<u8> {
    enc(|b| {
        fe::bind(
            portal,
            stmt,
            [0i16],
            params.iter(),
            |p, buf| match p {
                Some(s) => {
                    buf.extend_from_slice(s.as_bytes());
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            [0i16],
            b,
        )
        .map_err(|_| ())
        .unwrap()
    })
}

/// A Bind with binary parameters (`int8`), as tokio-postgres sends them.
pub(super) fn bind_binary(portal: &str, stmt: &str, params: &[i64]) -> Vec<u8> {
    enc(|b| {
        fe::bind(
            portal,
            stmt,
            [1i16],
            params.iter(),
            |p, buf| {
                buf.extend_from_slice(&p.to_be_bytes());
                Ok(postgres_protocol::IsNull::No)
            },
            [0i16],
            b,
        )
        .map_err(|_| ())
        .unwrap()
    })
}

pub(super) fn execute(portal: &str) -> Vec<u8> {
    enc(|b| fe::execute(portal, 0, b).unwrap())
}

/// Execute with a row limit, as a cursor fetch sends it.
pub(super) fn fetch(portal: &str, rows: i32) -> Vec<u8> {
    enc(|buf| fe::execute(portal, rows, buf).unwrap())
}

pub(super) fn describe_portal() -> Vec<u8> {
    enc(|b| fe::describe(b'P', "", b).unwrap())
}

pub(super) fn close_portal(portal: &str) -> Vec<u8> {
    enc(|buf| fe::close(b'P', portal, buf).unwrap())
}

pub(super) fn sync() -> Vec<u8> {
    enc(fe::sync)
}

pub(super) fn flush() -> Vec<u8> {
    enc(fe::flush)
}
