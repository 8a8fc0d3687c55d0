//! What a statement means for correlation, read from its text and command
//! tag: transaction control, session settings, and the statements that set
//! `qproxy.request_id`.
//!
//! This is a deliberately small reader, not a parser: it must never fail,
//! it runs for every event, and it looks only at a statement's first few
//! tokens, read with the crate's one lexer and statement splitter
//! (`crate::sql`). The work per event is bounded by [`MAX_SCAN`].

use std::borrow::Cow;
use std::sync::Arc;

use crate::event::{Outcome, QueryEvent};
use crate::sql::reader::{is_word_byte, Reader};
use crate::sql::split;

/// Bytes of a SQL text scanned when locating a statement of a multi-statement
/// query or looking for `qproxy.request_id`. Correlation statements are short;
/// anything past this point is data.
pub const MAX_SCAN: usize = 64 * 1024;

/// Bytes of one statement examined for its role and a request-id change.
const CLASSIFY_SCAN: usize = 4 * 1024;

/// The setting applications use to name their request.
const REQUEST_VAR: &str = "qproxy.request_id";

/// The part a statement plays; anything other than [`Normal`](Self::Normal)
/// is bookkeeping, never a query a detector should count (an N+1 "child").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementRole {
    /// Application work: SELECT, INSERT, UPDATE, DDL, ...
    Normal,
    /// BEGIN, START TRANSACTION, COMMIT/END, ROLLBACK/ABORT, SAVEPOINT,
    /// RELEASE, ROLLBACK TO, PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED.
    TransactionControl,
    /// Sets or clears `qproxy.request_id` (SET, RESET, `set_config`).
    Correlation,
    /// Other SET/SHOW/RESET, DISCARD, DEALLOCATE, PREPARE, and
    /// `SELECT set_config(...)` (ORMs and pg_dump issue these constantly).
    SessionSetting,
    /// `FETCH`, `MOVE` and `CLOSE` of a SQL cursor: the rest of the one
    /// execution its `DECLARE` started (a server-side cursor streams a
    /// result in chunks), not statements of their own. The `DECLARE` is
    /// the statement that counts.
    CursorFetch,
}

/// How long a request id set by a statement lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetScope {
    /// `SET`, `SET SESSION`, `set_config(.., false)`: until changed.
    Session,
    /// `SET LOCAL`, `set_config(.., true)`: until the transaction ends.
    Local,
}

/// A statement's effect on the connection's request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestIdSignal {
    /// The request id is now `id`. When the value was a bind parameter
    /// (`set_config('qproxy.request_id', $1, ..)`), the proxy only has its
    /// hash, so `id` is `param:<16 hex>`: the text is lost but equal ids still
    /// compare equal, which is all correlation needs.
    Set {
        /// The request id.
        id: Arc<str>,
        /// How long it lasts.
        scope: SetScope,
    },
    /// `RESET`, `SET .. TO DEFAULT`, an empty string or NULL: no request id.
    Clear,
}

/// What a statement does to the session's transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxEffect {
    None,
    Begin,
    End,
    /// `COMMIT AND CHAIN`: ends one transaction and starts the next.
    Restart,
}

/// Session-wide resets that drop state correlation tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEffect {
    None,
    /// `RESET ALL`: settings (including the request id) back to defaults.
    ResetAll,
    /// `DISCARD ALL`: settings reset and prepared statements dropped; poolers
    /// send it when a connection is returned, so it also ends the request.
    DiscardAll,
    /// `DEALLOCATE ALL`: prepared statements dropped.
    DeallocateAll,
}

/// Everything correlation needs to know about one event's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classified {
    pub(crate) role: StatementRole,
    pub(crate) tx: TxEffect,
    pub(crate) session: SessionEffect,
    pub(crate) signal: Option<RequestIdSignal>,
}

/// The role of the statement an event executed. The N+1 detector uses it to
/// skip bookkeeping statements.
pub fn statement_role(ev: &QueryEvent) -> StatementRole {
    classify(ev).role
}

