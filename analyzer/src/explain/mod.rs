//! EXPLAIN a client's statement with the client's rights, never more.
//!
//! qproxy's `--upstream` credentials are often a superuser's. PostgreSQL
//! runs IMMUTABLE functions while planning (constant folding) and STABLE
//! ones while estimating selectivity, so EXPLAINing a client's SQL as the
//! upstream role would run code the client wrote with the upstream's
//! rights (DESIGN non-negotiable 7). Two layers stop that:
//!
//! 1. **The statement is checked before anything plans it**
//!    ([`ClientStatement::clear`]): every function, operator and custom
//!    type it names must resolve to `pg_catalog` under the client's search
//!    path, and every table it reads must be a plain, partitioned or
//!    materialized table whose index expressions and predicates,
//!    constraints, defaults, policies, extended statistics and column types
//!    (and those of its inheritance children) use nothing from outside
//!    `pg_catalog` (enum types aside: their comparisons are built in).
//!    Views, foreign tables and tables with rules are refused. Anything
//!    else is refused with a reason that names it; when unsure, refuse.
//! 2. **The EXPLAIN runs as the client's role** ([`ClientStatement::explain`]):
//!    `SET LOCAL ROLE` inside the caller's read-only transaction, under the
//!    `statement_timeout` and `lock_timeout` the caller set. A role without
//!    SELECT on a table gets "permission denied", not plan costs; a role the
//!    upstream cannot become, or a client whose user is unknown, is refused
//!    rather than run as the upstream role.
//!
//! `SET ROLE` alone is no boundary: code running under it may `RESET ROLE`
//! back to the session's user, since PostgreSQL checks `SET ROLE` against
//! the session user. That is why layer 1 runs first and layer 2 is the
//! second line, not the only one.
//!
//! The proxy's own queries run with `search_path = pg_catalog, pg_temp`, so
//! nothing the client can create shadows what they call. The client's
//! statement runs under the session's default search path, where `$user`
//! is now the client: the same path its names are checked under.
//!
//! The same rules serve any feature that plans a client's statement
//! (hypopg verification today, generic plans of slow queries next):
//! [`explain_as_client`] is the whole of it in one call. [`hypopg`] is
//! the hypopg verification's connection work built on it.

pub mod hypopg;
mod references;

use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Client;

use references::{References, CATALOG_SCHEMA};

/// What the proxy's own queries run under: `pg_catalog` first and the
/// (empty) temporary schema last, so no name they use can be shadowed.
pub const SAFE_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// Why a statement was not EXPLAINed as its client.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Not safe or not possible to plan as the client; the text says why
    /// (it names what was refused, never a literal value).
    #[error("{0}")]
    Refused(String),
    /// The client's role lacks a privilege the statement needs (SQLSTATE
    /// 42501 from the EXPLAIN under its role).
    #[error("the client role cannot run this statement")]
    ClientCannotRun,
    /// The EXPLAIN as the client failed otherwise. Only the SQLSTATE is
    /// kept: the server's message may quote the statement's values.
    #[error("EXPLAIN as the client failed (SQLSTATE {sqlstate})")]
    Failed {
        /// Five-character SQLSTATE.
        sqlstate: String,
    },
    /// One of the proxy's own queries failed, or the connection did.
    #[error("checking the statement failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// EXPLAIN returned something that is not a plan.
    #[error("unexpected EXPLAIN output: {0}")]
    Plan(#[source] serde_json::Error),
}

/// A statement that passed the checks of the module docs and may be
/// EXPLAINed as `role` on the connection that checked it, in the same
/// transaction.
#[derive(Debug, Clone)]
pub struct ClientStatement<'a> {
    role: &'a str,
    sql: &'a str,
    params: usize,
}

