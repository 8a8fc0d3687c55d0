//! Reading a [`Catalog`] from a live server.
//!
//! Six queries in one read-only, repeatable-read transaction (so tables,
//! columns and indexes come from one consistent snapshot), then the
//! connection is closed. The queries read only `pg_catalog`, the
//! statistics functions and the `pg_stats` view, which every role may
//! read, so the `--upstream` credentials need no extra grants. `pg_stats`
//! shows only the columns the upstream role may SELECT; the others simply
//! have no statistics, and findings on them are judged without.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};

use super::connect::{begin_read_only, with_connection, CatalogError};
use super::stats::{PgStatsRow, MAX_ARRAY_TEXT, MAX_MOST_COMMON};
use super::{
    Catalog, Column, ColumnStats, ForeignKey, Index, IndexKey, IndexMethod, KeyExpr, Table,
};

/// Default cap on tables loaded. Schemas with tens of thousands of tables
/// (per-tenant schemas, partitions) exist; past this many the snapshot
/// would cost more memory and load time than it is worth. The largest
/// tables are kept, since only large tables produce findings, and
/// [`Catalog::truncated`] says that some were left out.
pub const DEFAULT_MAX_TABLES: usize = 20_000;

/// Default size from which a table's column statistics are read: the
/// detectors' default `min_table_rows`, under which nothing is reported
/// and statistics would only cost memory.
pub const DEFAULT_STATS_MIN_ROWS: u64 = 10_000;

/// Default budget for column statistics, in bytes of value text read
/// (plus a fixed 64 per column). Columns of the largest tables come first;
/// what does not fit has no statistics and is judged as before they were
/// read. With the caps of `stats.rs` a column costs at most ~40 kB, most
/// far less, so 16 MiB covers some thousands of columns.
pub const DEFAULT_MAX_STATS_BYTES: usize = 16 << 20;

/// `application_name` of the introspection connection, so it can be told
/// apart from the application's own in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "qproxy-catalog";

/// Limits for one catalog load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Most tables to load; see [`DEFAULT_MAX_TABLES`].
    pub max_tables: usize,
    /// Whole load, connect to disconnect. 30 s by default: long enough for
    /// a catalog of the maximum size on a busy server, short enough that a
    /// hung server does not leave the detectors waiting.
    pub timeout: Duration,
    /// Server-side `statement_timeout` for each catalog query (10 s).
    pub statement_timeout: Duration,
    /// Tables with fewer estimated rows get no column statistics; see
    /// [`DEFAULT_STATS_MIN_ROWS`].
    pub stats_min_rows: u64,
    /// Budget for column statistics; see [`DEFAULT_MAX_STATS_BYTES`]. Zero
    /// reads none.
    pub max_stats_bytes: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_tables: DEFAULT_MAX_TABLES,
            timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(10),
            stats_min_rows: DEFAULT_STATS_MIN_ROWS,
            max_stats_bytes: DEFAULT_MAX_STATS_BYTES,
        }
    }
}

/// Loads the catalog of the database `config` names with
/// [`LoadOptions::default`], then disconnects.
pub async fn load<T>(config: &Config, tls: T) -> Result<Catalog, CatalogError>
where
    T: MakeTlsConnect<Socket>,
{
    load_with(config, tls, &LoadOptions::default()).await
}

/// Loads the catalog with explicit limits, then disconnects.
pub async fn load_with<T>(
    config: &Config,
    tls: T,
    options: &LoadOptions,
) -> Result<Catalog, CatalogError>
where
    T: MakeTlsConnect<Socket>,
{
    with_connection(
        config,
        tls,
        APPLICATION_NAME,
        options.timeout,
        async |client| {
            begin_read_only(client, options.statement_timeout).await?;
            let catalog = read_catalog(client, options).await?;
            client.batch_execute("COMMIT").await?;
            Ok(catalog)
        },
    )
    .await
}

/// Whether the `hypopg` extension is installed in the database `config`
/// names. Never installs it: that is the database owner's decision.
pub async fn has_hypopg<T>(config: &Config, tls: T) -> Result<bool, CatalogError>
where
    T: MakeTlsConnect<Socket>,
{
    with_connection(
        config,
        tls,
        APPLICATION_NAME,
        Duration::from_secs(15),
        async |client| {
            let row = client.query_one(HYPOPG_QUERY, &[]).await?;
            Ok(row.get(0))
        },
    )
    .await
}

const HYPOPG_QUERY: &str = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'hypopg')";

const SETTINGS_QUERY: &str = "\
SELECT current_schemas(false)::text[],
       (SELECT datcollate::text FROM pg_database WHERE datname = current_database()),
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'hypopg')";

