//! What `GET /api/live` returns: one JSON document the page renders whole.
//!
//! Bounded: at most [`MAX_SHOWN_FINDINGS`] findings, [`MAX_ROWS`]
//! fingerprints and routes, and SQL and other client-supplied text cut to
//! [`MAX_TEXT_CHARS`]. It carries normalized SQL only (placeholders, never
//! parameters), like the findings store.

use std::time::SystemTime;

use bytes::Bytes;
use qproxy_analyzer::finding::{Finding, Summary};
use qproxy_analyzer::pipeline::live::{FingerprintTotal, LiveTally, RouteFigures, RouteKey};
use qproxy_analyzer::report::{coverage_warnings, finding_sentence, kind_heading};
use serde::Serialize;

/// Findings in one snapshot, worst first.
pub const MAX_SHOWN_FINDINGS: usize = 200;
/// Fingerprints, and routes, in one snapshot.
pub const MAX_ROWS: usize = 25;
/// Longest text (SQL, suggestion, request id, route) in characters; longer
/// ones are cut and end in `…`.
pub const MAX_TEXT_CHARS: usize = 4_000;

/// The whole snapshot.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Format version of this document.
    pub version: u32,
    /// When it was built, in milliseconds since the Unix epoch.
    pub generated_at_ms: u64,
    /// Coverage so far.
    pub summary: Summary,
    /// Why the coverage is too poor to trust a clean result (as reports say).
    pub warnings: Vec<String>,
    /// Findings, worst first.
    pub findings: Vec<LiveFinding>,
    /// Distinct findings the proxy holds for the view (more than
    /// `findings` when the snapshot is cut).
    pub findings_held: usize,
    /// Fingerprints by total time, most first.
    pub fingerprints: Vec<FingerprintRow>,
    /// Routes by requests, most first.
    pub routes: Vec<RouteRow>,
}

/// One finding as the page shows it.
#[derive(Debug, Serialize)]
pub struct LiveFinding {
    /// Stable finding id.
    pub id: String,
    /// Kind name (`n_plus_one`, ...).
    pub kind: &'static str,
    /// The kind explained in a line.
    pub heading: &'static str,
    /// `info`, `warning` or `error`.
    pub severity: &'static str,
    /// One sentence saying what it is.
    pub sentence: String,
    /// Fingerprint of the statement.
    pub fingerprint: String,
    /// Normalized SQL.
    pub query: String,
    /// Table, when one.
    pub table: Option<String>,
    /// Columns involved.
    pub columns: Vec<String>,
    /// Worst per-request count (meaning per kind, as in reports).
    pub count: Option<u64>,
    /// Sightings.
    pub occurrences: u64,
    /// Request id of the worst sighting. (A link to the trace, once a
    /// `--trace-url` setting exists, belongs next to it: built here, http(s)
    /// only, and set by the page as an `<a>`'s `href`.)
    pub request_id: Option<String>,
    /// Its route.
    pub route: Option<String>,
    /// How its request was formed (`comment`, `transaction`, ...).
    pub correlation: Option<String>,
    /// The N+1 parent.
    pub parent: Option<LiveParent>,
    /// Most rows one execution returned.
    pub rows_max: Option<u64>,
    /// What to do about it.
    pub suggestion: Option<String>,
    /// The hypopg verdict on a suggested index, in words.
    pub hypopg: Option<String>,
    /// First sighting, milliseconds since the Unix epoch.
    pub first_seen_ms: i64,
    /// Latest sighting, milliseconds since the Unix epoch.
    pub last_seen_ms: i64,
}

/// An N+1's parent query.
#[derive(Debug, Serialize)]
pub struct LiveParent {
    /// Its fingerprint.
    pub fingerprint: String,
    /// Its normalized SQL.
    pub query: String,
}

/// A fingerprint and its time.
#[derive(Debug, Serialize)]
pub struct FingerprintRow {
    /// 16 hex digits.
    pub fingerprint: String,
    /// Normalized SQL.
    pub query: String,
    /// Statement kind (`select`, ...).
    pub kind: String,
    /// Executions.
    pub calls: u64,
    /// Their total time in milliseconds.
    pub total_ms: f64,
    /// Mean time per call in milliseconds.
    pub mean_ms: f64,
}

/// Statements per request of one route.
#[derive(Debug, Serialize)]
pub struct RouteRow {
    /// The route; `None` for the pooled rows `group` names.
    pub route: Option<String>,
    /// `route`, `no_route` (requests without one) or `other_routes`
    /// (routes past the proxy's cap, pooled).
    pub group: &'static str,
    /// Requests ended.
    pub requests: u64,
    /// Median statements per request over the route's recent requests.
    pub median_statements: u64,
    /// Most statements one request ran.
    pub max_statements: u64,
}

