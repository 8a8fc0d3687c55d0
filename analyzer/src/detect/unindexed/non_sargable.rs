//! `non_sargable_filter`: a predicate that wraps an indexed column so the
//! column's index cannot serve it.
//!
//! # What is read
//! A comparison (`=`, `<`, `<=`, `>`, `>=`, `IN`, `= ANY`, `BETWEEN`, a
//! literal prefix LIKE) of a value with an expression of exactly one column,
//! and a LIKE or ILIKE of the bare column with a pattern that starts with a
//! wildcard (a literal, or `'%' || $1`). The expression is classed by its
//! outermost node:
//! - function: `lower(email)`, `date_trunc('day', created_at)`, `date(..)`;
//! - cast: `created_at::date`, unless the cast keeps the type family
//!   (`varchar_col::text` is a relabel the index still serves);
//! - arithmetic: `id + 1`, `price * 2`;
//! - any other expression of the column (`a || 'x'`, CASE, ...).
//!
//! # When it is reported
//! On a table of at least `min_table_rows` rows, when an index on the bare
//! column would serve the comparison (so the wrapping is what defeats it),
//! and nothing else lets the planner avoid reading the table: no usable
//! index serves another of the table's predicates (an expression index on
//! the same expression counts), and no indexed join key reaches it from a
//! table that drives the join. A leading-wildcard LIKE is left alone when a
//! trigram (`gin_trgm_ops`/`gist_trgm_ops`) index covers the column. A
//! wrapped column that no index covers is not reported: nothing is
//! defeated, and whether it deserves an expression index is not something
//! the traffic shows. Severity: warning, error from `error_table_rows`.
//!
//! # Next to `unindexed_filter`
//! A table reported here gets no `unindexed_filter` in the same block: its
//! other filter columns would need a new index only because the wrapped
//! one hides its index. Once the predicate is rewritten (or the expression
//! index exists) an index narrows the scan, and the other columns no longer
//! matter. One finding per table, the one whose fix is cheapest.
//!
//! # Suggestion
//! The rewrite when there is one: a range on the bare column for
//! `col::date`, `date(col)` and `date_trunc('unit', col)`; the arithmetic
//! moved to the value side; the value cast instead of the column. Else an
//! expression index (`CREATE INDEX CONCURRENTLY ON t ((lower(email)))`),
//! printed only when the expression holds no literals, or a trigram GIN
//! index for a leading wildcard. Literals are never printed: the finding
//! shows them as `?`.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectNamePart, Query,
    Value, Visit, Visitor,
};

use super::ddl::quote_ident;
use super::facts::{PredKind, Predicate, ScopeFacts, Target, Wrapped, Wrapper};
use super::finding_parts::{describe_index, size_severity};
use super::normal_form::{fold, normalize};
use super::scope::{Operand, Ref, Scope};
use super::serve::{serves_filter, usable};
use super::{to_details, UnindexedConfig, UnindexedIssue};
use crate::catalog::{IndexMethod, Table};
use crate::finding::FindingKind;

/// The evidence of a `non_sargable_filter` finding (its `details`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonSargableDetails {
    /// The table's estimated rows.
    pub rows_estimate: u64,
    /// The wrapped expression, qualifiers dropped and literals shown as `?`
    /// (`lower(email)`, `created_at::DATE`, `id + ?`, `title LIKE '%…'`).
    pub predicate: String,
    /// `function`, `cast`, `arithmetic`, `expression` or
    /// `leading_wildcard`.
    pub wrapper: String,
    /// The function's name, for `function`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The cast's target type, for `cast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cast_to: Option<String>,
    /// Indexes on the bare column that the wrapping keeps from serving it.
    pub defeated_indexes: Vec<String>,
    /// Every index of the table (at most 10).
    pub existing_indexes: Vec<String>,
}