/// Ordinary, partitioned and materialized tables outside system, toast and
/// temporary schemas, largest first so the cap drops the small ones.
const TABLES_QUERY: &str = "\
SELECT c.oid, n.nspname::text, c.relname::text, c.reltuples::float8, c.relpages::int8,
       coalesce(pg_stat_get_live_tuples(c.oid), 0)::int8
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_)'
ORDER BY greatest(c.reltuples, pg_stat_get_live_tuples(c.oid)) DESC, n.nspname, c.relname
LIMIT $1";

const COLUMNS_QUERY: &str = "\
SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a
WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum";

/// One row per index; the per-key facts come as parallel arrays built with
/// `generate_series` over the key attributes (INCLUDE columns excluded).
/// `indkey`, `indoption` and `indclass` are 0-based vectors.
const INDEXES_QUERY: &str = "\
SELECT i.indrelid, ci.relname::text, am.amname::text, i.indisunique, i.indisprimary,
       i.indisvalid AND i.indisready, pg_get_expr(i.indpred, i.indrelid),
       ARRAY(SELECT (SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[k - 1] AND i.indkey[k - 1] <> 0)
             FROM generate_series(1, i.indnkeyatts) k ORDER BY k),
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, false)
             FROM generate_series(1, i.indnkeyatts) k ORDER BY k),
       ARRAY(SELECT i.indoption[k - 1]::int4 FROM generate_series(1, i.indnkeyatts) k ORDER BY k),
       ARRAY(SELECT (SELECT CASE WHEN oc.opcdefault THEN NULL ELSE oc.opcname::text END
                     FROM pg_opclass oc WHERE oc.oid = i.indclass[k - 1])
             FROM generate_series(1, i.indnkeyatts) k ORDER BY k)
FROM pg_index i
JOIN pg_class ci ON ci.oid = i.indexrelid
JOIN pg_am am ON am.oid = ci.relam
WHERE i.indrelid = ANY($1)
ORDER BY i.indrelid, ci.relname";

const FOREIGN_KEYS_QUERY: &str = "\
SELECT con.conrelid, con.conname::text,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord),
       rn.nspname::text || '.' || rc.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord)
FROM pg_constraint con
JOIN pg_class rc ON rc.oid = con.confrelid
JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.contype = 'f' AND con.conrelid = ANY($1)
ORDER BY con.conrelid, con.conname";

/// Column statistics of the tables in `$1`, largest tables first and
/// within a table the cheapest columns first (a status column's few values
/// before a long histogram of text), while the running size of the value
/// texts stays within `$4` bytes. Arrays
/// come as text cut at `$2` bytes (`anyarray` has no client type), the
/// frequencies cut at `$3` with their sum and count over the whole list.
/// An inheritance parent or partitioned table has a row with `inherited`
/// (its children included, what a query on it reads); that one wins.
const STATS_QUERY: &str = "\
SELECT oid, attname, null_frac, n_distinct, mcv, freqs, freq_total, freq_count, hist
FROM (
    SELECT *, sum(cost) OVER (ORDER BY size DESC, oid, cost, attname) AS running
    FROM (SELECT *, coalesce(length(mcv), 0) + coalesce(length(hist), 0) + 64 AS cost FROM (
        SELECT DISTINCT ON (c.oid, s.attname)
               c.oid, greatest(c.reltuples, pg_stat_get_live_tuples(c.oid))::float8 AS size,
               s.attname::text AS attname, s.null_frac::float8 AS null_frac,
               s.n_distinct::float8 AS n_distinct,
               left(s.most_common_vals::text, $2) AS mcv,
               (s.most_common_freqs[1:$3])::float8[] AS freqs,
               (SELECT sum(f) FROM unnest(s.most_common_freqs) f)::float8 AS freq_total,
               cardinality(s.most_common_freqs) AS freq_count,
               left(s.histogram_bounds::text, $2) AS hist
        FROM pg_stats s
        JOIN pg_namespace n ON n.nspname = s.schemaname
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
        WHERE c.oid = ANY($1)
        ORDER BY c.oid, s.attname, s.inherited DESC
    ) per_column) costed
) budgeted
WHERE running <= $4";

/// `indoption` bits (`INDOPTION_DESC`, `INDOPTION_NULLS_FIRST`).
const INDOPTION_DESC: i32 = 1;
const INDOPTION_NULLS_FIRST: i32 = 2;

/// `row[i]` as `T`, `None` when NULL or of another type. The catalog
/// functions (`pg_get_indexdef`, `pg_get_expr`, `format_type`) read the
/// live catalog, not the transaction's snapshot, and return NULL for an
/// object dropped while the load runs; such a row is skipped, never a
/// panic.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
) -> Option<T> {
    row.try_get::<_, Option<T>>(i).ok().flatten()
}

