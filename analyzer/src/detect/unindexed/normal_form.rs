//! One spelling for expressions that PostgreSQL treats as the same, so an
//! expression in a statement can be compared with an index expression or a
//! partial-index predicate by text.
//!
//! `pg_get_indexdef` and `pg_get_expr` print what the server stored:
//! `lower((email)::text)`, `((status)::text = 'active'::text)`. The
//! statement says `lower(u.email)` and `status = 'active'`. Dropping casts,
//! qualifiers and redundant parentheses and folding identifiers makes both
//! `lower(email)` and `status = 'active'`. Dropping casts can equate
//! expressions that differ only in type; for deciding whether an index
//! applies that is the right side to err on, since the planner would add
//! the same implicit casts.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Ident, ObjectNamePart};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Folds an identifier as PostgreSQL does: unquoted → lower case, quoted
/// kept as written.
pub(crate) fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Parses server-printed expression text (an index key or predicate);
/// `None` if sqlparser does not understand it, in which case the index is
/// treated as not matching anything.
pub(crate) fn parse_expr(text: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .ok()?
        .parse_expr()
        .ok()
}

/// The comparable text of an expression.
pub(crate) fn normalize(expr: &Expr) -> String {
    let mut expr = expr.clone();
    let _ = sqlparser::ast::visit_expressions_mut(&mut expr, |e| {
        rewrite(e);
        ControlFlow::<()>::Continue(())
    });
    while let Expr::Nested(inner) = expr {
        expr = *inner;
    }
    expr.to_string()
}

/// The comparable text of server-printed expression text.
pub(crate) fn normalize_text(text: &str) -> Option<String> {
    parse_expr(text).map(|e| normalize(&e))
}

/// Splits an expression at top-level ANDs (through parentheses).
pub(crate) fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    let mut out = Vec::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        match e {
            Expr::Nested(inner) => stack.push(inner),
            Expr::BinaryOp {
                left,
                op: sqlparser::ast::BinaryOperator::And,
                right,
            } => {
                stack.push(right);
                stack.push(left);
            }
            other => out.push(other),
        }
    }
    out
}

/// Applied bottom-up, so children are already rewritten.
fn rewrite(e: &mut Expr) {
    match e {
        Expr::Cast { expr, .. } => *e = take(expr),
        Expr::Nested(inner)
            if matches!(
                **inner,
                Expr::Identifier(_) | Expr::Value(_) | Expr::Function(_) | Expr::Nested(_)
            ) =>
        {
            *e = take(inner)
        }
        Expr::CompoundIdentifier(parts) => {
            if let Some(last) = parts.last() {
                *e = Expr::Identifier(canonical_ident(last));
            }
        }
        Expr::Identifier(ident) => *ident = canonical_ident(ident),
        Expr::Function(f) => {
            if f.name.0.len() == 2
                && matches!(&f.name.0[0], ObjectNamePart::Identifier(s) if fold(s) == "pg_catalog")
            {
                f.name.0.remove(0);
            }
            for part in &mut f.name.0 {
                if let ObjectNamePart::Identifier(ident) = part {
                    *ident = canonical_ident(ident);
                }
            }
        }
        _ => {}
    }
}

fn take(expr: &mut Box<Expr>) -> Expr {
    std::mem::replace(&mut **expr, Expr::Value(sqlparser::ast::Value::Null.into()))
}

/// Folded, and quoted only when folding would otherwise change it.
fn canonical_ident(ident: &Ident) -> Ident {
    let value = fold(ident);
    let plain = value.chars().enumerate().all(|(i, c)| {
        c == '_' || c.is_ascii_lowercase() || (i > 0 && (c.is_ascii_digit() || c == '$'))
    });
    if plain && !value.is_empty() {
        Ident::new(value)
    } else {
        Ident::with_quote('"', value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize_text(s).unwrap()
    }

    #[test]
    fn server_and_client_spellings_meet() {
        assert_eq!(n("lower((email)::text)"), n("lower(u.email)"));
        assert_eq!(n("lower((email)::text)"), "lower(email)");
        assert_eq!(
            n("((status)::text = 'active'::text)"),
            n("status = 'active'")
        );
        assert_eq!(n("(deleted_at IS NULL)"), n("\"t\".\"deleted_at\" IS NULL"));
        assert_eq!(n("pg_catalog.LOWER(Email)"), "lower(email)");
        assert_ne!(n("status = 'active'"), n("status = 'archived'"));
        assert_ne!(n("\"Email\" = 1"), n("email = 1"));
    }

    #[test]
    fn conjuncts_split_through_parentheses() {
        let e = parse_expr("(a = 1 AND (b = 2 AND c = 3)) AND (d = 4 OR e = 5)").unwrap();
        let parts: Vec<String> = conjuncts(&e).iter().map(|e| e.to_string()).collect();
        assert_eq!(parts, ["a = 1", "b = 2", "c = 3", "d = 4 OR e = 5"]);
    }
}
