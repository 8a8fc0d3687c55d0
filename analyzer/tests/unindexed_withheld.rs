//! Statistics-aware suggestions through the pipeline: an unselective
//! filter is held back unless hypopg proves the index helps, a partial
//! index's placeholder is numbered like the normalized query, and its value
//! goes to hypopg only.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use qproxy_analyzer::catalog::{Catalog, ColumnStats, Table};
use qproxy_analyzer::detect::unindexed::Verification;
use qproxy_analyzer::event::{Outcome, Protocol, QueryEvent, SessionEvent, TxStatus};
use qproxy_analyzer::finding::{Finding, FindingKind};
use qproxy_analyzer::pipeline::indexes::VerifyRequest;
use qproxy_analyzer::pipeline::{Analyzer, AnalyzerConfig};
use smallvec::SmallVec;

/// `tickets` (300k): `state` 96 % `closed`, 4 % `escalated`; nothing
/// indexed but the primary key.
fn catalog() -> Catalog {
    Catalog::new().with_table(
        Table::new("tickets", 300_000)
            .primary_key(&["id"])
            .columns(&["state", "subject"])
            .typed_column("opened_at", "timestamp with time zone")
            .stats(
                "state",
                ColumnStats::distinct(2.0).most_common(&[("closed", 0.96), ("escalated", 0.04)]),
            ),
    )
}

const RARE: &str = "SELECT id FROM tickets WHERE opened_at > $1 AND state = 'escalated'";
const COMMON: &str = "SELECT id FROM tickets WHERE state = 'closed'";

fn event(sql: &str) -> SessionEvent {
    SessionEvent::Query(QueryEvent {
        connection_id: 1,
        sql: sql.into(),
        statement_index: 0,
        statement_name: None,
        prepared_at: None,
        protocol: Protocol::Simple,
        params_hash: None,
        param_hashes: SmallVec::new(),
        result_hashes: Vec::new(),
        offset: None,
        started_at: SystemTime::now(),
        duration: Duration::from_millis(2),
        rows: 5,
        outcome: Outcome::Complete {
            tag: "SELECT 5".into(),
        },
        tx_status: TxStatus::Idle,
        application_name: None,
        database: Some("help".into()),
        user: Some("app".into()),
        text_hold: None,
    })
}

/// A pipeline whose catalog for `help` is [`catalog`], with or without
/// hypopg, that has seen both statements.
fn pipeline(hypopg: bool) -> Analyzer {
    let mut a = Analyzer::new(AnalyzerConfig::default());
    a.process(&event("SELECT 1"), Instant::now());
    a.process(&event(RARE), Instant::now());
    assert_eq!(a.indexes().take_catalog_loads(Instant::now(), 8), ["help"]);
    a.indexes()
        .install_catalog("help", Some((Arc::new(catalog()), hypopg)));
    a.process(&event(COMMON), Instant::now());
    a
}

fn filters(a: &mut Analyzer) -> Vec<Finding> {
    a.take_findings()
        .into_iter()
        .filter(|f| f.kind == FindingKind::UnindexedFilter)
        .collect()
}

fn requests(a: &mut Analyzer) -> Vec<VerifyRequest> {
    let mut out = Vec::new();
    while let Some(batch) = a.indexes().take_verification_batch() {
        out.extend(batch.requests);
    }
    out
}

#[test]
fn without_hypopg_an_unselective_filter_is_never_reported() {
    let mut a = pipeline(false);
    let found = filters(&mut a);
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert!(f.query.contains("state = $2"), "{}", f.query);
    assert_eq!(
        f.suggestion.as_deref(),
        Some("CREATE INDEX CONCURRENTLY ON public.tickets (opened_at) WHERE state = $2;")
    );
    assert_eq!(f.details["partial_index"]["value_frequency"], 0.04);
    assert_eq!(
        f.details["hypopg"]["reason"],
        "the hypopg extension is not installed in this database"
    );
    let stored = serde_json::to_string(f).unwrap();
    assert!(!stored.contains("escalated"), "{stored}");
    // Executed again: still only the selective one.
    a.process(&event(COMMON), Instant::now());
    a.process(&event(RARE), Instant::now());
    assert_eq!(filters(&mut a).len(), 1);
}

#[test]
fn hypopg_checks_the_value_and_can_overrule_the_statistics() {
    let mut a = pipeline(true);
    let checks = requests(&mut a);
    assert_eq!(checks.len(), 2, "{checks:#?}");
    let partial = checks.iter().find(|r| r.sql == RARE).unwrap();
    assert_eq!(
        partial.ddl,
        "CREATE INDEX CONCURRENTLY ON public.tickets (opened_at) WHERE state = 'escalated';"
    );
    let common = checks.iter().find(|r| r.sql == COMMON).unwrap();
    assert_eq!(
        common.ddl,
        "CREATE INDEX CONCURRENTLY ON public.tickets (state);"
    );
    // Before any verdict: the selective one only.
    let found = filters(&mut a);
    assert_eq!(found.len(), 1);
    assert!(found[0].query.contains("opened_at"));

    // The planner would not use the index: still held back.
    a.indexes().install_verification(
        common,
        Verification::Verified {
            cost_before: 5000.0,
            cost_after: 5000.0,
            uses_index: false,
        },
    );
    a.process(&event(COMMON), Instant::now());
    assert!(filters(&mut a).is_empty());

    // A verdict that proves a gain reports it, saying so.
    let mut a = pipeline(true);
    let checks = requests(&mut a);
    let common = checks.iter().find(|r| r.sql == COMMON).unwrap();
    a.indexes().install_verification(
        common,
        Verification::Verified {
            cost_before: 5000.0,
            cost_after: 40.0,
            uses_index: true,
        },
    );
    let found = filters(&mut a);
    let f = found
        .iter()
        .find(|f| f.query.contains("state = $1") && !f.query.contains("opened_at"))
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert!(f.details.contains_key("unselective_but_verified"), "{f:#?}");
    assert_eq!(f.details["selectivity"]["estimated_fraction"], 0.96);
}