/// Checks `sql` and EXPLAINs it (`FORMAT JSON`) as `role`: the module docs
/// in one call. Call inside a transaction (read-only, with
/// `statement_timeout`/`lock_timeout` set) as the upstream role; on `Err`
/// the transaction may be aborted and must be rolled back.
pub async fn explain_as_client(
    client: &Client,
    role: &str,
    sql: &str,
) -> Result<Value, ExplainError> {
    let statement = ClientStatement::clear(client, role, sql).await?;
    if statement.params() > 0 {
        client
            .batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
            .await?;
    }
    statement.explain(client).await
}

impl<'a> ClientStatement<'a> {
    /// Runs the checks of layer 1 (module docs). Call inside a transaction
    /// as the upstream role; leaves the transaction's `search_path` at
    /// [`SAFE_SEARCH_PATH`] and the role at the upstream's. On `Err` the
    /// transaction may be aborted.
    pub async fn clear(
        client: &Client,
        role: &'a str,
        sql: &'a str,
    ) -> Result<ClientStatement<'a>, ExplainError> {
        let refs = References::of(sql).map_err(ExplainError::Refused)?;
        client
            .batch_execute(&format!("SET LOCAL search_path = {SAFE_SEARCH_PATH}"))
            .await?;
        let path = client_search_path(client, role).await?;
        let path = function_path(&path)?;
        refuse_names(client, &refs, &path).await?;
        refuse_relations(client, &refs, &path).await?;
        Ok(ClientStatement {
            role,
            sql: sql.trim_end().trim_end_matches(';').trim_end(),
            params: refs.params,
        })
    }

    /// How many `$n` parameters the statement takes. With any, it is
    /// PREPAREd and `EXPLAIN EXECUTE`d with NULLs (PostgreSQL 15 has no
    /// `EXPLAIN (GENERIC_PLAN)`); set `plan_cache_mode =
    /// force_generic_plan` first, or the NULLs shape the plan.
    pub fn params(&self) -> usize {
        self.params
    }

    /// EXPLAINs the statement as the client's role (layer 2), then returns
    /// to the upstream role and [`SAFE_SEARCH_PATH`]. May be called again
    /// in the same transaction (e.g. after creating a hypothetical index).
    pub async fn explain(&self, client: &Client) -> Result<Value, ExplainError> {
        become_client(client, self.role).await?;
        let plan = explain(client, self.sql, self.params).await;
        if plan.is_ok() {
            become_upstream(client).await?;
        }
        plan
    }
}

/// `"name"`, always quoted: a role name from a StartupMessage is used
/// exactly as sent.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `SET LOCAL ROLE` to the client and its default search path. A role that
/// is missing or that the upstream may not become is refused here, never
/// worked around.
async fn become_client(client: &Client, role: &str) -> Result<(), ExplainError> {
    let set = client
        .batch_execute(&format!(
            "SET LOCAL ROLE {}; SET LOCAL search_path TO DEFAULT",
            quoted(role)
        ))
        .await;
    match set {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            Err(ExplainError::Refused(
                "the upstream role may not SET ROLE to the client's role, and the proxy never plans \
                 a client's statement with its own rights (grant the client's role to the upstream role)"
                    .into(),
            ))
        }
        Err(e)
            if e.code() == Some(&SqlState::INVALID_PARAMETER_VALUE)
                || e.code() == Some(&SqlState::UNDEFINED_OBJECT) =>
        {
            Err(ExplainError::Refused("the client's role does not exist".into()))
        }
        Err(e) => Err(e.into()),
    }
}

async fn become_upstream(client: &Client) -> Result<(), ExplainError> {
    client
        .batch_execute(&format!(
            "RESET ROLE; SET LOCAL search_path = {SAFE_SEARCH_PATH}"
        ))
        .await?;
    Ok(())
}

