//! Reports: what `qproxy report` prints, built from the findings store.
//!
//! A [`Report`] is plain data (runs, coverage summary, findings) so every
//! output format renders the same facts. Each format is a sibling module
//! with one `render` function; [`Format`] names them for the command line,
//! and [`render`] dispatches. Facts more than one format needs (coverage
//! warnings, kind headings, sort order) live here so the formats cannot
//! disagree about them.
//!
//! # Layout
//! - [`text`]: the terminal report (aligned, optional ANSI colour).
//! - [`json`]: DESIGN's JSON schema, version 1.
//! - [`markdown`]: a pull-request comment or CI job summary.
//! - [`sarif`]: SARIF 2.1.0 for code-scanning dashboards.
//! - [`junit`]: JUnit XML, gating findings as failures.
//! - [`html`]: one self-contained page with inline SVG charts.
//! - [`baseline`]: accepted finding ids, so `--fail-on` gates only new ones,
//!   and per-route figures, so `--baseline` can report query-count
//!   regressions.
//! - [`escape`]: client text made safe to print (terminal escapes, bidi
//!   controls); every human-facing format renders [`escape::escaped_report`].

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::detect::idle_in_transaction::IdleInTransactionDetails;
use crate::detect::n_plus_one_write::NPlusOneWriteDetails;
use crate::detect::slow_query::SlowQueryDetails;
use crate::detect::too_many_queries::TooManyQueriesDetails;
use crate::finding::{Finding, FindingKind, Summary};
use crate::routes::{trim, QueryCountRegressionDetails, RouteFigures};

pub mod baseline;
pub mod escape;
pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod sarif;
pub mod text;

/// One proxy run as the store recorded it, so a report can say which runs
/// it covers and whether they ended cleanly.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMeta {
    /// Store-assigned run id (what `--run ID` selects).
    pub id: i64,
    /// When the proxy started.
    pub started_at: OffsetDateTime,
    /// When the proxy shut down cleanly; `None` while it runs, or when it
    /// stopped without flushing (crash, kill -9).
    pub ended_at: Option<OffsetDateTime>,
    /// The proxy's instance name (`--instance`), to tell a fleet's
    /// proxies apart.
    pub instance: String,
    /// Host the proxy ran on, to tell sidecars sharing a store apart.
    pub host: String,
    /// Process id of the proxy.
    pub pid: u32,
    /// qproxy version, because detector rules change between releases.
    pub version: String,
    /// The run's own coverage counters.
    pub summary: Summary,
}

/// Everything a report format needs: which runs, how much was seen, and
/// what was found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// The runs the report covers, oldest first.
    pub runs: Vec<RunMeta>,
    /// Coverage combined over [`Report::runs`].
    pub summary: Summary,
    /// Findings merged over the runs, in [`report_order`].
    pub findings: Vec<Finding>,
    /// Statements per request by route, merged over the runs: most
    /// requests first, the `other` bucket last.
    pub routes: Vec<RouteFigures>,
}

impl Report {
    /// Sorts findings into [`report_order`], so every format lists the
    /// worst first and output is deterministic.
    pub fn sort_findings(&mut self) {
        self.findings.sort_by(report_order);
    }

    /// When the report's runs started and ended: the first start, and the
    /// last run's end (its start while it has not ended); now when there
    /// are no runs.
    pub fn time_span(&self) -> (OffsetDateTime, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let first = self.runs.first().map_or(now, |r| r.started_at);
        let last = self
            .runs
            .last()
            .map_or(now, |r| r.ended_at.unwrap_or(r.started_at));
        (first, last.max(first))
    }

    /// Findings whose kind is in `kinds`: what `--fail-on` gates on.
    pub fn gating<'a>(&'a self, kinds: &'a [FindingKind]) -> impl Iterator<Item = &'a Finding> {
        self.findings
            .iter()
            .filter(move |f| kinds.contains(&f.kind))
    }
}

