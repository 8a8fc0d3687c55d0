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

async fn read_catalog(client: &Client, max_tables: usize) -> Result<Catalog, CatalogError> {
    let settings = client.query_one(SETTINGS_QUERY, &[]).await?;
    let search_path: Vec<String> = settings.get(0);
    let collation: Option<String> = settings.get(1);
    let hypopg: bool = settings.get(2);

    let limit = i64::try_from(max_tables)
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    let rows = client.query(TABLES_QUERY, &[&limit]).await?;
    let truncated = rows.len() > max_tables;
    let mut tables: HashMap<u32, Table> = HashMap::with_capacity(rows.len().min(max_tables));
    for row in rows.iter().take(max_tables) {
        let table = Table {
            schema: row.get(1),
            name: row.get(2),
            reltuples: row.get(3),
            relpages: row.get(4),
            live_tuples: row.get(5),
            columns: Vec::new(),
            indexes: Vec::new(),
            foreign_keys: Vec::new(),
        };
        tables.insert(row.get(0), table);
    }
    let oids: Vec<u32> = tables.keys().copied().collect();

    for row in client.query(COLUMNS_QUERY, &[&oids]).await? {
        if let Some(t) = tables.get_mut(&row.get::<_, u32>(0)) {
            t.columns.push(Column {
                name: row.get(1),
                type_name: row.get(2),
                not_null: row.get(3),
            });
        }
    }
    for row in client.query(INDEXES_QUERY, &[&oids]).await? {
        if let Some(t) = tables.get_mut(&row.get::<_, u32>(0)) {
            t.indexes.push(Index {
                name: row.get(1),
                method: IndexMethod::from_amname(row.get(2)),
                unique: row.get(3),
                primary: row.get(4),
                valid: row.get(5),
                predicate: row.get(6),
                keys: index_keys(row.get(7), row.get(8), row.get(9), row.get(10)),
            });
        }
    }
    for row in client.query(FOREIGN_KEYS_QUERY, &[&oids]).await? {
        if let Some(t) = tables.get_mut(&row.get::<_, u32>(0)) {
            t.foreign_keys.push(ForeignKey {
                name: row.get(1),
                columns: row.get(2),
                referenced_table: row.get(3),
                referenced_columns: row.get(4),
            });
        }
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
