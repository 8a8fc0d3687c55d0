//! Findings with fixed timestamps, one per kind, shared by the store and
//! report tests so snapshots never change with the clock.
#![allow(dead_code)]

use qproxy_analyzer::finding::{
    Finding, FindingKind, ParentRef, RequestRef, RowStats, Severity, Summary,
};
use qproxy_analyzer::report::{Report, RunMeta};
use qproxy_analyzer::store::RunInfo;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// 2024-05-01T12:00:00Z plus `secs`.
pub fn at(secs: i64) -> OffsetDateTime {
    datetime!(2024-05-01 12:00:00 UTC) + Duration::seconds(secs)
}

pub fn run_info(host: &str, started: i64) -> RunInfo {
    RunInfo {
        started_at: at(started),
        instance: format!("{host}:6432"),
        host: host.into(),
        pid: 4242,
        version: "0.1.0".into(),
    }
}

fn base(
    kind: FindingKind,
    severity: Severity,
    query: &str,
    table: Option<&str>,
    columns: &[&str],
) -> Finding {
    Finding {
        id: String::new(),
        kind,
        severity,
        fingerprint: format!("{:016x}", 0x5eed_0000_u64 + kind as u64),
        query: query.into(),
        table: table.map(Into::into),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        count: None,
        occurrences: 1,
        request: None,
        parent: None,
        rows: None,
        suggestion: None,
        database: Some("shop".into()),
        details: Default::default(),
        first_seen: at(0),
        last_seen: at(0),
    }
}

fn with_id(mut f: Finding) -> Finding {
    f.id = f.compute_id();
    f
}

pub fn request(id: &str, route: &str) -> Option<RequestRef> {
    Some(RequestRef {
        id: Some(id.into()),
        route: Some(route.into()),
        correlation: Some("comment".into()),
    })
}

pub fn n_plus_one() -> Finding {
    let mut f = base(
        FindingKind::NPlusOne,
        Severity::Error,
        "SELECT id, name, email FROM public.authors WHERE id = $1",
        Some("public.authors"),
        &["id"],
    );
    f.count = Some(48);
    f.occurrences = 12;
    f.request = request("req-7f3a", "GET /posts");
    f.parent = Some(ParentRef {
        fingerprint: "00000000c0ffee00".into(),
        query: "SELECT id, author_id, title FROM public.posts ORDER BY created_at DESC LIMIT $1"
            .into(),
    });
    f.rows = Some(RowStats { max: 1 });
    f.suggestion = Some(
        "Load all authors at once: SELECT id, name, email FROM public.authors WHERE id = ANY($1) \
         (Django: select_related('author'))"
            .into(),
    );
    f.last_seen = at(300);
    with_id(f)
}

pub fn repeated_query() -> Finding {
    let mut f = base(
        FindingKind::RepeatedQuery,
        Severity::Warning,
        "SELECT value FROM public.settings WHERE key = $1",
        Some("public.settings"),
        &["key"],
    );
    f.count = Some(9);
    f.occurrences = 30;
    f.request = Some(RequestRef {
        id: Some("tx-118".into()),
        route: None,
        correlation: Some("transaction".into()),
    });
    f.rows = Some(RowStats { max: 1 });
    f.suggestion = Some("Run it once per request and reuse the result, or cache it.".into());
    f.last_seen = at(240);
    with_id(f)
}

pub fn unindexed_filter() -> Finding {
    let mut f = base(
        FindingKind::UnindexedFilter,
        Severity::Warning,
        "SELECT o.id, o.total, o.status, o.created_at, c.name, c.email FROM public.orders AS o \
         JOIN public.customers AS c ON c.id = o.customer_id WHERE o.status = $1 AND o.created_at \
         >= $2 AND o.region = $3 AND o.channel = $4 AND o.total > $5 ORDER BY o.created_at DESC",
        Some("public.orders"),
        &["status", "created_at"],
    );
    f.occurrences = 210;
    f.suggestion = Some(
        "CREATE INDEX CONCURRENTLY orders_status_created_at_idx\n    ON public.orders (status, created_at);"
            .into(),
    );
    f.details
        .insert("verified".into(), serde_json::json!(false));
    f.details
        .insert("table_rows".into(), serde_json::json!(1_250_000));
    with_id(f)
}

