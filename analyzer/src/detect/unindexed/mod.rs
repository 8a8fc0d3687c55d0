//! `unindexed_filter` and `unindexed_sort`: predicates and ORDER BYs on
//! large tables that no index serves, with the `CREATE INDEX` that would;
//! and the other findings read from one statement and the catalog:
//! `non_sargable_filter` (an indexed column hidden in a function, cast,
//! arithmetic or leading-wildcard LIKE; `non_sargable.rs`),
//! `offset_pagination` (an OFFSET paging a large table; `paging.rs`) and
//! `unindexed_foreign_key` (a foreign key without index that a DELETE,
//! key UPDATE or join exercises; `foreign_key.rs`).
//!
//! [`analyze_statement`] reads one statement's syntax tree (sqlparser,
//! PostgreSQL dialect) against a [`Catalog`] snapshot and returns every
//! kind; [`analyze`] only the first two. It is pure and costs one parse
//! plus a walk, so the pipeline runs it once per distinct fingerprint.
//!
//! # What is read
//! Per query block (SELECT, UPDATE, DELETE, the SELECT of INSERT ...
//! SELECT, CTE bodies, derived tables, subqueries), with aliases, CTE
//! names and correlated outer references resolved:
//! - equality: `col = v`, `col IN (..)`, `col = ANY(v)`, `col IN (SELECT
//!   ..)`, `col IS NULL`, and `col = a OR col = b` on one column;
//! - range: `<`, `<=`, `>`, `>=`, `BETWEEN`;
//! - prefix LIKE: a literal pattern not starting with `%` or `_`
//!   (a parameter pattern is unknown and ignored; ILIKE never uses a
//!   btree);
//! - join keys: `a.x = b.y` in ON, USING or WHERE;
//! - ORDER BY keys with direction and NULLS placement, when they all
//!   belong to one table (blocks with GROUP BY or DISTINCT are not sorted
//!   by an index and are skipped).
//!
//! Equality on a boolean column counts only when an index already serves
//! it: about half the table matches, the planner prefers a sequential
//! scan, and the fix is a partial index, not a key column.
//!
//! Ignored: predicates under OR (other than the one-column form), NOT,
//! `<>`, functions of columns (except where an expression index has the
//! same expression, which then serves it; a function of an indexed column
//! is a `non_sargable_filter`, and a table with one gets no
//! `unindexed_filter` in that block), and tables the catalog does not
//! hold.
//!
//! # Thresholds (see [`UnindexedConfig`])
//! - Nothing is reported for tables under `min_table_rows` (10 000):
//!   below that a sequential scan reads a few hundred 8 kB pages, usually
//!   from shared buffers, in about a millisecond, and PostgreSQL itself
//!   often prefers it to an index; a finding there is noise.
//! - `unindexed_filter`: warning from 10 000 rows, error from
//!   `error_table_rows` (1 000 000), where each execution reads 100+ MB.
//! - `unindexed_sort`: the same tiers with LIMIT (the scan still reads
//!   every row to find the top N); without LIMIT already an error from
//!   `unlimited_sort_error_rows` (100 000): sorting that many rows of
//!   ~100 bytes exceeds the default 4 MB `work_mem` and spills to disk.
//!   When an index already narrows the rows to sort, the sort is reported
//!   only with LIMIT (an ordered scan could stop early) and without an
//!   `IN`/`ANY` list, one step lower (error → warning → info). Nothing is
//!   reported when a unique index pins the row, or when equality pins
//!   every ORDER BY key.
//!
//! # Joins
//! A large table needs an index only if the planner cannot reach it
//! otherwise: a table whose own filter is indexed, a small table, or a
//! CTE/subquery that filters or limits can drive a nested loop into the
//! next table through an indexed join key. Large tables left unreachable
//! are reported with their filter columns and the join keys towards the
//! tables that drive them; blocks without any filter read everything
//! anyway and are not reported (that is `unbounded_select`'s business).
//! Every table occurrence's own filter is judged (implicit joins, aliases
//! and self-joins alike): two large tables each filtered without an index
//! both get their filter suggested, even when their join keys are
//! indexed, since neither drives the other until one of them is.
//!
//! # Statistics
//! With column statistics in the catalog (`pg_stats`), a filter column
//! estimated to select more than `unselective_fraction` (20 %) of the rows
//! leaves the suggested key, a filter that selects that much as a whole is
//! held back ([`UnindexedIssue::withheld`]) unless hypopg shows a gain, and
//! a rare literal value of a skewed column makes the suggestion a partial
//! index `WHERE col = $n` (placeholder only; the details give the value's
//! frequency). The estimate is in `details.selectivity`. See
//! `selectivity.rs`.
//!
//! # Suggestion
//! `CREATE INDEX CONCURRENTLY ON schema.table (...)` with equality columns
//! (join keys first, then single values and IS NULL, then `IN`/`ANY`
//! lists), then the ORDER BY columns with their directions (left out when
//! a list precedes them, since a list breaks index order; a sort
//! suggestion leaves the lists out instead), then at most one range or
//! prefix-LIKE column. Under a non-C collation a prefix LIKE column gets
//! `text_pattern_ops`. Identifiers are quoted only when needed.
//! [`crate::explain::hypopg`] checks a suggestion against the real
//! planner; `judge_plans` (`verify.rs`) reads its verdict from the two plans.
//!
//! # Limits
//! Statements over [`MAX_ANALYZED_BYTES`] or with more than
//! [`MAX_NESTING`] parentheses and AND/OR operators are not analysed (no
//! issues), to keep stack and time bounded on machine-generated SQL.
//!
//! # Layout
//! - `extract.rs` (blocks, FROM lists), `predicates.rs` (conditions,
//!   ORDER BY), `scope.rs` (name resolution): syntax tree → per-block
//!   facts (`facts.rs`).
//! - `serve.rs`: whether an index serves predicates or a sort.
//! - `selectivity.rs`: estimates from column statistics and what they do
//!   to a suggestion.
//! - `evaluate.rs`: reachability, severity and the suggestion (`ddl.rs`),
//!   with typed `details` (`details.rs`).
//! - `normal_form.rs`: comparable text of expressions.
//! - `verify.rs`: the hypopg verdict from two plans, and what it does to a
//!   finding's severity (the connection work is
//!   [`crate::explain::hypopg`]: nothing here does I/O).
//! - `non_sargable.rs`, `paging.rs`, `foreign_key.rs`: the other kinds,
//!   each with its rules, severity and typed `details`.
//! - `finding_parts.rs`: the size-based severity and the index wording
//!   those kinds share with `evaluate.rs` (below all of them, so none
//!   imports `evaluate.rs` back).

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{Map, Value};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::catalog::Catalog;
use crate::finding::{FindingKind, Severity};