/// The schemas the client's names resolve through, in order
/// (`current_schemas(true)` as the client: implicit `pg_catalog` and
/// `pg_temp` included, `$user` as the client).
async fn client_search_path(client: &Client, role: &str) -> Result<Vec<String>, ExplainError> {
    become_client(client, role).await?;
    // Fully qualified and operator-free: this runs under the client's path.
    let rows = client
        .query(
            "SELECT s::pg_catalog.text FROM pg_catalog.unnest(pg_catalog.current_schemas(true)) s",
            &[],
        )
        .await?;
    become_upstream(client).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The path functions, operators and types resolve through (temporary
/// schemas never hold them). Refused when a schema comes before
/// `pg_catalog`: then built-in names could be shadowed, and the checks
/// below assume they cannot.
fn function_path(path: &[String]) -> Result<Vec<String>, ExplainError> {
    let path: Vec<String> = path
        .iter()
        .filter(|s| !s.starts_with("pg_temp"))
        .cloned()
        .collect();
    match path.first() {
        Some(first) if first == CATALOG_SCHEMA => Ok(path),
        Some(first) => Err(ExplainError::Refused(format!(
            "the search path puts {first} before pg_catalog, so built-in names could be shadowed"
        ))),
        None => Err(ExplainError::Refused("the search path is empty".into())),
    }
}

/// The first function, operator or cast type the statement names that
/// resolves (or might resolve) outside `pg_catalog`.
const NAMES_OUTSIDE_CATALOG: &str = "\
(SELECT 'function', n.nspname::text, p.proname::text || '()'
 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE p.proname = ANY($1::text[]) AND n.nspname = ANY($4::text[]) AND n.nspname <> 'pg_catalog'
 ORDER BY array_position($4::text[], n.nspname::text), 3 LIMIT 1)
UNION ALL
(SELECT 'operator', n.nspname::text, o.oprname::text
 FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
 WHERE n.nspname = ANY($4::text[]) AND n.nspname <> 'pg_catalog'
   AND EXISTS (SELECT 1 FROM unnest($2::text[]) AS r(run) WHERE strpos(r.run, o.oprname::text) > 0)
 ORDER BY array_position($4::text[], n.nspname::text), 3 LIMIT 1)
UNION ALL
(SELECT 'type', n.nspname::text, t.typname::text
 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.typname = ANY($3::text[]) AND n.nspname = ANY($4::text[]) AND n.nspname <> 'pg_catalog'
   AND t.typtype <> 'e'
 ORDER BY array_position($4::text[], n.nspname::text), 3 LIMIT 1)
LIMIT 1";

async fn refuse_names(
    client: &Client,
    refs: &References,
    path: &[String],
) -> Result<(), ExplainError> {
    let list = |s: &std::collections::BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
    let found = client
        .query_opt(
            NAMES_OUTSIDE_CATALOG,
            &[
                &list(&refs.functions),
                &list(&refs.operator_runs),
                &list(&refs.cast_types),
                &path,
            ],
        )
        .await?;
    let Some(row) = found else {
        return Ok(());
    };
    let (what, schema, name): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    Err(ExplainError::Refused(match what.as_str() {
        "function" => format!(
            "calls {schema}.{name}, a function outside pg_catalog that planning could run"
        ),
        "operator" => format!(
            "may use operator {schema}.{name}, defined outside pg_catalog, whose function planning could run"
        ),
        _ => format!("casts to {schema}.{name}, a type defined outside pg_catalog"),
    }))
}

/// Each named relation resolved as the client's path resolves it (a
/// qualified name in its schema): oid, kind, rules, schema and name; NULLs
/// when it does not resolve.
const RESOLVE_RELATIONS: &str = "\
SELECT r.schema, r.name, x.oid, x.relkind, x.relhasrules, x.nspname, x.relname
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(schema, name, i)
LEFT JOIN LATERAL (
    SELECT c.oid, c.relkind::text AS relkind, c.relhasrules,
           n.nspname::text AS nspname, c.relname::text AS relname
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN unnest($3::text[]) WITH ORDINALITY AS p(name, ord) ON p.name = n.nspname::text
    WHERE c.relname = r.name
      AND CASE WHEN r.schema IS NULL THEN p.ord IS NOT NULL ELSE n.nspname = r.schema END
    ORDER BY p.ord NULLS LAST
    LIMIT 1
) x ON true
ORDER BY r.i";

/// The first object the planner would load with the given tables (the
/// tables themselves, their inheritance children, and their own indexes,
/// constraints, defaults, policies, rules and extended statistics; not
/// triggers, which EXPLAIN never fires) that depends on a
/// function or operator outside `pg_catalog`, or on a type outside it
/// that is not an enum, a domain over a built-in type or enum, or an
/// array of those.
const DEPENDENCIES_OUTSIDE_CATALOG: &str = "\
WITH RECURSIVE rels(oid) AS (
    SELECT unnest($1::oid[])
  UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN rels ON i.inhparent = rels.oid
), objects(classid, objid) AS (
    SELECT 'pg_class'::regclass::oid, oid FROM rels
  UNION
    SELECT d.classid, d.objid FROM pg_depend d JOIN rels ON d.refobjid = rels.oid
    WHERE d.refclassid = 'pg_class'::regclass AND d.classid <> 'pg_trigger'::regclass
      -- What belongs to another relation that merely reads this one (a
      -- view's rule, a foreign key, a policy's subquery) is not loaded
      -- with it.
      AND NOT EXISTS (SELECT 1 FROM pg_rewrite w
                      WHERE d.classid = 'pg_rewrite'::regclass AND w.oid = d.objid
                        AND w.ev_class <> rels.oid)
      AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                      WHERE d.classid = 'pg_constraint'::regclass AND c.oid = d.objid
                        AND c.conrelid <> rels.oid)
      AND NOT EXISTS (SELECT 1 FROM pg_policy p
                      WHERE d.classid = 'pg_policy'::regclass AND p.oid = d.objid
                        AND p.polrelid <> rels.oid)
      AND NOT EXISTS (SELECT 1 FROM pg_attrdef a
                      WHERE d.classid = 'pg_attrdef'::regclass AND a.oid = d.objid
                        AND a.adrelid <> rels.oid)
)
SELECT pg_describe_object(o.classid, o.objid, 0), pg_describe_object(d.refclassid, d.refobjid, 0)
FROM objects o JOIN pg_depend d ON d.classid = o.classid AND d.objid = o.objid
WHERE (d.refclassid = 'pg_proc'::regclass
       AND EXISTS (SELECT 1 FROM pg_proc p WHERE p.oid = d.refobjid
                   AND p.pronamespace <> 'pg_catalog'::regnamespace))
   OR (d.refclassid = 'pg_operator'::regclass
       AND EXISTS (SELECT 1 FROM pg_operator p WHERE p.oid = d.refobjid
                   AND p.oprnamespace <> 'pg_catalog'::regnamespace))
   OR (d.refclassid = 'pg_type'::regclass
       AND NOT EXISTS (
           SELECT 1 FROM pg_type t
           LEFT JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype
                                               WHEN t.typcategory = 'A' THEN t.typelem END
           WHERE t.oid = d.refobjid
             AND (t.typnamespace = 'pg_catalog'::regnamespace OR t.typtype = 'e'
                  OR b.typnamespace = 'pg_catalog'::regnamespace OR b.typtype = 'e')))
