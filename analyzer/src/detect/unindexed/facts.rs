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

/// What a filter compares a column with, as far as estimating the share
/// of rows it selects cares (`selectivity.rs`). Literal values are kept
/// here only while one statement is analysed; they never reach a finding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Compared {
    /// The column, by stored name.
    pub column: String,
    pub test: Test,
}

/// The comparison of a [`Compared`] column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Test {
    /// `= v`, `IN (v, ..)`: equal to any of these.
    AnyOf(Vec<Operand>),
    /// `IS NULL`.
    IsNull,
    /// `< v` (`inclusive`: `<=`).
    Below(Operand),
    /// `> v` (`inclusive`: `>=`).
    Above(Operand),
    /// `BETWEEN low AND high`.
    Between(Operand, Operand),
}

/// One value side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    /// A literal, in PostgreSQL's text output form (`new`, `42`, `t`).
    Literal(String),
    /// A parameter, an outer column, an expression: one value per
    /// execution, unknown here.
    Unknown,
}

/// How a predicate hides its column from the column's indexes
/// (`non_sargable_filter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wrapper {
    /// `lower(email)`, `date_trunc('day', created_at)`.
    Function {
        /// Folded function name (`lower`).
        name: String,
        /// `date_trunc`'s unit when it is a literal of the known set: the
        /// rewrite to a range needs it.
        unit: Option<&'static str>,
    },
    /// `created_at::date`: a cast to a type of another family.
    Cast {
        /// The target type, lower case (`date`).
        to: String,
    },
    /// `id + 1`, `price * 2`: arithmetic with the column on one side.
    Arithmetic {
        /// `+`, `-`, `*`, `/`, `%`.
        op: &'static str,
    },
    /// Any other expression of the one column (`a || 'x'`, CASE, ...).
    Expression,
    /// `LIKE '%abc'` or `ILIKE '%abc'` on the bare column.
    LeadingWildcard {
        /// ILIKE rather than LIKE.
        ilike: bool,
    },
}

/// A predicate that compares an expression of one indexed-or-not column
/// with a value, or matches the column with a leading wildcard: what
/// `non_sargable_filter` judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wrapped {
    /// The one column the expression reads.
    pub column: String,
    pub wrapper: Wrapper,
    /// The comparison, as an index on the bare column would see it.
    pub kind: PredKind,
    /// The expression as written, qualifiers dropped and literals shown as
    /// `?` (values never reach a finding): `lower(email)`, `id + ?`.
    pub shown: String,
    /// Normalized expression text, for an expression-index suggestion;
    /// `None` when the expression holds literals (printing them could leak
    /// values).
    pub index_expression: Option<String>,
    /// The comparison operator and the value side when it is a parameter
    /// (`=`, `$1`), for rewrites that name it; `v` stands in for a literal.
    pub op: Option<&'static str>,
    pub value: String,
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
    /// Predicates that wrap one of this source's columns (see [`Wrapped`]).
    pub wrapped: Vec<Wrapped>,
    /// What the filter predicates compare their columns with (see
    /// [`Compared`]).
    pub compared: Vec<Compared>,
}

impl SourceFacts<'_> {
    pub(crate) fn opaque() -> Self {
        SourceFacts {
            table: None,
            selective: false,
            predicates: Vec::new(),
            not_null: Vec::new(),
            conjuncts: Vec::new(),
            wrapped: Vec::new(),
            compared: Vec::new(),
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

/// What a DELETE or UPDATE block changes in its target (source 0), for
/// `unindexed_foreign_key`: both make PostgreSQL look up referencing rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Modification {
    /// DELETE: every foreign key referencing the table is checked.
    Delete,
    /// UPDATE ... SET these columns: foreign keys referencing any of them
    /// are checked.
    Update { columns: Vec<String> },
}

/// Facts about a block that depend on where it sits in the statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BlockRole {
    /// The outermost SELECT of the statement, which has an OFFSET.
    pub offset: bool,
    /// The block's query has an ORDER BY (whether or not it is on one
    /// table, which `ScopeFacts::sort` requires).
    pub ordered: bool,
    /// A DELETE or UPDATE block.
    pub modifies: Option<Modification>,
}

/// Everything about one query block.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScopeFacts<'c> {
    pub sources: Vec<SourceFacts<'c>>,
    pub joins: Vec<JoinEdge>,
    pub sort: Option<SortSpec>,
    pub role: BlockRole,
}
