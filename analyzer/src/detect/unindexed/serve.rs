//! Whether an index serves a set of predicates or an ORDER BY: the
//! planner's rules, cut down to what decides "an index scan is possible".
//!
//! - btree: usable when its first key is constrained (equality, IS NULL,
//!   range, or prefix LIKE when the ordering is bytewise); it delivers an
//!   ORDER BY when, skipping keys pinned by a single-value equality, its
//!   keys match the ORDER BY keys in order with every direction equal
//!   (forward scan) or every direction reversed (backward scan), NULLS
//!   placement included.
//! - hash: one key, equality only (not IS NULL: hash does not index NULLs).
//! - brin: equality or range on any key (block ranges are per column).
//! - gin/gist: only prefix LIKE, and only with a trigram operator class;
//!   the operators they exist for are not predicates this detector reads.
//! - others (spgist, bloom, ...): never assumed to serve.
//!
//! A partial index counts only when the statement implies its predicate:
//! each conjunct of the index predicate must be repeated by the statement
//! (same normalized text), or be `col IS NOT NULL` for a column the
//! statement compares, joins on, tests with IS NOT NULL, or that is
//! declared NOT NULL. Anything subtler is treated as not implied, so a
//! partial index is never credited wrongly (the cost is an occasional
//! finding that hypopg verification then shows to be unneeded).

use sqlparser::ast::Expr;

use super::facts::{PredKind, Predicate, SortKey, SourceFacts, Target};
use super::normal_form::{conjuncts, fold, normalize, normalize_text, parse_expr};
use crate::catalog::{Index, IndexKey, IndexMethod, KeyExpr, Table};

/// Whether the planner may use `index` for a statement with these facts.
pub(crate) fn usable(index: &Index, table: &Table, source: &SourceFacts<'_>) -> bool {
    index.valid
        && match &index.predicate {
            None => true,
            Some(text) => implied(text, table, source),
        }
}

fn implied(predicate: &str, table: &Table, source: &SourceFacts<'_>) -> bool {
    let Some(expr) = parse_expr(predicate) else {
        return false;
    };
    conjuncts(&expr).into_iter().all(|c| {
        if let Expr::IsNotNull(inner) = c {
            if let Some(column) = plain_column(inner) {
                if source.not_null.contains(&column)
                    || table.column(&column).is_some_and(|c| c.not_null)
                {
                    return true;
                }
            }
        }
        source.conjuncts.contains(&normalize(c))
    })
}

fn plain_column(e: &Expr) -> Option<String> {
    match e {
        Expr::Nested(inner) => plain_column(inner),
        Expr::Identifier(i) => Some(fold(i)),
        Expr::CompoundIdentifier(parts) => parts.last().map(fold),
        _ => None,
    }
}

/// Whether an index key is the predicate's or sort key's target.
pub(crate) fn key_matches(key: &IndexKey, target: &Target) -> bool {
    match (&key.expr, target) {
        (KeyExpr::Column(k), Target::Column(t)) => k == t,
        (KeyExpr::Expression(k), Target::Expression(t)) => {
            normalize_text(k).as_deref() == Some(t.as_str())
        }
        _ => false,
    }
}

/// A `*_pattern_ops` key: bytewise ordering whatever the collation.
fn pattern_ops(key: &IndexKey) -> bool {
    key.opclass
        .as_deref()
        .is_some_and(|o| o.ends_with("_pattern_ops"))
}

fn kinds_on<'p>(key: &'p IndexKey, preds: &'p [Predicate]) -> impl Iterator<Item = PredKind> + 'p {
    preds
        .iter()
        .filter(|p| key_matches(key, &p.target))
        .map(|p| p.kind)
}

/// Whether `index` can narrow a scan by at least one of `preds`.
/// `bytewise` is true when the database collation is C/POSIX, so a plain
/// btree also serves prefix LIKE and a pattern-ops btree also serves ranges.
pub(crate) fn serves_filter(index: &Index, preds: &[Predicate], bytewise: bool) -> bool {
    let Some(first) = index.keys.first() else {
        return false;
    };
    match index.method {
        IndexMethod::Btree => kinds_on(first, preds).any(|k| match k {
            PredKind::Eq { .. } | PredKind::IsNull => true,
            PredKind::Range => bytewise || !pattern_ops(first),
            PredKind::Prefix => bytewise || pattern_ops(first),
        }),
        IndexMethod::Hash => {
            index.keys.len() == 1
                && kinds_on(first, preds).any(|k| matches!(k, PredKind::Eq { .. }))
        }
        IndexMethod::Brin => index
            .keys
            .iter()
            .any(|key| kinds_on(key, preds).any(|k| !matches!(k, PredKind::Prefix))),
        IndexMethod::Gin | IndexMethod::Gist => index.keys.iter().any(|key| {
            key.opclass.as_deref().is_some_and(|o| o.contains("trgm"))
                && kinds_on(key, preds).any(|k| k == PredKind::Prefix)
        }),
        IndexMethod::Other => false,
    }
}

/// Whether a target is pinned to one value, so it does not order anything.
pub(crate) fn constant(target: &Target, preds: &[Predicate]) -> bool {
    preds.iter().any(|p| {
        &p.target == target && matches!(p.kind, PredKind::Eq { single: true } | PredKind::IsNull)
    })
}

/// Whether a btree `index` delivers rows in the order of `keys` (which
/// must already exclude keys pinned by [`constant`]).
pub(crate) fn serves_sort(
    index: &Index,
    preds: &[Predicate],
    keys: &[SortKey],
    bytewise: bool,
) -> bool {
    if index.method != IndexMethod::Btree {
        return false;
    }
    let mut reversed = None;
    let mut next = 0;
    for key in &index.keys {
        let Some(wanted) = keys.get(next) else {
            break;
        };
        if key_matches(key, &wanted.target) {
            let backward = key.descending != wanted.descending;
            let nulls_agree = (key.nulls_first == wanted.nulls_first) != backward;
            if !nulls_agree
                || *reversed.get_or_insert(backward) != backward
                || (pattern_ops(key) && !bytewise)
            {
                return false;
            }
            next += 1;
        } else if !preds
            .iter()
            .any(|p| key_matches(key, &p.target) && constant(&p.target, preds))
        {
            return false;
        }
    }
    next == keys.len()
}

/// Whether the statement pins every key of a usable unique index with a
/// single-value equality: at most one row, nothing worth sorting.
pub(crate) fn unique_lookup(table: &Table, source: &SourceFacts<'_>) -> bool {
    table.indexes.iter().any(|index| {
        index.unique
            && !index.keys.is_empty()
            && usable(index, table, source)
            && index.keys.iter().all(|key| {
                kinds_on(key, &source.predicates).any(|k| k == PredKind::Eq { single: true })
            })
    })
}
