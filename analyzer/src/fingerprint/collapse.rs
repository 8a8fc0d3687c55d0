//! Collapsing lists of placeholders, so the number of values in a list
//! does not make a different query.

use sqlparser::ast::{BinaryOperator, Expr, Parens};

use super::placeholder::{is_placeholder, placeholder_expr};

/// `x IN ($1, $2, ...)` → `x = ANY($1)`, `x NOT IN (...)` → `x <> ALL($1)`,
/// `(a, b) IN (($1, $2), ($3, $4))` → `(a, b) IN (($1, $2))`.
pub(crate) fn collapse_in_list(expr: &mut Expr) {
    let Expr::InList {
        expr: left,
        list,
        negated,
    } = expr
    else {
        return;
    };
    if list.is_empty() {
        return;
    }
    if list.iter().all(is_placeholder) {
        let left = std::mem::replace(left, Box::new(placeholder_expr()));
        let right = Box::new(list.swap_remove(0));
        *expr = if *negated {
            Expr::AllOp {
                left,
                compare_op: BinaryOperator::NotEq,
                right,
            }
        } else {
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                is_some: false,
            }
        };
        return;
    }
    let arity = match &list[0] {
        Expr::Tuple(items) => items.len(),
        _ => return,
    };
    let all_placeholder_tuples = list.iter().all(|e| {
        matches!(e, Expr::Tuple(items) if items.len() == arity && items.iter().all(is_placeholder))
    });
    if all_placeholder_tuples {
        list.truncate(1);
    }
}

/// Multi-row `VALUES`: rows that print the same after normalization are
/// kept once (only the first few distinct rows are compared, so a huge
/// insert of all-different rows stays linear).
pub(crate) fn collapse_rows(rows: &mut Vec<Parens<Vec<Expr>>>) {
    const MAX_DISTINCT: usize = 16;
    if rows.len() < 2 {
        return;
    }
    let mut kept: Vec<Parens<Vec<Expr>>> = Vec::new();
    for row in rows.drain(..) {
        if kept.len() >= MAX_DISTINCT || !kept.iter().any(|k| k.content == row.content) {
            kept.push(row);
        }
    }
    *rows = kept;
}
