//! The AST rewrite behind a fingerprint.
//!
//! A [`VisitorMut`] walks one parsed statement and rewrites it in place so
//! that statements differing only in data print the same way. The rules are
//! listed in the [module documentation](super); this file implements them.
//! Literal values are dropped as they are replaced: nothing here keeps a
//! value (their hashes come from the scan, see `scan.rs`).

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, CopySource, Expr, GroupByExpr, Ident, LimitClause, ObjectName, ObjectNamePart,
    ObjectType, OrderByExpr, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    Statement, TableFactor, TableObject, UnaryOperator, UpdateTableFromKind, Value, ValueWithSpan,
    VisitMut, VisitorMut,
};

use super::alias::{collect_factors, ident_key, object_key, Factors, Origin, Scopes};
use super::collapse::{collapse_in_list, collapse_rows};
use super::dropped;
use super::placeholder::{is_placeholder, placeholder_expr, PLACEHOLDER};

/// Rewrites `stmt` in place (see the module docs for the rules) and returns
/// the referenced tables, folded, in order of appearance, deduplicated.
pub(crate) fn normalize_statement(stmt: &mut Statement) -> Vec<String> {
    let mut v = Normalizer::default();
    let _ = stmt.visit(&mut v);
    v.finish()
}

/// Whether the statement's outermost query bounds its row count.
pub(crate) fn has_limit(stmt: &Statement) -> bool {
    match stmt {
        Statement::Query(q) => {
            q.fetch.is_some()
                || matches!(
                    q.limit_clause,
                    Some(LimitClause::LimitOffset { limit: Some(_), .. })
                        | Some(LimitClause::OffsetCommaLimit { .. })
                )
        }
        _ => false,
    }
}

#[derive(Default)]
struct Normalizer {
    /// (position in the text, folded name) of every relation seen.
    tables: Vec<((u64, u64), String)>,
    /// Names of CTEs, which look like relations but are not tables.
    cte_names: Vec<String>,
    /// Set by a table factor that is a function call (`generate_series(..)`),
    /// whose name is visited as a relation right after.
    skip_next_relation: bool,
    scopes: Scopes,
}

impl Normalizer {
    fn finish(mut self) -> Vec<String> {
        self.tables.sort_by_key(|(pos, _)| *pos);
        let mut tables: Vec<String> = Vec::with_capacity(self.tables.len());
        for (_, name) in self.tables {
            let is_cte = !name.contains('.') && self.cte_names.contains(&name);
            if !is_cte && !tables.contains(&name) {
                tables.push(name);
            }
        }
        tables
    }

    fn record_table(&mut self, name: &ObjectName) {
        let key = object_key(name);
        if key.is_empty() {
            return;
        }
        let pos = match name.0.first() {
            Some(ObjectNamePart::Identifier(ident)) => {
                (ident.span.start.line, ident.span.start.column)
            }
            _ => (u64::MAX, u64::MAX),
        };
        self.tables.push((pos, key));
    }
}

/// Operators whose right-hand literal is a JSON key or path, part of the
/// query's shape rather than data.
fn is_json_key_operator(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::Arrow
            | BinaryOperator::LongArrow
            | BinaryOperator::HashArrow
            | BinaryOperator::HashLongArrow
            | BinaryOperator::HashMinus
            | BinaryOperator::Question
            | BinaryOperator::QuestionAnd
            | BinaryOperator::QuestionPipe
    )
}

/// Protects a JSON key operand: a literal, or an `ARRAY[...]` of literals
/// (`#>> ARRAY['a','b']::text[]` as Prisma writes paths, `?| ARRAY[...]`).
fn protect_json_operand(e: &mut Expr) {
    match e {
        Expr::Cast { expr, .. } => {
            if let Expr::Array(array) = expr.as_mut() {
                array.elem.iter_mut().for_each(protect_literal);
            }
        }
        Expr::Array(array) => array.elem.iter_mut().for_each(protect_literal),
        other => protect_literal(other),
    }
}