/// The order findings are reported in: severity (worst first), kind,
/// per-request count (highest first), occurrences (most first), then id so
/// ties are stable across runs.
pub fn report_order(a: &Finding, b: &Finding) -> Ordering {
    b.severity
        .cmp(&a.severity)
        .then(a.kind.cmp(&b.kind))
        .then(b.count.cmp(&a.count))
        .then(b.occurrences.cmp(&a.occurrences))
        .then_with(|| a.id.cmp(&b.id))
}

/// A one-line, human explanation of a kind, used as its section heading.
pub fn kind_heading(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::NPlusOne => "N+1 queries: one query per row of a parent result",
        FindingKind::RepeatedQuery => "Repeated queries: same query and parameters in one request",
        FindingKind::UnindexedFilter => "Unindexed filters: predicates no index serves",
        FindingKind::UnindexedSort => "Unindexed sorts: ORDER BY no index serves",
        FindingKind::UnboundedSelect => "Unbounded SELECTs: no LIMIT, many rows returned",
        FindingKind::NPlusOneWrite => "N+1 writes: one single-row write per round trip",
        FindingKind::SlowQuery => "Slow queries: latency over the threshold",
        FindingKind::TooManyQueries => "Too many queries: requests over the statement budget",
        FindingKind::IdleInTransaction => {
            "Idle in transaction: a transaction held open while the application sent nothing"
        }
        FindingKind::NonSargableFilter => {
            "Non-sargable filters: a function, cast or wildcard hides an indexed column"
        }
        FindingKind::OffsetPagination => "Offset pagination: large OFFSETs on large tables",
        FindingKind::UnindexedForeignKey => {
            "Unindexed foreign keys: referencing columns no index leads with"
        }
        FindingKind::QueryCountRegression => {
            "Query count regressions: routes running more statements per request than the baseline"
        }
    }
}

/// Below this share of correlated queries, per-request findings rest
/// mostly on fallback grouping (transactions, idle gaps), so the report
/// says so.
pub const POOR_CORRELATION: f64 = 0.5;

/// Why a report's coverage is too poor to trust a clean result
/// (DESIGN non-negotiable 7). Every format shows these before findings.
pub fn coverage_warnings(summary: &Summary) -> Vec<String> {
    let mut warnings = Vec::new();
    if summary.findings_lost > 0 {
        let n = summary.findings_lost;
        warnings.push(format!(
            "{n} finding occurrence{} lost: the findings store could not be written for a while \
             (see the proxy's log and qproxy_findings_lost_total), so this report undercounts",
            if n == 1 { "" } else { "s" }
        ));
    }
    if summary.catalog != "available" {
        warnings.push(
            "catalog unavailable: unindexed_filter, unindexed_sort, non_sargable_filter, \
             offset_pagination and unindexed_foreign_key were not checked"
                .to_string(),
        );
    }
    if summary.dropped_events > 0 {
        warnings.push(format!(
            "{} events dropped: the analyzer queue was full, so some queries were not analysed",
            summary.dropped_events
        ));
    }
    if summary.statements_not_analysed > 0 {
        warnings.push(format!(
            "{} statements forwarded but not analysed: past the per-message statement cap \
             (--max-statements-per-message) or too large for the held-bytes budget \
             (--max-held-bytes)",
            summary.statements_not_analysed
        ));
    }
    if summary.queries > 0 && summary.correlated_fraction < POOR_CORRELATION {
        warnings.push(format!(
            "only {} of queries were correlated to a request: tag queries (sqlcommenter) \
             so N+1 and repeated-query detection sees real requests",
            percent(summary.correlated_fraction)
        ));
    }
    if summary.queries == 0 {
        warnings
            .push("no queries were analysed: is the application pointed at the proxy?".to_string());
    }
    warnings
}

