//! Typed verdicts of the detectors → the store's and reports' [`Finding`]:
//! the one place a finding is assembled. Each detector returns its own
//! verdict with typed details and its own severity rule; here they get
//! what only the pipeline knows: the stable id, the request, the
//! suggestion's wording, the statement's facts, and the times.

use std::sync::Arc;
use std::time::SystemTime;

use time::OffsetDateTime;

use super::facts::StatementFacts;
use super::{grouping, suggest};
use crate::correlation::RequestInfo;
use crate::detect::idle_in_transaction::IdleGap;
use crate::detect::n_plus_one::Detection;
use crate::detect::slow_query::SlowQuery;
use crate::detect::too_many_queries::OverBudget;
use crate::detect::unbounded::UnboundedSelect;
use crate::detect::unindexed::{offset_severity, UnindexedIssue, Verification};
use crate::finding::{
    details_map, finding_id, Finding, FindingKind, ParentRef, RequestRef, RowStats, Severity,
};
use crate::fingerprint::Fingerprint;
use crate::source::SourceLocation;

/// A per-request shape verdict (`n_plus_one`, `repeated_query`,
/// `n_plus_one_write`) of `request`; `facts`: its statement's, when known.
pub(super) fn detection_finding(
    d: &Detection,
    request: &RequestInfo,
    facts: Option<&StatementFacts>,
) -> Finding {
    let columns: Vec<String> = facts
        .map(|f| f.equality_columns.clone())
        .unwrap_or_default();
    let framework = grouping::framework_of(request);
    let mut suggestion = suggest::for_detection(d, &columns, framework);
    let route = request.route.as_deref().map(str::to_string);
    let fingerprint = d.fingerprint.to_string();
    let parent = d.parent.as_ref().map(|p| ParentRef {
        fingerprint: p.fingerprint.to_string(),
        query: p.normalized.to_string(),
    });
    // The id uses the table as the statement names it (stable whether or
    // not the catalog had qualified it yet); the name shown is
    // qualified at flush time (see `tables`).
    let written = facts.and_then(|f| f.table.as_deref());
    let table = written.map(str::to_string);
    let id = finding_id(
        d.kind,
        &fingerprint,
        written,
        &columns,
        route.as_deref(),
        parent.as_ref().map(|p| p.fingerprint.as_str()),
    );
    let mut severity = d.severity();
    let mut details = details_map(&d.details(grouping::grouping_note(request)));
    grouping::weigh_by_grouping(request, &mut severity, &mut details, &mut suggestion);
    let mut finding = Finding {
        id,
        kind: d.kind,
        severity,
        fingerprint,
        query: d.normalized.to_string(),
        table,
        columns,
        count: Some(d.count),
        occurrences: 1,
        request: Some(RequestRef {
            id: Some(
                request
                    .request_id
                    .as_deref()
                    .or(request.trace_id.as_deref())
                    .map(str::to_string)
                    .unwrap_or_else(|| request.id.to_string()),
            ),
            route,
            correlation: Some(request.source.as_str().to_string()),
        }),
        parent,
        rows: Some(RowStats { max: d.rows_max }),
        suggestion: Some(suggestion),
        database: facts
            .and_then(|f| f.database.as_deref())
            .map(str::to_string),
        details,
        first_seen: to_offset(d.first_seen),
        last_seen: to_offset(d.last_seen),
    };
    if let Some(trace) = &request.trace_id {
        finding.set_trace_id(trace);
    }
    finding
}

/// Where one execution was issued and in which trace, when its tags said
/// so: an unbounded SELECT is about this very execution, not the shape's
/// latest.
pub(super) struct ExecutionOrigin<'a> {
    /// Its tags' source location.
    pub(super) source: Option<&'a SourceLocation>,
    /// The trace id of the request it ran in.
    pub(super) trace_id: Option<&'a str>,
}