pub(crate) fn classify(ev: &QueryEvent) -> Classified {
    // Only a statement's head decides its role, and correlation statements
    // are short: capping here keeps a 1 MB bulk INSERT as cheap as `SELECT 1`.
    let stmt = match ev.statement_index {
        0 => nth_statement(head(&ev.sql, CLASSIFY_SCAN), 0),
        n => nth_statement(&ev.sql, n).map(|s| head(s, CLASSIFY_SCAN)),
    };
    let (mut role, mut tx, session) = match stmt {
        Some(s) => by_keyword(s),
        None => (StatementRole::Normal, TxEffect::None, SessionEffect::None),
    };
    let tag = match &ev.outcome {
        Outcome::Complete { tag } => Some(&**tag),
        _ => None,
    };
    if role == StatementRole::Normal {
        if let Some(tag) = tag {
            (role, tx) = by_tag(tag);
        }
    }
    if tx == TxEffect::Begin && matches!(ev.outcome, Outcome::Error { .. }) {
        tx = TxEffect::None;
    }
    let mut signal = None;
    if tag.is_some() && role != StatementRole::TransactionControl {
        if let Some(s) = stmt.filter(|s| contains_ci(s, REQUEST_VAR)) {
            signal = request_id_signal(s, &ev.param_hashes);
        }
    }
    if signal.is_some() {
        role = StatementRole::Correlation;
    }
    Classified {
        role,
        tx,
        session,
        signal,
    }
}

fn by_keyword(stmt: &str) -> (StatementRole, TxEffect, SessionEffect) {
    use StatementRole::*;
    let mut lx = Reader::new(stmt);
    let Some(first) = lx.word() else {
        return (Normal, TxEffect::None, SessionEffect::None);
    };
    let kw = |w: &str| first.eq_ignore_ascii_case(w);
    let none = SessionEffect::None;
    if kw("begin") || (kw("start") && lx.keyword("transaction")) {
        (TransactionControl, TxEffect::Begin, none)
    } else if kw("commit") || kw("end") || kw("rollback") || kw("abort") {
        let _ = lx.keyword("work") || lx.keyword("transaction");
        let effect = if lx.keyword("to") || lx.keyword("prepared") {
            TxEffect::None
        } else if lx.keyword("and") && lx.keyword("chain") {
            TxEffect::Restart
        } else {
            TxEffect::End
        };
        (TransactionControl, effect, none)
    } else if kw("savepoint") || kw("release") {
        (TransactionControl, TxEffect::None, none)
    } else if kw("prepare") && lx.keyword("transaction") {
        (TransactionControl, TxEffect::End, none)
    } else if kw("reset") {
        let all = lx.keyword("all");
        (
            SessionSetting,
            TxEffect::None,
            if all { SessionEffect::ResetAll } else { none },
        )
    } else if kw("discard") {
        let all = lx.keyword("all");
        (
            SessionSetting,
            TxEffect::None,
            if all { SessionEffect::DiscardAll } else { none },
        )
    } else if kw("deallocate") {
        let _ = lx.keyword("prepare");
        let all = lx.keyword("all");
        (
            SessionSetting,
            TxEffect::None,
            if all {
                SessionEffect::DeallocateAll
            } else {
                none
            },
        )
    } else if kw("fetch") || kw("move") || kw("close") {
        (CursorFetch, TxEffect::None, none)
    } else if kw("set")
        || kw("show")
        || kw("prepare")
        || (kw("select") && is_set_config_call(&mut lx))
    {
        (SessionSetting, TxEffect::None, none)
    } else {
        (Normal, TxEffect::None, none)
    }
}

