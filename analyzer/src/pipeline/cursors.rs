//! SQL cursors (`DECLARE ... CURSOR FOR <query>`, then `FETCH n FROM c`
//! until it is drained, then `CLOSE c`) are one execution of their query.
//!
//! psycopg's server-side cursors (`conn.cursor(name=...)`), SQLAlchemy's
//! `stream_results`/`yield_per` on psycopg, and hand-written batch jobs
//! stream a large result this way. The wire shows a DECLARE that returns
//! no rows and then FETCHes of a chunk each. FETCH, MOVE and CLOSE are
//! [`StatementRole::CursorFetch`]: never N+1 or repeated-query children,
//! never counted against the query budget. And this module adds up what
//! the FETCHes returned, so an unbounded SELECT streamed through a cursor
//! is judged by the rows of the whole result, once, when the cursor ends:
//! at its CLOSE, at the COMMIT or ROLLBACK that ends it (unless it was
//! declared `WITH HOLD`), when its connection closes, or at shutdown.
//!
//! Only cursors over an unbounded-SELECT candidate are followed, at most
//! [`MAX_CURSORS_PER_CONNECTION`] per connection and one entry per
//! connection the correlator also tracks.
//!
//! [`StatementRole::CursorFetch`]: crate::correlation::StatementRole::CursorFetch

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use time::OffsetDateTime;

use super::facts::statement_facts;
use super::{indexes, statement_text, Analyzer, Returned};
use crate::detect::unbounded;
use crate::event::{Outcome, QueryEvent};
use crate::fingerprint::{Fingerprint, StatementKind};
use crate::sql::reader::Reader;

/// Open cursors followed per connection; a connection with more open at
/// once is rare (one per streamed export), and past it new ones are not
/// followed.
pub const MAX_CURSORS_PER_CONNECTION: usize = 16;

/// What a cursor statement does, read from its first tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorStatement<'a> {
    /// `DECLARE name ... CURSOR ... FOR query`.
    Declare {
        /// The cursor's name, as PostgreSQL folds it.
        name: Cow<'a, str>,
        /// `WITH HOLD`: it outlives its transaction.
        hold: bool,
        /// The query's text, as the statement has it.
        query: &'a str,
    },
    /// `FETCH` or `MOVE` from a cursor (only FETCH returns rows).
    Fetch {
        /// The cursor's name.
        name: Cow<'a, str>,
    },
    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    Close {
        /// The cursor's name; `None` for `ALL`.
        name: Option<Cow<'a, str>>,
    },
}

/// Reads a DECLARE, FETCH, MOVE or CLOSE; `None` for anything else or a
/// form it does not follow.
pub fn cursor_statement(stmt: &str) -> Option<CursorStatement<'_>> {
    let mut lx = Reader::new(stmt);
    let first = lx.word()?;
    let kw = |w: &str| first.eq_ignore_ascii_case(w);
    if kw("declare") {
        let name = identifier(&mut lx)?;
        let mut hold = false;
        // BINARY, ASENSITIVE/INSENSITIVE, [NO] SCROLL, CURSOR,
        // WITH/WITHOUT HOLD: keywords only, up to FOR.
        loop {
            let word = lx.word()?;
            if word.eq_ignore_ascii_case("for") {
                break;
            }
            if word.eq_ignore_ascii_case("with") && lx.keyword("hold") {
                hold = true;
            }
        }
        let query = stmt.get(lx.pos()..)?.trim();
        let query = query.strip_suffix(';').unwrap_or(query).trim_end();
        (!query.is_empty()).then_some(CursorStatement::Declare { name, hold, query })
    } else if kw("fetch") || kw("move") {
        // The direction (NEXT, FORWARD 1000, ABSOLUTE -1, ALL, ...) comes
        // first; the cursor's name is the statement's last token.
        last_identifier(&mut lx).map(|name| CursorStatement::Fetch { name })
    } else if kw("close") {
        if lx.keyword("all") {
            return Some(CursorStatement::Close { name: None });
        }
        identifier(&mut lx).map(|name| CursorStatement::Close { name: Some(name) })
    } else {
        None
    }
}

/// An identifier: a quoted one as written, an unquoted one lower-cased
/// (PostgreSQL's folding).
fn identifier<'a>(lx: &mut Reader<'a>) -> Option<Cow<'a, str>> {
    if let Some(quoted) = lx.quoted_identifier() {
        return Some(quoted);
    }
    let word = lx.word()?;
    Some(if word.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(word.to_ascii_lowercase())
    } else {
        Cow::Borrowed(word)
    })
}