/// Records a comparison of `column_side` with a value when the column side
/// wraps one column of a catalog table. `op`: the operator as seen from the
/// column side, and the value side (`None` for IN, ANY, BETWEEN, LIKE).
pub(crate) fn record_comparison(
    column_side: &Expr,
    op: Option<(&'static str, &Expr)>,
    kind: PredKind,
    scope: &Scope<'_, '_>,
    facts: &mut ScopeFacts<'_>,
) {
    let Operand::Expr(i, _) = scope.operand(column_side) else {
        return;
    };
    let Some(table) = facts.sources[i].table else {
        return;
    };
    let Some(column) = single_column(column_side, i, scope) else {
        return;
    };
    let column_type = table.column(&column).map_or("", |c| c.type_name.as_str());
    let Some(wrapper) = classify(column_side, &column, column_type) else {
        return;
    };
    push(
        facts,
        i,
        Wrapped {
            index_expression: (!has_literal(column_side)).then(|| normalize(column_side)),
            shown: shown(column_side),
            column,
            wrapper,
            kind,
            op: op.map(|(o, _)| o),
            value: op.map(|(_, v)| value_text(v)).unwrap_or_default(),
        },
    );
}

/// Records `expr [I]LIKE pattern` when the pattern starts with a wildcard
/// and `expr` is a bare column (or a cast that keeps it text).
pub(crate) fn record_like(
    expr: &Expr,
    pattern: &Expr,
    ilike: bool,
    scope: &Scope<'_, '_>,
    facts: &mut ScopeFacts<'_>,
) {
    if !leading_wildcard(pattern) {
        return;
    }
    let (i, column) = match scope.operand(expr) {
        Operand::Column(i, c) => (i, c),
        Operand::Expr(i, _) => match strip(expr) {
            Expr::Cast {
                expr: inner,
                data_type,
                ..
            } => match scope.operand(inner) {
                Operand::Column(j, c)
                    if j == i
                        && family(&data_type.to_string()) == "text"
                        && facts.sources[i]
                            .table
                            .and_then(|t| t.column(&c))
                            .is_some_and(|col| family(&col.type_name) == "text") =>
                {
                    (i, c)
                }
                _ => return,
            },
            _ => return,
        },
        _ => return,
    };
    if facts.sources[i].table.is_none() {
        return;
    }
    let keyword = if ilike { "ILIKE" } else { "LIKE" };
    push(
        facts,
        i,
        Wrapped {
            shown: format!("{} {keyword} '%…'", quote_ident(&column)),
            column,
            wrapper: Wrapper::LeadingWildcard { ilike },
            kind: PredKind::Eq { single: true },
            index_expression: None,
            op: None,
            value: String::new(),
        },
    );
}

fn push(facts: &mut ScopeFacts<'_>, source: usize, wrapped: Wrapped) {
    let s = &mut facts.sources[source];
    if !s.wrapped.contains(&wrapped) {
        s.wrapped.push(wrapped);
    }
}

/// Appends the block's `non_sargable_filter` issues to `out` and returns
/// the sources they are about (see the module docs for the rules).
/// `reached[i]`: an index lets the planner avoid reading source `i` whole
/// (its own predicates, a join key from a driving table, or it is small or
/// not a table).
pub(crate) fn evaluate(
    facts: &ScopeFacts<'_>,
    config: &UnindexedConfig,
    reached: &[bool],
    bytewise: bool,
    out: &mut Vec<UnindexedIssue>,
) -> Vec<usize> {
    let mut flagged = Vec::new();
    for (i, source) in facts.sources.iter().enumerate() {
        let Some(table) = source.table else {
            continue;
        };
        if reached[i]
            || source.wrapped.is_empty()
            || table.estimated_rows() < config.min_table_rows as f64
            || source.wrapped.iter().any(|w| {
                matches!(w.wrapper, Wrapper::LeadingWildcard { .. }) && trigram(table, &w.column)
            })
        {
            continue;
        }
        let mut columns: Vec<&str> = Vec::new();
        for w in &source.wrapped {
            if columns.contains(&w.column.as_str()) {
                continue;
            }
            let bare = [Predicate {
                target: Target::Column(w.column.clone()),
                kind: match w.kind {
                    PredKind::Prefix => PredKind::Range,
                    k => k,
                },
            }];
            let defeated: Vec<String> = table
                .indexes
                .iter()
                .filter(|x| usable(x, table, source) && serves_filter(x, &bare, bytewise))
                .map(describe_index)
                .collect();
            if defeated.is_empty() {
                continue;
            }
            columns.push(&w.column);
            let (function, cast_to) = match &w.wrapper {
                Wrapper::Function { name, .. } => (Some(name.clone()), None),
                Wrapper::Cast { to } => (None, Some(to.clone())),
                _ => (None, None),
            };
            let details = NonSargableDetails {
                rows_estimate: table.estimated_rows().round() as u64,
                predicate: w.shown.clone(),
                wrapper: wrapper_name(&w.wrapper).to_owned(),
                function,
                cast_to,
                defeated_indexes: defeated,
                existing_indexes: table.indexes.iter().take(10).map(describe_index).collect(),
            };
            out.push(UnindexedIssue {
                kind: FindingKind::NonSargableFilter,
                table: table.qualified_name(),
                columns: vec![w.column.clone()],
                severity: size_severity(table, config),
                suggestion: suggestion(table, w),
                details: to_details(&details),
                withheld: None,
                verify_ddl: None,
            });
        }
        if !columns.is_empty() {
            flagged.push(i);
        }
    }
    flagged
}

fn wrapper_name(w: &Wrapper) -> &'static str {
    match w {
        Wrapper::Function { .. } => "function",
        Wrapper::Cast { .. } => "cast",
        Wrapper::Arithmetic { .. } => "arithmetic",
        Wrapper::Expression => "expression",
        Wrapper::LeadingWildcard { .. } => "leading_wildcard",
    }
}

