//! `--format sarif`: SARIF 2.1.0, for code-scanning dashboards.
//!
//! One run; one rule per finding kind (rule id = kind name, so a
//! dashboard's filters read like `--fail-on`); one result per finding.
//! The finding id, stable across runs, is both the partial fingerprint and
//! the full fingerprint, so a dashboard keeps a finding's triage from one
//! run to the next. Findings come from traffic, not from a source file, so
//! a result's location is logical: the table (or, with no single table,
//! the query fingerprint); when the statement's tags said where it was
//! issued (Rails `source_location`, OpenTelemetry `code.filepath`), the
//! location is also physical, the file (relative to the repository root,
//! `%SRCROOT%`) and line, which is what code-scanning UIs annotate. The
//! per-route figures ride along in the run's `properties.routes`; their
//! regressions are results like any finding. Coverage warnings become tool execution
//! notifications, where SARIF puts "the tool could not see everything".
//! Code-scanning UIs show the texts to people, so they are rendered from
//! [`escaped_report`], like the other human-facing formats.

use serde_json::{json, Value};

use super::escape::escaped_report;
use super::{coverage_warnings, finding_sentence, kind_heading, RenderOptions, Report};
use crate::finding::{Finding, FindingKind, Severity, SOURCE_KEY, TRACE_ID_KEY};
use crate::source::SourceLocation;

/// The schema `$schema` points at.
pub const SCHEMA_URI: &str = "https://json.schemastore.org/sarif-2.1.0.json";
/// The `informationUri` of the tool; kept equal to the workspace's
/// `repository` key (a test checks).
pub const INFORMATION_URI: &str = "https://example.invalid/qproxy";
/// The key under `partialFingerprints` and `fingerprints`; the `/v1`
/// changes if the id's recipe ever does.
pub const FINGERPRINT_KEY: &str = "qproxyFindingId/v1";

/// Renders `report` as a pretty-printed SARIF 2.1.0 log, ending in a
/// newline. Results keep the report's order.
pub fn render_sarif(report: &Report, options: &RenderOptions) -> String {
    let report = &escaped_report(report);
    let version = report
        .runs
        .last()
        .map_or(env!("CARGO_PKG_VERSION"), |r| r.version.as_str());
    let rules: Vec<Value> = FindingKind::ALL.into_iter().map(rule).collect();
    let results: Vec<Value> = report.findings.iter().map(result).collect();
    let notifications: Vec<Value> = coverage_warnings(&report.summary)
        .into_iter()
        .map(|w| json!({"level": "warning", "message": {"text": w}}))
        .collect();
    let doc = json!({
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "qproxy",
                "version": version,
                "informationUri": INFORMATION_URI,
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": true,
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
            "properties": {
                "summary": report.summary,
                "runIds": report.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
                "baselined": options.baselined,
                "routes": report.routes,
            },
        }],
    });
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| {
        json!({"version": "2.1.0", "runs": [], "error": e.to_string()}).to_string()
    });
    out.push('\n');
    out
}

/// SARIF's three result levels; `info` is a `note`.
fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// The level a kind's findings usually get (detectors may raise or lower
/// it per finding; a result's own `level` wins).
fn default_level(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::UnindexedSort => "note",
        _ => "warning",
    }
}

/// Why a kind matters and what to do, for the rule's full description and
/// help.
fn rule_help(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::NPlusOne => {
            "One query shape ran once per row of a parent query's result within a single request. \
             Each execution pays a round trip, so latency grows with the data. Load the rows in \
             one query (WHERE id = ANY($1), a join, or the ORM's eager loading)."
        }
        FindingKind::RepeatedQuery => {
            "The same query with the same parameters ran several times within one request. Run it \
             once and reuse the result, or cache it for the request."
        }
        FindingKind::UnindexedFilter => {
            "A WHERE or JOIN predicate on a large table is served by no index, so PostgreSQL scans \
             the table. Add the suggested index (the suggestion says whether hypopg confirmed the \
             planner would use it)."
        }
        FindingKind::UnindexedSort => {
            "An ORDER BY on a large table is served by no index, so PostgreSQL sorts every \
             matching row. An index in the sort order lets it read rows already ordered."
        }
        FindingKind::UnboundedSelect => {
            "A SELECT without LIMIT returned many rows. Paginate by key or add a LIMIT, so the \
             result cannot grow with the table."
        }
        FindingKind::NPlusOneWrite => {
            "One INSERT, UPDATE or DELETE shape ran once per row within a single request, each \
             execution changing one row and waiting for the previous reply. Write the rows in \
             one statement (a multi-row INSERT, COPY, UPDATE ... FROM (VALUES ...), DELETE ... \
             WHERE id = ANY($1)) or with the ORM's bulk API (bulk_create/bulk_update, \
             insert_all/upsert_all, executemany)."
        }
        FindingKind::SlowQuery => {
            "A query's executions take longer than the latency threshold (p95 over at least a \
             few executions, or one very slow execution). EXPLAIN (ANALYZE, BUFFERS) it with real \
             parameters to find the scan, sort or lock wait that costs the time."
        }
        FindingKind::TooManyQueries => {
            "One request ran more statements than the query budget allows. Every statement is a \
             round trip: batch lookups and writes, load relations eagerly, and cache what does \
             not change per request. The finding lists the request's most frequent shapes."
        }
        FindingKind::IdleInTransaction => {
            "A request kept a transaction open while the application sent nothing (an HTTP call, \
             a file upload, a sleep), holding its snapshot and any locks it took. Do slow work \
             before BEGIN or after COMMIT, and set idle_in_transaction_session_timeout."
        }
        FindingKind::NonSargableFilter => {
            "A predicate applies a function, a cast or arithmetic to an indexed column, or \
             matches it with a leading-wildcard LIKE, so the column's index cannot serve it and \
             PostgreSQL scans the large table. Compare the bare column (a range instead of a \
             cast to date, the arithmetic moved to the value side), or add an expression or \
             trigram index as suggested."
        }
        FindingKind::OffsetPagination => {
            "A page is fetched with a large OFFSET on a large table: PostgreSQL reads and \
             discards every skipped row, so each page costs more than the one before. Paginate \
             by keyset instead: remember the last row's sort key and ask for the rows after it."
        }
        FindingKind::UnindexedForeignKey => {
            "A foreign key's referencing columns lead no index on a large table, and the traffic \
             deletes or re-keys referenced rows (each makes PostgreSQL scan the referencing \
             table) or joins on the key. Index the referencing columns."
        }
        FindingKind::QueryCountRegression => {
            "A route's requests run more statements than in the baseline: the median per \
             request grew beyond the tolerance (by default more than 1.5 times and by at least \
             5). The result names the shapes that now run more often per request, usually a new \
             loop that queries once per item: batch it or load eagerly. If the growth is \
             intended, write a new baseline."
        }
    }
}

