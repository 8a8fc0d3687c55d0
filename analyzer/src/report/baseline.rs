//! Baselines: the findings a team has accepted for now, so CI gates only
//! on new ones.
//!
//! A baseline is a JSON file of finding ids. Only the id matters for
//! matching (it is stable across runs; see [`crate::finding::finding_id`]);
//! kind, fingerprint, table and a query excerpt ride along so a reviewer
//! can read a baseline diff without running anything. Entries are sorted
//! by id and pretty-printed, so a diff shows exactly what changed.
//!
//! A baseline also records each route's statements per request and its
//! busiest shapes (`routes`), so a later `--baseline` can report a route
//! whose requests now run more statements ([`Baseline::regressions`]).
//! Files written before routes existed have no `routes` key and still
//! load (with no routes, nothing can regress); a file with routes loads in
//! an older qproxy, which ignores the key.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Report;
use crate::finding::Finding;
use crate::routes::{regressions, Regression, RouteFigures, Tolerance};

/// The `version` a baseline file carries. Reading refuses other versions
/// rather than silently matching nothing.
pub const BASELINE_VERSION: u32 = 1;

/// Characters of the query kept in an entry: enough to recognise it.
const QUERY_EXCERPT: usize = 120;

/// A baseline file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// [`BASELINE_VERSION`].
    pub version: u32,
    /// Accepted findings, sorted by id.
    pub findings: Vec<BaselineEntry>,
    /// Each route's statements per request when the baseline was written,
    /// sorted by route (queries cut to an excerpt). Absent in files written
    /// before routes existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteFigures>,
}

/// One accepted finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineEntry {
    /// The finding id; the only field used for matching.
    pub id: String,
    /// Kind name, for reviewers (kept as text so a baseline written by a
    /// newer qproxy with new kinds still loads).
    pub kind: String,
    /// Query fingerprint, for reviewers.
    pub fingerprint: String,
    /// Table, for reviewers.
    pub table: Option<String>,
    /// The start of the normalized SQL, for reviewers.
    pub query: String,
}