/// One sentence saying what a finding is, in the words every format that
/// writes prose (markdown, SARIF messages, JUnit failures) shares.
pub fn finding_sentence(f: &Finding) -> String {
    let table = f.table.as_deref().unwrap_or("a query with no single table");
    let cols = if f.columns.is_empty() {
        String::new()
    } else {
        format!(" ({})", f.columns.join(", "))
    };
    let in_request = request_scope(f);
    match f.kind {
        FindingKind::NPlusOne => format!(
            "N+1: a query on {table} ran {} times {in_request}, once per row of its parent query.",
            f.count.unwrap_or(0)
        ),
        FindingKind::RepeatedQuery => format!(
            "Repeated query: the same query on {table} with the same parameters ran {} times {in_request}.",
            f.count.unwrap_or(0)
        ),
        FindingKind::UnindexedFilter => {
            format!("Unindexed filter: no index serves the predicate on {table}{cols}.")
        }
        FindingKind::UnindexedSort => {
            format!("Unindexed sort: no index serves the ORDER BY on {table}{cols}.")
        }
        FindingKind::UnboundedSelect => match f.rows {
            Some(r) => format!(
                "Unbounded SELECT: no LIMIT on {table}, up to {} rows returned.",
                r.max
            ),
            None => format!("Unbounded SELECT: no LIMIT on {table}."),
        },
        FindingKind::NPlusOneWrite => {
            let statement = details::<NPlusOneWriteDetails>(f)
                .map_or_else(|| "write".to_string(), |d| d.statement.to_uppercase());
            format!(
                "N+1 write: a single-row {statement} on {table} ran {} times {in_request}, one round trip per row.",
                f.count.unwrap_or(0)
            )
        }
        FindingKind::SlowQuery => match details::<SlowQueryDetails>(f) {
            Some(d) if d.reason == "single_execution" => format!(
                "Slow query on {table}: one execution took {} ms (p95 {} ms over {} executions).",
                d.max_ms, d.p95_ms, d.count
            ),
            Some(d) => format!(
                "Slow query on {table}: p95 {} ms over {} executions, over the {} ms threshold.",
                d.p95_ms, d.count, d.threshold_ms
            ),
            None => format!("Slow query on {table}."),
        },
        FindingKind::TooManyQueries => match details::<TooManyQueriesDetails>(f) {
            Some(d) => format!(
                "Too many queries: {} ran {} statements, over the budget of {}.",
                request_subject(in_request),
                d.statements,
                d.budget
            ),
            None => format!(
                "Too many queries: {} ran {} statements.",
                request_subject(in_request),
                f.count.unwrap_or(0)
            ),
        },
        FindingKind::IdleInTransaction => {
            let locks = match details::<IdleInTransactionDetails>(f) {
                Some(d) if d.locks_taken => ", holding locks",
                _ => "",
            };
            format!(
                "Idle in transaction: a transaction stayed open {} ms while the application sent nothing{locks}.",
                f.count.unwrap_or(0)
            )
        }
        FindingKind::NonSargableFilter => format!(
            "Non-sargable filter: a predicate on {table}{cols} wraps the indexed column, so its index cannot serve it."
        ),
        FindingKind::OffsetPagination => {
            match f.details.get("max_offset").and_then(|v| v.as_u64()) {
                Some(at_least) => format!(
                    "Offset pagination: pages of {table} skip {at_least}+ rows with OFFSET, reading and discarding each of them."
                ),
                None => format!(
                    "Offset pagination: pages of {table} skip many rows with OFFSET, reading and discarding each of them."
                ),
            }
        }
        FindingKind::UnindexedForeignKey => format!(
            "Unindexed foreign key: no index leads with the referencing columns on {table}{cols}, and the traffic exercises the key."
        ),
        FindingKind::QueryCountRegression => {
            let route = f
                .request
                .as_ref()
                .and_then(|r| r.route.as_deref())
                .unwrap_or("a route");
            match details::<QueryCountRegressionDetails>(f) {
                Some(d) => format!(
                    "Query count regression: {route} now runs {} statements per request (median), up from {} in the baseline.",
                    d.median_after, d.median_before
                ),
                None => format!(
                    "Query count regression: {route} now runs {} statements per request (median).",
                    f.count.unwrap_or(0)
                ),
            }
        }
    }
}