/// Turns a literal into an identifier that prints the same, so the literal
/// pass leaves it alone (JSON keys, `ORDER BY 1`).
fn protect_literal(e: &mut Expr) {
    let Expr::Value(v) = e else { return };
    let ident = match &v.value {
        Value::SingleQuotedString(s)
        | Value::EscapedStringLiteral(s)
        | Value::DollarQuotedString(sqlparser::ast::DollarQuotedString { value: s, .. }) => {
            Ident::with_quote('\'', s.clone())
        }
        Value::Number(n, _) => Ident::new(n.clone()),
        _ => return,
    };
    *e = Expr::Identifier(ident);
}

/// Canonical spelling of an identifier: unquoted ones lower-cased; quoted
/// ones that PostgreSQL would fold to the same name printed without quotes.
fn canonicalize_ident(ident: &mut Ident) {
    match ident.quote_style {
        None => ident.value.make_ascii_lowercase(),
        Some('"') => {
            if super::reserved::is_plain_identifier(&ident.value) {
                ident.quote_style = None;
            }
        }
        Some('\'') => {}
        // Other quote styles do not occur in PostgreSQL and would make
        // sqlparser's Display panic.
        Some(_) => ident.quote_style = Some('"'),
    }
}

fn first_part(name: &mut ObjectName) -> Option<&mut Ident> {
    match name.0.as_mut_slice() {
        [ObjectNamePart::Identifier(ident)] => Some(ident),
        _ => None,
    }
}

