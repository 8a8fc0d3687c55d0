//! The placeholder every replaced literal and `$n` becomes in the tree.
//!
//! A leaf of the rewrite: `normalize.rs` and the rewrites it calls
//! (`collapse.rs`, `dropped.rs`) all build and recognise placeholders
//! through it, so none of them imports another to get one.

use sqlparser::ast::{Expr, Value, ValueWithSpan};
use sqlparser::tokenizer::Span;

/// How every placeholder (replaced literal or `$n`) looks in the tree until
/// the final pass numbers them (`$1`, `$2`, ... in order of appearance).
/// All look alike so that rows and tuples compare equal.
pub(crate) const PLACEHOLDER: &str = "$0";

pub(crate) fn placeholder_expr() -> Expr {
    Expr::Value(ValueWithSpan {
        value: Value::Placeholder(PLACEHOLDER.to_owned()),
        span: Span::empty(),
    })
}

pub(crate) fn is_placeholder(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Value(ValueWithSpan {
            value: Value::Placeholder(_),
            ..
        })
    )
}