mod ddl;
mod details;
mod evaluate;
mod extract;
mod facts;
mod finding_parts;
mod foreign_key;
mod non_sargable;
mod normal_form;
mod paging;
mod predicates;
mod scope;
mod selectivity;
mod serve;
mod verify;

pub(crate) use ddl::quote_ident;
pub use details::{PartialIndexDetails, UnindexedDetails};
pub use foreign_key::UnindexedForeignKeyDetails;
pub use non_sargable::NonSargableDetails;
pub use paging::{
    counted_severity as offset_severity, OffsetPaginationConfig, OffsetPaginationDetails,
};
pub(crate) use verify::{judge_plans, plain_create_index, IndexDdlError, PlanError};
pub use verify::{SkipReason, Verification};

/// Statements longer than this are skipped: they are machine-generated
/// (bulk loads, huge IN lists), and their tree would cost more than the
/// analysis is worth.
pub const MAX_ANALYZED_BYTES: usize = 256 << 10;

/// Statements with more opening parentheses plus AND/OR keywords than
/// this are skipped: the syntax tree (and every recursive walk over it,
/// sqlparser's own drop included) gets as deep as that, and a tokio worker
/// has a 2 MB stack.
pub const MAX_NESTING: usize = 400;

/// Thresholds; the module docs say why each default was chosen. They apply
/// to every kind [`analyze_statement`] finds (a table "large enough to
/// matter" is the same table for all of them).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnindexedConfig {
    /// Tables with fewer estimated rows are never reported (10 000).
    pub min_table_rows: u64,
    /// From this many rows a finding is an error (1 000 000).
    pub error_table_rows: u64,
    /// An ORDER BY without LIMIT on this many rows is an error (100 000).
    pub unlimited_sort_error_rows: u64,
    /// A filter column whose statistics say it selects more than this
    /// share of the rows is not suggested as an index key, and a filter
    /// that selects more as a whole is held back (0.2; see
    /// `selectivity.rs`).
    pub unselective_fraction: f64,
}

