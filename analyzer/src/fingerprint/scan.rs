//! One pass of the [`Lexer`](crate::sql::lexer::Lexer) over the input,
//! before any parsing.
//!
//! For each statement it finds:
//! - its boundaries, by the crate's one splitting rule
//!   ([`Splitter`](crate::sql::split::Splitter), fed the tokens read here);
//! - a depth score, the stack guard's estimate of how deep sqlparser's tree
//!   can get: left-associative chains (`a OR b OR ...`, `1 + 1 + ...`,
//!   `UNION` chains, `::` casts) are built by loops in the parser, so its
//!   recursion limit does not see them, but printing, visiting and dropping
//!   the tree recurse once per link;
//! - the hashes of its literal values (see `literal.rs`), in order;
//! - optionally a *shape key*: a 128-bit hash of the token stream with the
//!   values of literals in data positions left out. Two texts with equal
//!   shape keys normalize to the same text, so the cache can reuse a parsed
//!   result for a statement that differs only in literal values (every
//!   execution of a psycopg2 or Sequelize query with inline values).
//!
//! The shape key is deliberately conservative: it is only computed for
//! `SELECT`/`INSERT`/`UPDATE`/`DELETE`/`WITH` statements without JSON key
//! operators, and it keeps the text of every literal whose position could
//! make it part of the query's shape (`ORDER BY 1`, `varchar(255)`,
//! `E'...'` strings sqlparser might reject). A number's value is left out
//! only after a comparison or arithmetic operator, after `LIMIT`, `OFFSET`,
//! `SELECT`, `THEN`, ... or directly inside `IN (...)`, `VALUES (...)` and
//! `ARRAY[...]`; a plain `'...'` or `$$...$$` string's value is always left
//! out. Whitespace and comments only count as separators, except
//! optimizer-hint comments (`/*+ ... */`), which sqlparser keeps.

use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_128;

use super::literal;
use super::render::is_json_key_operator;
use crate::sql::lexer::{Lexer, Token, TokenKind};
use crate::sql::split::Splitter;

/// What the scan found about one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatementScan {
    /// Byte range of the statement (without its terminating `;`).
    pub start: usize,
    pub end: usize,
    /// Bracket depth plus the number of chain-building tokens.
    pub depth_score: usize,
    /// Hashes of literal values in order of appearance.
    pub literal_hashes: SmallVec<[u64; 4]>,
    /// The shape key, when asked for and when the statement qualifies.
    pub shape: Option<u128>,
}

/// How a bracket was opened, for telling value lists from other lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bracket {
    /// `IN (`, `VALUES (`, a row or tuple inside one, `ARRAY[`.
    ValueList,
    Other,
}

/// Per-statement state while scanning.
struct StatementState {
    start: usize,
    depth_score: usize,
    max_depth: usize,
    brackets: Vec<Bracket>,
    literal_hashes: SmallVec<[u64; 4]>,
    has_content: bool,
    /// Whether whitespace or a comment came before the next token.
    separated: bool,
    /// The last two significant tokens, newest first.
    previous: [Option<Token>; 2],
    /// Inside `VALUES` at this bracket depth, rows are value lists.
    values_depth: Option<usize>,
    shape: ShapeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShapeState {
    /// Not asked for.
    Off,
    /// Nothing significant seen yet.
    Start,
    /// Recording into the shape buffer.
    On,
    /// The statement does not qualify.
    Rejected,
}

impl StatementState {
    fn new(start: usize, want_shape: bool) -> Self {
        StatementState {
            start,
            depth_score: 0,
            max_depth: 0,
            brackets: Vec::new(),
            literal_hashes: SmallVec::new(),
            has_content: false,
            separated: false,
            previous: [None, None],
            values_depth: None,
            shape: if want_shape {
                ShapeState::Start
            } else {
                ShapeState::Off
            },
        }
    }
}

/// Scans `src`; `want_shape` computes shape keys (only the cache needs them).
pub(crate) fn scan(src: &str, want_shape: bool) -> Vec<StatementScan> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut st = StatementState::new(0, want_shape);
    let mut splitter = Splitter::default();
    for tok in Lexer::new(src) {
        if splitter.ends_statement(&tok) {
            finish(&mut out, st, tok.start, &mut buf);
            st = StatementState::new(tok.end, want_shape);
            continue;
        }
        step(src, &mut st, tok, &mut buf);
    }
    finish(&mut out, st, src.len(), &mut buf);
    out
}

