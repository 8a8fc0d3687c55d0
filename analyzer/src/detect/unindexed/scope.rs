//! Name resolution: which FROM entry a column reference belongs to.
//!
//! A query block sees its own FROM list first, then the blocks around it
//! (correlated subqueries), and CTE names from every enclosing WITH. A
//! reference to an enclosing block is, for this block, a value like a
//! parameter: `WHERE o.user_id = u.id` inside a correlated subquery filters
//! `orders` by equality for each outer row.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Ident, Query, Visit, Visitor};

use super::normal_form::{fold, normalize};
use crate::catalog::Table;

/// One FROM entry as seen by name resolution.
#[derive(Debug, Clone)]
pub(crate) struct Source<'c> {
    /// What a qualifier must say: the alias, or the table's own name.
    pub name: String,
    /// For an unaliased table, its schema, so `schema.table.col` resolves.
    pub schema: Option<String>,
    /// The catalog table; `None` for anything else.
    pub table: Option<&'c Table>,
    /// For a non-table source: whether it yields few rows (a filtered or
    /// LIMITed subquery or CTE, VALUES, a set-returning function of
    /// parameters), so it can drive a join into a large table.
    pub selective: bool,
}

/// One query block's names, linked to the enclosing blocks.
#[derive(Debug)]
pub(crate) struct Scope<'s, 'c> {
    pub parent: Option<&'s Scope<'s, 'c>>,
    /// CTE names introduced by this level's WITH, and whether each is
    /// selective (see [`Source::selective`]).
    pub ctes: Vec<(String, bool)>,
    pub sources: Vec<Source<'c>>,
}

/// Where a column reference points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ref {
    /// A column of this block's source `.0` (a catalog table, or an opaque
    /// source whose columns are not known).
    Local(usize, String),
    /// A column of an enclosing block.
    Outer,
    /// Not resolvable (ambiguous, unknown column, output alias).
    Unknown,
}

/// How one side of a comparison relates to the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operand {
    /// A plain column of source `.0`.
    Column(usize, String),
    /// An expression over columns of source `.0` only (normalized text).
    Expr(usize, String),
    /// Constant for this block: literals, parameters, outer columns,
    /// functions of those, subqueries.
    Value,
    /// Columns of several sources, or names that do not resolve.
    Other,
}

impl<'c> Scope<'_, 'c> {
    /// Whether an unqualified table name means a CTE here, and if so
    /// whether that CTE is selective.
    pub fn cte(&self, name: &str) -> Option<bool> {
        let mut scope = Some(self);
        while let Some(s) = scope {
            if let Some((_, selective)) = s.ctes.iter().find(|(c, _)| c == name) {
                return Some(*selective);
            }
            scope = s.parent;
        }
        None
    }

    /// Resolves `col`, `q.col` or `schema.table.col`.
    pub fn resolve(&self, parts: &[Ident]) -> Ref {
        let names: Vec<String> = parts.iter().map(fold).collect();
        let mut scope = Some(self);
        let mut own = true;
        while let Some(s) = scope {
            match s.resolve_here(&names) {
                Some(Ref::Local(i, c)) if own => return Ref::Local(i, c),
                Some(Ref::Local(..)) => return Ref::Outer,
                Some(other) => return other,
                None => {}
            }
            own = false;
            scope = s.parent;
        }
        Ref::Unknown
    }

    /// `None` when nothing in this block has that name, so resolution
    /// continues outward, as PostgreSQL does.
    fn resolve_here(&self, names: &[String]) -> Option<Ref> {
        let column = names.last()?.clone();
        let source = match names {
            [_] => {
                let with_column: Vec<usize> = (0..self.sources.len())
                    .filter(|&i| {
                        self.sources[i]
                            .table
                            .is_some_and(|t| t.column(&column).is_some())
                    })
                    .collect();
                match with_column[..] {
                    [i] => i,
                    [] => self.sources.iter().position(|s| s.table.is_none())?,
                    _ => return Some(Ref::Unknown),
                }
            }
            [q, _] => self.sources.iter().position(|s| &s.name == q)?,
            [schema, table, _] => self
                .sources
                .iter()
                .position(|s| s.schema.as_ref() == Some(schema) && &s.name == table)?,
            _ => return Some(Ref::Unknown),
        };
        match self.sources[source].table {
            Some(t) if t.column(&column).is_none() => Some(Ref::Unknown),
            _ => Some(Ref::Local(source, column)),
        }
    }

    /// Classifies one side of a comparison.
    pub fn operand(&self, expr: &Expr) -> Operand {
        let mut e = expr;
        while let Expr::Nested(inner) = e {
            e = inner;
        }
        match e {
            Expr::Identifier(ident) => self.column_operand(std::slice::from_ref(ident)),
            Expr::CompoundIdentifier(parts) => self.column_operand(parts),
            Expr::Value(_) => Operand::Value,
            _ => match self.sources_of(e) {
                Some(sources) if sources.is_empty() => Operand::Value,
                Some(sources) if sources.len() == 1 && self.sources[sources[0]].table.is_some() => {
                    Operand::Expr(sources[0], normalize(e))
                }
                _ => Operand::Other,
            },
        }
    }

    fn column_operand(&self, parts: &[Ident]) -> Operand {
        match self.resolve(parts) {
            Ref::Local(i, c) => Operand::Column(i, c),
            Ref::Outer => Operand::Value,
            Ref::Unknown => Operand::Other,
        }
    }

    /// The sources of this block an expression mentions (sorted, each
    /// once), or `None` if it mentions a name that does not resolve.
    /// References inside subqueries are the subquery's business.
    pub fn sources_of(&self, expr: &Expr) -> Option<Vec<usize>> {
        let mut refs = RefCollector {
            scope: self,
            depth: 0,
            sources: Vec::new(),
            unknown: false,
        };
        let _ = expr.visit(&mut refs);
        if refs.unknown {
            return None;
        }
        refs.sources.sort_unstable();
        refs.sources.dedup();
        Some(refs.sources)
    }
}

struct RefCollector<'a, 's, 'c> {
    scope: &'a Scope<'s, 'c>,
    depth: usize,
    sources: Vec<usize>,
    unknown: bool,
}

impl Visitor for RefCollector<'_, '_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.depth > 0 {
            return ControlFlow::Continue(());
        }
        let parts = match expr {
            Expr::Identifier(ident) => std::slice::from_ref(ident),
            Expr::CompoundIdentifier(parts) => &parts[..],
            _ => return ControlFlow::Continue(()),
        };
        match self.scope.resolve(parts) {
            Ref::Local(i, _) => self.sources.push(i),
            Ref::Outer => {}
            Ref::Unknown => self.unknown = true,
        }
        ControlFlow::Continue(())
    }
}
