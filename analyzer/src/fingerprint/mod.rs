//! Query fingerprints: which executions are the same query.
//!
//! Every finding is about a query shape, so two executions must get the same
//! fingerprint exactly when they differ only in data. A [`Fingerprint`] is a
//! 64-bit hash of the statement's *normalized text*, printed as 16 lowercase
//! hex digits, plus the facts detectors need (kind, tables, whether a LIMIT
//! exists) and hashes of its literal values. Literal values themselves are
//! never kept.
//!
//! # Algorithm (stable: any change here changes fingerprints and must be called out)
//!
//! 1. Split the text into statements at top-level `;` with the crate's one
//!    lexer and splitter (`crate::sql`); each non-empty statement gets one
//!    fingerprint, numbered by `statement_index` from 0.
//! 2. Parse the statement with sqlparser 0.63, PostgreSQL dialect.
//! 3. Rewrite the tree:
//!    - every literal (numbers, all string flavours, dollar-quoted bodies,
//!      `TRUE`/`FALSE`, `NULL`, `DATE '...'`, `INTERVAL '...'`) and every
//!      `$n` becomes a placeholder; so do casts of a placeholder (`$1::int`,
//!      `CAST($1 AS int)`, `'x'::text`), a sign in front of one (`-5`), and
//!      parentheses around one. `TRUE`, `FALSE` and `NULL` count as literals
//!      because drivers that interpolate on the client (psycopg2, PDO) send
//!      bound `true`/`NULL` inline, and those must match the prepared form;
//!      `IS NULL` / `IS TRUE` are syntax and stay;
//!    - `ARRAY[...]` whose elements are all placeholders becomes one
//!      placeholder; `x IN (...)` of placeholders becomes `x = ANY($n)`, and
//!      `NOT IN` becomes `x <> ALL($n)`, which is also what `= ANY($1)`,
//!      `= ANY($1::int[])` and `= ANY(ARRAY[$1, $2])` become; an `IN` list of
//!      placeholder tuples keeps one tuple;
//!    - `VALUES` rows that are equal after the rewrite are kept once;
//!    - identifiers are folded as PostgreSQL folds them (unquoted →
//!      lower-case) and a quoted name that folding would not change and
//!      that is not a reserved word loses its quotes (`"auth_user"` ≡
//!      `auth_user`; `"User"` and `"user"` keep theirs);
//!    - table aliases are resolved (see `alias.rs`): `u.id FROM users u`
//!      becomes `users.id FROM users`; aliases that cannot be dropped
//!      without ambiguity become `<table>_<n>`;
//!    - savepoint, prepared-statement, cursor, channel and role names
//!      become `_`; `SET` values (and `NOTIFY` payloads) become a placeholder.
//!
//!    Kept on purpose: table and schema names, column names, ORDER BY
//!    direction, argument order, JSON keys (a string or number right of
//!    `->`, `->>`, `#>`, `#>>`, `#-`, `?`, `?|`, `?&`, also inside an
//!    `ARRAY[...]` there), `ORDER BY`/`GROUP BY` ordinals, and whether
//!    LIMIT/OFFSET/FETCH exist (their values become placeholders). Comments
//!    disappear because the tree has none, except `/*+ ... */` optimizer
//!    hints, which sqlparser keeps because they change the plan. `OR`
//!    chains are not collapsed (`a = 1 OR a = 2` is not `a IN (1, 2)`).
//! 4. Print the tree (sqlparser's `Display`: upper-case keywords, single
//!    spaces), then number placeholders `$1`, `$2`, ... in order of
//!    appearance, replacing any string literal sqlparser kept outside its
//!    value type (see `render.rs`). The result is the `normalized` text;
//!    it is valid PostgreSQL in the common cases.
//! 5. `id` = XXH3-64 (xxhash-rust, seed 0) of the normalized text's UTF-8
//!    bytes.
//!
//! `literal_hashes` come from the scan in step 1, not from the tree (see
//! `literal.rs`), so the parsed path, the fallback and the cache's shape
//! tier all hash the same values the same way.
//!
//! When sqlparser cannot parse a statement, the token digest of
//! `fallback.rs` produces the normalized text instead and the fingerprint
//! has `fallback: true`. Statements longer than [`MAX_PARSE_BYTES`] go
//! straight to the digest, and so do statements whose syntax tree could
//! nest deeper than the stack allows (deep trees that sqlparser's recursion
//! limit does not catch are parsed on a helper thread with a large stack).
//!
//! # Layout
//! The lexer and the statement splitter are the crate's (`crate::sql`).
//! - `scan.rs`, `literal.rs`: the first pass (statements, stack guard,
//!   literal hashes, shape keys).
//! - `normalize.rs` (with `alias.rs`, `collapse.rs`, `dropped.rs`,
//!   `reserved.rs`, and the leaf `placeholder.rs` they share): the tree
//!   rewrite.
//! - `render.rs`: placeholder numbering on the printed text.
//! - `fallback.rs`: the token digest.
//! - `kind.rs`: [`StatementKind`].
//! - `cache.rs`: [`FingerprintCache`], so repeated texts cost one hash and
//!   new texts of a known shape cost one scan.

