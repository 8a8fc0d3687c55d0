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

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::finding::{Finding, FindingKind, Summary};

pub mod json;
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
}

impl Report {
    /// Sorts findings into [`report_order`], so every format lists the
    /// worst first and output is deterministic.
    pub fn sort_findings(&mut self) {
        self.findings.sort_by(report_order);
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
    if summary.catalog != "available" {
        warnings.push(
            "catalog unavailable: unindexed_filter and unindexed_sort were not checked".to_string(),
        );
    }
    if summary.dropped_events > 0 {
        warnings.push(format!(
            "{} events dropped: the analyzer queue was full, so some queries were not analysed",
            summary.dropped_events
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

/// A fraction as a percentage with one decimal, as every format shows it.
pub fn percent(fraction: f64) -> String {
    format!("{:.1} %", fraction * 100.0)
}

/// The output formats `qproxy report --format` knows. The outputs issue
/// adds markdown, sarif, junit and html as sibling modules and variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Terminal text.
    Text,
    /// DESIGN's JSON schema.
    Json,
}

impl Format {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [Format; 2] = [Format::Text, Format::Json];

    /// The format names `--format` accepts, in [`Format::ALL`] order.
    pub const NAMES: [&'static str; 2] = ["text", "json"];

    /// The name `--format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
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

/// Choices that change how a report looks but not what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenderOptions {
    /// ANSI colour (text only). The caller decides from TTY and `NO_COLOR`,
    /// because only it knows where the output goes.
    pub color: bool,
}

/// Renders `report` in `format`.
pub fn render(report: &Report, format: Format, options: RenderOptions) -> String {
    match format {
        Format::Text => text::render_text(report, options.color),
        Format::Json => json::render_json(report),
    }
}

pub use json::render_json;
pub use text::render_text;

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
        assert!(err.contains("yaml") && err.contains("text, json"), "{err}");
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
}
