//! What extraction learns about one query block (a SELECT, UPDATE or
//! DELETE with its own FROM list), independent of the syntax tree, so that
//! index matching and the verdicts can be tested and reasoned about alone.

use crate::catalog::Table;

/// What a predicate or sort key is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A column of the source, by stored name.
    Column(String),
    /// A function of the source's columns, in normalized text; only an
    /// expression index with the same text can serve it.
    Expression(String),
}

impl Target {
    pub(crate) fn column(&self) -> Option<&str> {
        match self {
            Target::Column(c) => Some(c),
            Target::Expression(_) => None,
        }
    }
}

/// The sargable shapes, as far as index choice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PredKind {
    /// `= value`, `IN (...)`, `= ANY(...)`, `IN (SELECT ...)`. `single`:
    /// exactly one value, so rows come out in index order of the next keys
    /// (a list of values does not keep that order).
    Eq { single: bool },
    /// `IS NULL`: btree can search for it; hash cannot.
    IsNull,
    /// `<`, `<=`, `>`, `>=`, `BETWEEN`.
    Range,
    /// `LIKE 'abc%'`: a range on a btree whose ordering is bytewise.
    Prefix,
}

/// One predicate on one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Predicate {
    pub target: Target,
    pub kind: PredKind,
}

/// One entry of a FROM list.
#[derive(Debug, Clone)]
pub(crate) struct SourceFacts<'c> {
    /// The catalog table, or `None` for CTE references, derived tables,
    /// functions and tables the catalog does not hold (views, tables
    /// created after the snapshot): those are never reported and count as
    /// already reachable.
    pub table: Option<&'c Table>,
    /// For a non-table source: it yields few rows and can drive a join.
    pub selective: bool,
    /// Filter predicates comparing this source with values (literals,
    /// parameters, outer columns).
    pub predicates: Vec<Predicate>,
    /// Columns the statement guarantees non-null (`IS NOT NULL`, join
    /// keys), for partial indexes `WHERE col IS NOT NULL`.
    pub not_null: Vec<String>,
    /// Normalized text of every conjunct that mentions only this source,
    /// for partial-index predicates that the statement repeats.
    pub conjuncts: Vec<String>,
}

impl SourceFacts<'_> {
    pub(crate) fn opaque() -> Self {
        SourceFacts {
            table: None,
            selective: false,
            predicates: Vec::new(),
            not_null: Vec::new(),
            conjuncts: Vec::new(),
        }
    }
}

/// `a.x = b.y` between two sources of the same block: the side that is
/// looked up once per row of the other is served by an index on its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinEdge {
    pub left: (usize, String),
    pub right: (usize, String),
}

/// One ORDER BY key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SortKey {
    pub target: Target,
    pub descending: bool,
    /// Effective NULLS placement (explicit, or the direction's default).
    pub nulls_first: bool,
}

/// An ORDER BY whose keys all belong to one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SortSpec {
    pub source: usize,
    pub keys: Vec<SortKey>,
    /// LIMIT or FETCH present: an index in sort order lets the scan stop
    /// early.
    pub limited: bool,
}

/// Everything about one query block.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScopeFacts<'c> {
    pub sources: Vec<SourceFacts<'c>>,
    pub joins: Vec<JoinEdge>,
    pub sort: Option<SortSpec>,
}