impl Default for UnindexedConfig {
    fn default() -> Self {
        UnindexedConfig {
            min_table_rows: 10_000,
            error_table_rows: 1_000_000,
            unlimited_sort_error_rows: 100_000,
            unselective_fraction: 0.2,
        }
    }
}

/// One issue found in a statement against the catalog, before the
/// pipeline attaches the fingerprint, request and times that make it a
/// [`Finding`](crate::finding::Finding).
#[derive(Debug, Clone, PartialEq)]
pub struct UnindexedIssue {
    /// `UnindexedFilter`, `UnindexedSort`, `NonSargableFilter`,
    /// `OffsetPagination` or `UnindexedForeignKey`.
    pub kind: FindingKind,
    /// `schema.table`.
    pub table: String,
    /// Columns of the suggested index, in key order; part of the finding
    /// id, so the same missing index is the same finding.
    pub columns: Vec<String>,
    /// From table size, LIMIT and existing indexes (module docs).
    pub severity: Severity,
    /// `CREATE INDEX CONCURRENTLY ...;` to paste, or the rewrite to make.
    pub suggestion: String,
    /// Evidence: the kind's details struct serialized
    /// ([`UnindexedDetails`] for unindexed filters and sorts,
    /// [`NonSargableDetails`], [`OffsetPaginationDetails`],
    /// [`UnindexedForeignKeyDetails`]).
    pub details: Map<String, Value>,
    /// Set (with the reason) when column statistics say the filter selects
    /// so much of the table that the planner would read it whole anyway:
    /// such an issue is reported only once hypopg shows the planner would
    /// use the index after all.
    pub withheld: Option<String>,
    /// The DDL hypopg checks, when it differs from `suggestion`.
    pub verify_ddl: Option<VerifyDdl>,
}

/// The suggestion as hypopg must check it: a partial index's predicate
/// with the value the statement compared with, where the suggestion shows
/// a placeholder. It holds data, so it is only ever handed to hypopg:
/// never stored, logged or shown (its `Debug` form hides it).
#[derive(Clone, PartialEq)]
pub struct VerifyDdl(pub(crate) String);

impl VerifyDdl {
    /// The DDL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for VerifyDdl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyDdl(..)")
    }
}

/// Finds unindexed filters and sorts in one statement as the client sent
/// it (literals or `$n` placeholders): [`analyze_statement`] without the
/// other kinds. Never panics.
pub fn analyze(sql: &str, catalog: &Catalog, config: &UnindexedConfig) -> Vec<UnindexedIssue> {
    let mut issues = analyze_statement(sql, catalog, config);
    issues.retain(|i| {
        matches!(
            i.kind,
            FindingKind::UnindexedFilter | FindingKind::UnindexedSort
        )
    });
    issues
}

/// Every issue one statement shows against the catalog: unindexed
/// filters and sorts, non-sargable filters, the offset-pagination template
/// (counted only for executions with a large OFFSET, see `paging.rs`) and
/// unindexed foreign keys it exercises. Text that does not parse, or is not
/// a SELECT/UPDATE/DELETE/INSERT ... SELECT, yields nothing. Never panics.
pub fn analyze_statement(
    sql: &str,
    catalog: &Catalog,
    config: &UnindexedConfig,
) -> Vec<UnindexedIssue> {
    if sql.len() > MAX_ANALYZED_BYTES || nesting(sql) > MAX_NESTING {
        return Vec::new();
    }
    catch_unwind(AssertUnwindSafe(|| analyze_parsed(sql, catalog, config))).unwrap_or_default()
}

/// Numbers the placeholder of a partial-index suggestion (`WHERE status =
/// $1`) the way the statement's normalized text numbers the value it
/// compares that column with, so the suggestion reads next to the query.
/// Left as it is when the normalized text does not show one unambiguous
/// placeholder for the column.
pub fn number_placeholder(issue: &mut UnindexedIssue, normalized: &str) {
    let Some(column) = issue
        .details
        .get("partial_index")
        .and_then(|p| p.get("column"))
        .and_then(Value::as_str)
    else {
        return;
    };
    let quoted = ddl::quote_ident(column);
    let Some(n) = placeholder_of(normalized, &quoted) else {
        return;
    };
    if let Some(head) = issue
        .suggestion
        .strip_suffix(&format!(" WHERE {quoted} = $1;"))
    {
        issue.suggestion = format!("{head} WHERE {quoted} = {n};");
    }
}