/// Why a baseline could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The file could not be read (missing, permissions).
    #[error("cannot read baseline {}: {source}", path.display())]
    Read {
        /// The baseline path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a baseline (not JSON, or missing fields).
    #[error("invalid baseline {}: {source}", path.display())]
    Parse {
        /// The baseline path.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The file is a baseline of a version this qproxy does not know.
    #[error("baseline {} has version {found}; this qproxy reads version {BASELINE_VERSION}", path.display())]
    Version {
        /// The baseline path.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// The file could not be written.
    #[error("cannot write baseline {}: {source}", path.display())]
    Write {
        /// The baseline path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Baseline {
    /// A baseline accepting every finding in `findings`.
    pub fn from_findings<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Baseline {
        let mut entries: Vec<BaselineEntry> = findings.into_iter().map(entry).collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries.dedup_by(|a, b| a.id == b.id);
        Baseline {
            version: BASELINE_VERSION,
            findings: entries,
            routes: Vec::new(),
        }
    }

    /// A baseline accepting the report's findings and recording its routes.
    pub fn from_report(report: &Report) -> Baseline {
        Baseline::from_findings(&report.findings).with_routes(report.routes.iter().cloned())
    }

    /// This baseline with `routes` as its route figures (the `other`
    /// bucket left out: it mixes routes, so it cannot regress), sorted by
    /// route, queries cut to an excerpt.
    pub fn with_routes(mut self, routes: impl IntoIterator<Item = RouteFigures>) -> Baseline {
        let mut routes: Vec<RouteFigures> = routes
            .into_iter()
            .filter(|r| !r.other)
            .map(|mut r| {
                for s in &mut r.shapes {
                    s.query = excerpt(&s.query);
                }
                r
            })
            .collect();
        routes.sort_by(|a, b| a.route.cmp(&b.route));
        self.routes = routes;
        self
    }

    /// The routes of `current` whose statements per request grew beyond
    /// `tolerance` since this baseline.
    pub fn regressions(&self, current: &[RouteFigures], tolerance: &Tolerance) -> Vec<Regression> {
        regressions(&self.routes, current, tolerance)
    }

    /// Adds a `query_count_regression` finding to `report` for each of its
    /// routes that regressed since this baseline (seen over the report's
    /// runs), keeping the report's order; returns how many.
    pub fn report_regressions(&self, report: &mut Report, tolerance: &Tolerance) -> usize {
        let found = self.regressions(&report.routes, tolerance);
        let seen = report.time_span();
        for regression in &found {
            report.findings.push(regression.finding(tolerance, seen));
        }
        report.sort_findings();
        found.len()
    }

    /// Reads and checks a baseline file.
    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let baseline: Baseline =
            serde_json::from_str(&text).map_err(|source| BaselineError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if baseline.version != BASELINE_VERSION {
            return Err(BaselineError::Version {
                path: path.to_path_buf(),
                found: baseline.version,
            });
        }
        Ok(baseline)
    }

    /// The file's text: pretty JSON ending in a newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self)
            .unwrap_or_else(|_| format!("{{\"version\": {BASELINE_VERSION}, \"findings\": []}}"));
        text.push('\n');
        text
    }

    /// Writes the baseline to `path`.
    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        std::fs::write(path, self.to_json()).map_err(|source| BaselineError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The accepted ids.
    pub fn ids(&self) -> BTreeSet<&str> {
        self.findings.iter().map(|e| e.id.as_str()).collect()
    }

    /// Removes accepted findings from `report`; returns how many.
    pub fn suppress(&self, report: &mut Report) -> usize {
        let ids = self.ids();
        let before = report.findings.len();
        report.findings.retain(|f| !ids.contains(f.id.as_str()));
        before - report.findings.len()
    }

    /// The update flow: this baseline without the entries no longer found
    /// in `current` (fixed, or gone), with the kept entries refreshed from
    /// the findings. New findings are not added: accepting them is a
    /// separate, deliberate `--write-baseline` without `--baseline`.
    /// Returns the new baseline and how many entries were pruned.
    pub fn prune(&self, current: &[Finding]) -> (Baseline, usize) {
        let ids = self.ids();
        let mut kept =
            Baseline::from_findings(current.iter().filter(|f| ids.contains(f.id.as_str())));
        kept.routes = self.routes.clone();
        let pruned = self.findings.len().saturating_sub(kept.findings.len());
        (kept, pruned)
    }
}

/// What `--write-baseline` writes: the current findings, or with an old
/// baseline (the update flow) its entries still found.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineUpdate {
    /// The baseline to write.
    pub baseline: Baseline,
    /// Stale entries dropped; `None` when there was no old baseline.
    pub pruned: Option<usize>,
}

impl BaselineUpdate {
    /// Plans the write from the old baseline (if any) and the findings
    /// before suppression.
    pub fn new(old: Option<&Baseline>, current: &[Finding]) -> BaselineUpdate {
        match old {
            Some(old) => {
                let (baseline, pruned) = old.prune(current);
                BaselineUpdate {
                    baseline,
                    pruned: Some(pruned),
                }
            }
            None => BaselineUpdate {
                baseline: Baseline::from_findings(current),
                pruned: None,
            },
        }
    }

    /// [`BaselineUpdate::new`] that also records the report's routes
    /// (`report` before suppression). Without an old baseline every route
    /// is recorded as it is now. In the update flow a route that regressed
    /// beyond `tolerance` keeps its old figures, as a new finding is not
    /// accepted by an update: accepting it is a separate, deliberate
    /// `--write-baseline` without `--baseline`. Every other route takes its
    /// current figures (improvements ratchet down, new routes are added)
    /// and routes no longer seen are pruned.
    pub fn for_report(
        old: Option<&Baseline>,
        report: &Report,
        tolerance: &Tolerance,
    ) -> BaselineUpdate {
        let mut update = BaselineUpdate::new(old, &report.findings);
        let routes: Vec<RouteFigures> = match old {
            None => report.routes.clone(),
            Some(old) => {
                let regressed: Vec<Regression> = old.regressions(&report.routes, tolerance);
                report
                    .routes
                    .iter()
                    .map(|r| {
                        regressed
                            .iter()
                            .find(|g| g.after.route == r.route && !r.other)
                            .map_or_else(|| r.clone(), |g| g.before.clone())
                    })
                    .collect()
            }
        };
        update.baseline = update.baseline.with_routes(routes);
        update
    }
}

/// `with 3 findings (1 stale entry pruned)`, for the line saying what was
/// written.
impl fmt::Display for BaselineUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.baseline.findings.len();
        write!(f, "with {n} finding{}", if n == 1 { "" } else { "s" })?;
        match self.pruned {
            Some(1) => write!(f, " (1 stale entry pruned)")?,
            Some(p) => write!(f, " ({p} stale entries pruned)")?,
            None => {}
        }
        match self.baseline.routes.len() {
            0 => Ok(()),
            1 => write!(f, " and 1 route"),
            r => write!(f, " and {r} routes"),
        }
    }
}

fn entry(f: &Finding) -> BaselineEntry {
    BaselineEntry {
        id: f.id.clone(),
        kind: f.kind.as_str().to_string(),
        fingerprint: f.fingerprint.clone(),
        table: f.table.clone(),
        query: excerpt(&f.query),
    }
}

/// The start of a query, enough to recognise it in a baseline diff.
fn excerpt(query: &str) -> String {
    let mut out: String = query.chars().take(QUERY_EXCERPT).collect();
    if query.chars().count() > QUERY_EXCERPT {
        out.push('…');
    }
    out
}
