//! The catalog model: which tables exist, how big they are, and which
//! indexes they have, as far as the index detectors need to know.
//!
//! The unindexed-filter and unindexed-sort detectors ask one question of a
//! database: "could an index serve this predicate or this ORDER BY on this
//! table, and is the table big enough for it to matter?". The model holds
//! exactly what answers it: per table the planner's size estimates, the
//! column names (to resolve unqualified columns), every index with its key
//! columns or expressions, partial predicate, access method and per-key
//! ordering, and the foreign keys (so detectors can name the missing
//! foreign-key index). Nothing else from `pg_catalog` is kept. For the
//! columns of large tables it also keeps what `pg_stats` says about their
//! data ([`ColumnStats`]), so a suggestion can tell a predicate that
//! selects 2 % of the rows from one that selects 98 %.
//!
//! A [`Catalog`] is a snapshot: [`load`] reads it over a short-lived
//! connection and disconnects (DESIGN non-negotiable 6), so callers reload
//! it after DDL instead of holding a connection open.
//!
//! # Layout
//! - `mod.rs`: the model and name resolution.
//! - `build.rs`: constructors for hand-built catalogs (tests, the demo).
//! - `load.rs`: [`load`] and [`has_hypopg`] against a live server.
//! - `stats.rs`: [`ColumnStats`] and reading `pg_stats` arrays.
//! - `connect.rs`: the short-lived connection both use.

use std::collections::BTreeMap;

mod build;
mod connect;
mod load;
mod stats;

pub use connect::CatalogError;
pub(crate) use connect::{begin_read_only, with_connection};
pub use load::{
    has_hypopg, load, load_with, LoadOptions, APPLICATION_NAME, DEFAULT_MAX_STATS_BYTES,
    DEFAULT_MAX_TABLES, DEFAULT_STATS_MIN_ROWS,
};
pub use stats::{
    parse_array, ColumnStats, MAX_ARRAY_TEXT, MAX_HISTOGRAM_BOUNDS, MAX_MOST_COMMON,
    MAX_VALUE_BYTES,
};

/// Schemas whose tables are never reported: the system's own tables are not
/// the application's to index, and the loader does not read them.
pub const SYSTEM_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];

/// A snapshot of one database's user tables and indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    /// Tables by schema, then by name, in the server's spelling (unquoted
    /// names are lower-case). Nested maps so lookups borrow `&str` keys and
    /// iteration order is stable for tests and reports.
    schemas: BTreeMap<String, BTreeMap<String, Table>>,
    /// The schemas an unqualified table name is looked up in, in order
    /// (`current_schemas(false)` of the introspection session). Without it
    /// `FROM users` could not be told from `FROM audit.users`.
    pub search_path: Vec<String>,
    /// The database's default collation (`pg_database.datcollate`). A plain
    /// btree index serves `LIKE 'abc%'` only under the `C`/`POSIX`
    /// collation; otherwise it needs a `*_pattern_ops` operator class.
    pub collation: String,
    /// Whether the `hypopg` extension is installed in this database, so
    /// suggestions can be verified without another connection to find out.
    pub hypopg: bool,
    /// True when the database had more tables than the loader's cap and the
    /// smallest ones were left out. Reports say so: a finding cannot be
    /// made about a table the catalog does not hold.
    pub truncated: bool,
}

/// One ordinary, partitioned or materialized table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Schema name as stored (`public`).
    pub schema: String,
    /// Table name as stored.
    pub name: String,
    /// The planner's row estimate from the last ANALYZE/VACUUM
    /// (`pg_class.reltuples`); `-1` when never analysed.
    pub reltuples: f64,
    /// Pages at the last ANALYZE/VACUUM (`pg_class.relpages`).
    pub relpages: i64,
    /// Live rows according to the statistics system (`n_live_tup`), which
    /// follows inserts between ANALYZE runs; freshly loaded test data has
    /// it while `reltuples` is still `-1` or `0`.
    pub live_tuples: i64,
    /// Columns in attribute order; unqualified column names in a statement
    /// are resolved against them.
    pub columns: Vec<Column>,
    /// Every index, including those behind primary keys and unique
    /// constraints, in name order.
    pub indexes: Vec<Index>,
    /// Foreign keys declared on this table.
    pub foreign_keys: Vec<ForeignKey>,
}

/// One column of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name as stored.
    pub name: String,
    /// `format_type()` of the column; decides whether a prefix `LIKE`
    /// suggestion needs `text_pattern_ops`.
    pub type_name: String,
    /// `NOT NULL`: an index on such a column implies `IS NOT NULL`.
    pub not_null: bool,
    /// What `pg_stats` says about the column's data; `None` when the
    /// table is small, was never analysed, or the upstream role may not
    /// read the column (`pg_stats` shows only those it may).
    pub stats: Option<ColumnStats>,
}

/// One index key: a column, or an expression for expression indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyExpr {
    /// A plain column, by name as stored.
    Column(String),
    /// An expression as `pg_get_indexdef` prints it (`lower((email)::text)`);
    /// matched against the statement's expression after both are
    /// normalized.
    Expression(String),
}

/// One key of an [`Index`], with what decides whether the index can
/// deliver an ORDER BY (direction, NULLS placement) or a prefix LIKE
/// (operator class).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexKey {
    /// The column or expression.
    pub expr: KeyExpr,
    /// `DESC` key.
    pub descending: bool,
    /// `NULLS FIRST` key (the default for `DESC`).
    pub nulls_first: bool,
    /// The operator class when it is not the type's default
    /// (`text_pattern_ops`, `gin_trgm_ops`), else `None`.
    pub opclass: Option<String>,
}

