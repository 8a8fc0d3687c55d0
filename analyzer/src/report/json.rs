//! `--format json`: DESIGN's JSON report, version 1.
//!
//! The output is built from dedicated structs rather than by serializing
//! [`Finding`] directly, so the published schema (key order, `null` for
//! fields that do not apply, `details` always present) cannot drift when
//! the in-memory type grows. Strings are exact (a machine reads them);
//! control and bidi characters in them are JSON escapes, never raw
//! ([`json_invisibles`]).

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

use super::escape::json_invisibles;
use super::{Report, RunMeta};
use crate::finding::{Finding, FindingKind, ParentRef, RequestRef, RowStats, Severity, Summary};

/// The schema version in the output's `version` key. Fields may be added
/// without changing it; removing or renaming one would bump it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct JsonReport<'a> {
    version: u32,
    summary: &'a Summary,
    runs: Vec<JsonRun<'a>>,
    findings: Vec<JsonFinding<'a>>,
}

/// One run the report covers: which proxy, when, and its own coverage.
#[derive(Serialize)]
struct JsonRun<'a> {
    id: i64,
    instance: &'a str,
    host: &'a str,
    pid: u32,
    version: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    ended_at: Option<OffsetDateTime>,
    summary: &'a Summary,
}

impl<'a> From<&'a RunMeta> for JsonRun<'a> {
    fn from(r: &'a RunMeta) -> JsonRun<'a> {
        JsonRun {
            id: r.id,
            instance: &r.instance,
            host: &r.host,
            pid: r.pid,
            version: &r.version,
            started_at: r.started_at,
            ended_at: r.ended_at,
            summary: &r.summary,
        }
    }
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    id: &'a str,
    kind: FindingKind,
    severity: Severity,
    fingerprint: &'a str,
    query: &'a str,
    table: Option<&'a str>,
    columns: &'a [String],
    count: Option<u64>,
    occurrences: u64,
    request: Option<&'a RequestRef>,
    parent: Option<&'a ParentRef>,
    rows: Option<RowStats>,
    suggestion: Option<&'a str>,
    database: Option<&'a str>,
    /// Sorted, so the key order is stable whatever map type serde_json uses.
    details: BTreeMap<&'a str, &'a serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_seen: OffsetDateTime,
}

impl<'a> From<&'a Finding> for JsonFinding<'a> {
    fn from(f: &'a Finding) -> JsonFinding<'a> {
        JsonFinding {
            id: &f.id,
            kind: f.kind,
            severity: f.severity,
            fingerprint: &f.fingerprint,
            query: &f.query,
            table: f.table.as_deref(),
            columns: &f.columns,
            count: f.count,
            occurrences: f.occurrences,
            request: f.request.as_ref(),
            parent: f.parent.as_ref(),
            rows: f.rows,
            suggestion: f.suggestion.as_deref(),
            database: f.database.as_deref(),
            details: f.details.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            first_seen: f.first_seen,
            last_seen: f.last_seen,
        }
    }
}

/// Renders `report` as pretty-printed JSON (`{"version":1,"summary":..,
/// "runs":[..],"findings":[..]}`) ending in a newline. Runs and findings
/// keep the report's order.
pub fn render_json(report: &Report) -> String {
    let doc = JsonReport {
        version: SCHEMA_VERSION,
        summary: &report.summary,
        runs: report.runs.iter().map(JsonRun::from).collect(),
        findings: report.findings.iter().map(JsonFinding::from).collect(),
    };
    // Serializing plain structs, strings and numbers into a String cannot
    // fail; the fallback keeps the "never panic" promise all the same.
    let out = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| {
        serde_json::json!({ "version": SCHEMA_VERSION, "error": e.to_string() }).to_string()
    });
    // The data stays exact; only its encoding keeps terminals safe.
    let mut out = json_invisibles(out);
    out.push('\n');
    out
}