/// The last identifier of the statement, skipping numbers and signs.
fn last_identifier<'a>(lx: &mut Reader<'a>) -> Option<Cow<'a, str>> {
    let mut last = None;
    loop {
        if !lx.more() {
            return last;
        }
        if let Some(id) = identifier(lx) {
            last = Some(id);
        } else if lx.punct(b';') {
            return last;
        } else {
            // A number or a sign of a direction's count.
            let before = lx.pos();
            let _ = lx.word_or_number();
            if lx.pos() == before {
                lx.skip();
            }
            last = None;
        }
    }
}

/// What is kept of a cursor's query while it is fetched.
#[derive(Debug, Clone)]
pub struct OpenCursor {
    /// The cursor's name.
    pub name: Box<str>,
    /// `WITH HOLD`.
    pub hold: bool,
    /// The declared query's fingerprint.
    pub fingerprint: Fingerprint,
    /// Rows its FETCHes returned so far.
    pub rows: u64,
    /// When the DECLARE started.
    pub declared_at: SystemTime,
    /// Its database.
    pub database: Option<Arc<str>>,
}

/// Open cursors by connection.
#[derive(Debug, Default)]
pub struct Cursors {
    open: HashMap<u64, Vec<OpenCursor>>,
}

impl Cursors {
    /// Follows a newly declared cursor (a redeclared name replaces the old
    /// one, which PostgreSQL would have refused anyway). `max_connections`
    /// caps the connections followed.
    pub fn declare(&mut self, connection: u64, cursor: OpenCursor, max_connections: usize) {
        if !self.open.contains_key(&connection) && self.open.len() >= max_connections.max(1) {
            return;
        }
        let open = self.open.entry(connection).or_default();
        open.retain(|c| c.name != cursor.name);
        if open.len() < MAX_CURSORS_PER_CONNECTION {
            open.push(cursor);
        }
    }

    /// A FETCH returned `rows`.
    pub fn fetched(&mut self, connection: u64, name: &str, rows: u64) {
        if let Some(c) = self
            .open
            .get_mut(&connection)
            .and_then(|open| open.iter_mut().find(|c| &*c.name == name))
        {
            c.rows = c.rows.saturating_add(rows);
        }
    }

    /// Cursors that end: one by name, all of the connection (`name`
    /// `None`), or, at a transaction's end, those not declared WITH HOLD
    /// (`transaction_end`).
    pub fn close(
        &mut self,
        connection: u64,
        name: Option<&str>,
        transaction_end: bool,
    ) -> Vec<OpenCursor> {
        let Some(open) = self.open.get_mut(&connection) else {
            return Vec::new();
        };
        let ends = |c: &OpenCursor| match name {
            Some(n) => &*c.name == n,
            None => !(transaction_end && c.hold),
        };
        let (ended, kept): (Vec<OpenCursor>, Vec<OpenCursor>) =
            std::mem::take(open).into_iter().partition(|c| ends(c));
        if kept.is_empty() {
            self.open.remove(&connection);
        } else {
            *open = kept;
        }
        ended
    }

    /// Every open cursor (shutdown).
    pub fn close_all(&mut self) -> Vec<OpenCursor> {
        self.open.drain().flat_map(|(_, v)| v).collect()
    }
}