/// A valid trigram index with the column as a key: it serves LIKE and
/// ILIKE with any pattern.
fn trigram(table: &Table, column: &str) -> bool {
    table.indexes.iter().any(|x| {
        x.valid
            && matches!(x.method, IndexMethod::Gin | IndexMethod::Gist)
            && x.keys.iter().any(|k| {
                k.expr == crate::catalog::KeyExpr::Column(column.to_owned())
                    && k.opclass.as_deref().is_some_and(|o| o.contains("trgm"))
            })
    })
}

/// The columns of source `i` an expression reads, if it is exactly one
/// (and the expression holds no subquery).
fn single_column(e: &Expr, i: usize, scope: &Scope<'_, '_>) -> Option<String> {
    struct Columns<'a, 's, 'c> {
        scope: &'a Scope<'s, 'c>,
        source: usize,
        found: Vec<String>,
        other: bool,
    }
    impl Visitor for Columns<'_, '_, '_> {
        type Break = ();
        fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.other = true;
            ControlFlow::Break(())
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            let parts = match expr {
                Expr::Identifier(ident) => std::slice::from_ref(ident),
                Expr::CompoundIdentifier(parts) => &parts[..],
                _ => return ControlFlow::Continue(()),
            };
            match self.scope.resolve(parts) {
                Ref::Local(j, c) if j == self.source => {
                    if !self.found.contains(&c) {
                        self.found.push(c);
                    }
                }
                Ref::Outer => {}
                _ => self.other = true,
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Columns {
        scope,
        source: i,
        found: Vec::new(),
        other: false,
    };
    let _ = e.visit(&mut v);
    match (v.other, &v.found[..]) {
        (false, [column]) => Some(column.clone()),
        _ => None,
    }
}

fn strip(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

fn is_column(e: &Expr, column: &str) -> bool {
    match strip(e) {
        Expr::Identifier(i) => fold(i) == column,
        Expr::CompoundIdentifier(parts) => parts.last().is_some_and(|i| fold(i) == column),
        _ => false,
    }
}

/// What wraps `column`; `None` when the wrapping is harmless (a cast within
/// the column's type family).
fn classify(e: &Expr, column: &str, column_type: &str) -> Option<Wrapper> {
    match strip(e) {
        Expr::Cast {
            expr, data_type, ..
        } if is_column(expr, column) => {
            let to = data_type.to_string().to_lowercase();
            (family(&to) != family(column_type)).then_some(Wrapper::Cast { to })
        }
        // A cast around something else: the something else is the wrapper.
        Expr::Cast { expr, .. } => classify(expr, column, column_type),
        Expr::BinaryOp { left, op, right }
            if is_column(left, column) || is_column(right, column) =>
        {
            match op {
                BinaryOperator::Plus => Some(Wrapper::Arithmetic { op: "+" }),
                BinaryOperator::Minus => Some(Wrapper::Arithmetic { op: "-" }),
                BinaryOperator::Multiply => Some(Wrapper::Arithmetic { op: "*" }),
                BinaryOperator::Divide => Some(Wrapper::Arithmetic { op: "/" }),
                BinaryOperator::Modulo => Some(Wrapper::Arithmetic { op: "%" }),
                _ => Some(Wrapper::Expression),
            }
            .map(|w| match (&w, is_column(left, column)) {
                // `k - id` or `k / id`: not a shape the rewrite text covers.
                (
                    Wrapper::Arithmetic {
                        op: "-" | "/" | "%",
                    },
                    false,
                ) => Wrapper::Expression,
                _ => w,
            })
        }
        Expr::Function(f) => {
            let name = match f.name.0.last() {
                Some(ObjectNamePart::Identifier(i)) => fold(i),
                _ => return Some(Wrapper::Expression),
            };
            let unit = (name == "date_trunc")
                .then(|| first_string_arg(&f.args))
                .flatten()
                .and_then(|u| date_unit(&u));
            Some(Wrapper::Function { name, unit })
        }
        Expr::Extract { .. } => Some(Wrapper::Function {
            name: "extract".into(),
            unit: None,
        }),
        _ => Some(Wrapper::Expression),
    }
}

fn first_string_arg(args: &FunctionArguments) -> Option<String> {
    let FunctionArguments::List(list) = args else {
        return None;
    };
    match list.args.first()? {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.to_lowercase()),
            _ => None,
        },
        _ => None,
    }
}

