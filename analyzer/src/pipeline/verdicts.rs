//! Findings from the request and timing detectors (query budget, idle
//! transactions, slow queries, N+1 writes): each verdict becomes a
//! [`Finding`] with its typed details, its own severity and a suggestion.

use std::time::SystemTime;

use time::OffsetDateTime;

use super::suggest;
use crate::correlation::{Confidence, CorrelationSource, LabelKey, RequestInfo};
use crate::detect::idle_in_transaction::{IdleGap, RequestLabels};
use crate::detect::n_plus_one::Detection;
use crate::detect::n_plus_one_write::NPlusOneWriteDetails;
use crate::detect::slow_query::SlowQuery;
use crate::detect::too_many_queries::OverBudget;
use crate::finding::{details_map, finding_id, Finding, FindingKind, RequestRef, Severity};

/// How a finding names the request it was seen in.
pub(super) fn request_ref(request: &RequestInfo) -> RequestRef {
    RequestRef {
        id: Some(
            request
                .request_id
                .as_deref()
                .or(request.trace_id.as_deref())
                .map(str::to_string)
                .unwrap_or_else(|| request.id.to_string()),
        ),
        route: request.route.as_deref().map(str::to_string),
        correlation: Some(request.source.as_str().to_string()),
    }
}

/// The framework or driver the request's tags name (Rails' marginalia
/// `controller#action` routes say Rails), for ORM idioms.
pub(super) fn framework_of(request: &RequestInfo) -> Option<&str> {
    request
        .labels
        .iter()
        .find(|(k, _)| matches!(k, LabelKey::Framework | LabelKey::DbDriver))
        .map(|(_, v)| v.as_ref())
        .or_else(|| {
            request
                .route
                .as_deref()
                .filter(|r| r.contains('#'))
                .map(|_| "rails")
        })
}

/// The request and its framework, as the idle detector keeps them.
pub(super) fn request_labels(request: &RequestInfo) -> RequestLabels {
    RequestLabels {
        request: request_ref(request),
        framework: framework_of(request).map(std::sync::Arc::from),
    }
}

/// What a finding from untagged traffic says about its grouping.
pub(super) fn grouping_note(request: &RequestInfo) -> Option<&'static str> {
    match (request.source, request.cut) {
        (s, _) if s.is_correlated() => None,
        (CorrelationSource::Transaction, false) => Some("untagged: grouped by transaction"),
        (CorrelationSource::Transaction, true) => Some(
            "untagged: grouped by transaction, one slice of a transaction cut at the fallback \
             bounds",
        ),
        (_, false) => Some("untagged: grouped by connection activity between idle gaps"),
        (_, true) => Some(
            "untagged: grouped by connection activity between idle gaps, one slice of a \
             connection that never went quiet, cut at the fallback bounds",
        ),
    }
}

/// Weighs a per-request finding by how far its request is known to be
/// one: `details.confidence` always, and for a low-confidence grouping
/// (idle gaps, or a group cut at the fallback bounds) a severity of at
/// most warning and a suggestion that says the grouping was a guess. A
/// guess is never rated as high as a request the application named.
pub(super) fn weigh_by_grouping(
    request: &RequestInfo,
    severity: &mut Severity,
    details: &mut serde_json::Map<String, serde_json::Value>,
    suggestion: &mut String,
) {
    let confidence = request.confidence();
    details.insert("confidence".into(), confidence.as_str().into());
    if confidence != Confidence::Low {
        return;
    }
    *severity = (*severity).min(Severity::Warning);
    let how = match request.source {
        CorrelationSource::Transaction => {
            "grouped by transaction and cut at the fallback bounds ([analyzer.correlation] \
             fallback_max_statements, fallback_max_duration), not by a request tag"
        }
        _ if request.cut => {
            "grouped by idle gaps and cut at the fallback bounds ([analyzer.correlation] \
             fallback_max_statements, fallback_max_duration), not by a request tag"
        }
        _ => "grouped by idle gaps, not by a request tag",
    };
    suggestion.push_str(&format!(
        " Low confidence: these executions were {how}, so they may belong to several requests \
         or to a job's loop. Tag requests (a sqlcommenter comment or SET qproxy.request_id) to \
         have them judged per request."
    ));
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

/// The details of an N+1 write verdict.
pub(super) fn write_details(d: &Detection, request: &RequestInfo) -> NPlusOneWriteDetails {
    let parent_evidence = match &d.parent {
        Some(p) => format!(
            "{} of {} checked executions used values this query returned",
            p.matched, p.checked
        ),
        None => "no earlier query in the request returned the parameter values these \
                 executions used"
            .to_string(),
    };
    let mut details = NPlusOneWriteDetails {
        statement: serde_json::to_value(d.statement)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        distinct_parameters: d.distinct,
        round_trips: 0,
        pipelined_executions: 0,
        set_based_executions: 0,
        total_duration_ms: (d.total_duration.as_secs_f64() * 1_000_000.0).round() / 1000.0,
        parent_evidence,
        grouping: grouping_note(request).map(str::to_string),
    };
    if let Some(w) = &d.writes {
        details.counts(w);
    }
    details
}

/// A request over its query budget. One finding per route: the route is
/// what runs too many statements, whichever shape dominates.
pub(super) fn budget_finding(
    over: &OverBudget,
    request: &RequestInfo,
    started_at: SystemTime,
    ended_at: SystemTime,
) -> Finding {
    let request_ref = request_ref(request);
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
        framework_of(request),
    );
    let mut details = details_map(&over.details);
    if let Some(note) = grouping_note(request) {
        details.insert("grouping".into(), note.into());
    }
    let mut severity = over.severity;
    weigh_by_grouping(request, &mut severity, &mut details, &mut suggestion);
    Finding {
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
    }
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
    Finding {
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
    }
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