use std::fmt;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::Arc;

use smallvec::SmallVec;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use xxhash_rust::xxh3::xxh3_64;

mod alias;
mod cache;
mod collapse;
mod dropped;
mod fallback;
mod kind;
mod literal;
mod normalize;
mod placeholder;
mod render;
pub(crate) mod reserved;
mod scan;

pub use cache::{CacheStats, FingerprintCache};
pub use kind::StatementKind;
pub use literal::NULL_LITERAL_HASH;

/// Statements longer than this are not given to sqlparser: its tree for a
/// megabyte of SQL costs far more memory and time than analysis is worth,
/// and the token digest still tells repeated statements apart.
pub const MAX_PARSE_BYTES: usize = 1 << 20;

/// Normalized text kept in a [`Fingerprint`] is cut to this many bytes (the
/// id is computed over the whole text), so one huge statement cannot hold
/// megabytes in caches and reports.
pub const MAX_NORMALIZED_BYTES: usize = 64 << 10;

/// Above this depth score (bracket depth plus operator count, see
/// `scan.rs`) a statement is parsed on a helper thread with a
/// [`DEEP_STACK_BYTES`] stack instead of the caller's. Measured: a debug
/// build needs under 1 KiB of stack per chain link (a `UNION` chain, the
/// worst case), so 500 links stay well inside a 2 MiB tokio worker stack.
const INLINE_DEPTH_SCORE: usize = 500;

/// Above this depth score the statement is not parsed at all.
const MAX_DEPTH_SCORE: usize = 100_000;

/// Stack for the helper thread: room for [`MAX_DEPTH_SCORE`] links at the
/// debug-build cost above, with margin. It is reserved address space;
/// only the pages actually touched are used.
const DEEP_STACK_BYTES: usize = 256 << 20;

/// A stable 64-bit statement fingerprint; displays and serializes as 16
/// lowercase hex digits, the form used in metrics labels, reports and the
/// CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FingerprintId(pub u64);

impl fmt::Display for FingerprintId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a string is not a fingerprint id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint is 16 hexadecimal digits, got {0:?}")]
pub struct ParseFingerprintIdError(String);

impl FromStr for FingerprintId {
    type Err = ParseFingerprintIdError;

    /// Parses the 16-hex-digit form, so ids read back from reports and
    /// baselines compare equal to computed ones.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseFingerprintIdError(s.chars().take(32).collect()));
        }
        u64::from_str_radix(s, 16)
            .map(FingerprintId)
            .map_err(|_| ParseFingerprintIdError(s.to_owned()))
    }
}

impl serde::Serialize for FingerprintId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FingerprintId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The fingerprint of one statement and what detectors need to know about it.
///
/// Serializes (for `qproxy fingerprint` and reports) as
/// `{"fingerprint", "normalized", "kind", "tables", "fallback", "statement_index"}`;
/// `literal_hashes` and `has_limit` are for in-process use only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fingerprint {
    /// The hash of `normalized`: equal ids mean the same query shape.
    #[serde(rename = "fingerprint")]
    pub id: FingerprintId,
    /// The statement with placeholders instead of values (see the module
    /// docs); safe to log and store. Cut to [`MAX_NORMALIZED_BYTES`].
    #[serde(serialize_with = "serialize_arc_str")]
    pub normalized: Arc<str>,
    /// What the statement does.
    pub kind: StatementKind,
    /// Tables the statement references (subqueries, CTE bodies and joins
    /// included, CTE names excluded), folded as PostgreSQL folds names
    /// (unquoted lower-cased, quoted kept), schema-qualified when written
    /// so, in order of appearance, each once. Best effort for fallbacks.
    pub tables: Vec<String>,
    /// True when sqlparser could not parse the statement and the token
    /// digest produced `normalized`; such statements are counted as parse
    /// failures in coverage.
    pub fallback: bool,
    /// Hashes of the statement's literal values in order of appearance:
    /// XXH3-64 of each value as PostgreSQL text (see [`NULL_LITERAL_HASH`]
    /// and `literal.rs`), so inline values compare with bind parameter
    /// values. Lets the N+1 detector tell distinct simple-protocol
    /// parameter tuples apart without storing values. Literals that stay in
    /// the normalized text (JSON keys, `ORDER BY 1`, `varchar(255)`) are
    /// included; they are the same for every statement of a fingerprint.
    #[serde(skip)]
    pub literal_hashes: SmallVec<[u64; 4]>,
    /// Whether the outermost query has a LIMIT or FETCH (unbounded-SELECT
    /// detection).
    #[serde(skip)]
    pub has_limit: bool,
    /// Position of the statement in a multi-statement text (0-based, empty
    /// statements not counted), matching `QueryEvent::statement_index`.
    pub statement_index: u16,
    /// Byte range of the statement in the text it was fingerprinted from
    /// (without its `;`), from the same split that numbered it: the
    /// pipeline reads the statement's text through it, so an index and a
    /// text can never come from two splits.
    #[serde(skip)]
    pub(crate) span: Range<usize>,
}