pub fn unindexed_sort() -> Finding {
    let mut f = base(
        FindingKind::UnindexedSort,
        Severity::Info,
        "SELECT id, title FROM public.posts ORDER BY published_at DESC LIMIT $1",
        Some("public.posts"),
        &["published_at"],
    );
    f.occurrences = 5;
    f.suggestion = Some(
        "CREATE INDEX CONCURRENTLY posts_published_at_idx ON public.posts (published_at DESC);"
            .into(),
    );
    with_id(f)
}

pub fn unbounded_select() -> Finding {
    let mut f = base(
        FindingKind::UnboundedSelect,
        Severity::Warning,
        "SELECT * FROM public.events WHERE account_id = $1",
        Some("public.events"),
        &[],
    );
    f.occurrences = 3;
    f.request = request("req-9b21", "GET /accounts/:id/events");
    f.rows = Some(RowStats { max: 84_000 });
    f.suggestion =
        Some("Add LIMIT and paginate by key (WHERE id > $2 ORDER BY id LIMIT 100).".into());
    with_id(f)
}

/// One finding of each kind.
pub fn one_of_each() -> Vec<Finding> {
    vec![
        n_plus_one(),
        repeated_query(),
        unindexed_filter(),
        unindexed_sort(),
        unbounded_select(),
    ]
}

pub fn non_sargable_filter() -> Finding {
    let mut f = base(
        FindingKind::NonSargableFilter,
        Severity::Warning,
        "SELECT id FROM public.accounts WHERE lower(email) = $1",
        Some("public.accounts"),
        &["email"],
    );
    f.occurrences = 12;
    f.suggestion = Some(
        "Index the expression the query filters on (its functions must be IMMUTABLE), or \
         compare email itself: CREATE INDEX CONCURRENTLY ON public.accounts ((lower(email)));"
            .into(),
    );
    f.details
        .insert("wrapper".into(), serde_json::json!("function"));
    with_id(f)
}

pub fn offset_pagination() -> Finding {
    let mut f = base(
        FindingKind::OffsetPagination,
        Severity::Warning,
        "SELECT id, title FROM public.posts ORDER BY id LIMIT $1 OFFSET $2",
        Some("public.posts"),
        &["id"],
    );
    f.occurrences = 4;
    f.suggestion = Some(
        "Every page reads and discards the rows its OFFSET skips. Paginate by keyset on \
         public.posts: remember the last row's values and ask for the next page with WHERE id > \
         $last_id ORDER BY id LIMIT n, which an index on (id) serves without reading the skipped \
         rows."
            .into(),
    );
    f.details
        .insert("max_offset".into(), serde_json::json!(1000));
    with_id(f)
}

pub fn unindexed_foreign_key() -> Finding {
    let mut f = base(
        FindingKind::UnindexedForeignKey,
        Severity::Error,
        "DELETE FROM public.customers WHERE id = $1",
        Some("public.orders"),
        &["customer_id"],
    );
    f.suggestion = Some("CREATE INDEX CONCURRENTLY ON public.orders (customer_id);".into());
    f.details
        .insert("exercised_by".into(), serde_json::json!("delete"));
    with_id(f)
}

/// One finding of each kind read from statements and the catalog beyond
/// the first five (kept out of [`one_of_each`], which the snapshots pin).
pub fn sql_kinds() -> Vec<Finding> {
    vec![
        non_sargable_filter(),
        offset_pagination(),
        unindexed_foreign_key(),
    ]
}

/// A coverage summary that warns on every count: no catalog, dropped
/// events, statements not analysed, few correlated queries, findings the store lost.
pub fn poor_summary() -> Summary {
    Summary {
        queries: 1200,
        fingerprints: 85,
        requests: 40,
        correlated_fraction: 0.35,
        parse_failures: 3,
        dropped_events: 17,
        verifications_skipped: 5,
        catalog: "unavailable".into(),
        findings_lost: 12,
        statements_not_analysed: 250,
    }
}

/// The fixed report the snapshots pin.
pub fn fixed_report() -> Report {
    let mut report = Report {
        runs: vec![RunMeta {
            id: 3,
            started_at: at(-60),
            ended_at: Some(at(600)),
            instance: "ci-runner-1:6432".into(),
            host: "ci-runner-1".into(),
            pid: 4242,
            version: "0.1.0".into(),
            summary: poor_summary(),
        }],
        summary: poor_summary(),
        findings: one_of_each(),
    };
    report.sort_findings();
    report
}
