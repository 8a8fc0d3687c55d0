//! Checking a suggested index against the real planner with hypopg: the
//! connection work. What a pair of plans means is decided in
//! [`crate::detect::unindexed`] (`judge_plans`); this module only gets
//! the plans.
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

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};

use super::{ClientStatement, ExplainError};
use crate::catalog::{begin_read_only, with_connection, CatalogError};
use crate::detect::unindexed::{
    judge_plans, plain_create_index, quote_ident, IndexDdlError, PlanError, SkipReason,
    Verification,
};

/// `application_name` of the verification connection.
pub const APPLICATION_NAME: &str = "qproxy-hypopg";

/// `statement_timeout` of every query in a verification; `lock_timeout`
/// is capped lower by [`begin_read_only`].
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Why one check did not get to a verdict from both plans.
#[derive(Debug, thiserror::Error)]
enum HypopgError {
    /// The read-only transaction could not be opened.
    #[error("opening the read-only transaction failed")]
    Begin(#[source] CatalogError),
    /// Checking or EXPLAINing the statement as its client failed.
    #[error(transparent)]
    Explain(#[from] ExplainError),
    /// One of the proxy's own queries (hypopg's functions) failed.
    #[error("hypopg query failed")]
    Query(#[from] tokio_postgres::Error),
    /// A plan could not be read.
    #[error(transparent)]
    Plan(#[from] PlanError),
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
        Err(e) => return refused_ddl(&e),
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
) -> Result<Verification, HypopgError> {
    begin_read_only(client, STATEMENT_TIMEOUT)
        .await
        .map_err(HypopgError::Begin)?;
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
    Ok(judge_plans(&before, &after, &index_name)?)
}

/// The skipped verdict for DDL hypopg must not be given.
fn refused_ddl(e: &IndexDdlError) -> Verification {
    Verification::skipped(SkipReason::Refused, format!("not verified: {e}"))
}

/// The skipped verdict for a check that did not get to both plans.
fn skipped_because(e: HypopgError) -> Verification {
    let (why, reason) = match e {
        HypopgError::Explain(ExplainError::Refused(why)) => (SkipReason::Refused, why),
        HypopgError::Explain(e @ ExplainError::ClientCannotRun) => {
            (SkipReason::Refused, e.to_string())
        }
        HypopgError::Explain(e @ (ExplainError::Failed { .. } | ExplainError::Plan(_))) => {
            (SkipReason::Error, e.to_string())
        }
        HypopgError::Plan(e) => (SkipReason::Error, e.to_string()),
        HypopgError::Explain(ExplainError::Query(e))
        | HypopgError::Query(e)
        | HypopgError::Begin(CatalogError::Query(e)) => (
            SkipReason::Error,
            format!("hypopg check failed: {}", error_code(&e)),
        ),
        HypopgError::Begin(e) => (SkipReason::Error, format!("hypopg check failed: {e}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_checks_say_why_in_the_details() {
        let v = skipped_because(ExplainError::ClientCannotRun.into());
        assert_eq!(v.improves(), None);
        let d = &v.to_details()["hypopg"];
        assert_eq!(d["verified"], false);
        assert_eq!(d["skipped"], "refused");
        assert_eq!(
            d["reason"],
            "not verified: the client role cannot run this statement"
        );
        let refused = skipped_because(
            ExplainError::Refused(
                "calls public.evil(), a function outside pg_catalog that planning could run".into(),
            )
            .into(),
        );
        assert!(refused.to_details()["hypopg"]["reason"]
            .as_str()
            .unwrap()
            .contains("public.evil()"));
        let failed = skipped_because(
            ExplainError::Failed {
                sqlstate: "57014".into(),
            }
            .into(),
        );
        assert_eq!(failed.to_details()["hypopg"]["skipped"], "error");
        assert!(!failed.to_details()["hypopg"]
            .as_object()
            .unwrap()
            .contains_key("cost_before"));
    }

    #[test]
    fn unreadable_plans_and_refused_ddl_read_as_before() {
        let plan = judge_plans(&serde_json::json!([{}]), &serde_json::json!([{}]), "i");
        let v = skipped_because(plan.unwrap_err().into());
        assert_eq!(
            v.to_details()["hypopg"]["reason"],
            "not verified: unexpected EXPLAIN output: no \"Total Cost\" in the plan"
        );
        let v = refused_ddl(&plain_create_index("DROP TABLE orders").unwrap_err());
        assert_eq!(
            v.to_details()["hypopg"]["reason"],
            "not verified: expected one CREATE INDEX statement"
        );
        assert_eq!(v.to_details()["hypopg"]["skipped"], "refused");
    }
}
