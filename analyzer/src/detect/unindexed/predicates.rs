//! Reading WHERE and ON conditions and ORDER BY lists of one block into
//! [`ScopeFacts`]: which conjuncts are sargable predicates, join keys or
//! sort keys, and on which source.

use sqlparser::ast::{
    BinaryOperator, Expr, OrderBy, OrderByKind, OrderBySort, SelectItem, UnaryOperator, Value,
};

use super::facts::{
    Compared, JoinEdge, Operand as Side, PredKind, Predicate, ScopeFacts, SortKey, SortSpec,
    Target, Test,
};
use super::non_sargable;
use super::normal_form::{conjuncts, fold, normalize};
use super::scope::{Operand, Scope};

/// Reads the conjuncts of a WHERE or ON condition into `facts`.
pub(crate) fn predicates<'c>(expr: &Expr, scope: &Scope<'_, 'c>, facts: &mut ScopeFacts<'c>) {
    for c in conjuncts(expr) {
        if let Some([i]) = scope.sources_of(c).as_deref() {
            if facts.sources[*i]
                .table
                .is_some_and(|t| t.indexes.iter().any(|x| x.predicate.is_some()))
            {
                facts.sources[*i].conjuncts.push(normalize(c));
            }
        }
        conjunct(c, scope, facts);
    }
}

fn conjunct<'c>(c: &Expr, scope: &Scope<'_, 'c>, facts: &mut ScopeFacts<'c>) {
    let eq = PredKind::Eq { single: true };
    let many = PredKind::Eq { single: false };
    match c {
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::Eq => {
                comparison(scope.operand(left), scope.operand(right), eq, facts);
                wrapped_comparison(left, op, right, eq, scope, facts);
                compared_with(left, op, right, scope, facts);
            }
            BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq => {
                comparison(
                    scope.operand(left),
                    scope.operand(right),
                    PredKind::Range,
                    facts,
                );
                wrapped_comparison(left, op, right, PredKind::Range, scope, facts);
                compared_with(left, op, right, scope, facts);
            }
            BinaryOperator::Or => {
                if let Some((i, column)) = same_column_disjunction(c, scope) {
                    push(facts, i, Target::Column(column), many);
                }
            }
            _ => {}
        },
        Expr::AnyOp {
            left,
            compare_op: BinaryOperator::Eq,
            right,
            ..
        } if scope.operand(right) == Operand::Value => {
            value_predicate(scope.operand(left), many, facts);
            non_sargable::record_comparison(left, None, many, scope, facts);
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } if list.iter().all(|e| scope.operand(e) == Operand::Value) => {
            let kind = if list.len() == 1 { eq } else { many };
            value_predicate(scope.operand(expr), kind, facts);
            non_sargable::record_comparison(expr, None, kind, scope, facts);
            record_compared(
                scope.operand(expr),
                Test::AnyOf(list.iter().map(literal).collect()),
                facts,
            );
        }
        Expr::InSubquery {
            expr,
            negated: false,
            ..
        } => {
            value_predicate(scope.operand(expr), many, facts);
            non_sargable::record_comparison(expr, None, many, scope, facts);
        }
        Expr::IsNull(e) => {
            value_predicate(scope.operand(e), PredKind::IsNull, facts);
            record_compared(scope.operand(e), Test::IsNull, facts);
        }
        Expr::IsNotNull(e) => {
            if let Operand::Column(i, column) = scope.operand(e) {
                facts.sources[i].not_null.push(column);
            }
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } if scope.operand(low) == Operand::Value && scope.operand(high) == Operand::Value => {
            value_predicate(scope.operand(expr), PredKind::Range, facts);
            non_sargable::record_comparison(expr, None, PredKind::Range, scope, facts);
            record_compared(
                scope.operand(expr),
                Test::Between(literal(low), literal(high)),
                facts,
            );
        }
        Expr::Like {
            negated: false,
            any: false,
            expr,
            pattern,
            ..
        } if literal_prefix(pattern) => {
            value_predicate(scope.operand(expr), PredKind::Prefix, facts);
            non_sargable::record_comparison(expr, None, PredKind::Prefix, scope, facts);
        }
        Expr::Like {
            negated: false,
            any: false,
            expr,
            pattern,
            ..
        } => non_sargable::record_like(expr, pattern, false, scope, facts),
        Expr::ILike {
            negated: false,
            any: false,
            expr,
            pattern,
            ..
        } => non_sargable::record_like(expr, pattern, true, scope, facts),
        _ => {}
    }
}

