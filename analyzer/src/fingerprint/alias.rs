//! Table-alias resolution.
//!
//! ORMs invent aliases (`u1_0` in Hibernate 6, `user0_` in Hibernate 5, `U0`
//! in Django subqueries, `t0` in many others) that say nothing about the
//! query's shape, so the same query written by hand and by an ORM would get
//! different fingerprints. Each `SELECT` (and `UPDATE`/`DELETE`) opens a
//! scope listing the tables of its `FROM`; an alias on a table that occurs
//! once in the scope, and whose name no enclosing scope uses, is dropped and
//! every `alias.column` becomes `table.column`. When dropping would make a
//! reference ambiguous (self-joins, a subquery over a table the outer query
//! also reads), the alias is instead renamed to `<table>_<n>`, numbered in
//! order of appearance in the statement, so `e`/`m` and `e1_0`/`m1_0` still
//! agree. Aliases of derived tables and functions are kept as written.

use std::borrow::Cow;

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart, TableFactor, TableWithJoins};

/// Where a scope was opened; the same node closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A `Query` whose body is a plain `SELECT` (so `ORDER BY` sees it).
    Query,
    /// A `SELECT` inside a set operation.
    Select,
    /// An `UPDATE`, `DELETE` or `MERGE`.
    Statement,
    /// A query that cannot see enclosing scopes: a CTE body or a
    /// non-`LATERAL` subquery in `FROM`.
    Barrier,
}

#[derive(Debug)]
struct Scope {
    /// Address of the AST node that opened the scope.
    owner: usize,
    origin: Origin,
    /// Alias key → the identifier that replaces it as a qualifier.
    aliases: Vec<(String, Ident)>,
    /// Keys of every name the scope makes visible (table names, kept aliases).
    names: Vec<String>,
}

/// The stack of open scopes while the normalizer walks a statement.
#[derive(Debug, Default)]
pub(crate) struct Scopes {
    stack: Vec<Scope>,
    /// Per table key: how many aliases were renamed so far.
    renamed: Vec<(String, u32)>,
    /// Addresses of queries that open a [`Origin::Barrier`] when visited.
    barrier_queries: Vec<usize>,
}

/// How PostgreSQL folds an identifier: unquoted ones are lower-cased.
pub(crate) fn ident_key(ident: &Ident) -> Cow<'_, str> {
    if ident.quote_style.is_none() && ident.value.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(ident.value.to_ascii_lowercase())
    } else {
        Cow::Borrowed(&ident.value)
    }
}

/// The folded name of an object (`schema.table`), parts joined by `.`.
pub(crate) fn object_key(name: &ObjectName) -> String {
    let mut out = String::new();
    for (i, part) in name.0.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if let ObjectNamePart::Identifier(ident) = part {
            out.push_str(&ident_key(ident));
        }
    }
    out
}

fn last_ident(name: &ObjectName) -> Option<&Ident> {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => Some(ident),
        _ => None,
    }
}

/// Every table factor of a `FROM` list, joins and nested joins included.
pub(crate) fn collect_factors<'a>(
    from: &'a mut [TableWithJoins],
    out: &mut Vec<&'a mut TableFactor>,
) {
    for twj in from {
        push_factor(&mut twj.relation, out);
        for join in &mut twj.joins {
            push_factor(&mut join.relation, out);
        }
    }
}

fn push_factor<'a>(factor: &'a mut TableFactor, out: &mut Vec<&'a mut TableFactor>) {
    if let TableFactor::NestedJoin {
        table_with_joins, ..
    } = factor
    {
        collect_factors(std::slice::from_mut(table_with_joins.as_mut()), out);
    } else {
        out.push(factor);
    }
}

impl Scopes {
    /// Whether the innermost scope was opened by `owner`.
    pub fn is_top(&self, owner: usize) -> bool {
        self.stack.last().is_some_and(|s| s.owner == owner)
    }

    /// Marks a query (by address) as one that must not see enclosing scopes.
    pub fn add_barrier(&mut self, query: usize) {
        self.barrier_queries.push(query);
    }