impl VisitorMut for Normalizer {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &mut Statement) -> ControlFlow<()> {
        let owner = stmt as *const Statement as usize;
        match stmt {
            Statement::Update(update) => {
                let mut factors = Factors::new();
                collect_factors(std::slice::from_mut(&mut update.table), &mut factors);
                if let Some(
                    UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from),
                ) = &mut update.from
                {
                    collect_factors(from, &mut factors);
                }
                self.scopes.push(owner, Origin::Statement, factors);
            }
            Statement::Delete(delete) => {
                let mut factors = Factors::new();
                let (sqlparser::ast::FromTable::WithFromKeyword(from)
                | sqlparser::ast::FromTable::WithoutKeyword(from)) = &mut delete.from;
                collect_factors(from, &mut factors);
                if let Some(using) = &mut delete.using {
                    collect_factors(using, &mut factors);
                }
                self.scopes.push(owner, Origin::Statement, factors);
            }
            Statement::Insert(insert) => {
                if let (Some(alias), TableObject::TableName(table)) =
                    (insert.table_alias.take(), &insert.table)
                {
                    self.scopes.push_insert_alias(owner, &alias.alias, table);
                }
            }
            Statement::Merge(merge) => {
                let factors: Factors<'_> = smallvec::smallvec![&mut merge.table, &mut merge.source];
                self.scopes.push(owner, Origin::Statement, factors);
            }
            Statement::Copy {
                source: CopySource::Table { table_name, .. },
                ..
            } => self.record_table(table_name),
            Statement::Drop {
                object_type: ObjectType::Table | ObjectType::View | ObjectType::MaterializedView,
                names,
                ..
            } => {
                for name in names.iter() {
                    self.record_table(name);
                }
            }
            other => dropped::drop_names(other),
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, stmt: &mut Statement) -> ControlFlow<()> {
        let owner = stmt as *const Statement as usize;
        self.scopes.pop(owner, Origin::Statement);
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        self.scopes.enter_query(query as *const Query as usize);
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.cte_names.push(ident_key(&cte.alias.name).into_owned());
                self.scopes
                    .add_barrier(&*cte.query as *const Query as usize);
            }
        }
        if let SetExpr::Select(select) = query.body.as_mut() {
            let owner = &**select as *const Select as usize;
            self.enter_select(select, owner, Origin::Query);
        }
        for lock in &mut query.locks {
            if let Some(q) = lock.of.as_mut().and_then(first_part) {
                self.scopes.resolve(q);
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        match query.body.as_mut() {
            SetExpr::Select(select) => {
                let owner = &**select as *const Select as usize;
                self.scopes.pop(owner, Origin::Query);
            }
            SetExpr::Values(values) => collapse_rows(&mut values.rows),
            _ => {}
        }
        self.scopes
            .pop(query as *const Query as usize, Origin::Barrier);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        let owner = select as *const Select as usize;
        if !self.scopes.is_top(owner) {
            self.enter_select(select, owner, Origin::Select);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        let owner = select as *const Select as usize;
        self.scopes.pop(owner, Origin::Select);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { args: Some(_), .. } = factor {
            self.skip_next_relation = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        if std::mem::take(&mut self.skip_next_relation) {
            return ControlFlow::Continue(());
        }
        self.record_table(relation);
        ControlFlow::Continue(())
    }

    fn pre_visit_ident(&mut self, ident: &mut Ident) -> ControlFlow<()> {
        canonicalize_ident(ident);
        ControlFlow::Continue(())
    }

    fn pre_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
        // Literals and `$n` alike become the one placeholder.
        match &mut value.value {
            Value::Placeholder(p) if p == PLACEHOLDER => {}
            Value::Placeholder(p) => PLACEHOLDER.clone_into(p),
            other => *other = Value::Placeholder(PLACEHOLDER.to_owned()),
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_order_by_expr(&mut self, order_by: &mut OrderByExpr) -> ControlFlow<()> {
        // `ORDER BY 2` names a column, it is not data.
        if let Expr::Value(ValueWithSpan {
            value: Value::Number(..),
            ..
        }) = order_by.expr
        {
            protect_literal(&mut order_by.expr);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_group_by(&mut self, group_by: &mut GroupByExpr) -> ControlFlow<()> {
        if let GroupByExpr::Expressions(exprs, _) = group_by {
            for e in exprs {
                if let Expr::Value(ValueWithSpan {
                    value: Value::Number(..),
                    ..
                }) = e
                {
                    protect_literal(e);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::BinaryOp { op, right, .. } if is_json_key_operator(op) => {
                protect_json_operand(right);
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                self.scopes.resolve(&mut parts[0]);
            }
            Expr::QualifiedWildcard(name, _) => {
                if let Some(q) = first_part(name) {
                    self.scopes.resolve(q);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let hoisted: Option<Expr> = match expr {
            Expr::Cast { expr: inner, .. } | Expr::Nested(inner) if is_placeholder(inner) => {
                Some(take_expr(inner))
            }
            Expr::Interval(iv) if is_placeholder(&iv.value) => Some(take_expr(&mut iv.value)),
            Expr::UnaryOp {
                op: UnaryOperator::Minus | UnaryOperator::Plus,
                expr: inner,
            } if is_placeholder(inner) => Some(take_expr(inner)),
            Expr::TypedString(_) => Some(placeholder_expr()),
            Expr::Array(array)
                if !array.elem.is_empty() && array.elem.iter().all(is_placeholder) =>
            {
                Some(placeholder_expr())
            }
            Expr::InList { .. } => {
                collapse_in_list(expr);
                None
            }
            _ => None,
        };
        if let Some(new) = hoisted {
            *expr = new;
        }
        ControlFlow::Continue(())
    }
}

/// Moves `e` out, leaving a cheap dummy that is overwritten right after.
fn take_expr(e: &mut Expr) -> Expr {
    std::mem::replace(e, Expr::Value(Value::Null.into()))
}

impl Normalizer {
    fn enter_select(&mut self, select: &mut Select, owner: usize, origin: Origin) {
        let mut factors = Factors::new();
        collect_factors(&mut select.from, &mut factors);
        self.scopes.push(owner, origin, factors);
        for item in &mut select.projection {
            if let SelectItem::QualifiedWildcard(
                SelectItemQualifiedWildcardKind::ObjectName(name),
                _,
            ) = item
            {
                if let Some(q) = first_part(name) {
                    self.scopes.resolve(q);
                }
            }
        }
    }
}