/// `a op b` with `op` an equality or range operator.
fn comparison<'c>(a: Operand, b: Operand, kind: PredKind, facts: &mut ScopeFacts<'c>) {
    match (a, b) {
        (Operand::Column(i, x), Operand::Column(j, y))
            if i != j && kind == (PredKind::Eq { single: true }) =>
        {
            facts.sources[i].not_null.push(x.clone());
            facts.sources[j].not_null.push(y.clone());
            facts.joins.push(JoinEdge {
                left: (i, x),
                right: (j, y),
            });
        }
        (side, Operand::Value) | (Operand::Value, side) => value_predicate(side, kind, facts),
        _ => {}
    }
}

/// `column op value` (either way round) as a [`Compared`] of the column's
/// source, with the operator as seen from the column's side.
fn compared_with(
    left: &Expr,
    op: &BinaryOperator,
    right: &Expr,
    scope: &Scope<'_, '_>,
    facts: &mut ScopeFacts<'_>,
) {
    let (column, value, flipped) = match (scope.operand(left), scope.operand(right)) {
        (c @ Operand::Column(..), Operand::Value) => (c, right, false),
        (Operand::Value, c @ Operand::Column(..)) => (c, left, true),
        _ => return,
    };
    let value = literal(value);
    let test = match (op, flipped) {
        (BinaryOperator::Eq, _) => Test::AnyOf(vec![value]),
        (BinaryOperator::Lt | BinaryOperator::LtEq, false)
        | (BinaryOperator::Gt | BinaryOperator::GtEq, true) => Test::Below(value),
        (BinaryOperator::Gt | BinaryOperator::GtEq, false)
        | (BinaryOperator::Lt | BinaryOperator::LtEq, true) => Test::Above(value),
        _ => return,
    };
    record_compared(column, test, facts);
}

fn record_compared(side: Operand, test: Test, facts: &mut ScopeFacts<'_>) {
    if let Operand::Column(i, column) = side {
        let s = &mut facts.sources[i];
        let c = Compared { column, test };
        if s.table.is_some() && !s.compared.contains(&c) {
            s.compared.push(c);
        }
    }
}

/// A literal's value in PostgreSQL's text output form, as `pg_stats`
/// prints the values it is compared with: strings unquoted, numbers as
/// written, booleans as `t`/`f`; casts looked through. Anything else
/// (parameters, expressions, NULL) is [`Side::Unknown`].
fn literal(e: &Expr) -> Side {
    match e {
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => literal(inner),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::NationalStringLiteral(s) => Side::Literal(s.clone()),
            Value::DollarQuotedString(d) => Side::Literal(d.value.clone()),
            Value::Number(n, _) => Side::Literal(n.replace('_', "")),
            Value::Boolean(b) => Side::Literal(if *b { "t" } else { "f" }.to_owned()),
            _ => Side::Unknown,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match &**expr {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Side::Literal(format!("-{}", n.replace('_', ""))),
                _ => Side::Unknown,
            },
            _ => Side::Unknown,
        },
        _ => Side::Unknown,
    }
}

/// `left op right` where one side is a value and the other wraps a column:
/// a candidate `non_sargable_filter`, recorded with the operator as seen
/// from the column's side.
fn wrapped_comparison(
    left: &Expr,
    op: &BinaryOperator,
    right: &Expr,
    kind: PredKind,
    scope: &Scope<'_, '_>,
    facts: &mut ScopeFacts<'_>,
) {
    let (as_written, flipped) = match op {
        BinaryOperator::Eq => ("=", "="),
        BinaryOperator::Lt => ("<", ">"),
        BinaryOperator::LtEq => ("<=", ">="),
        BinaryOperator::Gt => (">", "<"),
        BinaryOperator::GtEq => (">=", "<="),
        _ => return,
    };
    if scope.operand(right) == Operand::Value {
        non_sargable::record_comparison(left, Some((as_written, right)), kind, scope, facts);
    } else if scope.operand(left) == Operand::Value {
        non_sargable::record_comparison(right, Some((flipped, left)), kind, scope, facts);
    }
}

/// Records `side` (compared with a value) as a predicate of its source.
fn value_predicate(side: Operand, kind: PredKind, facts: &mut ScopeFacts<'_>) {
    match side {
        Operand::Column(i, c) => push(facts, i, Target::Column(c), kind),
        Operand::Expr(i, t) => push(facts, i, Target::Expression(t), kind),
        Operand::Value | Operand::Other => {}
    }
}