/// Fallback when the text says nothing (too long, or hidden): the command
/// tag names the command (`ROLLBACK` is ambiguous with `ROLLBACK TO`, which
/// is why the text is asked first).
fn by_tag(tag: &str) -> (StatementRole, TxEffect) {
    use StatementRole::*;
    let first = tag.split(' ').next().unwrap_or("");
    match first {
        "BEGIN" | "START" => (TransactionControl, TxEffect::Begin),
        "COMMIT" | "ROLLBACK" if !tag.ends_with("PREPARED") => (TransactionControl, TxEffect::End),
        "PREPARE" if tag == "PREPARE TRANSACTION" => (TransactionControl, TxEffect::End),
        "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => (TransactionControl, TxEffect::None),
        "SET" | "SHOW" | "RESET" | "DISCARD" | "DEALLOCATE" | "PREPARE" => {
            (SessionSetting, TxEffect::None)
        }
        _ => (Normal, TxEffect::None),
    }
}

fn is_set_config_call(lx: &mut Reader<'_>) -> bool {
    match lx.word() {
        Some(w) if w.eq_ignore_ascii_case("set_config") => true,
        Some(w) if w.eq_ignore_ascii_case("pg_catalog") => {
            lx.punct(b'.')
                && lx
                    .word()
                    .is_some_and(|w| w.eq_ignore_ascii_case("set_config"))
        }
        _ => false,
    }
}

/// Reads a request-id change from one statement's text. Recognised forms:
/// `SET [SESSION|LOCAL] qproxy.request_id {=|TO} {'id'|id|DEFAULT}`,
/// `RESET qproxy.request_id`, and
/// `SELECT [pg_catalog.]set_config('qproxy.request_id', value, is_local)`
/// where `value` is a literal, NULL or a `$n` parameter (identified by its
/// hash from `param_hashes`) and `is_local` a boolean literal (a `$n` there
/// is read as `false`). Anything else, including a value computed by an
/// expression, is `None`.
pub fn request_id_signal(stmt: &str, param_hashes: &[Option<u64>]) -> Option<RequestIdSignal> {
    let mut lx = Reader::new(stmt);
    let first = lx.word()?;
    if first.eq_ignore_ascii_case("set") {
        let scope = if lx.keyword("local") {
            SetScope::Local
        } else {
            let _ = lx.keyword("session");
            SetScope::Session
        };
        if !lx.setting_name(REQUEST_VAR) || !(lx.punct(b'=') || lx.keyword("to")) {
            return None;
        }
        if lx.keyword("default") {
            return Some(RequestIdSignal::Clear);
        }
        let value = lx
            .string()
            .or_else(|| lx.word_or_number().map(Cow::Borrowed))?;
        return Some(set_signal(&value, scope));
    }
    if first.eq_ignore_ascii_case("reset") {
        return lx
            .setting_name(REQUEST_VAR)
            .then_some(RequestIdSignal::Clear);
    }
    // set_config(...) may sit anywhere in a SELECT list; a few tries suffice.
    let text = lx.text();
    let mut from = 0;
    for _ in 0..8 {
        let Some(at) = find_ci(&text[from..], "set_config").map(|i| from + i) else {
            break;
        };
        from = at + "set_config".len();
        if at > 0 && is_word_byte(text.as_bytes()[at - 1]) {
            continue;
        }
        let mut lx = lx.at(from);
        if let Some(signal) = set_config_args(&mut lx, param_hashes) {
            return Some(signal);
        }
    }
    None
}

fn set_config_args(lx: &mut Reader<'_>, params: &[Option<u64>]) -> Option<RequestIdSignal> {
    if !lx.punct(b'(') || !lx.string()?.eq_ignore_ascii_case(REQUEST_VAR) || !lx.punct(b',') {
        return None;
    }
    let value: Option<Cow<'_, str>> = if let Some(n) = lx.param() {
        let hash = (*params.get(n.checked_sub(1)?)?)?;
        Some(Cow::Owned(format!("param:{hash:016x}")))
    } else if lx.keyword("null") {
        None
    } else {
        Some(lx.string()?)
    };
    lx.skip_cast();
    if !lx.punct(b',') {
        return None;
    }
    let local = if lx.param().is_some() {
        false
    } else if let Some(s) = lx.string() {
        matches!(
            s.to_ascii_lowercase().as_str(),
            "t" | "true" | "on" | "yes" | "1"
        )
    } else {
        lx.word()?.eq_ignore_ascii_case("true")
    };
    let scope = if local {
        SetScope::Local
    } else {
        SetScope::Session
    };
    Some(match value {
        Some(v) => set_signal(&v, scope),
        None => RequestIdSignal::Clear,
    })
}