LIMIT 1";

async fn refuse_relations(
    client: &Client,
    refs: &References,
    path: &[String],
) -> Result<(), ExplainError> {
    if refs.relations.is_empty() {
        return Ok(());
    }
    let schemas: Vec<Option<String>> = refs.relations.iter().map(|r| r.schema.clone()).collect();
    let names: Vec<String> = refs.relations.iter().map(|r| r.name.clone()).collect();
    let mut oids: Vec<u32> = Vec::new();
    for (row, named) in client
        .query(RESOLVE_RELATIONS, &[&schemas, &names, &path])
        .await?
        .iter()
        .zip(&refs.relations)
    {
        let written = match &named.schema {
            Some(s) => format!("{s}.{}", named.name),
            None => named.name.clone(),
        };
        let Some(oid) = row.get::<_, Option<u32>>(2) else {
            if named.maybe_cte {
                continue;
            }
            return Err(ExplainError::Refused(format!(
                "reads {written}, which the client's search path does not resolve to a table"
            )));
        };
        let qualified = format!(
            "{}.{}",
            row.get::<_, Option<String>>(5).unwrap_or_default(),
            row.get::<_, Option<String>>(6).unwrap_or_default()
        );
        let kind = match row.get::<_, Option<String>>(3).as_deref() {
            Some("r" | "p" | "m") => None,
            Some("v") => Some("a view, whose definition the planner would expand unchecked"),
            Some("f") => Some("a foreign table, whose planning reaches another server"),
            _ => Some("not a table"),
        };
        if let Some(kind) = kind {
            return Err(ExplainError::Refused(format!("reads {qualified}, {kind}")));
        }
        if row.get::<_, Option<bool>>(4) == Some(true) {
            return Err(ExplainError::Refused(format!(
                "reads {qualified}, which has rewrite rules"
            )));
        }
        oids.push(oid);
    }
    if oids.is_empty() {
        return Ok(());
    }
    if let Some(row) = client
        .query_opt(DEPENDENCIES_OUTSIDE_CATALOG, &[&oids])
        .await?
    {
        let object: Option<String> = row.get(0);
        let depends_on: Option<String> = row.get(1);
        return Err(ExplainError::Refused(format!(
            "reads a table whose {} depends on {}, outside pg_catalog, which planning could run",
            object.as_deref().unwrap_or("object"),
            depends_on.as_deref().unwrap_or("an object")
        )));
    }
    Ok(())
}