fn finish(out: &mut Vec<StatementScan>, st: StatementState, end: usize, buf: &mut Vec<u8>) {
    if st.has_content {
        let shape = (st.shape == ShapeState::On).then(|| xxh3_128(buf));
        out.push(StatementScan {
            start: st.start,
            end,
            depth_score: st.max_depth + st.depth_score,
            literal_hashes: st.literal_hashes,
            shape,
        });
    }
    buf.clear();
}

fn step(src: &str, st: &mut StatementState, tok: Token, buf: &mut Vec<u8>) {
    let text = tok.text(src);
    if !tok.is_significant() {
        st.separated = true;
        let hint =
            tok.kind == TokenKind::Comment && (text.starts_with("/*+") || text.starts_with("--+"));
        if hint {
            record(st, buf, tok.kind, Some(text));
        }
        return;
    }
    if st.shape == ShapeState::Start {
        let dml = tok.kind == TokenKind::Word
            && ["select", "insert", "update", "delete", "with"]
                .iter()
                .any(|w| w.eq_ignore_ascii_case(text));
        st.shape = if dml {
            ShapeState::On
        } else {
            ShapeState::Rejected
        };
    }
    st.has_content = true;
    let depth = st.brackets.len();
    match tok.kind {
        TokenKind::Open => {
            let kind = if opens_value_list(src, st, text) {
                Bracket::ValueList
            } else {
                Bracket::Other
            };
            st.brackets.push(kind);
            st.max_depth = st.max_depth.max(st.brackets.len());
            record(st, buf, tok.kind, Some(text));
        }
        TokenKind::Close => {
            st.brackets.pop();
            if st.values_depth.is_some_and(|d| d > st.brackets.len()) {
                st.values_depth = None;
            }
            record(st, buf, tok.kind, Some(text));
        }
        TokenKind::Operator => {
            st.depth_score += 1;
            if is_json_key_operator(text) && st.shape == ShapeState::On {
                st.shape = ShapeState::Rejected;
            }
            record(st, buf, tok.kind, Some(text));
        }
        TokenKind::Word => {
            let class = word_class(text);
            if class & CHAIN != 0 {
                st.depth_score += 1;
            }
            if class & LITERAL != 0 {
                if let Some(h) = literal::keyword_hash(text) {
                    st.literal_hashes.push(h);
                }
            }
            if class & VALUES != 0 {
                st.values_depth = Some(depth);
            } else if st.values_depth == Some(depth) {
                st.values_depth = None;
            }
            if st.shape == ShapeState::On {
                if text.bytes().any(|b| b.is_ascii_uppercase()) {
                    record(st, buf, tok.kind, Some(&text.to_ascii_lowercase()));
                } else {
                    record(st, buf, tok.kind, Some(text));
                }
            }
        }
        TokenKind::Number => {
            let negative = is_unary_minus(src, st);
            st.literal_hashes.push(literal::number_hash(text, negative));
            if st.shape == ShapeState::On {
                let value_position = is_plain_number(text) && in_value_position(src, st);
                record(st, buf, tok.kind, (!value_position).then_some(text));
            }
        }
        TokenKind::String => {
            st.literal_hashes.push(literal::string_hash(text));
            if st.shape == ShapeState::On {
                let plain =
                    (text.starts_with('\'') || text.starts_with('$')) && is_terminated(text);
                record(st, buf, tok.kind, (!plain).then_some(text));
            }
        }
        TokenKind::Param => record(st, buf, tok.kind, None),
        _ => record(st, buf, tok.kind, Some(text)),
    }
    st.previous = [Some(tok), st.previous[0]];
    st.separated = false;
}

