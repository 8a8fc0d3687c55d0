//! Building catalogs by hand, for detector tests and for callers that know
//! the schema without a server (the demo, benchmarks). Each call reads like
//! the DDL it stands for:
//!
//! ```
//! use qproxy_analyzer::catalog::{Catalog, Index, Table};
//! let catalog = Catalog::new().with_table(
//!     Table::new("public.orders", 2_000_000)
//!         .primary_key(&["id"])
//!         .columns(&["user_id", "status", "created_at"])
//!         .index(Index::btree("orders_created", &["created_at DESC"])),
//! );
//! assert!(catalog.resolve_table(None, "orders").is_some());
//! ```

use super::{
    Catalog, Column, ColumnStats, ForeignKey, Index, IndexKey, IndexMethod, KeyExpr, Table,
};

/// Rows per 8 kB page assumed when inventing `relpages` for a hand-built
/// table (a ~130-byte row); only the order of magnitude matters.
const ROWS_PER_PAGE: u64 = 60;

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new()
    }
}

impl Catalog {
    /// An empty catalog whose search path is `public` and whose collation
    /// is `C` (what `initdb --no-locale` gives), without hypopg.
    pub fn new() -> Catalog {
        Catalog {
            schemas: Default::default(),
            search_path: vec!["public".to_owned()],
            collation: "C".to_owned(),
            hypopg: false,
            truncated: false,
        }
    }

    /// Adds (or replaces) a table.
    pub fn insert(&mut self, table: Table) {
        self.schemas
            .entry(table.schema.clone())
            .or_default()
            .insert(table.name.clone(), table);
    }

    /// Builder form of [`Catalog::insert`].
    pub fn with_table(mut self, table: Table) -> Catalog {
        self.insert(table);
        self
    }