impl Analyzer {
    /// Follows SQL cursors (see the module docs): a DECLARE of an unbounded
    /// candidate opens one, FETCHes add their rows, and CLOSE, the end of
    /// the transaction or of the connection rates the whole.
    pub(super) fn follow_cursor(&mut self, fp: &Fingerprint, q: &QueryEvent, now: Instant) {
        let conn = q.connection_id;
        match fp.kind {
            StatementKind::Commit | StatementKind::Rollback => {
                for cursor in self.cursors.close(conn, None, true) {
                    self.cursor_ended(cursor);
                }
                return;
            }
            StatementKind::Cursor => {}
            _ => return,
        }
        let text = statement_text(q, fp);
        match cursor_statement(text) {
            Some(CursorStatement::Declare { name, hold, query }) => {
                if !matches!(q.outcome, Outcome::Complete { .. }) {
                    return;
                }
                let inner = self.fingerprints.get(query);
                let Some(inner) = inner.first().filter(|f| !f.fallback) else {
                    return;
                };
                if let Some(db) = &q.database {
                    // The declared query runs: its filters and sorts are
                    // judged like any other execution's (and this asks for
                    // the catalog that qualifies its table).
                    if inner.kind == StatementKind::Select && !inner.tables.is_empty() {
                        let execution = indexes::Execution {
                            database: db,
                            fingerprint: inner.id,
                            normalized: &inner.normalized,
                            user: q.user.as_ref(),
                            at: OffsetDateTime::from(q.started_at),
                        };
                        self.indexes.executed(execution, || query, now);
                    }
                }
                let facts = self.facts_for_text(inner, query, q.database.as_ref());
                if !facts.parsed
                    || !unbounded::is_candidate(
                        inner.kind == StatementKind::Select,
                        inner.has_limit,
                        facts.aggregate_only,
                        facts.exists_only,
                        &inner.tables,
                    )
                {
                    return;
                }
                let cursor = OpenCursor {
                    name: Box::from(name.as_ref()),
                    hold,
                    fingerprint: inner.clone(),
                    rows: 0,
                    declared_at: q.started_at,
                    database: q.database.clone(),
                };
                self.cursors
                    .declare(conn, cursor, self.config.correlation.max_contexts);
            }
            Some(CursorStatement::Fetch { name }) => self.cursors.fetched(conn, &name, q.rows),
            Some(CursorStatement::Close { name }) => {
                for cursor in self.cursors.close(conn, name.as_deref(), false) {
                    self.cursor_ended(cursor);
                }
            }
            None => {}
        }
    }

    /// A SQL cursor ended: its query is rated by every row fetched.
    pub(super) fn cursor_ended(&mut self, cursor: OpenCursor) {
        // Its facts may have been evicted meanwhile: then read them again.
        let facts = self
            .facts
            .get(&cursor.fingerprint.id)
            .cloned()
            .unwrap_or_else(|| Arc::new(statement_facts(&cursor.fingerprint.normalized)));
        self.check_unbounded(
            &cursor.fingerprint,
            &facts,
            cursor.database.as_ref(),
            cursor.rows,
            cursor.declared_at,
            Returned::Cursor,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(stmt: &str) -> (String, bool, &str) {
        match cursor_statement(stmt) {
            Some(CursorStatement::Declare { name, hold, query }) => {
                (name.into_owned(), hold, query)
            }
            other => panic!("{stmt}: {other:?}"),
        }
    }

    fn fetch(stmt: &str) -> String {
        match cursor_statement(stmt) {
            Some(CursorStatement::Fetch { name }) => name.into_owned(),
            other => panic!("{stmt}: {other:?}"),
        }
    }

    #[test]
    fn reads_the_declare_forms_drivers_send() {
        // psycopg 3's named cursor.
        assert_eq!(
            declare(r#"DECLARE "export_1" CURSOR WITHOUT HOLD FOR SELECT id FROM orders"#),
            ("export_1".into(), false, "SELECT id FROM orders")
        );
        assert_eq!(
            declare(
                "declare Big binary no scroll cursor with hold for select * from t where a = $1;"
            ),
            ("big".into(), true, "select * from t where a = $1")
        );
        assert_eq!(declare(r#"DECLARE "a""b" CURSOR FOR SELECT 1"#).0, r#"a"b"#);
        assert_eq!(cursor_statement("DECLARE c CURSOR FOR"), None);
        assert_eq!(cursor_statement("DECLARE c CURSOR"), None);
    }

    #[test]
    fn the_fetch_target_is_the_last_name() {
        assert_eq!(fetch(r#"FETCH FORWARD 1000 FROM "export_1""#), "export_1");
        assert_eq!(fetch("fetch next from C"), "c");
        assert_eq!(fetch("FETCH c"), "c");
        assert_eq!(fetch("FETCH ABSOLUTE -1 IN c;"), "c");
        assert_eq!(fetch("MOVE BACKWARD ALL IN cur"), "cur");
        assert_eq!(cursor_statement("FETCH 10"), None);
        assert_eq!(
            cursor_statement(r#"CLOSE "export_1""#),
            Some(CursorStatement::Close {
                name: Some("export_1".into())
            })
        );
        assert_eq!(
            cursor_statement("close all"),
            Some(CursorStatement::Close { name: None })
        );
        assert_eq!(cursor_statement("SELECT 1"), None);
    }
}