/// Where a per-request finding's executions ran, in words: "in one
/// request", unless its grouping was a guess (`details.confidence` is
/// `low`), which the sentence then says.
fn request_scope(f: &Finding) -> &'static str {
    if f.details.get("confidence").and_then(|v| v.as_str()) != Some("low") {
        return "in one request";
    }
    match f.request.as_ref().and_then(|r| r.correlation.as_deref()) {
        Some("transaction") => {
            "in one slice of a long untagged transaction (cut at the grouping bounds, not a \
             tagged request; low confidence)"
        }
        _ => {
            "in one group of untagged statements (grouped by idle gaps, not by a request tag; \
             low confidence)"
        }
    }
}

/// [`request_scope`] as the subject of a sentence: "one request", or what
/// the guess grouped.
fn request_subject(scope: &'static str) -> &'static str {
    scope.strip_prefix("in ").unwrap_or(scope)
}

/// A finding's typed details, when they parse as the kind's struct (a
/// store written by another qproxy version may hold others).
pub fn details<T: serde::de::DeserializeOwned>(f: &Finding) -> Option<T> {
    serde_json::from_value(serde_json::Value::Object(f.details.clone())).ok()
}

/// What a finding's `count` means, as a labelled fact every format shows:
/// executions per request for the N+1 kinds, statements for the query
/// budget, measured executions for slow queries, milliseconds for idle
/// transactions.
pub fn count_fact(f: &Finding) -> Option<(&'static str, String)> {
    let c = f.count?;
    Some(match f.kind {
        FindingKind::TooManyQueries => ("per request", format!("{c} statements (worst request)")),
        FindingKind::SlowQuery => ("executions", format!("{c} measured")),
        FindingKind::IdleInTransaction => ("idle", format!("{c} ms (longest)")),
        FindingKind::QueryCountRegression => ("per request", format!("{c} statements (median)")),
        _ => ("per request", format!("{c} executions (worst request)")),
    })
}

/// The evidence of the request and timing kinds, as labelled facts every
/// format shows (read from their typed details; other kinds have none).
pub fn kind_facts(f: &Finding) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    match f.kind {
        FindingKind::NPlusOneWrite => {
            if let Some(d) = details::<NPlusOneWriteDetails>(f) {
                facts.push((
                    "round trips",
                    format!(
                        "{} one-row round trips, {} distinct parameter sets ({} pipelined and {} \
                         set-based executions not counted)",
                        d.round_trips,
                        d.distinct_parameters,
                        d.pipelined_executions,
                        d.set_based_executions
                    ),
                ));
            }
        }
        FindingKind::SlowQuery => {
            if let Some(d) = details::<SlowQueryDetails>(f) {
                facts.push((
                    "timings",
                    format!(
                        "p50 {} ms, p95 {} ms, max {} ms, mean {} ms over {} executions ({} at or \
                         over {} ms)",
                        d.p50_ms,
                        d.p95_ms,
                        d.max_ms,
                        d.mean_ms,
                        d.count,
                        d.slow_count,
                        d.threshold_ms
                    ),
                ));
                let plan = match &d.plan {
                    Some(_) => format!("attached ({}; --format json has it)", d.plan_note),
                    None => d.plan_note,
                };
                facts.push(("plan", plan));
            }
        }
        FindingKind::TooManyQueries => {
            if let Some(d) = details::<TooManyQueriesDetails>(f) {
                facts.push((
                    "budget",
                    format!(
                        "{} statements, budget {}, {} distinct shapes",
                        d.statements, d.budget, d.distinct_shapes
                    ),
                ));
                for shape in &d.top_shapes {
                    facts.push((
                        "top shape",
                        format!("{} × {} {}", shape.count, shape.fingerprint, shape.query),
                    ));
                }
            }
        }
        FindingKind::IdleInTransaction => {
            if let Some(d) = details::<IdleInTransactionDetails>(f) {
                facts.push((
                    "locks",
                    match &d.lock_statement {
                        Some(what) => format!("taken before the gap ({what})"),
                        None => "none seen before the gap".to_string(),
                    },
                ));
                if d.transaction_failed {
                    facts.push((
                        "transaction",
                        "had already failed (only a rollback was possible)".to_string(),
                    ));
                }
                facts.push((
                    "ended by",
                    match &d.next_statement {
                        Some(next) => {
                            format!("the next statement, {} {}", next.fingerprint, next.query)
                        }
                        None => "the connection closing (the server rolled back)".to_string(),
                    },
                ));
            }
        }
        FindingKind::QueryCountRegression => {
            if let Some(d) = details::<QueryCountRegressionDetails>(f) {
                facts.push((
                    "statements",
                    format!(
                        "median {} → {}, max {} → {} per request ({}×; the tolerance is more \
                         than {}× and at least +{})",
                        d.median_before,
                        d.median_after,
                        d.max_before,
                        d.max_after,
                        trim(d.ratio),
                        trim(d.tolerance_ratio),
                        d.tolerance_min_increase
                    ),
                ));
                facts.push((
                    "requests",
                    format!(
                        "{} in the baseline, {} now",
                        d.requests_before, d.requests_after
                    ),
                ));
                for g in &d.grown_shapes {
                    facts.push((
                        "grew",
                        format!(
                            "{} → {} per request: {} {}",
                            trim(g.before),
                            trim(g.after),
                            g.fingerprint,
                            g.query
                        ),
                    ));
                }
            }
        }
        FindingKind::UnindexedFilter | FindingKind::UnindexedSort => {
            if let Some(verdict) = hypopg_verdict(f) {
                facts.push(("hypopg", verdict));
            }
        }
        _ => {}
    }
    facts
}