/// `date_trunc` units an interval can step by (the unit is a literal, but
/// one of a fixed set of words, so printing it leaks nothing).
fn date_unit(unit: &str) -> Option<&'static str> {
    const UNITS: [&str; 10] = [
        "second", "minute", "hour", "day", "week", "month", "quarter", "year", "decade", "century",
    ];
    UNITS.into_iter().find(|u| *u == unit)
}

/// Type names grouped where a cast between them is a relabel PostgreSQL
/// sees through (text-like types) or a spelling of the same type; any
/// other pair is a conversion function the column's index cannot serve.
fn family(type_name: &str) -> String {
    let t = type_name.trim().to_lowercase();
    let base = t.split('(').next().unwrap_or("").trim().to_owned();
    let name = match base.as_str() {
        "text" | "varchar" | "character varying" | "char" | "character" | "bpchar" | "name" => {
            "text"
        }
        "int" | "integer" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "timestamp with time zone" | "timestamptz" => "timestamptz",
        "timestamp without time zone" | "timestamp" => "timestamp",
        "double precision" | "float8" | "float" => "float8",
        "real" | "float4" => "float4",
        "numeric" | "decimal" => "numeric",
        "boolean" | "bool" => "bool",
        other => return other.to_owned(),
    };
    name.to_owned()
}