fn set_signal(value: &str, scope: SetScope) -> RequestIdSignal {
    let value = value.trim();
    let mut end = value.len().min(super::tags::MAX_VALUE_LEN);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    match &value[..end] {
        "" => RequestIdSignal::Clear,
        id => RequestIdSignal::Set {
            id: id.into(),
            scope,
        },
    }
}

/// The `index`-th (0-based) non-empty statement of a possibly
/// multi-statement text, split by the crate's one splitter (quotes, dollar
/// quotes and comments respected, as PostgreSQL does). `None` when there
/// are fewer statements, or when the statement starts beyond [`MAX_SCAN`]
/// bytes. A statement running past the scan limit is returned truncated.
pub fn nth_statement(sql: &str, index: u16) -> Option<&str> {
    split::nth_statement(head(sql, MAX_SCAN), index)
}

/// ASCII case-insensitive search within the first [`MAX_SCAN`] bytes. The
/// first byte is looked for on its own (see [`next_byte`]), so text without
/// candidates costs a fraction of a comparison per byte.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let hay = &hay.as_bytes()[..hay.len().min(MAX_SCAN)];
    let needle = needle.as_bytes();
    let (&first, rest) = needle.split_first()?;
    let first = first.to_ascii_lowercase();
    let last_start = hay.len().checked_sub(needle.len())?;
    let candidate = |c: u8| c.to_ascii_lowercase() == first;
    let mut i = 0;
    loop {
        i = next_byte(hay, i, last_start + 1, candidate);
        if i > last_start {
            return None;
        }
        if hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest) {
            return Some(i);
        }
        i += 1;
    }
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    find_ci(hay, needle).is_some()
}

/// The offset of the first byte in `b[i..limit]` that is `wanted`; `limit`
/// if none. Looks 16 bytes per step (a loop the compiler vectorizes), so
/// the long runs of text without a candidate cost a fraction of a
/// comparison per byte.
fn next_byte(b: &[u8], mut i: usize, limit: usize, wanted: impl Fn(u8) -> bool) -> usize {
    while i + 16 <= limit {
        if b[i..i + 16]
            .iter()
            .fold(false, |found, &c| found | wanted(c))
        {
            break;
        }
        i += 16;
    }
    b[i..limit]
        .iter()
        .position(|&c| wanted(c))
        .map_or(limit, |p| i + p)
}

/// The first `max` bytes of `s`, cut on a character boundary.
fn head(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_ci_matches_case_insensitively() {
        assert_eq!(
            find_ci("SET QProxy.Request_ID = 1", "qproxy.request_id"),
            Some(4)
        );
        assert_eq!(find_ci("qproxy.request_i", "qproxy.request_id"), None);
        assert_eq!(find_ci("", "x"), None);
        assert_eq!(find_ci("é qproxy", "qproxy"), Some(3));
    }

    proptest::proptest! {
        #[test]
        fn find_ci_agrees_with_a_naive_search(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    ";", "'", "$", "-", "/*", " ", "SELECT", "x", "é", "qproxy.request_id",
                    "QProxy.Request_ID", "set_config", "abcdefghijklmnopqrstuvwxyz0123456789",
                ]),
                0..40,
            )
        ) {
            let sql = parts.concat();
            for needle in ["qproxy.request_id", "set_config", "$"] {
                let hay = &sql.as_bytes()[..sql.len().min(MAX_SCAN)];
                let naive = hay
                    .windows(needle.len())
                    .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
                proptest::prop_assert_eq!(find_ci(&sql, needle), naive);
            }
        }
    }
}