/// Routes listed in the text and markdown reports; the JSON, SARIF and
/// HTML reports list every route the store holds (bounded by the proxy's
/// route cap).
pub const ROUTES_SHOWN: usize = 25;

/// How a report names a route entry: the route, or `(other routes)` for
/// the bucket of the routes past the cap.
pub fn route_label(r: &RouteFigures) -> &str {
    if r.other {
        "(other routes)"
    } else {
        &r.route
    }
}

/// A route's busiest shape, as `2.5 per request: 0123456789abcdef`.
pub fn top_shape_label(r: &RouteFigures) -> String {
    r.shapes.first().map_or_else(
        || "-".to_string(),
        |s| format!("{} per request: {}", trim(s.per_request), s.fingerprint),
    )
}

/// What a finding with no table is about, when it is about a route (a
/// query-count regression): `route /orders`.
pub fn route_place(f: &Finding) -> Option<String> {
    if f.kind != FindingKind::QueryCountRegression {
        return None;
    }
    let route = f.request.as_ref()?.route.as_deref()?;
    Some(format!("route {route}"))
}

/// Where the offending statement was issued, as a labelled fact every
/// format shows (`app/models/order.rb:12 in Order.recent`), when a tag said.
pub fn source_fact(f: &Finding) -> Option<(&'static str, String)> {
    f.source().map(|s| ("source", s.to_string()))
}

/// A `--trace-url` template: a URL with `{trace_id}` where a finding's
/// trace id goes, so markdown and HTML reports link each finding to its
/// trace (`https://tempo.example/trace/{trace_id}`). Only http(s) URLs
/// without spaces, quotes or angle brackets are accepted, so the link is
/// safe in a markdown `<...>` destination and an HTML attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceUrl(String);