/// The one placeholder `column = $n` (or `$n = column`) compares the
/// column with in normalized SQL, the column bare or qualified.
fn placeholder_of(normalized: &str, column: &str) -> Option<String> {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == '$' || c == '"';
    let mut found: Option<String> = None;
    for (at, _) in normalized.match_indices(column) {
        let before = normalized[..at].chars().next_back();
        let after = &normalized[at + column.len()..];
        if before.is_some_and(ident) || after.chars().next().is_some_and(ident) {
            continue;
        }
        let placeholder = |s: &str| -> Option<String> {
            let digits: String = s
                .strip_prefix('$')?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            (!digits.is_empty()).then(|| format!("${digits}"))
        };
        let forward = after.strip_prefix(" = ").and_then(placeholder);
        let backward = normalized[..at]
            .trim_end_matches(|c: char| ident(c) || c == '.')
            .strip_suffix(" = ")
            .and_then(|head| head.rsplit([' ', '(']).next())
            .and_then(placeholder);
        for p in forward.into_iter().chain(backward) {
            if found.as_ref().is_some_and(|f| *f != p) {
                return None;
            }
            found = Some(p);
        }
    }
    found
}

/// A kind's details struct as the finding's `details` map.
fn to_details<T: serde::Serialize>(details: &T) -> Map<String, Value> {
    match serde_json::to_value(details) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

fn analyze_parsed(sql: &str, catalog: &Catalog, config: &UnindexedConfig) -> Vec<UnindexedIssue> {
    let Ok(statements) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
    else {
        return Vec::new();
    };
    let mut issues: Vec<UnindexedIssue> = Vec::new();
    let mut sink = |facts: facts::ScopeFacts<'_>| {
        evaluate::evaluate(&facts, catalog, config, &mut issues);
        paging::evaluate(&facts, config, &mut issues);
        foreign_key::modification(&facts, catalog, config, &mut issues);
    };
    let mut extractor = extract::Extractor {
        catalog,
        sink: &mut sink,
    };
    for statement in &statements {
        extractor.statement(statement, None);
    }
    // The same missing index found in two blocks (a UNION, a repeated
    // subquery) is one issue; keep the worst severity.
    let mut unique: Vec<UnindexedIssue> = Vec::with_capacity(issues.len());
    for issue in issues {
        match unique
            .iter_mut()
            .find(|u| u.kind == issue.kind && u.table == issue.table && u.columns == issue.columns)
        {
            // A block that needs the index outweighs one that would not
            // use it.
            Some(u) if u.withheld.is_some() && issue.withheld.is_none() => {
                let severity = u.severity.max(issue.severity);
                *u = issue;
                u.severity = severity;
            }
            Some(u) => u.severity = u.severity.max(issue.severity),
            None => unique.push(issue),
        }
    }
    unique
}

/// Opening parentheses plus `AND`/`OR` words: an upper bound on how deep
/// the syntax tree can nest, computed without parsing.
fn nesting(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut count = bytes.iter().filter(|&&b| b == b'(').count();
    let mut start = None;
    for (i, &b) in bytes.iter().chain(std::iter::once(&b' ')).enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            let word = &bytes[s..i];
            if word.eq_ignore_ascii_case(b"and") || word.eq_ignore_ascii_case(b"or") {
                count += 1;
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::placeholder_of;

    #[test]
    fn the_placeholder_of_a_column_in_normalized_sql() {
        let q = "SELECT * FROM orders WHERE orders.created_at > $1 AND status = $2 LIMIT $3";
        assert_eq!(placeholder_of(q, "status").as_deref(), Some("$2"));
        assert_eq!(placeholder_of(q, "created_at"), None);
        assert_eq!(
            placeholder_of("SELECT 1 FROM t WHERE $4 = t.status", "status").as_deref(),
            Some("$4")
        );
        assert_eq!(
            placeholder_of(
                "SELECT 1 FROM t WHERE status = $1 OR t.status = $2",
                "status"
            ),
            None
        );
        assert_eq!(
            placeholder_of("SELECT 1 FROM t WHERE substatus = $1", "status"),
            None
        );
        assert_eq!(
            placeholder_of("SELECT 1 FROM t WHERE \"Status\" = $12", "\"Status\"").as_deref(),
            Some("$12")
        );
    }
}