/// Appends one token to the shape buffer: its kind, whether a separator
/// preceded it, and (length-prefixed) its text unless left out.
fn record(st: &StatementState, buf: &mut Vec<u8>, kind: TokenKind, content: Option<&str>) {
    if st.shape != ShapeState::On {
        return;
    }
    buf.push(kind as u8 | if st.separated { 0x80 } else { 0 });
    if let Some(c) = content {
        buf.extend_from_slice(&(c.len() as u32).to_le_bytes());
        buf.extend_from_slice(c.as_bytes());
    }
}

/// Whether the bracket being opened holds values: `IN (`, `VALUES (`, a row
/// of a `VALUES` list, a tuple or array inside a value list, `ARRAY[`.
fn opens_value_list(src: &str, st: &StatementState, open: &str) -> bool {
    let prev = st.previous[0];
    let prev_text = prev.map(|p| p.text(src)).unwrap_or("");
    let prev_kind = prev.map(|p| p.kind);
    if open == "[" {
        return prev_text.eq_ignore_ascii_case("array")
            || (st.brackets.last() == Some(&Bracket::ValueList)
                && matches!(prev_kind, Some(TokenKind::Open | TokenKind::Comma)));
    }
    if prev_text.eq_ignore_ascii_case("in") || prev_text.eq_ignore_ascii_case("values") {
        return true;
    }
    if st.values_depth == Some(st.brackets.len()) && prev_kind == Some(TokenKind::Comma) {
        return true;
    }
    st.brackets.last() == Some(&Bracket::ValueList)
        && matches!(prev_kind, Some(TokenKind::Open | TokenKind::Comma))
}

/// Whether a number here is certainly data (see the module docs).
fn in_value_position(src: &str, st: &StatementState) -> bool {
    let Some(prev) = st.previous[0] else {
        return false;
    };
    match prev.kind {
        TokenKind::Operator => prev.text(src) != "::",
        TokenKind::Word => word_class(prev.text(src)) & DATA_FOLLOWS != 0,
        TokenKind::Open | TokenKind::Comma => st.brackets.last() == Some(&Bracket::ValueList),
        _ => false,
    }
}

/// A `-` directly before the number that is a sign, not a subtraction.
fn is_unary_minus(src: &str, st: &StatementState) -> bool {
    let Some(prev) = st.previous[0] else {
        return false;
    };
    if prev.kind != TokenKind::Operator || prev.text(src) != "-" {
        return false;
    }
    match st.previous[1] {
        None => true,
        Some(p) => match p.kind {
            TokenKind::Number
            | TokenKind::String
            | TokenKind::Param
            | TokenKind::QuotedIdent
            | TokenKind::Close => false,
            TokenKind::Word => super::fallback::expects_operand(p.text(src)),
            _ => true,
        },
    }
}

/// Digits with an optional fraction and exponent, nothing sqlparser might
/// read differently.
fn is_plain_number(text: &str) -> bool {
    let mut seen_digit = false;
    let mut seen_dot = false;
    let mut bytes = text.bytes().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_dot => seen_dot = true,
            b'e' | b'E' if seen_digit => {
                if matches!(bytes.peek(), Some(b'+' | b'-')) {
                    bytes.next();
                }
                return bytes.len() > 0 && bytes.all(|d| d.is_ascii_digit());
            }
            _ => return false,
        }
    }
    seen_digit
}

