//! Checking a suggested index against the real planner with hypopg.
//!
//! hypopg adds *hypothetical* indexes, visible only to the planner of the
//! session that made them: EXPLAIN before and after shows whether the
//! index would be used and what it would save, without building anything.
//!
//! Safety: the statement is EXPLAINed, never executed (no ANALYZE), inside
//! a READ ONLY transaction that is rolled back, over the extended protocol
//! (one statement per message, so nothing can be smuggled behind a `;`),
//! and only as the client who sent it, after the checks of
//! [`crate::explain`]: a statement that could run code from outside
//! `pg_catalog` while being planned, or that the client's role could not
//! run, is skipped and the finding says why. The hypopg functions are
//! called by the upstream role, schema-qualified, with an explicitly typed
//! argument and `search_path = pg_catalog, pg_temp`, so the client cannot
//! substitute them. The extension is never created here: if the database
//! lacks it, the answer is [`Verification::Unverified`].
//!
//! Several suggestions for one database are checked on one connection
//! ([`verify_batch`]), each in its own rolled-back transaction, and the
//! connection is closed after the last (DESIGN non-negotiable 6).

use std::time::Duration;

use serde_json::{json, Map, Value};
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};

use super::ddl::quote_ident;
use crate::catalog::{begin_read_only, with_connection, CatalogError};
use crate::explain::{ClientStatement, ExplainError};

/// `application_name` of the verification connection.
pub const APPLICATION_NAME: &str = "qproxy-hypopg";

/// `statement_timeout` of every query in a verification; `lock_timeout`
/// is capped lower by [`begin_read_only`].
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a suggestion that hypopg could have checked was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The verification queue was full when the suggestion was made.
    QueueFull,
    /// Not safe or not possible to plan as the client (see
    /// [`crate::explain`]).
    Refused,
    /// The check failed (connection, timeout, server error, a task that
    /// panicked).
    Error,
}

impl SkipReason {
    /// Every reason, in the order counters are kept.
    pub const ALL: [SkipReason; 3] = [
        SkipReason::QueueFull,
        SkipReason::Refused,
        SkipReason::Error,
    ];

    /// The name used in finding details and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::QueueFull => "queue_full",
            SkipReason::Refused => "refused",
            SkipReason::Error => "error",
        }
    }

    /// Position in [`SkipReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

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
    /// hypopg was there but the suggestion was not checked.
    Skipped {
        /// The class of reason, for counters.
        why: SkipReason,
        /// Human-readable reason; names what was refused, never a value.
        reason: String,
    },
}

impl Verification {
    /// A skipped check.
    pub fn skipped(why: SkipReason, reason: impl Into<String>) -> Self {
        Verification::Skipped {
            why,
            reason: reason.into(),
        }
    }

    /// The evidence as finding details: `{"hypopg": {"verified": true,
    /// "cost_before": .., "cost_after": .., "uses_index": ..}}`,
    /// `{"hypopg": {"verified": false, "reason": ..}}`, and for a skipped
    /// check the same plus `"skipped": "queue_full|refused|error"`.
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
            Verification::Skipped { why, reason } => {
                json!({"verified": false, "reason": reason, "skipped": why.as_str()})
            }
        };
        let mut details = Map::new();
        details.insert("hypopg".into(), value);
        details
    }

    /// `Some(true)` when the planner would use the index and it lowers
    /// the cost; `None` when not checked. A suggestion verified as useless
    /// can be dropped.
    pub fn improves(&self) -> Option<bool> {
        match self {
            Verification::Verified {
                cost_before,
                cost_after,
                uses_index,
            } => Some(*uses_index && cost_after < cost_before),
            Verification::Unverified { .. } | Verification::Skipped { .. } => None,
        }
    }
}

/// One suggestion to check.
#[derive(Debug, Clone, Copy)]
pub struct VerifyJob<'a> {
    /// The statement as the client sent it.
    pub sql: &'a str,
    /// The suggested `CREATE INDEX [CONCURRENTLY] ...`, its table
    /// schema-qualified as suggestions are: hypopg reads it under
    /// `search_path = pg_catalog, pg_temp`. hypopg wants it without
    /// CONCURRENTLY, so that is removed.
    pub ddl: &'a str,
    /// The user the client connected as: the statement is planned with
    /// this role's rights, and not at all when it is unknown.
    pub user: Option<&'a str>,
}

/// Checks one suggestion on its own short-lived connection to the database
/// `config` names: [`verify_batch`] of one.
pub async fn verify_with_hypopg<T>(
    config: &Config,
    tls: T,
    job: VerifyJob<'_>,
) -> Result<Verification, CatalogError>
where
    T: MakeTlsConnect<Socket>,
{
    let mut verdicts = verify_batch(config, tls, &[job]).await?;
    Ok(verdicts.pop().unwrap_or_else(|| {
        Verification::skipped(SkipReason::Error, "not verified: no verdict came back")
    }))
}

