//! What the detectors need to know about a statement beyond its
//! fingerprint, read once per fingerprint from a sample of its SQL.

use sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, LimitClause, Query, Select, SelectItem, SetExpr, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Statement facts for the N+1 and unbounded-SELECT detectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementFacts {
    /// The statement parsed (facts below are meaningful).
    pub parsed: bool,
    /// Every result column is an aggregate (and there is no GROUP BY), so
    /// it returns one row whatever the table size.
    pub aggregate_only: bool,
    /// The statement only asks whether rows exist (`SELECT EXISTS(...)`,
    /// `SELECT 1 ... LIMIT 1` is covered by the LIMIT).
    pub exists_only: bool,
    /// The outermost query has an OFFSET, so each execution's value is read
    /// for `offset_pagination`.
    pub offset: bool,
    /// The SELECT locks the rows it reads (`FOR UPDATE`, `FOR SHARE`, ...).
    pub locking: bool,
    /// A `WITH` clause writes (`WITH moved AS (UPDATE ... RETURNING ...)
    /// SELECT ...`): the statement counts as a SELECT but changes rows, so
    /// it is never an N+1 child and its locks count.
    pub modifies: bool,
    /// Columns compared by equality (`=`, `IN`, `= ANY`) to a parameter or
    /// literal in the outermost WHERE, lower-cased, in order, each once.
    pub equality_columns: Vec<String>,
    /// The first table the statement reads (from its fingerprint).
    pub table: Option<String>,
    /// The database the statement was first seen in.
    pub database: Option<std::sync::Arc<str>>,
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "bit_and",
    "bit_or",
    "stddev",
    "variance",
    "percentile_cont",
    "percentile_disc",
    "mode",
];

/// Reads the facts from one statement's SQL; an unparsable statement gets
/// `parsed: false` and no facts (detectors then stay silent rather than
/// guess).
pub fn statement_facts(sql: &str) -> StatementFacts {
    // The statement may be one of several in a simple query; the caller
    // passes the one it means. Oversized text is not worth parsing twice.
    if sql.len() > 256 * 1024 {
        return StatementFacts::default();
    }
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return StatementFacts::default();
    };
    let Some(Statement::Query(query)) = statements.first() else {
        return StatementFacts {
            parsed: true,
            ..Default::default()
        };
    };
    let mut facts = StatementFacts {
        parsed: true,
        offset: matches!(
            &query.limit_clause,
            Some(LimitClause::LimitOffset {
                offset: Some(_),
                ..
            })
        ),
        locking: !query.locks.is_empty(),
        modifies: modifies(query),
        ..Default::default()
    };
    if let Some(select) = outer_select(query) {
        facts.aggregate_only = is_aggregate_only(select);
        facts.exists_only = select.projection.len() == 1
            && matches!(
                &select.projection[0],
                SelectItem::UnnamedExpr(Expr::Exists { .. })
                    | SelectItem::ExprWithAlias {
                        expr: Expr::Exists { .. },
                        ..
                    }
            );
        if let Some(selection) = &select.selection {
            collect_equalities(selection, &mut facts.equality_columns);
        }
    }
    facts
}

/// Whether a CTE of the query (or of a nested one) is an INSERT, UPDATE,
/// DELETE or MERGE.
fn modifies(query: &Query) -> bool {
    let cte_writes = query.with.as_ref().is_some_and(|with| {
        with.cte_tables.iter().any(|cte| {
            matches!(
                cte.query.body.as_ref(),
                SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
            ) || modifies(&cte.query)
        })
    });
    cte_writes || matches!(query.body.as_ref(), SetExpr::Query(inner) if modifies(inner))
}

fn outer_select(query: &Query) -> Option<&Select> {
    match query.body.as_ref() {
        SetExpr::Select(select) => Some(select),
        SetExpr::Query(inner) => outer_select(inner),
        _ => None,
    }
}

fn is_aggregate_only(select: &Select) -> bool {
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
    };
    !grouped
        && !select.projection.is_empty()
        && select.projection.iter().all(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                is_single_row_expr(e)
            }
            _ => false,
        })
}

/// An expression that yields one value per query, not per row: an
/// aggregate (not a window function), a scalar subquery, EXISTS, or a
/// constant built from those.
fn is_single_row_expr(e: &Expr) -> bool {
    match e {
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            let base = name.rsplit('.').next().unwrap_or(&name);
            f.over.is_none() && AGGREGATES.contains(&base)
        }
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::Value(_) => true,
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => is_single_row_expr(inner),
        Expr::BinaryOp { left, right, .. } => is_single_row_expr(left) && is_single_row_expr(right),
        _ => false,
    }
}

fn is_parameter(e: &Expr) -> bool {
    match e {
        Expr::Value(_) => true,
        Expr::Cast { expr, .. } | Expr::Nested(expr) => is_parameter(expr),
        Expr::Array(a) => a.elem.iter().all(is_parameter),
        _ => false,
    }
}

fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(id.value.to_ascii_lowercase()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|id| id.value.to_ascii_lowercase()),
        Expr::Nested(inner) => column_name(inner),
        _ => None,
    }
}

fn push_unique(out: &mut Vec<String>, name: String) {
    if !out.contains(&name) {
        out.push(name);
    }
}

fn collect_equalities(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            collect_equalities(left, out);
            collect_equalities(right, out);
        }
        Expr::Nested(inner) => collect_equalities(inner, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            if let (Some(c), true) = (column_name(left), is_parameter(right)) {
                push_unique(out, c);
            } else if let (Some(c), true) = (column_name(right), is_parameter(left)) {
                push_unique(out, c);
            }
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } if list.iter().all(is_parameter) => {
            if let Some(c) = column_name(expr) {
                push_unique(out, c);
            }
        }
        Expr::AnyOp { left, right, .. } if is_parameter(right) => {
            if let Some(c) = column_name(left) {
                push_unique(out, c);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_and_exists() {
        assert!(statement_facts("select count(*) from orders where user_id = $1").aggregate_only);
        assert!(statement_facts("select count(*), max(created_at) from orders").aggregate_only);
        assert!(
            !statement_facts("select user_id, count(*) from orders group by user_id")
                .aggregate_only
        );
        assert!(!statement_facts("select id, count(*) over () from orders").aggregate_only);
        assert!(!statement_facts("select * from orders").aggregate_only);
        assert!(statement_facts("select exists(select 1 from orders where id = 1)").exists_only);
        assert!(statement_facts("select * from orders where id = $1 for update").locking);
        assert!(statement_facts("select * from orders for share skip locked").locking);
        assert!(!statement_facts("select * from orders").locking);
        assert!(
            statement_facts(
                "with m as (update t set a = 1 where id = $1 returning id) select id from m"
            )
            .modifies
        );
        assert!(
            statement_facts(
                "with m as (delete from t where id = $1 returning *) insert into u select * from m"
            )
            .parsed
        );
        assert!(!statement_facts("with m as (select 1) select * from m").modifies);
    }

    #[test]
    fn equality_columns_in_order() {
        let f = statement_facts(
            r#"SELECT "posts"."id" FROM "posts" WHERE "posts"."author_id" = $1 AND "posts"."state" IN ('a', 'b') AND created_at > $2"#,
        );
        assert_eq!(f.equality_columns, ["author_id", "state"]);
        let f = statement_facts("select * from t where t.id = any($1) or x = 1");
        assert!(
            f.equality_columns.is_empty(),
            "OR is not an equality filter: {f:?}"
        );
        assert!(!statement_facts("selec nonsense").parsed);
    }
}