/// Builds a snapshot; `findings` are already in the order to show.
pub fn build(
    summary: &Summary,
    findings: Vec<&Finding>,
    findings_held: usize,
    tally: Option<&LiveTally>,
) -> Snapshot {
    let generated_at_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Snapshot {
        version: 1,
        generated_at_ms,
        summary: summary.clone(),
        warnings: coverage_warnings(summary),
        findings: findings.into_iter().map(live_finding).collect(),
        findings_held,
        fingerprints: tally
            .map(|t| t.top_fingerprints(MAX_ROWS))
            .unwrap_or_default()
            .iter()
            .map(fingerprint_row)
            .collect(),
        routes: tally
            .map(|t| t.top_routes(MAX_ROWS))
            .unwrap_or_default()
            .into_iter()
            .map(route_row)
            .collect(),
    }
}

/// The snapshot as JSON bytes.
pub fn to_json(snapshot: &Snapshot) -> Bytes {
    // Plain structs of strings and numbers always serialize.
    Bytes::from(serde_json::to_vec(snapshot).unwrap_or_default())
}

fn live_finding(f: &Finding) -> LiveFinding {
    let request = f.request.as_ref();
    LiveFinding {
        id: f.id.clone(),
        kind: f.kind.as_str(),
        heading: kind_heading(f.kind),
        severity: f.severity.as_str(),
        sentence: cut(&finding_sentence(f)),
        fingerprint: f.fingerprint.clone(),
        query: cut(&f.query),
        table: f.table.as_deref().map(cut),
        columns: f.columns.iter().take(32).map(|c| cut(c)).collect(),
        count: f.count,
        occurrences: f.occurrences,
        request_id: request.and_then(|r| r.id.as_deref()).map(cut),
        route: request.and_then(|r| r.route.as_deref()).map(cut),
        correlation: request.and_then(|r| r.correlation.clone()),
        parent: f.parent.as_ref().map(|p| LiveParent {
            fingerprint: p.fingerprint.clone(),
            query: cut(&p.query),
        }),
        rows_max: f.rows.map(|r| r.max),
        suggestion: f.suggestion.as_deref().map(cut),
        hypopg: f.details.get("hypopg").map(hypopg_verdict),
        first_seen_ms: millis(f.first_seen),
        last_seen_ms: millis(f.last_seen),
    }
}