/// The placeholder a [`TraceUrl`] template must contain.
pub const TRACE_ID_PLACEHOLDER: &str = "{trace_id}";

/// A `--trace-url` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTraceUrl {
    /// No `{trace_id}` in it.
    #[error("--trace-url `{0}` has no {{trace_id}} placeholder (e.g. https://tempo.example/trace/{{trace_id}})")]
    NoPlaceholder(String),
    /// Not an http or https URL.
    #[error("--trace-url `{0}` is not an http:// or https:// URL")]
    Scheme(String),
    /// A character a link cannot hold as it is.
    #[error(
        "--trace-url `{0}` contains a space, a quote, an angle bracket or a control character"
    )]
    Character(String),
}

impl FromStr for TraceUrl {
    type Err = InvalidTraceUrl;

    fn from_str(s: &str) -> Result<TraceUrl, InvalidTraceUrl> {
        let lower = s.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(InvalidTraceUrl::Scheme(s.to_string()));
        }
        if s.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '`')
        }) {
            return Err(InvalidTraceUrl::Character(s.to_string()));
        }
        if !s.contains(TRACE_ID_PLACEHOLDER) {
            return Err(InvalidTraceUrl::NoPlaceholder(s.to_string()));
        }
        Ok(TraceUrl(s.to_string()))
    }
}

impl TraceUrl {
    /// The link to one trace: the template with every `{trace_id}`
    /// replaced. Trace ids are 32 hex digits; anything else a stored
    /// finding might hold is percent-encoded, so it cannot leave the URL.
    pub fn link(&self, trace_id: &str) -> String {
        let mut encoded = String::with_capacity(trace_id.len());
        for b in trace_id.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                encoded.push(char::from(b));
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        self.0.replace(TRACE_ID_PLACEHOLDER, &encoded)
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.0
    }
}

/// hypopg's verdict on an index suggestion, on one line:
/// `verified: cost 1234.5 → 8.3 (index used)` or `not verified: <reason>`;
/// `None` when the finding carries none.
pub fn hypopg_verdict(f: &Finding) -> Option<String> {
    let h = f.details.get("hypopg")?;
    if h.get("verified").and_then(|v| v.as_bool()) == Some(true) {
        let cost = |k: &str| h.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
        let used = h.get("uses_index").and_then(|v| v.as_bool()) == Some(true);
        Some(format!(
            "verified: cost {:.1} → {:.1} ({})",
            cost("cost_before"),
            cost("cost_after"),
            if used { "index used" } else { "index not used" }
        ))
    } else {
        let reason = h
            .get("reason")
            .and_then(|v| v.as_str())
            .unwrap_or("no reason recorded");
        // Some reasons already say so.
        let reason = reason.strip_prefix("not verified: ").unwrap_or(reason);
        Some(format!("not verified: {reason}"))
    }
}

/// Which runs a report covers, in one line (`run 3 on host (pid 1,
/// qproxy 0.1.0), started .., ended ..`), for the formats with a header.
pub fn runs_line(runs: &[RunMeta]) -> String {
    match runs {
        [] => "no runs recorded yet".to_string(),
        [run] => {
            let ended = ended_phrase(run);
            format!(
                "run {} on {} (pid {}, qproxy {}), started {}, {}",
                run.id,
                run.host,
                run.pid,
                run.version,
                timestamp(run.started_at),
                ended
            )
        }
        [first, .., last] => format!(
            "{} runs (ids {} to {}), started {} to {}",
            runs.len(),
            runs.iter().map(|r| r.id).min().unwrap_or(0),
            runs.iter().map(|r| r.id).max().unwrap_or(0),
            timestamp(first.started_at),
            timestamp(last.started_at)
        ),
    }
}

/// How a run ended, for run headers: its end time, or that it has none.
pub fn ended_phrase(run: &RunMeta) -> String {
    match run.ended_at {
        Some(t) => format!("ended {}", timestamp(t)),
        None => "still running, or did not shut down cleanly".to_string(),
    }
}