/// Checks every job on one connection to the database `config` names, each
/// in its own rolled-back transaction, then disconnects. One verdict per
/// job, in order; `Err` only when the connection itself failed (then none
/// was checked).
pub async fn verify_batch<T>(
    config: &Config,
    tls: T,
    jobs: &[VerifyJob<'_>],
) -> Result<Vec<Verification>, CatalogError>
where
    T: MakeTlsConnect<Socket>,
{
    // Room for every job to run into a statement timeout or two.
    let jobs_n = u32::try_from(jobs.len()).unwrap_or(u32::MAX);
    let timeout = Duration::from_secs(15) + STATEMENT_TIMEOUT.saturating_mul(3 * jobs_n);
    with_connection(config, tls, APPLICATION_NAME, timeout, async |client| {
        let mut verdicts = Vec::with_capacity(jobs.len());
        for job in jobs {
            verdicts.push(verify_one(client, job).await);
        }
        Ok(verdicts)
    })
    .await
}

/// One job in its own transaction; whatever happens, the session is left
/// clean for the next one (rolled back, no hypothetical index, no prepared
/// statement).
async fn verify_one(client: &Client, job: &VerifyJob<'_>) -> Verification {
    let Some(user) = job.user else {
        return Verification::skipped(
            SkipReason::Refused,
            "not verified: the client's user is unknown, and the proxy never plans a client's \
             statement with its own rights",
        );
    };
    let ddl = match plain_create_index(job.ddl) {
        Ok(ddl) => ddl,
        Err(e) => return Verification::skipped(SkipReason::Refused, e.to_string()),
    };
    let mut hypopg: Option<String> = None;
    let outcome = check(client, user, job.sql, &ddl, &mut hypopg).await;
    let mut clean = client.batch_execute("ROLLBACK").await;
    if let (Some(schema), Ok(())) = (&hypopg, &clean) {
        // Hypothetical indexes live in the session, not the transaction.
        clean = client
            .batch_execute(&format!("SELECT {schema}.hypopg_reset()"))
            .await;
    }
    if outcome.is_err() && clean.is_ok() {
        // A failed EXPLAIN EXECUTE leaves its prepared statement behind.
        clean = client.batch_execute("DEALLOCATE ALL").await;
    }
    match (outcome, clean) {
        (Ok(verdict), Ok(())) => verdict,
        (Err(e), _) => skipped_because(e),
        (Ok(_), Err(e)) => Verification::skipped(
            SkipReason::Error,
            format!("not verified: hypopg check failed: {}", error_code(&e)),
        ),
    }
}

/// The verdict for one job, inside its transaction. `hypopg` gets the
/// extension's (quoted) schema once a hypothetical index may exist.
async fn check(
    client: &Client,
    user: &str,
    sql: &str,
    ddl: &str,
    hypopg: &mut Option<String>,
) -> Result<Verification, ExplainError> {
    begin_read_only(client, STATEMENT_TIMEOUT)
        .await
        .map_err(|e| match e {
            CatalogError::Query(e) => ExplainError::Query(e),
            other => ExplainError::Plan(other.to_string()),
        })?;
    let statement = ClientStatement::clear(client, user, sql).await?;
    // hypopg's functions live in whatever schema it was created in, which
    // need not be on the search path.
    let schema: Option<String> = client
        .query_opt(
            "SELECT n.nspname::text FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'hypopg'",
            &[],
        )
        .await?
        .map(|row| row.get(0));
    let Some(schema) = schema.as_deref().map(quote_ident) else {
        return Ok(Verification::Unverified {
            reason: "the hypopg extension is not installed in this database".into(),
        });
    };
    if statement.params() > 0 {
        client
            .batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
            .await?;
    }
    let before = statement.explain(client).await?;
    *hypopg = Some(schema.clone());
    // As the upstream role, schema-qualified and with the argument's type
    // spelled out, so no overload the client created can be chosen.
    let created = client
        .query_one(
            &format!(
                "SELECT indexname::text FROM {schema}.hypopg_create_index($1::pg_catalog.text)"
            ),
            &[&ddl],
        )
        .await?;
    let index_name: String = created.get(0);
    let after = statement.explain(client).await?;
    Ok(Verification::Verified {
        cost_before: total_cost(&before)?,
        cost_after: total_cost(&after)?,
        uses_index: mentions_index(&after, &index_name),
    })
}

/// The skipped verdict for a check that did not get to both plans.
fn skipped_because(e: ExplainError) -> Verification {
    let (why, reason) = match e {
        ExplainError::Refused(why) => (SkipReason::Refused, why),
        ExplainError::ClientCannotRun => (SkipReason::Refused, e.to_string()),
        ExplainError::Failed { .. } | ExplainError::Plan(_) => (SkipReason::Error, e.to_string()),
        ExplainError::Query(e) => (
            SkipReason::Error,
            format!("hypopg check failed: {}", error_code(&e)),
        ),
    };
    Verification::skipped(why, format!("not verified: {reason}"))
}

/// A server error by its SQLSTATE (its message may quote values), anything
/// else as itself.
fn error_code(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(code) => format!("SQLSTATE {}", code.code()),
        None => e.to_string(),
    }
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

fn total_cost(plan: &Value) -> Result<f64, ExplainError> {
    plan.pointer("/0/Plan/Total Cost")
        .and_then(Value::as_f64)
        .ok_or_else(|| ExplainError::Plan("no \"Total Cost\" in the plan".into()))
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
    fn skipped_checks_say_why_in_the_details() {
        let v = skipped_because(ExplainError::ClientCannotRun);
        assert_eq!(v.improves(), None);
        let d = &v.to_details()["hypopg"];
        assert_eq!(d["verified"], false);
        assert_eq!(d["skipped"], "refused");
        assert_eq!(
            d["reason"],
            "not verified: the client role cannot run this statement"
        );
        let refused = skipped_because(ExplainError::Refused(
            "calls public.evil(), a function outside pg_catalog that planning could run".into(),
        ));
        assert!(refused.to_details()["hypopg"]["reason"]
            .as_str()
            .unwrap()
            .contains("public.evil()"));
        let failed = skipped_because(ExplainError::Failed {
            sqlstate: "57014".into(),
        });
        assert_eq!(failed.to_details()["hypopg"]["skipped"], "error");
        assert!(!failed.to_details()["hypopg"]
            .as_object()
            .unwrap()
            .contains_key("cost_before"));
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
