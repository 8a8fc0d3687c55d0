//! Reading a [`Catalog`] from a live server.
//!
//! Five queries in one read-only, repeatable-read transaction (so tables,
//! columns and indexes come from one consistent snapshot), then the
//! connection is closed. The queries read only `pg_catalog` and the
//! statistics functions, which every role may read, so the `--upstream`
//! credentials need no extra grants.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};

use super::connect::{begin_read_only, with_connection, CatalogError};
use super::{Catalog, Column, ForeignKey, Index, IndexKey, IndexMethod, KeyExpr, Table};

/// Default cap on tables loaded. Schemas with tens of thousands of tables
/// (per-tenant schemas, partitions) exist; past this many the snapshot
/// would cost more memory and load time than it is worth. The largest
/// tables are kept, since only large tables produce findings, and
/// [`Catalog::truncated`] says that some were left out.
pub const DEFAULT_MAX_TABLES: usize = 20_000;

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
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_tables: DEFAULT_MAX_TABLES,
            timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(10),
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
            let catalog = read_catalog(client, options.max_tables).await?;
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

async fn read_catalog(client: &Client, max_tables: usize) -> Result<Catalog, CatalogError> {
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
        });
    }
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
