//! What a statement means for correlation, read from its text and command
//! tag: transaction control, session settings, and the statements that set
//! `qproxy.request_id`.
//!
//! This is a deliberately small lexer, not a parser: it must never fail, it
//! runs for every event, and it looks only at a statement's first few tokens.
//! The work per event is bounded by [`MAX_SCAN`].

use std::borrow::Cow;
use std::sync::Arc;

use crate::event::{Outcome, QueryEvent};

/// Bytes of a SQL text scanned when locating a statement of a multi-statement
/// query or looking for `qproxy.request_id`. Correlation statements are short;
/// anything past this point is data.
pub const MAX_SCAN: usize = 64 * 1024;

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
    let stmt = nth_statement(&ev.sql, ev.statement_index);
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
    let mut lx = Lexer::new(stmt);
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

fn is_set_config_call(lx: &mut Lexer<'_>) -> bool {
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
    let mut lx = Lexer::new(stmt);
    let first = lx.word()?;
    if first.eq_ignore_ascii_case("set") {
        let scope = if lx.keyword("local") {
            SetScope::Local
        } else {
            let _ = lx.keyword("session");
            SetScope::Session
        };
        if !lx.request_var_name() || !(lx.punct(b'=') || lx.keyword("to")) {
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
        return lx.request_var_name().then_some(RequestIdSignal::Clear);
    }
    // set_config(...) may sit anywhere in a SELECT list; a few tries suffice.
    let mut from = 0;
    for _ in 0..8 {
        let Some(at) = find_ci(&lx.s[from..], "set_config").map(|i| from + i) else {
            break;
        };
        from = at + "set_config".len();
        if at > 0 && is_ident_byte(lx.s.as_bytes()[at - 1]) {
            continue;
        }
        let mut lx = Lexer { s: lx.s, i: from };
        if let Some(signal) = set_config_args(&mut lx, param_hashes) {
            return Some(signal);
        }
    }
    None
}

fn set_config_args(lx: &mut Lexer<'_>, params: &[Option<u64>]) -> Option<RequestIdSignal> {
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
/// multi-statement text, as PostgreSQL splits it (quotes, dollar quotes and
/// comments respected). `None` when there are fewer statements, or when the
/// statement starts beyond [`MAX_SCAN`] bytes. A statement running past the
/// scan limit is returned truncated.
pub fn nth_statement(sql: &str, index: u16) -> Option<&str> {
    let b = sql.as_bytes();
    let mut limit = b.len().min(MAX_SCAN);
    while !sql.is_char_boundary(limit) {
        limit -= 1;
    }
    let (mut n, mut start, mut i, mut content) = (0u16, 0usize, 0usize, false);
    while i < limit {
        let c = b[i];
        let next = b.get(i + 1).copied();
        i = match c {
            b';' => {
                if content {
                    if n == index {
                        return Some(&sql[start..i]);
                    }
                    n += 1;
                }
                content = false;
                start = i + 1;
                i + 1
            }
            _ if c.is_ascii_whitespace() => i + 1,
            b'-' if next == Some(b'-') => b[i..limit]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(limit, |p| i + p + 1),
            b'/' if next == Some(b'*') => skip_block_comment(b, i, limit),
            _ => {
                content = true;
                skip_token(b, i, limit)
            }
        };
    }
    (content && n == index).then(|| &sql[start..limit])
}

fn skip_block_comment(b: &[u8], start: usize, limit: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < limit {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    limit
}

/// Skips one lexical unit starting at `i` that is not whitespace or a
/// comment: a quoted string or identifier, a dollar-quoted body, or a byte.
fn skip_token(b: &[u8], i: usize, limit: usize) -> usize {
    let prev_ident = i > 0 && is_ident_byte(b[i - 1]);
    match b[i] {
        b'\'' => {
            let escapes =
                i > 0 && matches!(b[i - 1], b'e' | b'E') && !(i > 1 && is_ident_byte(b[i - 2]));
            skip_quoted(b, i, limit, b'\'', escapes).0
        }
        b'"' => skip_quoted(b, i, limit, b'"', false).0,
        b'$' if !prev_ident => match dollar_tag(b, i, limit) {
            Some(tag_end) => {
                let tag = &b[i..tag_end];
                b[tag_end..limit]
                    .windows(tag.len())
                    .position(|w| w == tag)
                    .map_or(limit, |p| tag_end + p + tag.len())
            }
            None => i + 1,
        },
        _ => i + 1,
    }
}

/// For a `$` at `i` that opens a dollar quote (`$$` or `$tag$`), the offset
/// after the opening tag; `None` for a parameter like `$1`.
fn dollar_tag(b: &[u8], i: usize, limit: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < limit && b[j].is_ascii_digit() {
        return None;
    }
    while j < limit && is_ident_byte(b[j]) && b[j] != b'$' {
        j += 1;
    }
    (j < limit && b[j] == b'$').then_some(j + 1)
}

/// Skips a quoted string or identifier opened at `open`; returns the offset
/// after it and whether it was closed before `limit`.
fn skip_quoted(b: &[u8], open: usize, limit: usize, quote: u8, escapes: bool) -> (usize, bool) {
    let mut i = open + 1;
    while i < limit {
        if escapes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            // A doubled quote is an escaped quote: keep going.
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return (i + 1, true);
            }
        } else {
            i += 1;
        }
    }
    (limit, false)
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let hay = &hay.as_bytes()[..hay.len().min(MAX_SCAN)];
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    find_ci(hay, needle).is_some()
}

/// Token reader over one statement; every method skips leading whitespace
/// and comments and consumes input only when it matches.
struct Lexer<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        let limit = s.len().min(MAX_SCAN);
        let mut end = limit;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Lexer { s: &s[..end], i: 0 }
    }

    fn trivia(&mut self) {
        let b = self.s.as_bytes();
        while self.i < b.len() {
            match (b[self.i], b.get(self.i + 1)) {
                (c, _) if c.is_ascii_whitespace() => self.i += 1,
                (b'-', Some(b'-')) => {
                    self.i = b[self.i..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .map_or(b.len(), |p| self.i + p + 1)
                }
                (b'/', Some(b'*')) => self.i = skip_block_comment(b, self.i, b.len()),
                _ => return,
            }
        }
    }

    fn word(&mut self) -> Option<&'a str> {
        self.trivia();
        let b = self.s.as_bytes();
        let start = self.i;
        if start >= b.len()
            || !(b[start].is_ascii_alphabetic() || b[start] == b'_' || b[start] >= 0x80)
        {
            return None;
        }
        let mut end = start;
        while end < b.len() && is_ident_byte(b[end]) {
            end += 1;
        }
        self.i = end;
        Some(&self.s[start..end])
    }

    fn word_or_number(&mut self) -> Option<&'a str> {
        self.trivia();
        let b = self.s.as_bytes();
        let start = self.i;
        let mut end = start;
        while end < b.len() && (is_ident_byte(b[end]) || matches!(b[end], b'-' | b'.')) {
            end += 1;
        }
        self.i = end;
        (end > start).then(|| &self.s[start..end])
    }

    fn keyword(&mut self, kw: &str) -> bool {
        let save = self.i;
        match self.word() {
            Some(w) if w.eq_ignore_ascii_case(kw) => true,
            _ => {
                self.i = save;
                false
            }
        }
    }

    fn punct(&mut self, c: u8) -> bool {
        self.trivia();
        let hit = self.s.as_bytes().get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    /// `$n`, returning `n`.
    fn param(&mut self) -> Option<usize> {
        self.trivia();
        let b = self.s.as_bytes();
        if b.get(self.i) != Some(&b'$') {
            return None;
        }
        let digits = b[self.i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let n = self.s[self.i + 1..self.i + 1 + digits].parse().ok()?;
        self.i += 1 + digits;
        Some(n)
    }

    /// `'...'` (with `''`) or `E'...'` (with backslash escapes), unescaped.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.trivia();
        let b = self.s.as_bytes();
        let escapes =
            matches!(b.get(self.i), Some(b'e' | b'E')) && b.get(self.i + 1) == Some(&b'\'');
        let open = self.i + usize::from(escapes);
        if b.get(open) != Some(&b'\'') {
            return None;
        }
        let (end, closed) = skip_quoted(b, open, b.len(), b'\'', escapes);
        if !closed {
            return None;
        }
        self.i = end;
        let raw = &self.s[open + 1..end - 1];
        if !(raw.contains('\'') || escapes && raw.contains('\\')) {
            return Some(Cow::Borrowed(raw));
        }
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' if escapes => out.extend(chars.next()),
                '\'' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        Some(Cow::Owned(out))
    }

    /// `qproxy.request_id`, bare or double-quoted as a whole.
    fn request_var_name(&mut self) -> bool {
        self.trivia();
        let save = self.i;
        let b = self.s.as_bytes();
        if b.get(self.i) == Some(&b'"') {
            let (end, closed) = skip_quoted(b, self.i, b.len(), b'"', false);
            if closed && self.s.get(self.i + 1..end - 1) == Some(REQUEST_VAR) {
                self.i = end;
                return true;
            }
            return false;
        }
        let ok = self.keyword("qproxy") && self.punct(b'.') && self.keyword("request_id");
        if !ok {
            self.i = save;
        }
        ok
    }

    /// `::type` after a value.
    fn skip_cast(&mut self) {
        self.trivia();
        if self.s.as_bytes()[self.i..].starts_with(b"::") {
            self.i += 2;
            let _ = self.word();
        }
    }
}