/// Whether an expression holds a literal other than NULL.
fn has_literal(e: &Expr) -> bool {
    struct Literals(bool);
    impl Visitor for Literals {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = expr {
                if !matches!(v.value, Value::Null | Value::Placeholder(_)) {
                    self.0 = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Literals(false);
    let _ = e.visit(&mut v);
    v.0
}

/// The expression as written, qualifiers dropped and literals as `?`.
fn shown(e: &Expr) -> String {
    let mut e = strip(e).clone();
    let _ = sqlparser::ast::visit_expressions_mut(&mut e, |x| {
        match x {
            Expr::Value(v) if !matches!(v.value, Value::Null | Value::Placeholder(_)) => {
                v.value = Value::Placeholder("?".into());
            }
            Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    *x = Expr::Identifier(last.clone());
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    e.to_string()
}

/// The value side for a rewrite: a parameter as written (`$1`), anything
/// else `v` (a literal's value is never printed).
fn value_text(e: &Expr) -> String {
    let mut e = strip(e);
    while let Expr::Cast { expr, .. } = e {
        e = strip(expr);
    }
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) if p.starts_with('$') => p.clone(),
            _ => "v".into(),
        },
        _ => "v".into(),
    }
}

/// A pattern that starts with `%` or `_`: a literal, or a concatenation
/// (`'%' || $1`, `concat('%', $1)`) whose first part is one.
fn leading_wildcard(pattern: &Expr) -> bool {
    match strip(pattern) {
        Expr::Cast { expr, .. } => leading_wildcard(expr),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => {
                s.starts_with(['%', '_'])
            }
            Value::DollarQuotedString(d) => d.value.starts_with(['%', '_']),
            _ => false,
        },
        Expr::BinaryOp {
            left,
            op: BinaryOperator::StringConcat,
            ..
        } => leading_wildcard(left),
        Expr::Function(f) if matches!(f.name.0.last(), Some(ObjectNamePart::Identifier(i)) if fold(i) == "concat") => {
            match &f.args {
                FunctionArguments::List(list) => matches!(
                    list.args.first(),
                    Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) if leading_wildcard(first)
                ),
                _ => false,
            }
        }
        _ => false,
    }
}

fn suggestion(table: &Table, w: &Wrapped) -> String {
    let t = format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    );
    let c = quote_ident(&w.column);
    let column_type = table.column(&w.column).map_or("", |c| c.type_name.as_str());
    let timestamp = matches!(family(column_type).as_str(), "timestamp" | "timestamptz");
    let range_unit = match &w.wrapper {
        Wrapper::Cast { to } if timestamp && family(to) == "date" => Some("day"),
        Wrapper::Function { name, .. } if timestamp && name == "date" => Some("day"),
        Wrapper::Function {
            name,
            unit: Some(unit),
        } if name == "date_trunc" => Some(*unit),
        _ => None,
    };
    if let Some(range) = range_unit
        .zip(w.op)
        .and_then(|(unit, op)| range(&c, op, &w.value, unit))
    {
        return format!(
            "Compare {c} itself with a range, so its index serves the filter: {range}{}.",
            stands_for(&w.value)
        );
    }
    let v = &w.value;
    match &w.wrapper {
        Wrapper::LeadingWildcard { ilike } => format!(
            "A pattern that starts with a wildcard cannot use a btree index. Anchor the pattern \
             at the start if the search allows it; otherwise index {c} with trigrams, which serve \
             {} with any pattern: CREATE EXTENSION IF NOT EXISTS pg_trgm; \
             CREATE INDEX CONCURRENTLY ON {t} USING gin ({c} gin_trgm_ops);",
            if *ilike { "ILIKE" } else { "LIKE" }
        ),
        Wrapper::Cast { to } => format!(
            "Cast the value, not the column, so the index on {c} serves the filter: compare {c} \
             with a value of its own type (the cast to {to} hides the column from its index){}.",
            match w.op {
                Some(op) if !column_type.is_empty() => {
                    format!(": {c} {op} {v}::{column_type}{}", stands_for(v))
                }
                _ => String::new(),
            }
        ),
        Wrapper::Arithmetic { op } => {
            let inverse = match *op {
                "+" => Some("-"),
                "-" => Some("+"),
                "*" => Some("/"),
                "/" => Some("*"),
                _ => None,
            };
            match (inverse, w.op) {
                (Some(inverse), Some(cmp)) => format!(
                    "Move the arithmetic to the value side so {c} stands alone and its index \
                     serves the filter: {c} {op} k {cmp} {v} → {c} {cmp} {v} {inverse} k{}{}.",
                    stands_for(v),
                    if matches!(*op, "*" | "/") {
                        " (for a positive k; a negative one flips the comparison)"
                    } else {
                        ""
                    }
                ),
                _ => format!(
                    "Rewrite the predicate so {c} stands alone on one side of the comparison; \
                     its index cannot serve {}.",
                    w.shown
                ),
            }
        }
        Wrapper::Function { .. } | Wrapper::Expression => match &w.index_expression {
            Some(e) => format!(
                "Index the expression the query filters on (its functions must be IMMUTABLE), \
                 or compare {c} itself: CREATE INDEX CONCURRENTLY ON {t} (({e}));"
            ),
            None => format!(
                "Compare {c} itself, or add an expression index on exactly this expression \
                 ({}); the index on {c} cannot serve it.",
                w.shown
            ),
        },
    }
}

/// Says what `v` means when a rewrite uses it for a value that is not a
/// parameter (a literal or an expression, never printed).
fn stands_for(value: &str) -> &'static str {
    if value == "v" {
        " (v: the value the query compares with)"
    } else {
        ""
    }
}

/// `col op v` as a range on the bare column, for a truncation to `unit`.
fn range(c: &str, op: &str, v: &str, unit: &str) -> Option<String> {
    let next = format!("{v} + interval '1 {unit}'");
    Some(match op {
        "=" => format!("{c} >= {v} AND {c} < {next}"),
        ">=" => format!("{c} >= {v}"),
        "<" => format!("{c} < {v}"),
        ">" => format!("{c} >= {next}"),
        "<=" => format!("{c} < {next}"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_families() {
        assert_eq!(family("character varying(255)"), "text");
        assert_eq!(family("TEXT"), "text");
        assert_eq!(family("timestamp with time zone"), "timestamptz");
        assert_eq!(family("TIMESTAMPTZ"), "timestamptz");
        assert_eq!(family("integer"), "int4");
        assert_eq!(family("INT"), "int4");
        assert_ne!(family("integer"), family("bigint"));
        assert_eq!(family("DATE"), "date");
    }

    #[test]
    fn ranges_for_truncations() {
        assert_eq!(
            range("created_at", "=", "$1", "day").unwrap(),
            "created_at >= $1 AND created_at < $1 + interval '1 day'"
        );
        assert_eq!(
            range("c", ">", "v", "month").unwrap(),
            "c >= v + interval '1 month'"
        );
        assert!(range("c", "<>", "v", "day").is_none());
    }
}