/// RFC 3339, as every format writes times.
pub fn timestamp(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Escapes text for XML and HTML (element content and quoted attributes).
/// Control characters XML 1.0 forbids even as references become U+FFFD,
/// so a stray byte in SQL cannot make a JUnit file unparseable.
pub fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A fraction as a percentage with one decimal, as every format shows it.
pub fn percent(fraction: f64) -> String {
    format!("{:.1} %", fraction * 100.0)
}

/// The output formats `qproxy report --format` knows, one sibling module
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Terminal text.
    Text,
    /// Markdown for a pull-request comment or job summary.
    Markdown,
    /// DESIGN's JSON schema.
    Json,
    /// SARIF 2.1.0.
    Sarif,
    /// JUnit XML.
    Junit,
    /// One self-contained HTML page.
    Html,
}

impl Format {
    /// Every format, in the order `--help` lists them (DESIGN's order).
    pub const ALL: [Format; 6] = [
        Format::Text,
        Format::Markdown,
        Format::Json,
        Format::Sarif,
        Format::Junit,
        Format::Html,
    ];

    /// The format names `--format` accepts, in [`Format::ALL`] order.
    pub const NAMES: [&'static str; 6] = ["text", "markdown", "json", "sarif", "junit", "html"];

    /// The name `--format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Json => "json",
            Format::Sarif => "sarif",
            Format::Junit => "junit",
            Format::Html => "html",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--format` value that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown report format `{0}` (expected one of: {names})", names = Format::NAMES.join(", "))]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// What the caller knows that the report data does not: where the output
/// goes, what gates, and what a baseline hid. Build it with
/// `..Default::default()` so new fields do not break callers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RenderOptions {
    /// ANSI colour (text only). The caller decides from TTY and `NO_COLOR`,
    /// because only it knows where the output goes.
    pub color: bool,
    /// The `--fail-on` kinds: JUnit reports these as failures.
    pub gating: Vec<FindingKind>,
    /// Findings a `--baseline` suppressed (already removed from the
    /// report), so text, markdown and html can say how many were hidden.
    pub baselined: usize,
    /// `--trace-url`: markdown and html link findings' trace ids with it.
    pub trace_url: Option<TraceUrl>,
}

/// Renders `report` in `format`.
pub fn render(report: &Report, format: Format, options: RenderOptions) -> String {
    match format {
        Format::Text => text::render_text_with(report, &options),
        Format::Markdown => markdown::render_markdown(report, &options),
        Format::Json => json::render_json(report),
        Format::Sarif => sarif::render_sarif(report, &options),
        Format::Junit => junit::render_junit(report, &options),
        Format::Html => html::render_html(report, &options),
    }
}

pub use html::render_html;
pub use json::render_json;
pub use junit::render_junit;
pub use markdown::render_markdown;
pub use sarif::render_sarif;
pub use text::{render_text, render_text_with};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_and_names_match() {
        for (f, name) in Format::ALL.into_iter().zip(Format::NAMES) {
            assert_eq!(f.as_str(), name);
            assert_eq!(name.parse::<Format>(), Ok(f));
        }
        let err = "yaml".parse::<Format>().unwrap_err().to_string();
        assert!(
            err.contains("yaml") && err.contains("text, markdown, json, sarif, junit, html"),
            "{err}"
        );
    }

    #[test]
    fn good_coverage_has_no_warnings() {
        let s = Summary {
            queries: 10,
            correlated_fraction: 0.9,
            catalog: "available".into(),
            ..Summary::default()
        };
        assert!(coverage_warnings(&s).is_empty());
    }

    #[test]
    fn markup_escapes_specials_and_xml_forbidden_controls() {
        assert_eq!(
            escape_markup("<a href=\"x\">'&'</a>\u{1}\t"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;\u{fffd}\t"
        );
    }
}