/// Index access methods, as far as they differ in what they can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexMethod {
    /// Ordered; serves equality prefixes, one range, and sorts.
    Btree,
    /// Single-column equality only.
    Hash,
    /// Containment and full-text operators; with `gin_trgm_ops` also LIKE.
    Gin,
    /// Geometric, range and exclusion operators; with `gist_trgm_ops` LIKE.
    Gist,
    /// Lossy block ranges: equality and range on any key column.
    Brin,
    /// SP-GiST, bloom and anything else: never assumed to serve.
    Other,
}

impl IndexMethod {
    /// Maps `pg_am.amname`.
    pub fn from_amname(name: &str) -> IndexMethod {
        match name {
            "btree" => IndexMethod::Btree,
            "hash" => IndexMethod::Hash,
            "gin" => IndexMethod::Gin,
            "gist" => IndexMethod::Gist,
            "brin" => IndexMethod::Brin,
            _ => IndexMethod::Other,
        }
    }

    /// The `USING` name.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexMethod::Btree => "btree",
            IndexMethod::Hash => "hash",
            IndexMethod::Gin => "gin",
            IndexMethod::Gist => "gist",
            IndexMethod::Brin => "brin",
            IndexMethod::Other => "other",
        }
    }
}

/// One index on a [`Table`]. Primary keys and unique constraints appear
/// here too, since to the planner they are just unique indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    /// Index name as stored.
    pub name: String,
    /// Key columns and expressions in index order (INCLUDE columns are not
    /// keys and are left out: they never narrow a scan).
    pub keys: Vec<IndexKey>,
    /// Unique index (or constraint): an equality on all keys finds at most
    /// one row.
    pub unique: bool,
    /// Backs the primary key.
    pub primary: bool,
    /// The WHERE of a partial index as `pg_get_expr` prints it; the index
    /// serves a statement only when the statement implies it.
    pub predicate: Option<String>,
    /// Access method.
    pub method: IndexMethod,
    /// False while `CREATE INDEX CONCURRENTLY` is unfinished or after it
    /// failed: the planner ignores such an index, and so do the detectors.
    pub valid: bool,
}

/// A foreign key, so a missing index on the referencing columns (the usual
/// cause of slow joins and cascading deletes) can be named as such.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// Constraint name.
    pub name: String,
    /// Referencing columns on this table, in constraint order.
    pub columns: Vec<String>,
    /// Referenced table as `schema.table`.
    pub referenced_table: String,
    /// Referenced columns, parallel to `columns`.
    pub referenced_columns: Vec<String>,
}

impl Catalog {
    /// Looks a table up the way PostgreSQL resolves a name in a statement:
    /// a qualified name in its schema, an unqualified one in the first
    /// schema of the search path that has it (`public` when the path is
    /// empty). Names are compared as stored, so callers fold unquoted
    /// identifiers to lower case first. System tables are never returned.
    pub fn resolve_table(&self, schema: Option<&str>, name: &str) -> Option<&Table> {
        match schema {
            Some(s) if SYSTEM_SCHEMAS.contains(&s) => None,
            Some(s) => self.schemas.get(s)?.get(name),
            None => {
                let default = ["public".to_owned()];
                let path = if self.search_path.is_empty() {
                    &default[..]
                } else {
                    &self.search_path[..]
                };
                path.iter()
                    .filter(|s| !SYSTEM_SCHEMAS.contains(&s.as_str()))
                    .find_map(|s| self.schemas.get(s)?.get(name))
            }
        }
    }

    /// Every table, ordered by schema and name.
    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.schemas.values().flat_map(|t| t.values())
    }

    /// How many tables the snapshot holds.
    pub fn table_count(&self) -> usize {
        self.schemas.values().map(BTreeMap::len).sum()
    }

    /// Whether a plain btree (default operator class) serves `LIKE 'abc%'`
    /// in this database: only under the `C`/`POSIX` collation, where byte
    /// order is the sort order.
    pub fn prefix_like_uses_plain_btree(&self) -> bool {
        matches!(self.collation.as_str(), "C" | "POSIX")
    }
}

impl Table {
    /// `schema.table`, the form findings carry.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The row count the detectors compare with their thresholds: the
    /// larger of the planner's estimate and the live-tuple counter, because
    /// either can lag (ANALYZE not run yet; statistics reset).
    pub fn estimated_rows(&self) -> f64 {
        self.reltuples.max(self.live_tuples as f64).max(0.0)
    }

    /// The column of that name, if the table has it.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The column sets on which an equality finds at most one row: the key
    /// columns of every valid, non-partial unique index without
    /// expressions. The unbounded-select detector uses them to excuse
    /// unique-key lookups.
    pub fn unique_column_sets(&self) -> impl Iterator<Item = Vec<&str>> {
        self.indexes
            .iter()
            .filter(|i| i.unique && i.valid && i.predicate.is_none())
            .filter_map(Index::column_names)
    }
}

impl Index {
    /// The key column names when every key is a plain column, else `None`.
    pub fn column_names(&self) -> Option<Vec<&str>> {
        self.keys
            .iter()
            .map(|k| match &k.expr {
                KeyExpr::Column(c) => Some(c.as_str()),
                KeyExpr::Expression(_) => None,
            })
            .collect()
    }
}
