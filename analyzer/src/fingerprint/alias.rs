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

use smallvec::SmallVec;
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

/// Names are compared by a 64-bit hash of their folded spelling
/// ([`name_key`]), so opening a scope allocates nothing per table.
#[derive(Debug)]
struct Scope {
    /// Address of the AST node that opened the scope.
    owner: usize,
    origin: Origin,
    /// Alias key → the identifier that replaces it as a qualifier.
    aliases: SmallVec<[(u64, Ident); 2]>,
    /// Keys of every name the scope makes visible (table names, kept aliases).
    names: SmallVec<[u64; 4]>,
}

/// FNV-1a of the name as PostgreSQL folds it; names in one statement are
/// few and short, so collisions are not a practical concern.
fn name_key(ident: &Ident) -> u64 {
    let fold = ident.quote_style.is_none();
    ident.value.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        let b = if fold { b.to_ascii_lowercase() } else { b };
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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

/// Table factors of one scope.
pub(crate) type Factors<'a> = SmallVec<[&'a mut TableFactor; 4]>;

/// Every table factor of a `FROM` list, joins and nested joins included.
pub(crate) fn collect_factors<'a>(from: &'a mut [TableWithJoins], out: &mut Factors<'a>) {
    for twj in from {
        push_factor(&mut twj.relation, out);
        for join in &mut twj.joins {
            push_factor(&mut join.relation, out);
        }
    }
}

fn push_factor<'a>(factor: &'a mut TableFactor, out: &mut Factors<'a>) {
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
                aliases: SmallVec::new(),
                names: SmallVec::new(),
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
    pub fn push(&mut self, owner: usize, origin: Origin, mut factors: Factors<'_>) {
        let keys: SmallVec<[Option<u64>; 4]> = factors
            .iter()
            .map(|f| match &**f {
                TableFactor::Table {
                    name, args: None, ..
                } => last_ident(name).map(name_key),
                _ => None,
            })
            .collect();
        let mut scope = Scope {
            owner,
            origin,
            aliases: SmallVec::new(),
            names: keys.iter().flatten().copied().collect(),
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
                    let Some(table) = last_ident(name) else {
                        continue;
                    };
                    let alias_key = alias.as_ref().map(|a| name_key(&a.name)).unwrap_or(0);
                    let duplicated = keys.iter().flatten().filter(|k| *k == key).count() > 1;
                    let replacement = if duplicated || self.visible(*key) {
                        let renamed = self.next_name(&ident_key(table));
                        if let Some(a) = alias.as_mut() {
                            a.name = renamed.clone();
                            a.explicit = true;
                        }
                        renamed
                    } else {
                        *alias = None;
                        table.clone()
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
                        scope.names.push(name_key(&alias.name));
                    }
                }
            }
        }
        self.stack.push(scope);
    }

    /// Opens a scope for `INSERT INTO table AS alias`: the alias is dropped
    /// by the caller and references become `table.column`.
    pub fn push_insert_alias(&mut self, owner: usize, alias: &Ident, table: &ObjectName) {
        let mut scope = Scope {
            owner,
            origin: Origin::Statement,
            aliases: SmallVec::new(),
            names: SmallVec::new(),
        };
        if let Some(table) = last_ident(table) {
            scope.names.push(name_key(table));
            scope.aliases.push((name_key(alias), table.clone()));
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
        if self.stack.is_empty() {
            return;
        }
        let key = name_key(qualifier);
        for scope in self.visible_scopes() {
            if let Some((_, replacement)) = scope.aliases.iter().find(|(k, _)| *k == key) {
                *qualifier = replacement.clone();
                return;
            }
            if scope.names.contains(&key) {
                return;
            }
        }
    }

    fn visible(&self, key: u64) -> bool {
        self.visible_scopes()
            .any(|s| s.names.contains(&key) || s.aliases.iter().any(|(k, _)| *k == key))
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
