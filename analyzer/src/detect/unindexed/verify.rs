//! Checking a suggested index against the real planner with hypopg.
//!
//! hypopg adds *hypothetical* indexes, visible only to the planner of the
//! session that made them: EXPLAIN before and after shows whether the
//! index would be used and what it would save, without building anything.
//!
//! Safety: the statement is EXPLAINed, never executed (no ANALYZE), inside
//! a READ ONLY transaction that is rolled back, over the extended protocol
//! (one statement per message, so nothing can be smuggled behind a `;`),
//! and only SELECT, UPDATE, DELETE and INSERT ... SELECT are accepted. The
//! extension is never created here: if the database lacks it, the answer
//! is [`Verification::Unverified`].
//!
//! Statements with `$n` placeholders cannot be EXPLAINed directly, and
//! PostgreSQL 15 has no `EXPLAIN (GENERIC_PLAN)`, so they are PREPAREd and
//! `EXPLAIN EXECUTE`d with NULL arguments under `plan_cache_mode =
//! force_generic_plan`: the generic plan ignores the NULLs. The statement
//! is prepared again after the hypothetical index exists, since a cached
//! plan would not see it.

use serde_json::{json, Map, Value};
use sqlparser::ast::{SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, Config, Socket};

use super::ddl::quote_ident;
use crate::catalog::{begin_read_only, with_connection, CatalogError};

/// `application_name` of the verification connection.
const APPLICATION_NAME: &str = "qproxy-hypopg";

/// What the planner says about a suggested index.
#[derive(Debug, Clone, PartialEq)]
pub enum Verification {
    /// hypopg was available and both plans were read.
    Verified {
        /// Total estimated cost without the index.
        cost_before: f64,
        /// Total estimated cost with the hypothetical index.
        cost_after: f64,
        /// Whether the plan with the index uses it.
        uses_index: bool,
    },
    /// Not checked, and why (hypopg missing).
    Unverified {
        /// Human-readable reason.
        reason: String,
    },
}

impl Verification {
    /// The evidence as finding details: `{"hypopg": {"verified": true,
    /// "cost_before": .., "cost_after": .., "uses_index": ..}}` or
    /// `{"hypopg": {"verified": false, "reason": ..}}`.
    pub fn to_details(&self) -> Map<String, Value> {
        let value = match self {
            Verification::Verified {
                cost_before,
                cost_after,
                uses_index,
            } => json!({
                "verified": true,
                "cost_before": cost_before,
                "cost_after": cost_after,
                "uses_index": uses_index,
            }),
            Verification::Unverified { reason } => json!({"verified": false, "reason": reason}),
        };
        let mut details = Map::new();
        details.insert("hypopg".into(), value);
        details
    }

    /// `Some(true)` when the planner would use the index and it lowers
    /// the cost; `None` when unverified. A suggestion verified as useless
    /// can be dropped.
    pub fn improves(&self) -> Option<bool> {
        match self {
            Verification::Verified {
                cost_before,
                cost_after,
                uses_index,
            } => Some(*uses_index && cost_after < cost_before),
            Verification::Unverified { .. } => None,
        }
    }
}

/// EXPLAINs `sql` before and after `hypopg_create_index(create_index_ddl)`
/// on one short-lived connection to the database `config` names.
/// `create_index_ddl` may say CONCURRENTLY (as suggestions do); hypopg
/// wants it without, so it is removed.
pub async fn verify_with_hypopg<T>(
    config: &Config,
    tls: T,
    sql: &str,
    create_index_ddl: &str,
) -> Result<Verification, CatalogError>
where
    T: MakeTlsConnect<Socket>,
{
    let sql = explainable(sql)?;
    let ddl = plain_create_index(create_index_ddl)?;
    let timeout = std::time::Duration::from_secs(30);
    with_connection(config, tls, APPLICATION_NAME, timeout, async |client| {
        begin_read_only(client, std::time::Duration::from_secs(10)).await?;
        // hypopg's functions live in whatever schema it was created in,
        // which need not be on the search path.
        let schema: Option<String> = client
            .query_opt(
                "SELECT n.nspname::text FROM pg_extension e \
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'hypopg'",
                &[],
            )
            .await?
            .map(|row| row.get(0));
        let Some(schema) = schema.as_deref().map(quote_ident) else {
            client.batch_execute("ROLLBACK").await?;
            return Ok(Verification::Unverified {
                reason: "the hypopg extension is not installed in this database".into(),
            });
        };
        let params = client.prepare(sql).await?.params().len();
        if params > 0 {
            client
                .batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
                .await?;
        }
        let before = explain(client, sql, params).await?;
        let created = client
            .query_one(
                &format!("SELECT indexname::text FROM {schema}.hypopg_create_index($1)"),
                &[&ddl],
            )
            .await?;
        let index_name: String = created.get(0);
        let after = explain(client, sql, params).await?;
        client
            .batch_execute(&format!("SELECT {schema}.hypopg_reset(); ROLLBACK"))
            .await?;
        Ok(Verification::Verified {
            cost_before: total_cost(&before)?,
            cost_after: total_cost(&after)?,
            uses_index: mentions_index(&after, &index_name),
        })
    })
    .await
}