async fn read_catalog(client: &Client, options: &LoadOptions) -> Result<Catalog, CatalogError> {
    let max_tables = options.max_tables;
    let settings = client.query_one(SETTINGS_QUERY, &[]).await?;
    let search_path: Vec<String> = column(&settings, 0).unwrap_or_default();
    let collation: Option<String> = column(&settings, 1);
    let hypopg: bool = column(&settings, 2).unwrap_or(false);

    let limit = i64::try_from(max_tables)
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    let rows = client.query(TABLES_QUERY, &[&limit]).await?;
    let truncated = rows.len() > max_tables;
    let mut tables: HashMap<u32, Table> = HashMap::with_capacity(rows.len().min(max_tables));
    for row in rows.iter().take(max_tables) {
        let (Some(oid), Some(schema), Some(name)) =
            (column(row, 0), column(row, 1), column(row, 2))
        else {
            continue;
        };
        let table = Table {
            schema,
            name,
            reltuples: column(row, 3).unwrap_or(-1.0),
            relpages: column(row, 4).unwrap_or(0),
            live_tuples: column(row, 5).unwrap_or(0),
            columns: Vec::new(),
            indexes: Vec::new(),
            foreign_keys: Vec::new(),
        };
        tables.insert(oid, table);
    }
    let oids: Vec<u32> = tables.keys().copied().collect();

    for row in client.query(COLUMNS_QUERY, &[&oids]).await? {
        let Some(t) = column::<u32>(&row, 0).and_then(|oid| tables.get_mut(&oid)) else {
            continue;
        };
        let (Some(name), Some(type_name)) = (column(&row, 1), column(&row, 2)) else {
            continue;
        };
        t.columns.push(Column {
            name,
            type_name,
            not_null: column(&row, 3).unwrap_or(false),
            stats: None,
        });
    }
    read_stats(client, &mut tables, options).await?;
    for row in client.query(INDEXES_QUERY, &[&oids]).await? {
        let Some(t) = column::<u32>(&row, 0).and_then(|oid| tables.get_mut(&oid)) else {
            continue;
        };
        let index = IndexRow {
            name: column(&row, 1),
            method: column(&row, 2),
            unique: column(&row, 3),
            primary: column(&row, 4),
            valid: column(&row, 5),
            predicate: column(&row, 6),
            columns: column(&row, 7),
            defs: column(&row, 8),
            options: column(&row, 9),
            opclasses: column(&row, 10),
        }
        .into_index();
        if let Some(index) = index {
            t.indexes.push(index);
        }
    }
    for row in client.query(FOREIGN_KEYS_QUERY, &[&oids]).await? {
        let Some(t) = column::<u32>(&row, 0).and_then(|oid| tables.get_mut(&oid)) else {
            continue;
        };
        let (Some(name), Some(columns), Some(referenced_table), Some(referenced_columns)) = (
            column(&row, 1),
            column(&row, 2),
            column(&row, 3),
            column(&row, 4),
        ) else {
            continue;
        };
        t.foreign_keys.push(ForeignKey {
            name,
            columns,
            referenced_table,
            referenced_columns,
        });
    }

    let mut schemas: BTreeMap<String, BTreeMap<String, Table>> = BTreeMap::new();
    for table in tables.into_values() {
        schemas
            .entry(table.schema.clone())
            .or_default()
            .insert(table.name.clone(), table);
    }
    Ok(Catalog {
        schemas,
        search_path,
        collation: collation.unwrap_or_default(),
        hypopg,
        truncated,
    })
}

/// Attaches `pg_stats` to the columns of the tables large enough to be
/// reported, within the byte budget.
async fn read_stats(
    client: &Client,
    tables: &mut HashMap<u32, Table>,
    options: &LoadOptions,
) -> Result<(), CatalogError> {
    let oids: Vec<u32> = tables
        .iter()
        .filter(|(_, t)| t.estimated_rows() >= options.stats_min_rows as f64)
        .map(|(oid, _)| *oid)
        .collect();
    if oids.is_empty() || options.max_stats_bytes == 0 {
        return Ok(());
    }
    let text_cap = i32::try_from(MAX_ARRAY_TEXT).unwrap_or(i32::MAX);
    let freq_cap = i32::try_from(MAX_MOST_COMMON).unwrap_or(i32::MAX);
    let budget = i64::try_from(options.max_stats_bytes).unwrap_or(i64::MAX);
    let rows = client
        .query(STATS_QUERY, &[&oids, &text_cap, &freq_cap, &budget])
        .await?;
    for row in &rows {
        let Some(t) = column::<u32>(row, 0).and_then(|oid| tables.get_mut(&oid)) else {
            continue;
        };
        let Some(name) = column::<String>(row, 1) else {
            continue;
        };
        let Some(c) = t.columns.iter_mut().find(|c| c.name == name) else {
            continue;
        };
        let mcv: Option<String> = column(row, 4);
        let hist: Option<String> = column(row, 8);
        c.stats = Some(ColumnStats::from_pg_stats(PgStatsRow {
            null_frac: column(row, 2),
            n_distinct: column(row, 3),
            most_common_vals: mcv.as_deref(),
            most_common_freqs: column(row, 5),
            most_common_total: column(row, 6),
            most_common_count: column(row, 7),
            histogram_bounds: hist.as_deref(),
        }));
    }
    Ok(())
}

