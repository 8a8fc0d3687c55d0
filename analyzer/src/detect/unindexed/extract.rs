//! From a parsed statement to [`ScopeFacts`], one per query block.
//!
//! Every SELECT, UPDATE and DELETE block (top level, CTE bodies, derived
//! tables, subqueries in WHERE, ON and the select list, the SELECT of an
//! INSERT ... SELECT) gets its own FROM list and predicates. A block's
//! facts are handed to the sink as soon as the block is read, before its
//! subqueries, which are blocks of their own with this one as parent.

use std::ops::ControlFlow;

use sqlparser::ast::{
    AssignmentTarget, Delete, Distinct, Expr, FromTable, GroupByExpr, JoinConstraint, JoinOperator,
    LimitClause, ObjectName, ObjectNamePart, OrderBy, Query, Select, SetExpr, Statement,
    TableFactor, TableWithJoins, Update, UpdateTableFromKind, Visit, Visitor,
};

use super::facts::{BlockRole, JoinEdge, Modification, ScopeFacts, SortSpec, SourceFacts};
use super::normal_form::fold;
use super::predicates::{predicates, sort_spec};
use super::scope::{Scope, Source};
use crate::catalog::Catalog;

/// Walks statements and feeds each block's facts to `sink`.
pub(crate) struct Extractor<'c, 'k> {
    pub catalog: &'c Catalog,
    pub sink: &'k mut dyn FnMut(ScopeFacts<'c>),
}

/// A block's FROM list while it is being read.
#[derive(Default)]
struct FromList<'q, 'c> {
    sources: Vec<Source<'c>>,
    derived: Vec<&'q Query>,
    on: Vec<&'q Expr>,
    using: Vec<(usize, Vec<String>)>,
}