fn millis(t: impl Into<SystemTime>) -> i64 {
    match t.into().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// `details.hypopg` in words: the estimated costs with and without the
/// suggested index and whether the planner used it, or why it was not
/// checked.
fn hypopg_verdict(h: &serde_json::Value) -> String {
    if h.get("verified").and_then(|v| v.as_bool()) != Some(true) {
        let reason = h
            .get("reason")
            .and_then(|v| v.as_str())
            .unwrap_or("no reason given");
        return cut(&format!("not verified with hypopg: {reason}"));
    }
    let cost = |k: &str| h.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let uses = h.get("uses_index").and_then(|v| v.as_bool()) == Some(true);
    format!(
        "verified with hypopg: estimated cost {:.2} without the index, {:.2} with it; the planner {} it",
        cost("cost_before"),
        cost("cost_after"),
        if uses { "uses" } else { "does not use" }
    )
}

fn fingerprint_row(t: &FingerprintTotal) -> FingerprintRow {
    FingerprintRow {
        fingerprint: t.fingerprint.to_string(),
        query: cut(&t.normalized),
        kind: serde_json::to_value(t.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        calls: t.calls,
        total_ms: t.total.as_secs_f64() * 1_000.0,
        mean_ms: t.mean().as_secs_f64() * 1_000.0,
    }
}

fn route_row(r: RouteFigures) -> RouteRow {
    let (route, group) = match r.route {
        RouteKey::Named(name) => (Some(cut(&name)), "route"),
        RouteKey::Unnamed => (None, "no_route"),
        RouteKey::Overflow => (None, "other_routes"),
    };
    RouteRow {
        route,
        group,
        requests: r.requests,
        median_statements: r.median,
        max_statements: r.max,
    }
}

/// A copy of `f` with its long texts cut as a snapshot would cut them, so
/// the findings the live view holds stay small whatever the SQL.
pub fn trimmed(f: &Finding) -> Finding {
    let mut f = f.clone();
    f.query = cut(&f.query);
    f.suggestion = f.suggestion.as_deref().map(cut);
    if let Some(p) = &mut f.parent {
        p.query = cut(&p.query);
    }
    f
}

/// `s` cut to [`MAX_TEXT_CHARS`] characters.
fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_TEXT_CHARS) {
        None => s.to_string(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use qproxy_analyzer::finding::{FindingKind, ParentRef, RequestRef, Severity};
    use qproxy_analyzer::fingerprint::{FingerprintId, StatementKind};
    use serde_json::json;

    use super::*;
    use crate::admin::live::tests::finding;

    #[test]
    fn a_finding_carries_what_the_page_expands() {
        let mut f = finding("a", FindingKind::UnindexedFilter, Severity::Warning);
        f.request = Some(RequestRef {
            id: Some("<img src=x onerror=alert(1)>".into()),
            route: Some("posts#index".into()),
            correlation: Some("comment".into()),
        });
        f.parent = Some(ParentRef {
            fingerprint: "00000000000000bb".into(),
            query: "SELECT id FROM posts".into(),
        });
        f.details.insert(
            "hypopg".into(),
            json!({"verified": true, "cost_before": 1693.0, "cost_after": 8.29, "uses_index": true}),
        );
        let shown = live_finding(&f);
        assert_eq!(shown.kind, "unindexed_filter");
        assert_eq!(shown.severity, "warning");
        assert!(shown.sentence.starts_with("Unindexed filter"));
        // Client-supplied text goes out as data; the page never parses it as markup.
        assert_eq!(
            shown.request_id.as_deref(),
            Some("<img src=x onerror=alert(1)>")
        );
        assert_eq!(shown.parent.unwrap().query, "SELECT id FROM posts");
        assert_eq!(
            shown.hypopg.as_deref(),
            Some("verified with hypopg: estimated cost 1693.00 without the index, 8.29 with it; the planner uses it")
        );
        assert_eq!(shown.first_seen_ms, 1_000);
        let unverified = json!({"verified": false, "reason": "hypopg is not installed"});
        assert_eq!(
            hypopg_verdict(&unverified),
            "not verified with hypopg: hypopg is not installed"
        );
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT_CHARS + 5);
        let shown = cut(&long);
        assert_eq!(shown.chars().count(), MAX_TEXT_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(cut("short"), "short");
        let mut f = finding("a", FindingKind::NPlusOne, Severity::Warning);
        f.query = long.clone();
        f.suggestion = Some(long.clone());
        f.parent = Some(ParentRef {
            fingerprint: "00000000000000bb".into(),
            query: long,
        });
        let held = trimmed(&f);
        assert_eq!(held.query.chars().count(), MAX_TEXT_CHARS + 1);
        assert_eq!(held.suggestion.unwrap().chars().count(), MAX_TEXT_CHARS + 1);
        assert_eq!(
            held.parent.unwrap().query.chars().count(),
            MAX_TEXT_CHARS + 1
        );
        assert_eq!(held.id, f.id);
    }

    #[test]
    fn the_snapshot_has_coverage_fingerprints_and_routes() {
        let mut tally = LiveTally::default();
        let sql: Arc<str> = Arc::from("SELECT * FROM posts WHERE id = $1");
        for _ in 0..4 {
            tally.record_execution(
                FingerprintId(0xab),
                &sql,
                StatementKind::Select,
                Duration::from_micros(1500),
            );
        }
        let route: Arc<str> = Arc::from("posts#index");
        tally.record_request(Some(&route), 7);
        tally.record_request(None, 1);
        let summary = Summary {
            queries: 5,
            catalog: "unavailable".into(),
            ..Summary::default()
        };
        let f = finding("a", FindingKind::NPlusOne, Severity::Warning);
        let json = serde_json::to_value(build(&summary, vec![&f], 3, Some(&tally))).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["summary"]["queries"], 5);
        assert!(json["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("catalog unavailable"));
        assert_eq!(json["findings_held"], 3);
        assert_eq!(json["findings"][0]["kind"], "n_plus_one");
        let fp = &json["fingerprints"][0];
        assert_eq!(fp["fingerprint"], "00000000000000ab");
        assert_eq!(
            (fp["calls"].as_u64(), fp["kind"].as_str()),
            (Some(4), Some("select"))
        );
        assert!((fp["total_ms"].as_f64().unwrap() - 6.0).abs() < 1e-9);
        assert!((fp["mean_ms"].as_f64().unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(
            json["routes"],
            json!([
                {"route": "posts#index", "group": "route", "requests": 1,
                 "median_statements": 7, "max_statements": 7},
                {"route": null, "group": "no_route", "requests": 1,
                 "median_statements": 1, "max_statements": 1},
            ])
        );
    }
}