/// Whether a `'...'` or `$tag$...$tag$` token has its closing delimiter.
fn is_terminated(text: &str) -> bool {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'\'') => {
            // The lexer stops right after a closing quote, or runs to the end.
            bytes.len() >= 2 && bytes[bytes.len() - 1] == b'\'' && {
                let body = &bytes[1..bytes.len() - 1];
                // An odd run of quotes at the end means the last one was doubled.
                body.iter().rev().take_while(|&&b| b == b'\'').count() % 2 == 0
            }
        }
        Some(b'$') => {
            let tag_len = bytes[1..]
                .iter()
                .position(|&b| b == b'$')
                .map_or(0, |p| p + 2);
            tag_len > 0
                && bytes.len() >= 2 * tag_len
                && bytes[bytes.len() - tag_len..] == bytes[..tag_len]
        }
        _ => false,
    }
}

/// [`word_class`] bit: the word continues a left-associative chain in
/// sqlparser's expression or set-operation loops.
const CHAIN: u8 = 1;
/// [`word_class`] bit: `TRUE`, `FALSE` or `NULL`.
const LITERAL: u8 = 2;
/// [`word_class`] bit: `VALUES`.
const VALUES: u8 = 4;
/// [`word_class`] bit: a number right after the word is data.
const DATA_FOLLOWS: u8 = 8;

/// What the scan needs to know about a word, without allocating: the
/// word is lower-cased into a small buffer and matched once.
fn word_class(word: &str) -> u8 {
    let bytes = word.as_bytes();
    if bytes.len() > 9 {
        return 0;
    }
    let mut lower = [0u8; 9];
    for (l, b) in lower.iter_mut().zip(bytes) {
        *l = b.to_ascii_lowercase();
    }
    match &lower[..bytes.len()] {
        b"and" | b"or" | b"between" => CHAIN | DATA_FOLLOWS,
        b"at" | b"collate" | b"except" | b"ilike" | b"in" | b"intersect" | b"is" | b"isnull"
        | b"like" | b"not" | b"notnull" | b"similar" | b"union" => CHAIN,
        b"true" | b"false" | b"null" => LITERAL,
        b"values" => VALUES,
        b"limit" | b"offset" | b"first" | b"next" | b"then" | b"else" | b"when" | b"select" => {
            DATA_FOLLOWS
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str) -> Option<u128> {
        let scans = scan(sql, true);
        assert_eq!(scans.len(), 1, "{sql}");
        scans[0].shape
    }

    #[test]
    fn data_values_do_not_change_the_shape() {
        let base = shape("SELECT a FROM t WHERE b = 1 AND c IN (1, 2) AND d = 'x' LIMIT 10");
        assert!(base.is_some());
        assert_eq!(
            base,
            shape("select a from t where b = 22 and c in (3, 4) and d = 'yy' limit 5")
        );
        assert_eq!(
            shape("INSERT INTO t VALUES (1, 'a'), (2, 'b')"),
            shape("INSERT INTO t VALUES (3, 'c'), (4, 'd')")
        );
    }

    #[test]
    fn structural_numbers_change_the_shape() {
        assert_ne!(
            shape("SELECT a FROM t ORDER BY 1"),
            shape("SELECT a FROM t ORDER BY 2")
        );
        assert_ne!(
            shape("SELECT a::varchar(10) FROM t"),
            shape("SELECT a::varchar(20) FROM t")
        );
        assert_ne!(shape("SELECT f(1) FROM t"), shape("SELECT f(2) FROM t"));
        assert_ne!(
            shape("SELECT a FROM t WHERE b = 1"),
            shape("SELECT a FROM t WHERE b = 1e")
        );
    }

    #[test]
    fn some_statements_get_no_shape() {
        assert_eq!(shape("SELECT data->>'k' FROM t"), None);
        assert_eq!(shape("SET a = 1"), None);
        assert!(scan("SELECT 1", false)[0].shape.is_none());
    }

    #[test]
    fn terminated_strings() {
        assert!(is_terminated("'a'"));
        assert!(is_terminated("'a'''"));
        assert!(!is_terminated("'a''"));
        assert!(!is_terminated("'"));
        assert!(is_terminated("$$x$$"));
        assert!(is_terminated("$q$x$q$"));
        assert!(!is_terminated("$q$x"));
    }
}
