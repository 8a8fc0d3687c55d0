//! What a run is: one proxy process writing to the store, how it is
//! identified, how reports select runs, and how runs' coverage combines.

use std::str::FromStr;

use time::OffsetDateTime;

use crate::finding::Summary;

/// A run's id in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub i64);

/// What the store records about a proxy process when it starts, so reports
/// can tell runs (and sidecars sharing a store) apart.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// Process start time; [`RunSelection::Latest`] orders by it.
    pub started_at: OffsetDateTime,
    /// The proxy's name in a fleet (`--instance`, by default
    /// `<host name>:<listen address>`): what `qproxy report --instance`
    /// selects.
    pub instance: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// qproxy version.
    pub version: String,
}

impl RunInfo {
    /// This process, now, named `instance`: the usual way to start a run.
    pub fn current(version: &str, instance: &str) -> RunInfo {
        RunInfo {
            started_at: OffsetDateTime::now_utc(),
            instance: instance.to_string(),
            host: host_name(),
            pid: std::process::id(),
            version: version.to_string(),
        }
    }
}

/// The host name without a libc call: Linux's procfs, then the usual
/// environment variables (`unknown` when none says).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Which runs a report covers (`qproxy report --run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSelection {
    /// The most recently started run: the usual CI case, one test run.
    Latest,
    /// Every run in the store.
    All,
    /// One run by id.
    Id(i64),
}

/// Narrows the runs a report covers (`qproxy report --instance`,
/// `--since`); the [`RunSelection`] then applies to what is left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs of this instance.
    pub instance: Option<String>,
    /// Only runs active at or after this time (their last write, or their
    /// end), and of those only the findings they saw at or after it. A
    /// finding's counts still cover its whole run: the store keeps one
    /// tally per run, not a time series.
    pub since: Option<OffsetDateTime>,
}

/// A `--run` value that is not `latest`, `all` or a run id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid run selection `{0}` (expected latest, all or a run id)")]
pub struct InvalidRunSelection(pub String);

impl FromStr for RunSelection {
    type Err = InvalidRunSelection;

    fn from_str(s: &str) -> Result<RunSelection, InvalidRunSelection> {
        match s {
            "latest" => Ok(RunSelection::Latest),
            "all" => Ok(RunSelection::All),
            _ => s
                .parse::<i64>()
                .map(RunSelection::Id)
                .map_err(|_| InvalidRunSelection(s.to_string())),
        }
    }
}

/// Coverage over several runs: counters add up; the correlated share is
/// weighted by each run's queries; the catalog counts as available when
/// any run had it. Distinct fingerprints cannot be added across runs (the
/// same statement would count once per run), so the largest run's count is
/// shown: a lower bound, never an inflated one.
pub fn combine_summaries<'a>(summaries: impl IntoIterator<Item = &'a Summary>) -> Summary {
    let mut out = Summary {
        catalog: "unavailable".into(),
        ..Summary::default()
    };
    let mut correlated = 0.0;
    for s in summaries {
        out.queries += s.queries;
        out.fingerprints = out.fingerprints.max(s.fingerprints);
        out.requests += s.requests;
        out.parse_failures += s.parse_failures;
        out.dropped_events += s.dropped_events;
        out.findings_lost += s.findings_lost;
        out.statements_not_analysed += s.statements_not_analysed;
        out.verifications_skipped += s.verifications_skipped;
        correlated += s.correlated_fraction * s.queries as f64;
        if s.catalog == "available" {
            out.catalog = "available".into();
        }
    }
    if out.queries > 0 {
        out.correlated_fraction = correlated / out.queries as f64;
    }
    out
}