/// The statement without trailing `;`, if it is one statement of a kind
/// that is safe and meaningful to EXPLAIN.
fn explainable(sql: &str) -> Result<&str, CatalogError> {
    let refuse = |why: &str| Err(CatalogError::Refused(why.to_owned()));
    let statements = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| CatalogError::Refused(format!("statement does not parse: {e}")))?;
    let [statement] = &statements[..] else {
        return refuse("exactly one statement can be verified");
    };
    let ok = match statement {
        Statement::Query(q) => !matches!(&*q.body, SetExpr::Select(s) if s.into.is_some()),
        Statement::Update(_) | Statement::Delete(_) => true,
        Statement::Insert(i) => i
            .source
            .as_ref()
            .is_some_and(|q| !matches!(&*q.body, SetExpr::Values(_))),
        _ => false,
    };
    if !ok {
        return refuse("only SELECT, UPDATE, DELETE and INSERT ... SELECT are verified");
    }
    Ok(sql.trim_end().trim_end_matches(';').trim_end())
}

/// `CREATE [UNIQUE] INDEX [CONCURRENTLY] ...` → the same without
/// CONCURRENTLY; anything else is refused.
fn plain_create_index(ddl: &str) -> Result<String, CatalogError> {
    let parsed = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(ddl)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| CatalogError::Refused(format!("index DDL does not parse: {e}")))?;
    if !matches!(&parsed[..], [Statement::CreateIndex(_)]) {
        return Err(CatalogError::Refused(
            "expected one CREATE INDEX statement".into(),
        ));
    }
    let mut text = ddl.trim().trim_end_matches(';').trim_end().to_owned();
    let lower = text.to_ascii_lowercase();
    if let Some(pos) = lower.find("concurrently") {
        if lower[..pos].trim_end().ends_with("index") {
            text.replace_range(pos..pos + "concurrently".len(), "");
        }
    }
    Ok(text)
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

async fn explain(client: &Client, sql: &str, params: usize) -> Result<Value, CatalogError> {
    let text = if params == 0 {
        let row = client
            .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), &[])
            .await?;
        row.get::<_, JsonText>(0).0
    } else {
        client
            .execute(&format!("PREPARE qproxy_probe AS {sql}"), &[])
            .await?;
        let nulls = vec!["NULL"; params].join(", ");
        let row = client
            .query_one(
                &format!("EXPLAIN (FORMAT JSON) EXECUTE qproxy_probe({nulls})"),
                &[],
            )
            .await?;
        client.execute("DEALLOCATE qproxy_probe", &[]).await?;
        row.get::<_, JsonText>(0).0
    };
    serde_json::from_str(&text).map_err(|e| CatalogError::Plan(e.to_string()))
}

fn total_cost(plan: &Value) -> Result<f64, CatalogError> {
    plan.pointer("/0/Plan/Total Cost")
        .and_then(Value::as_f64)
        .ok_or_else(|| CatalogError::Plan("no \"Total Cost\" in the plan".into()))
}

fn mentions_index(plan: &Value, index: &str) -> bool {
    match plan {
        Value::Object(map) => map.iter().any(|(k, v)| {
            (k == "Index Name" && v.as_str() == Some(index)) || mentions_index(v, index)
        }),
        Value::Array(items) => items.iter().any(|v| mentions_index(v, index)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrently_is_removed_and_other_ddl_refused() {
        assert_eq!(
            plain_create_index("CREATE INDEX CONCURRENTLY ON public.orders (user_id);").unwrap(),
            "CREATE INDEX  ON public.orders (user_id)"
        );
        assert!(plain_create_index("DROP TABLE orders").is_err());
        assert!(plain_create_index("CREATE INDEX ON t (a); DROP TABLE t").is_err());
    }

    #[test]
    fn only_plannable_statements_are_explained() {
        assert_eq!(explainable("SELECT 1;").unwrap(), "SELECT 1");
        assert!(explainable("UPDATE t SET a = 1 WHERE b = $1").is_ok());
        assert!(explainable("INSERT INTO t SELECT * FROM u").is_ok());
        assert!(explainable("INSERT INTO t VALUES (1)").is_err());
        assert!(explainable("SELECT 1; SELECT 2").is_err());
        assert!(explainable("DROP TABLE t").is_err());
        assert!(explainable("SELECT * INTO t2 FROM t").is_err());
    }

    #[test]
    fn finds_the_index_anywhere_in_the_plan() {
        let plan =
            json!([{"Plan": {"Total Cost": 8.3, "Plans": [{"Index Name": "<1>btree_t_a"}]}}]);
        assert!(mentions_index(&plan, "<1>btree_t_a"));
        assert!(!mentions_index(&plan, "<2>btree_t_b"));
        assert_eq!(total_cost(&plan).unwrap(), 8.3);
    }
}