/// An unbounded SELECT of `fp` that ran in `database` at `started_at`.
pub(super) fn unbounded_finding(
    verdict: &UnboundedSelect,
    fp: &Fingerprint,
    database: Option<&Arc<str>>,
    started_at: SystemTime,
    origin: Option<ExecutionOrigin<'_>>,
) -> Finding {
    // Qualified at flush time (see `tables`).
    let table = fp.tables.first().cloned();
    let fingerprint = fp.id.to_string();
    let at = to_offset(started_at);
    // The id uses the table as the statement names it, so it does not
    // change when the catalog (which qualifies the name) arrives.
    let mut finding = Finding {
        id: finding_id(
            FindingKind::UnboundedSelect,
            &fingerprint,
            fp.tables.first().map(String::as_str),
            &[],
            None,
            None,
        ),
        kind: FindingKind::UnboundedSelect,
        severity: verdict.severity,
        fingerprint,
        query: fp.normalized.to_string(),
        table,
        columns: Vec::new(),
        count: None,
        occurrences: 1,
        request: None,
        parent: None,
        rows: Some(RowStats { max: verdict.rows }),
        suggestion: Some(suggest::for_unbounded(verdict.rows)),
        database: database.map(|d| d.to_string()),
        details: details_map(&verdict.details),
        first_seen: at,
        last_seen: at,
    };
    if let Some(origin) = origin {
        if let Some(source) = origin.source {
            finding.set_source(source);
        }
        if let Some(trace) = origin.trace_id {
            finding.set_trace_id(trace);
        }
    }
    finding
}

/// The finding an index-advisor issue of a statement shape makes, before
/// any execution is counted (`occurrences` 0) or a hypopg verdict is
/// folded in.
pub(super) fn issue_template(
    issue: UnindexedIssue,
    fingerprint: &str,
    normalized: &str,
    database: &str,
    now: OffsetDateTime,
) -> Finding {
    Finding {
        id: finding_id(
            issue.kind,
            fingerprint,
            Some(&issue.table),
            &issue.columns,
            None,
            None,
        ),
        kind: issue.kind,
        severity: issue.severity,
        fingerprint: fingerprint.to_string(),
        query: normalized.to_string(),
        table: Some(issue.table),
        columns: issue.columns,
        count: None,
        occurrences: 0,
        request: None,
        parent: None,
        rows: None,
        suggestion: Some(issue.suggestion),
        database: Some(database.to_string()),
        details: issue.details,
        first_seen: now,
        last_seen: now,
    }
}

/// A request over its query budget. One finding per route: the route is
/// what runs too many statements, whichever shape dominates.
pub(super) fn budget_finding(
    over: &OverBudget,
    request: &RequestInfo,
    started_at: SystemTime,
    ended_at: SystemTime,
) -> Finding {
    let request_ref = grouping::request_ref(request);
    let id = finding_id(
        FindingKind::TooManyQueries,
        "",
        None,
        &[],
        request_ref.route.as_deref(),
        None,
    );
    let top = over.top.first();
    let mut suggestion = suggest::for_budget(
        over.statements,
        over.details.budget,
        top.map(|s| (s.count, s.normalized.as_ref())),
        grouping::framework_of(request),
    );
    let mut details = details_map(&over.details);
    if let Some(note) = grouping::grouping_note(request) {
        details.insert("grouping".into(), note.into());
    }
    let mut severity = over.severity;
    grouping::weigh_by_grouping(request, &mut severity, &mut details, &mut suggestion);
    let mut finding = Finding {
        id,
        kind: FindingKind::TooManyQueries,
        severity,
        fingerprint: top.map(|s| s.fingerprint.to_string()).unwrap_or_default(),
        query: top.map(|s| s.normalized.to_string()).unwrap_or_default(),
        table: None,
        columns: Vec::new(),
        count: Some(over.statements),
        occurrences: 1,
        request: Some(request_ref),
        parent: None,
        rows: None,
        suggestion: Some(suggestion),
        database: None,
        details,
        first_seen: to_offset(started_at),
        last_seen: to_offset(ended_at),
    };
    if let Some(trace) = &request.trace_id {
        finding.set_trace_id(trace);
    }
    finding
}

