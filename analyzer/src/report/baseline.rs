//! Baselines: the findings a team has accepted for now, so CI gates only
//! on new ones.
//!
//! A baseline is a JSON file of finding ids. Only the id matters for
//! matching (it is stable across runs; see [`crate::finding::finding_id`]);
//! kind, fingerprint, table and a query excerpt ride along so a reviewer
//! can read a baseline diff without running anything. Entries are sorted
//! by id and pretty-printed, so a diff shows exactly what changed.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Report;
use crate::finding::Finding;

/// The `version` a baseline file carries. Reading refuses other versions
/// rather than silently matching nothing.
pub const BASELINE_VERSION: u32 = 1;

/// Characters of the query kept in an entry: enough to recognise it.
const QUERY_EXCERPT: usize = 120;

/// A baseline file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// [`BASELINE_VERSION`].
    pub version: u32,
    /// Accepted findings, sorted by id.
    pub findings: Vec<BaselineEntry>,
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
        }
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
        let kept = Baseline::from_findings(current.iter().filter(|f| ids.contains(f.id.as_str())));
        let pruned = self.findings.len().saturating_sub(kept.findings.len());
        (kept, pruned)
    }
}

/// What `--write-baseline` writes: the current findings, or with an old
/// baseline (the update flow) its entries still found.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// `with 3 findings (1 stale entry pruned)`, for the line saying what was
/// written.
impl fmt::Display for BaselineUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.baseline.findings.len();
        write!(f, "with {n} finding{}", if n == 1 { "" } else { "s" })?;
        match self.pruned {
            Some(1) => write!(f, " (1 stale entry pruned)"),
            Some(p) => write!(f, " ({p} stale entries pruned)"),
            None => Ok(()),
        }
    }
}

fn entry(f: &Finding) -> BaselineEntry {
    let mut query: String = f.query.chars().take(QUERY_EXCERPT).collect();
    if f.query.chars().count() > QUERY_EXCERPT {
        query.push('…');
    }
    BaselineEntry {
        id: f.id.clone(),
        kind: f.kind.as_str().to_string(),
        fingerprint: f.fingerprint.clone(),
        table: f.table.clone(),
        query,
    }
}