/// One row of [`INDEXES_QUERY`], every column as read (NULL → `None`).
#[derive(Debug, Clone, Default, PartialEq)]
struct IndexRow {
    name: Option<String>,
    method: Option<String>,
    unique: Option<bool>,
    primary: Option<bool>,
    valid: Option<bool>,
    predicate: Option<String>,
    columns: Option<Vec<Option<String>>>,
    defs: Option<Vec<Option<String>>>,
    options: Option<Vec<Option<i32>>>,
    opclasses: Option<Vec<Option<String>>>,
}

impl IndexRow {
    /// The index, or `None` when the row is incomplete: an index dropped
    /// while the catalog was read has no definition any more
    /// (`pg_get_indexdef` gives NULL), and an index the loader cannot
    /// describe is better left out than guessed.
    fn into_index(self) -> Option<Index> {
        let defs: Vec<String> = self.defs?.into_iter().collect::<Option<_>>()?;
        let options: Vec<i32> = self
            .options
            .unwrap_or_default()
            .into_iter()
            .map(|o| o.unwrap_or(0))
            .collect();
        Some(Index {
            name: self.name?,
            method: IndexMethod::from_amname(&self.method?),
            unique: self.unique?,
            primary: self.primary?,
            valid: self.valid.unwrap_or(false),
            predicate: self.predicate,
            keys: index_keys(
                self.columns.unwrap_or_default(),
                defs,
                options,
                self.opclasses.unwrap_or_default(),
            ),
        })
    }
}

/// Zips the per-key arrays of [`INDEXES_QUERY`] into keys: a key with a
/// column name is a column, one without is an expression whose text is its
/// `pg_get_indexdef` column definition.
fn index_keys(
    columns: Vec<Option<String>>,
    defs: Vec<String>,
    options: Vec<i32>,
    opclasses: Vec<Option<String>>,
) -> Vec<IndexKey> {
    defs.into_iter()
        .enumerate()
        .map(|(k, def)| {
            let option = options.get(k).copied().unwrap_or(0);
            IndexKey {
                expr: match columns.get(k).cloned().flatten() {
                    Some(name) => KeyExpr::Column(name),
                    None => KeyExpr::Expression(def),
                },
                descending: option & INDOPTION_DESC != 0,
                nulls_first: option & INDOPTION_NULLS_FIRST != 0,
                opclass: opclasses.get(k).cloned().flatten(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> IndexRow {
        IndexRow {
            name: Some("orders_user_id_idx".into()),
            method: Some("btree".into()),
            unique: Some(false),
            primary: Some(false),
            valid: Some(true),
            predicate: None,
            columns: Some(vec![Some("user_id".into()), None]),
            defs: Some(vec![Some("user_id".into()), Some("lower(note)".into())]),
            options: Some(vec![Some(0), Some(INDOPTION_DESC)]),
            opclasses: Some(vec![None, None]),
        }
    }

    #[test]
    fn a_complete_row_is_an_index() {
        let index = row().into_index().expect("complete");
        assert_eq!(index.name, "orders_user_id_idx");
        assert_eq!(index.keys.len(), 2);
        assert_eq!(index.keys[0].expr, KeyExpr::Column("user_id".into()));
        assert_eq!(
            index.keys[1].expr,
            KeyExpr::Expression("lower(note)".into())
        );
        assert!(index.keys[1].descending);
    }

    #[test]
    fn an_index_dropped_during_the_load_is_skipped_not_a_panic() {
        // pg_get_indexdef() of a dropped index: NULL per key, or the whole
        // array NULL.
        let dropped = IndexRow {
            defs: Some(vec![None, None]),
            ..row()
        };
        assert_eq!(dropped.into_index(), None);
        let gone = IndexRow {
            defs: None,
            name: None,
            ..row()
        };
        assert_eq!(gone.into_index(), None);
        // Any other NULL where a value must be: skipped too.
        for broken in [
            IndexRow {
                method: None,
                ..row()
            },
            IndexRow {
                unique: None,
                ..row()
            },
            IndexRow {
                name: None,
                ..row()
            },
        ] {
            assert_eq!(broken.into_index(), None);
        }
        // NULL options or opclasses only lose what they would add.
        let partial = IndexRow {
            options: Some(vec![None, None]),
            opclasses: None,
            ..row()
        }
        .into_index()
        .expect("still an index");
        assert!(!partial.keys[1].descending);
    }
}