    /// Replaces the search path.
    pub fn with_search_path(mut self, schemas: &[&str]) -> Catalog {
        self.search_path = schemas.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Replaces the database collation (`en_US.UTF-8` makes prefix LIKE
    /// need `text_pattern_ops`).
    pub fn with_collation(mut self, collation: &str) -> Catalog {
        self.collation = collation.to_owned();
        self
    }
}

impl Table {
    /// A table named `schema.name` (or `name`, in `public`) holding `rows`
    /// rows by both the planner's estimate and the live-tuple counter.
    pub fn new(qualified: &str, rows: u64) -> Table {
        let (schema, name) = match qualified.split_once('.') {
            Some((s, n)) => (s, n),
            None => ("public", qualified),
        };
        Table {
            schema: schema.to_owned(),
            name: name.to_owned(),
            reltuples: rows as f64,
            relpages: i64::try_from(rows.div_ceil(ROWS_PER_PAGE)).unwrap_or(i64::MAX),
            live_tuples: i64::try_from(rows).unwrap_or(i64::MAX),
            columns: Vec::new(),
            indexes: Vec::new(),
            foreign_keys: Vec::new(),
        }
    }

    /// Adds `text` columns (those already present are kept as they are).
    pub fn columns(mut self, names: &[&str]) -> Table {
        for name in names {
            self.add_column(name, "text");
        }
        self
    }

    /// Adds one column of the given type.
    pub fn typed_column(mut self, name: &str, type_name: &str) -> Table {
        self.add_column(name, type_name);
        self
    }

    fn add_column(&mut self, name: &str, type_name: &str) {
        if self.column(name).is_none() {
            self.columns.push(Column {
                name: name.to_owned(),
                type_name: type_name.to_owned(),
                not_null: false,
                stats: None,
            });
        }
    }

    /// Sets a column's statistics (adding it as `text` if missing), as
    /// `ANALYZE` would have left them in `pg_stats`.
    pub fn stats(mut self, column: &str, stats: ColumnStats) -> Table {
        self.add_column(column, "text");
        if let Some(c) = self.columns.iter_mut().find(|c| c.name == column) {
            c.stats = Some(stats);
        }
        self
    }

    /// Adds an index, and any key column the table does not list yet.
    pub fn index(mut self, index: Index) -> Table {
        for key in &index.keys {
            if let KeyExpr::Column(c) = &key.expr {
                self.add_column(c, "text");
            }
        }
        self.indexes.push(index);
        self
    }

    /// Adds the primary key `<table>_pkey` on `columns`.
    pub fn primary_key(self, columns: &[&str]) -> Table {
        let mut pk = Index::btree(&format!("{}_pkey", self.name), columns).unique();
        pk.primary = true;
        let mut table = self.index(pk);
        for c in &mut table.columns {
            if columns.contains(&c.name.as_str()) {
                c.not_null = true;
            }
        }
        table
    }

    /// Adds a foreign key from `columns` to `referenced` (`schema.table`).
    pub fn foreign_key(
        mut self,
        columns: &[&str],
        referenced: &str,
        referenced_columns: &[&str],
    ) -> Table {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        self.foreign_keys.push(ForeignKey {
            name: format!("{}_{}_fkey", self.name, columns.join("_")),
            columns: owned(columns),
            referenced_table: referenced.to_owned(),
            referenced_columns: owned(referenced_columns),
        });
        self.columns(columns)
    }
}

impl ColumnStats {
    /// Statistics of a column with `n_distinct` distinct values (PostgreSQL's
    /// convention: negative for a share of the rows), no NULLs, no most
    /// common values and no histogram.
    pub fn distinct(n_distinct: f64) -> ColumnStats {
        ColumnStats {
            n_distinct,
            ..ColumnStats::default()
        }
    }

    /// Adds most common values with their frequencies, most common first.
    pub fn most_common(mut self, values: &[(&str, f64)]) -> ColumnStats {
        for (v, f) in values {
            self.most_common.push(((*v).to_owned(), *f));
            self.most_common_total += f;
            self.most_common_count += 1;
        }
        self
    }

    /// Sets the histogram bounds (ascending).
    pub fn histogram(mut self, bounds: &[&str]) -> ColumnStats {
        self.histogram = bounds.iter().map(|b| (*b).to_owned()).collect();
        self
    }

    /// Sets the share of NULLs.
    pub fn nulls(mut self, null_frac: f64) -> ColumnStats {
        self.null_frac = null_frac;
        self
    }
}

impl Index {
    /// A valid, non-unique btree index. Each key is written as in
    /// `CREATE INDEX`: `col`, `col DESC`, `col DESC NULLS LAST`,
    /// `col text_pattern_ops`, or `(expression)` for an expression key.
    pub fn btree(name: &str, keys: &[&str]) -> Index {
        Index {
            name: name.to_owned(),
            keys: keys.iter().map(|k| parse_key(k)).collect(),
            unique: false,
            primary: false,
            predicate: None,
            method: IndexMethod::Btree,
            valid: true,
        }
    }

    /// A hash index on one column.
    pub fn hash(name: &str, column: &str) -> Index {
        Index::btree(name, &[column]).using(IndexMethod::Hash)
    }

    /// Changes the access method.
    pub fn using(mut self, method: IndexMethod) -> Index {
        self.method = method;
        self
    }

    /// Makes it a unique index.
    pub fn unique(mut self) -> Index {
        self.unique = true;
        self
    }

    /// Makes it a partial index `WHERE predicate`.
    pub fn partial(mut self, predicate: &str) -> Index {
        self.predicate = Some(predicate.to_owned());
        self
    }

    /// Marks it invalid (an unfinished `CREATE INDEX CONCURRENTLY`).
    pub fn invalid(mut self) -> Index {
        self.valid = false;
        self
    }
}

fn parse_key(spec: &str) -> IndexKey {
    let spec = spec.trim();
    if spec.starts_with('(') && spec.ends_with(')') {
        return IndexKey {
            expr: KeyExpr::Expression(spec[1..spec.len() - 1].to_owned()),
            descending: false,
            nulls_first: false,
            opclass: None,
        };
    }
    let mut words = spec.split_whitespace();
    let column = words.next().unwrap_or_default().to_owned();
    let (mut descending, mut nulls_first, mut opclass) = (false, None, None);
    let mut words = words.peekable();
    while let Some(word) = words.next() {
        match word.to_ascii_uppercase().as_str() {
            "ASC" => descending = false,
            "DESC" => descending = true,
            "NULLS" => nulls_first = words.next().map(|w| w.eq_ignore_ascii_case("FIRST")),
            _ => opclass = Some(word.to_owned()),
        }
    }
    IndexKey {
        expr: KeyExpr::Column(column),
        descending,
        nulls_first: nulls_first.unwrap_or(descending),
        opclass,
    }
}