fn push(facts: &mut ScopeFacts<'_>, source: usize, target: Target, kind: PredKind) {
    let s = &mut facts.sources[source];
    if s.table.is_none() {
        return;
    }
    if kind != PredKind::IsNull {
        if let Target::Column(c) = &target {
            s.not_null.push(c.clone());
        }
    }
    let p = Predicate { target, kind };
    if !s.predicates.contains(&p) {
        s.predicates.push(p);
    }
}

/// `col = 1 OR col = 2 OR col IS NULL`: every branch an equality on the
/// same column, which the planner serves with a BitmapOr of index scans.
fn same_column_disjunction(e: &Expr, scope: &Scope<'_, '_>) -> Option<(usize, String)> {
    let mut branches = vec![e];
    let mut found: Option<(usize, String)> = None;
    while let Some(b) = branches.pop() {
        let column = match b {
            Expr::Nested(inner) => {
                branches.push(inner);
                continue;
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => {
                branches.push(left);
                branches.push(right);
                continue;
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => match (scope.operand(left), scope.operand(right)) {
                (Operand::Column(i, c), Operand::Value)
                | (Operand::Value, Operand::Column(i, c)) => (i, c),
                _ => return None,
            },
            Expr::InList {
                expr,
                list,
                negated: false,
            } if list.iter().all(|e| scope.operand(e) == Operand::Value) => {
                match scope.operand(expr) {
                    Operand::Column(i, c) => (i, c),
                    _ => return None,
                }
            }
            Expr::IsNull(inner) => match scope.operand(inner) {
                Operand::Column(i, c) => (i, c),
                _ => return None,
            },
            _ => return None,
        };
        if found.as_ref().is_some_and(|f| *f != column) {
            return None;
        }
        found = Some(column);
    }
    found
}

/// A LIKE pattern that is a string literal starting with a fixed
/// character: the only LIKE a btree can serve. A parameter's value is not
/// known, and a leading `%` or `_` needs a trigram index, not a btree.
fn literal_prefix(pattern: &Expr) -> bool {
    let mut e = pattern;
    loop {
        match e {
            Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => e = inner,
            Expr::Value(v) => {
                let text = match &v.value {
                    Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => s.as_str(),
                    Value::DollarQuotedString(d) => d.value.as_str(),
                    _ => return false,
                };
                return !text.is_empty() && !text.starts_with(['%', '_']);
            }
            _ => return false,
        }
    }
}

/// The ORDER BY, when every key is a column or expression of one catalog
/// table. Output-column names and positions are followed to the select
/// list, as PostgreSQL does.
pub(crate) fn sort_spec(
    order_by: &OrderBy,
    limited: bool,
    projection: &[SelectItem],
    scope: &Scope<'_, '_>,
) -> Option<SortSpec> {
    let OrderByKind::Expressions(exprs) = &order_by.kind else {
        return None;
    };
    let mut source = None;
    let mut keys = Vec::with_capacity(exprs.len());
    for o in exprs {
        let descending = match &o.options.sort {
            Some(OrderBySort::Using(_)) => return None,
            Some(OrderBySort::Desc) => true,
            _ => false,
        };
        let expr = output_column(&o.expr, projection).unwrap_or(&o.expr);
        let (i, target) = match scope.operand(expr) {
            Operand::Column(i, c) => (i, Target::Column(c)),
            Operand::Expr(i, t) => (i, Target::Expression(t)),
            _ => return None,
        };
        if *source.get_or_insert(i) != i {
            return None;
        }
        keys.push(SortKey {
            target,
            descending,
            nulls_first: o.options.nulls_first.unwrap_or(descending),
        });
    }
    let source = source?;
    scope.sources[source].table?;
    Some(SortSpec {
        source,
        keys,
        limited,
    })
}

fn output_column<'p>(expr: &Expr, projection: &'p [SelectItem]) -> Option<&'p Expr> {
    match expr {
        Expr::Identifier(id) => projection.iter().find_map(|item| match item {
            SelectItem::ExprWithAlias { expr, alias } if fold(alias) == fold(id) => Some(expr),
            _ => None,
        }),
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => {
                match projection.get(n.parse::<usize>().ok()?.checked_sub(1)?)? {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                        Some(e)
                    }
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    }
}