/// EXPLAIN output as text: `json` has no `String` conversion in
/// tokio-postgres without an optional feature, and text is all we need.
struct JsonText(String);

impl<'a> FromSql<'a> for JsonText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(JsonText(std::str::from_utf8(raw)?.to_owned()))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON || *ty == Type::TEXT
    }
}

/// A server error from the client's own statement: the privilege case by
/// itself, the rest by SQLSTATE only.
fn client_error(e: tokio_postgres::Error) -> ExplainError {
    match e.code() {
        Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => ExplainError::ClientCannotRun,
        Some(code) => ExplainError::Failed {
            sqlstate: code.code().to_string(),
        },
        None => ExplainError::Query(e),
    }
}

async fn explain(client: &Client, sql: &str, params: usize) -> Result<Value, ExplainError> {
    let text = if params == 0 {
        let row = client
            .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), &[])
            .await
            .map_err(client_error)?;
        row.get::<_, JsonText>(0).0
    } else {
        client
            .execute(&format!("PREPARE qproxy_probe AS {sql}"), &[])
            .await
            .map_err(client_error)?;
        let nulls = vec!["NULL"; params].join(", ");
        let row = client
            .query_one(
                &format!("EXPLAIN (FORMAT JSON) EXECUTE qproxy_probe({nulls})"),
                &[],
            )
            .await
            .map_err(client_error)?;
        client.execute("DEALLOCATE qproxy_probe", &[]).await?;
        row.get::<_, JsonText>(0).0
    };
    serde_json::from_str(&text).map_err(ExplainError::Plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_always_quoted() {
        assert_eq!(quoted("app"), "\"app\"");
        assert_eq!(quoted("Mixed \"x\""), "\"Mixed \"\"x\"\"\"");
    }

    #[test]
    fn a_path_must_start_with_pg_catalog() {
        let path = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            function_path(&path(&["pg_temp_3", "pg_catalog", "alice", "public"])).unwrap(),
            path(&["pg_catalog", "alice", "public"])
        );
        let err = function_path(&path(&["public", "pg_catalog"])).unwrap_err();
        assert!(
            err.to_string().contains("public before pg_catalog"),
            "{err}"
        );
        assert!(function_path(&[]).is_err());
    }
}