/// A transaction left idle. Identified by the statement before the gap
/// (where the application stopped) and the route.
pub(super) fn idle_finding(gap: &IdleGap) -> Finding {
    let fingerprint = gap.fingerprint.to_string();
    let route = gap
        .request
        .as_ref()
        .and_then(|r| r.request.route.as_deref());
    let id = finding_id(
        FindingKind::IdleInTransaction,
        &fingerprint,
        None,
        &[],
        route,
        None,
    );
    let idle = std::time::Duration::from_millis(gap.details.idle_ms);
    let framework = gap.request.as_ref().and_then(|r| r.framework.as_deref());
    let suggestion = suggest::for_idle(idle, gap.details.lock_statement.as_deref(), framework);
    let started = to_offset(gap.started_at);
    let ended = to_offset(gap.started_at.checked_add(idle).unwrap_or(gap.started_at));
    let mut finding = Finding {
        id,
        kind: FindingKind::IdleInTransaction,
        severity: gap.severity,
        fingerprint,
        query: gap.normalized.to_string(),
        table: None,
        columns: Vec::new(),
        count: Some(gap.details.idle_ms),
        occurrences: 1,
        request: gap.request.as_ref().map(|r| r.request.clone()),
        parent: None,
        rows: None,
        suggestion: Some(suggestion),
        database: None,
        details: details_map(&gap.details),
        first_seen: started,
        last_seen: ended,
    };
    if let Some(trace) = gap.request.as_ref().and_then(|r| r.trace_id.as_deref()) {
        finding.set_trace_id(trace);
    }
    finding
}

/// A slow fingerprint. `table` is its first table as the catalog
/// qualifies it; the id uses the table as written, like unbounded SELECTs.
pub(super) fn slow_finding(slow: &SlowQuery, table: Option<String>) -> Finding {
    let fingerprint = slow.fingerprint.to_string();
    let id = finding_id(
        FindingKind::SlowQuery,
        &fingerprint,
        slow.table.as_deref(),
        &[],
        None,
        None,
    );
    Finding {
        id,
        kind: FindingKind::SlowQuery,
        severity: slow.severity,
        fingerprint,
        query: slow.normalized.to_string(),
        table,
        columns: Vec::new(),
        count: Some(slow.details.count),
        occurrences: slow.new_slow_executions,
        request: None,
        parent: None,
        rows: None,
        suggestion: Some(suggest::for_slow(&slow.details)),
        database: slow.database.as_deref().map(str::to_string),
        details: details_map(&slow.details),
        first_seen: to_offset(slow.first_slow),
        last_seen: to_offset(slow.last_slow),
    }
}

/// A held-back suggestion whose hypopg verdict shows the planner would use
/// the index and it lowers the cost is reported after all, saying why.
pub(super) fn promote_if_proven(t: &mut Finding, withheld: &mut bool, verdict: &Verification) {
    let proven = verdict.improves() == Some(true);
    if *withheld && proven {
        *withheld = false;
        t.details.insert(
            "unselective_but_verified".into(),
            "column statistics call the filter unselective, but hypopg shows the planner uses \
             the index and it lowers the cost"
                .into(),
        );
    }
}

/// Folds a verdict into a finding's details (and severity).
pub(super) fn apply_verdict(t: &mut Finding, verdict: &Verification) {
    t.severity = verdict.weigh(t.severity);
    t.details.extend(verdict.to_details());
}

/// An `offset_pagination` finding as its counted executions left it: its
/// severity by the detector's rule ([`offset_severity`]) and the largest
/// OFFSET's order of magnitude (`details.max_offset`, see
/// [`OffsetPaginationDetails`](crate::detect::unindexed::OffsetPaginationDetails)).
pub(super) fn count_offsets(f: &mut Finding, magnitude: u64, worst: Option<Severity>) {
    f.severity = offset_severity(f.severity, worst);
    f.details.insert("max_offset".into(), magnitude.into());
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}