fn rule(kind: FindingKind) -> Value {
    json!({
        "id": kind.as_str(),
        "name": kind.as_str(),
        "shortDescription": {"text": kind_heading(kind)},
        "fullDescription": {"text": rule_help(kind)},
        "help": {"text": rule_help(kind)},
        "defaultConfiguration": {"level": default_level(kind)},
    })
}

fn result(f: &Finding) -> Value {
    let mut message = finding_sentence(f);
    if let Some(s) = &f.suggestion {
        message.push_str(" Suggestion: ");
        message.push_str(s);
    }
    let route = f.request.as_ref().and_then(|r| r.route.as_ref());
    let (name, qualified) = match (&f.table, route) {
        (Some(t), _) => (t.clone(), format!("table {t}")),
        // A regression is about a route, whichever shape grew.
        (None, Some(r)) if f.kind == FindingKind::QueryCountRegression => {
            (r.clone(), format!("route {r}"))
        }
        (None, _) => (
            f.fingerprint.clone(),
            format!("fingerprint {}", f.fingerprint),
        ),
    };
    let rule_index = FindingKind::ALL
        .iter()
        .position(|k| *k == f.kind)
        .unwrap_or(0);
    let mut location = json!({
        "logicalLocations": [{
            "name": name,
            "fullyQualifiedName": qualified,
            "kind": "module",
        }],
    });
    let source = f.source();
    if let Some(physical) = source.as_ref().map(physical_location) {
        location["physicalLocation"] = physical;
    }
    let details: serde_json::Map<String, Value> = f
        .details
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), SOURCE_KEY | TRACE_ID_KEY))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    json!({
        "ruleId": f.kind.as_str(),
        "ruleIndex": rule_index,
        "level": level(f.severity),
        "message": {"text": message},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT_KEY: f.id},
        "fingerprints": {FINGERPRINT_KEY: f.id},
        "properties": {
            "severity": f.severity.as_str(),
            "count": f.count,
            "occurrences": f.occurrences,
            "table": f.table,
            "columns": f.columns,
            "fingerprint": f.fingerprint,
            "query": f.query,
            "database": f.database,
            "request": f.request,
            "parent": f.parent,
            "rows": f.rows,
            "suggestion": f.suggestion,
            "source": source,
            "traceId": f.trace_id(),
            "details": details,
            "firstSeen": super::timestamp(f.first_seen),
            "lastSeen": super::timestamp(f.last_seen),
        },
    })
}

/// A SARIF `physicalLocation` for a source location: the file as a URI
/// reference (relative paths against `%SRCROOT%`, the repository root a
/// code-scanning upload resolves them against) and, when known, its line.
fn physical_location(source: &SourceLocation) -> Value {
    let path = source.file.replace('\\', "/");
    let relative = !path.starts_with('/') && !path.contains("://");
    let path = path.trim_start_matches("./");
    let mut artifact = json!({"uri": uri_path(path)});
    if relative {
        artifact["uriBaseId"] = json!("%SRCROOT%");
    }
    let mut physical = json!({"artifactLocation": artifact});
    if let Some(line) = source.line {
        physical["region"] = json!({"startLine": line});
    }
    physical
}

/// A path as a URI reference: the characters a URI path cannot hold as
/// they are (spaces, `%`, `#`, `?`, non-ASCII) percent-encoded.
fn uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(file: &str, line: Option<u64>) -> SourceLocation {
        SourceLocation {
            file: file.into(),
            line,
            function: None,
        }
    }

    #[test]
    fn relative_files_resolve_against_the_source_root() {
        assert_eq!(
            physical_location(&loc("app/models/order.rb", Some(12))),
            json!({
                "artifactLocation": {"uri": "app/models/order.rb", "uriBaseId": "%SRCROOT%"},
                "region": {"startLine": 12},
            })
        );
        assert_eq!(
            physical_location(&loc("./src/a b#c.py", None)),
            json!({"artifactLocation": {"uri": "src/a%20b%23c.py", "uriBaseId": "%SRCROOT%"}})
        );
        assert_eq!(
            physical_location(&loc("/srv/app/x.rb", Some(1)))["artifactLocation"],
            json!({"uri": "/srv/app/x.rb"})
        );
        assert_eq!(
            physical_location(&loc("C:\\app\\é.rb", Some(1)))["artifactLocation"]["uri"],
            "C:/app/%C3%A9.rb"
        );
    }
}