fn serialize_arc_str<S: serde::Serializer>(s: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(s)
}

/// Fingerprints every statement in `sql`, in order.
///
/// Never panics and never fails: text sqlparser rejects gets a fallback
/// fingerprint, and empty statements (whitespace, comments, stray `;`) get
/// none, as PostgreSQL sends no reply for them.
pub fn fingerprint_sql(sql: &str) -> Vec<Fingerprint> {
    fingerprint_scanned(sql, scan::scan(sql, false), MAX_STATEMENTS)
}

/// Statements of one text that get a fingerprint at most: every statement
/// index an event can carry (`u16`).
pub const MAX_STATEMENTS: usize = u16::MAX as usize + 1;

/// [`fingerprint_sql`] after the scan (the cache scans first to look for
/// a known shape), for the first `max_statements` statements only: a
/// simple Query may hold a hundred thousand statements, and the proxy
/// analyses only the first few (the rest are counted as not analysed).
pub(crate) fn fingerprint_scanned(
    sql: &str,
    scans: Vec<scan::StatementScan>,
    max_statements: usize,
) -> Vec<Fingerprint> {
    scans
        .into_iter()
        .take(max_statements.min(MAX_STATEMENTS))
        .enumerate()
        .map(|(index, span)| {
            let text = &sql[span.start..span.end];
            let parsed = if text.len() > MAX_PARSE_BYTES {
                None
            } else if span.depth_score <= INLINE_DEPTH_SCORE {
                parse_guarded(text)
            } else if span.depth_score <= MAX_DEPTH_SCORE {
                parse_on_large_stack(text)
            } else {
                None
            };
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            let (mut shape, fallback) = match parsed {
                Some(p) => (p, false),
                None => (fallback::digest(text), true),
            };
            shape.literal_hashes = span.literal_hashes;
            build(shape, fallback, index, span.start..span.end)
        })
        .collect()
}

/// Parses, normalizes and prints one statement; `None` if sqlparser
/// rejects it (or, defensively, panics on it).
fn parse_guarded(text: &str) -> Option<Shape> {
    catch_unwind(AssertUnwindSafe(|| parse_statement(text)))
        .ok()
        .flatten()
}

fn parse_on_large_stack(text: &str) -> Option<Shape> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("qproxy-fingerprint".into())
            .stack_size(DEEP_STACK_BYTES)
            .spawn_scoped(scope, || parse_guarded(text))
            .ok()?
            .join()
            .ok()
            .flatten()
    })
}

fn parse_statement(text: &str) -> Option<Shape> {
    let mut statements = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .ok()?
        .parse_statements()
        .ok()?;
    if statements.len() != 1 {
        return None;
    }
    let mut stmt = statements.pop()?;
    let kind = kind::classify(&stmt);
    let has_limit = normalize::has_limit(&stmt);
    let tables = normalize::normalize_statement(&mut stmt);
    // Sized up front: growing from empty would reallocate several times.
    let mut printed = String::with_capacity(text.len() + text.len() / 2 + 16);
    let _ = std::fmt::Write::write_fmt(&mut printed, format_args!("{stmt}"));
    drop(stmt);
    Some(Shape {
        text: render::render(&printed),
        kind,
        tables,
        literal_hashes: SmallVec::new(),
        has_limit,
    })
}

/// A normalized statement before it is hashed: what both the parser path
/// and the token digest produce.
#[derive(Debug)]
pub(crate) struct Shape {
    pub text: String,
    pub kind: StatementKind,
    pub tables: Vec<String>,
    pub literal_hashes: SmallVec<[u64; 4]>,
    pub has_limit: bool,
}

fn build(d: Shape, fallback: bool, statement_index: u16, span: Range<usize>) -> Fingerprint {
    let id = FingerprintId(xxh3_64(d.text.as_bytes()));
    let mut text = d.text;
    if text.len() > MAX_NORMALIZED_BYTES {
        let mut cut = MAX_NORMALIZED_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" …");
    }
    Fingerprint {
        id,
        normalized: Arc::from(text),
        kind: d.kind,
        tables: d.tables,
        fallback,
        literal_hashes: d.literal_hashes,
        has_limit: d.has_limit,
        statement_index,
        span,
    }
}