impl<'c> Extractor<'c, '_> {
    /// SELECT, INSERT ... SELECT, UPDATE and DELETE; other statements have
    /// no predicates an index could serve.
    pub fn statement(&mut self, stmt: &Statement, parent: Option<&Scope<'_, 'c>>) {
        match stmt {
            Statement::Query(q) => self.query(q, parent),
            Statement::Insert(insert) => {
                if let Some(source) = &insert.source {
                    self.query(source, parent);
                }
            }
            Statement::Update(update) => self.update(update, parent),
            Statement::Delete(delete) => self.delete(delete, parent),
            _ => {}
        }
    }

    fn query(&mut self, q: &Query, parent: Option<&Scope<'_, 'c>>) {
        let ctes = q
            .with
            .iter()
            .flat_map(|w| &w.cte_tables)
            .map(|c| (fold(&c.alias.name), selective(&c.query)))
            .collect();
        let level = Scope {
            parent,
            ctes,
            sources: Vec::new(),
        };
        for cte in q.with.iter().flat_map(|w| &w.cte_tables) {
            self.query(&cte.query, Some(&level));
        }
        let limited = q.fetch.is_some()
            || match &q.limit_clause {
                Some(LimitClause::LimitOffset { limit, .. }) => limit.is_some(),
                Some(LimitClause::OffsetCommaLimit { .. }) => true,
                None => false,
            };
        // OFFSET pages the statement's result only on the outermost query,
        // and is read only over a single SELECT (not a set operation).
        let offset = parent.is_none()
            && matches!(
                &q.limit_clause,
                Some(LimitClause::LimitOffset {
                    offset: Some(_),
                    ..
                })
            )
            && matches!(*q.body, SetExpr::Select(_));
        self.set_expr(&q.body, q.order_by.as_ref(), limited, offset, &level);
    }

    fn set_expr(
        &mut self,
        body: &SetExpr,
        order_by: Option<&OrderBy>,
        limited: bool,
        offset: bool,
        scope: &Scope<'_, 'c>,
    ) {
        match body {
            SetExpr::Select(select) => self.select(select, order_by, limited, offset, scope),
            SetExpr::Query(q) => self.query(q, Some(scope)),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left, None, false, false, scope);
                self.set_expr(right, None, false, false, scope);
            }
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => {
                self.statement(s, Some(scope))
            }
            SetExpr::Values(values) => self.subqueries(values, scope),
            _ => {}
        }
    }

    fn select(
        &mut self,
        s: &Select,
        order_by: Option<&OrderBy>,
        limited: bool,
        offset: bool,
        parent: &Scope<'_, 'c>,
    ) {
        let mut from = FromList::default();
        for twj in &s.from {
            self.table_with_joins(twj, parent, &mut from);
        }
        let sorts = matches!(&s.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
            && matches!(s.distinct, None | Some(Distinct::All));
        self.block(
            Some(parent),
            from,
            s.selection.as_ref(),
            BlockRole {
                offset,
                ordered: order_by.is_some(),
                modifies: None,
            },
            |scope| {
                order_by
                    .filter(|_| sorts)
                    .and_then(|o| sort_spec(o, limited, &s.projection, scope))
            },
            |ex, scope| {
                ex.subqueries(&s.projection, scope);
                ex.subqueries(&s.selection, scope);
                ex.subqueries(&s.having, scope);
                if let Some(o) = order_by {
                    ex.subqueries(o, scope);
                }
            },
        );
    }

    fn update(&mut self, u: &Update, parent: Option<&Scope<'_, 'c>>) {
        let mut from = FromList::default();
        let ctes = Scope {
            parent,
            ctes: Vec::new(),
            sources: Vec::new(),
        };
        self.table_with_joins(&u.table, &ctes, &mut from);
        if let Some(UpdateTableFromKind::BeforeSet(v) | UpdateTableFromKind::AfterSet(v)) = &u.from
        {
            for twj in v {
                self.table_with_joins(twj, &ctes, &mut from);
            }
        }
        self.block(
            parent,
            from,
            u.selection.as_ref(),
            BlockRole {
                offset: false,
                ordered: false,
                modifies: Some(Modification::Update {
                    columns: u
                        .assignments
                        .iter()
                        .flat_map(|a| match &a.target {
                            AssignmentTarget::ColumnName(c) => std::slice::from_ref(c),
                            AssignmentTarget::Tuple(cs) => &cs[..],
                        })
                        .filter_map(last_name)
                        .collect(),
                }),
            },
            |_| None,
            |ex, scope| {
                ex.subqueries(&u.assignments, scope);
                ex.subqueries(&u.selection, scope);
                ex.subqueries(&u.returning, scope);
            },
        );
    }

    fn delete(&mut self, d: &Delete, parent: Option<&Scope<'_, 'c>>) {
        let mut from = FromList::default();
        let ctes = Scope {
            parent,
            ctes: Vec::new(),
            sources: Vec::new(),
        };
        let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) = &d.from;
        for twj in tables.iter().chain(d.using.iter().flatten()) {
            self.table_with_joins(twj, &ctes, &mut from);
        }
        self.block(
            parent,
            from,
            d.selection.as_ref(),
            BlockRole {
                offset: false,
                ordered: false,
                modifies: Some(Modification::Delete),
            },
            |_| None,
            |ex, scope| {
                ex.subqueries(&d.selection, scope);
                ex.subqueries(&d.returning, scope);
            },
        );
    }

    /// Reads one block's predicates, hands its facts on, then descends.
    fn block(
        &mut self,
        parent: Option<&Scope<'_, 'c>>,
        from: FromList<'_, 'c>,
        selection: Option<&Expr>,
        role: BlockRole,
        sort: impl FnOnce(&Scope<'_, 'c>) -> Option<SortSpec>,
        descend: impl FnOnce(&mut Self, &Scope<'_, 'c>),
    ) {
        let FromList {
            sources,
            derived,
            on,
            using,
        } = from;
        let scope = Scope {
            parent,
            ctes: Vec::new(),
            sources,
        };
        let mut facts = ScopeFacts {
            sources: scope
                .sources
                .iter()
                .map(|s| SourceFacts {
                    table: s.table,
                    selective: s.selective,
                    ..SourceFacts::opaque()
                })
                .collect(),
            role,
            ..ScopeFacts::default()
        };
        for (joined, columns) in &using {
            for column in columns {
                let earlier = (0..*joined).find(|&i| match scope.sources[i].table {
                    Some(t) => t.column(column).is_some(),
                    None => true,
                });
                if let Some(i) = earlier {
                    facts.joins.push(JoinEdge {
                        left: (*joined, column.clone()),
                        right: (i, column.clone()),
                    });
                }
            }
        }
        for e in on.iter().copied().chain(selection) {
            predicates(e, &scope, &mut facts);
        }
        facts.sort = sort(&scope);
        (self.sink)(facts);
        for q in derived {
            self.query(q, Some(&scope));
        }
        for e in on {
            self.subqueries(e, &scope);
        }
        descend(self, &scope);
    }

    fn table_with_joins<'q>(
        &mut self,
        twj: &'q TableWithJoins,
        outer: &Scope<'_, 'c>,
        from: &mut FromList<'q, 'c>,
    ) {
        self.factor(&twj.relation, outer, from);
        for join in &twj.joins {
            self.factor(&join.relation, outer, from);
            match join_constraint(&join.join_operator) {
                Some(JoinConstraint::On(e)) => from.on.push(e),
                Some(JoinConstraint::Using(cols)) => {
                    let names = cols.iter().filter_map(last_name).collect();
                    from.using.push((from.sources.len() - 1, names));
                }
                _ => {}
            }
        }
    }

    fn factor<'q>(
        &mut self,
        factor: &'q TableFactor,
        outer: &Scope<'_, 'c>,
        from: &mut FromList<'q, 'c>,
    ) {
        let opaque = |alias: Option<&sqlparser::ast::TableAlias>, selective: bool| Source {
            name: alias.map(|a| fold(&a.name)).unwrap_or_default(),
            schema: None,
            table: None,
            selective,
        };
        let source = match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let parts: Option<Vec<String>> = name
                    .0
                    .iter()
                    .map(|p| match p {
                        ObjectNamePart::Identifier(i) => Some(fold(i)),
                        _ => None,
                    })
                    .collect();
                let (schema, table) = match parts.as_deref() {
                    Some([t]) => (None, t.clone()),
                    Some([s, t]) | Some([_, s, t]) => (Some(s.clone()), t.clone()),
                    _ => return from.sources.push(opaque(alias.as_ref(), false)),
                };
                let cte = schema.is_none().then(|| outer.cte(&table)).flatten();
                let resolved = match cte {
                    Some(_) => None,
                    None => self.catalog.resolve_table(schema.as_deref(), &table),
                };
                Source {
                    schema: match alias {
                        Some(_) => None,
                        None => resolved.map(|t| t.schema.clone()).or(schema),
                    },
                    name: alias.as_ref().map(|a| fold(&a.name)).unwrap_or(table),
                    table: resolved,
                    selective: cte.unwrap_or(false),
                }
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                from.derived.push(subquery);
                opaque(alias.as_ref(), selective(subquery))
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => {
                return self.table_with_joins(table_with_joins, outer, from);
            }
            TableFactor::Table { alias, .. }
            | TableFactor::TableFunction { alias, .. }
            | TableFactor::Function { alias, .. }
            | TableFactor::UNNEST { alias, .. } => opaque(alias.as_ref(), true),
            _ => opaque(None, false),
        };
        from.sources.push(source);
    }

    /// Runs every subquery directly inside `node` as a block whose parent
    /// is `scope` (deeper ones are reached from there).
    fn subqueries<V: Visit>(&mut self, node: &V, scope: &Scope<'_, 'c>) {
        struct Finder<'x, 'c, 'k, 's> {
            extractor: &'x mut Extractor<'c, 'k>,
            scope: &'x Scope<'s, 'c>,
            depth: usize,
        }
        impl Visitor for Finder<'_, '_, '_, '_> {
            type Break = ();
            fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
                if self.depth == 0 {
                    self.extractor.query(q, Some(self.scope));
                }
                self.depth += 1;
                ControlFlow::Continue(())
            }
            fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
                self.depth -= 1;
                ControlFlow::Continue(())
            }
        }
        let mut finder = Finder {
            extractor: self,
            scope,
            depth: 0,
        };
        let _ = node.visit(&mut finder);
    }
}

/// The folded last part of a name (`col` of `t.col`).
fn last_name(name: &ObjectName) -> Option<String> {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(i)) => Some(fold(i)),
        _ => None,
    }
}

/// Whether a subquery or CTE body yields few rows: it filters, limits, or
/// is a VALUES list or data-modifying statement (which filter or list what
/// they touch). Aggregates over a whole table do not count.
fn selective(q: &Query) -> bool {
    q.limit_clause.is_some() || q.fetch.is_some() || selective_body(&q.body)
}

fn selective_body(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => s.selection.is_some(),
        SetExpr::Query(q) => selective(q),
        SetExpr::SetOperation { left, right, .. } => selective_body(left) && selective_body(right),
        SetExpr::Values(_) | SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) => true,
        _ => false,
    }
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c)
        | JoinOperator::StraightJoin(c)
        | JoinOperator::AsOf { constraint: c, .. } => Some(c),
        _ => None,
    }
}