    /// Opens a barrier if `query` was marked by [`Scopes::add_barrier`].
    pub fn enter_query(&mut self, query: usize) {
        if let Some(i) = self.barrier_queries.iter().position(|&q| q == query) {
            self.barrier_queries.swap_remove(i);
            self.stack.push(Scope {
                owner: query,
                origin: Origin::Barrier,
                aliases: Vec::new(),
                names: Vec::new(),
            });
        }
    }

    /// The scopes a name lookup may consult, innermost first.
    fn visible_scopes(&self) -> impl Iterator<Item = &Scope> {
        let mut blocked = false;
        self.stack.iter().rev().take_while(move |s| {
            let take = !blocked;
            blocked |= s.origin == Origin::Barrier;
            take
        })
    }

    /// Opens a scope over `factors`, dropping or renaming their aliases.
    pub fn push(&mut self, owner: usize, origin: Origin, mut factors: Vec<&mut TableFactor>) {
        let keys: Vec<Option<String>> = factors
            .iter()
            .map(|f| match &**f {
                TableFactor::Table {
                    name, args: None, ..
                } => last_ident(name).map(|i| ident_key(i).into_owned()),
                _ => None,
            })
            .collect();
        let mut scope = Scope {
            owner,
            origin,
            aliases: Vec::new(),
            names: keys.iter().flatten().cloned().collect(),
        };
        for (factor, key) in factors.iter_mut().zip(&keys) {
            match (&mut **factor, key) {
                (
                    TableFactor::Table {
                        name,
                        alias: alias @ Some(_),
                        ..
                    },
                    Some(key),
                ) if alias.as_ref().is_some_and(|a| a.columns.is_empty()) => {
                    let alias_key = alias
                        .as_ref()
                        .map(|a| ident_key(&a.name).into_owned())
                        .unwrap_or_default();
                    let duplicated = keys.iter().flatten().filter(|k| *k == key).count() > 1;
                    let replacement = if duplicated || self.visible(key) {
                        let renamed = self.next_name(key);
                        if let Some(a) = alias.as_mut() {
                            a.name = renamed.clone();
                            a.explicit = true;
                        }
                        renamed
                    } else {
                        *alias = None;
                        match last_ident(name) {
                            Some(ident) => ident.clone(),
                            None => continue,
                        }
                    };
                    scope.aliases.push((alias_key, replacement));
                }
                (other, _) => {
                    if let TableFactor::Derived {
                        lateral: false,
                        subquery,
                        ..
                    } = other
                    {
                        self.add_barrier(&**subquery as *const sqlparser::ast::Query as usize);
                    }
                    if let Some(alias) = factor_alias(other) {
                        alias.explicit = true;
                        scope.names.push(ident_key(&alias.name).into_owned());
                    }
                }
            }
        }
        self.stack.push(scope);
    }

    /// Closes the innermost scope if `owner` opened it with `origin`.
    pub fn pop(&mut self, owner: usize, origin: Origin) {
        if self
            .stack
            .last()
            .is_some_and(|s| s.owner == owner && s.origin == origin)
        {
            self.stack.pop();
        }
    }

    /// Rewrites `qualifier` (the first part of `alias.column`) when it names
    /// a resolved alias; the innermost scope that knows the name decides.
    pub fn resolve(&self, qualifier: &mut Ident) {
        let key = ident_key(qualifier);
        for scope in self.visible_scopes() {
            if let Some((_, replacement)) = scope.aliases.iter().find(|(k, _)| *k == *key) {
                *qualifier = replacement.clone();
                return;
            }
            if scope.names.iter().any(|n| *n == *key) {
                return;
            }
        }
    }

    fn visible(&self, key: &str) -> bool {
        self.visible_scopes()
            .any(|s| s.names.iter().any(|n| n == key) || s.aliases.iter().any(|(k, _)| k == key))
    }

    fn next_name(&mut self, key: &str) -> Ident {
        let n = match self.renamed.iter_mut().find(|(k, _)| k == key) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.renamed.push((key.to_owned(), 1));
                1
            }
        };
        let value = format!("{key}_{n}");
        let plain = value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        Ident {
            value,
            quote_style: if plain { None } else { Some('"') },
            span: sqlparser::tokenizer::Span::empty(),
        }
    }
}

fn factor_alias(factor: &mut TableFactor) -> Option<&mut sqlparser::ast::TableAlias> {
    match factor {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::NestedJoin { alias, .. } => alias.as_mut(),
        _ => None,
    }
}
