//! Table names in findings, schema-qualified when the findings leave the
//! analyzer.
//!
//! The kinds made from traffic (`n_plus_one`, `repeated_query`,
//! `n_plus_one_write`, `unbounded_select`, `slow_query`) name their table as
//! the statement wrote it, because they are often made before their
//! database's catalog has loaded: the first statement asks for it, and an
//! untagged transaction can end at its COMMIT milliseconds later. Their id
//! hashes that written name (see [`crate::finding`], "Table names"), and
//! [`TableNames::settle`] qualifies the name they show at flush time,
//! through the same catalog lookup the index advisor uses
//! ([`IndexAdvisor::resolve_table`], search_path aware), whatever grouped
//! the request.
//!
//! A finding whose catalog is still loading is held back (at most
//! [`CATALOG_WAIT`], and at most as many findings as the book holds)
//! rather than reported with a name that is about to be known; one whose
//! catalog cannot be had keeps the written name and says why in
//! `details.table_unresolved`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::indexes::{IndexAdvisor, TableName};
use crate::finding::{Finding, TABLE_UNRESOLVED};

/// How long a finding waits for its database's catalog. A load connects
/// (bounded by the connect timeout) and runs a few catalog queries; one
/// that takes longer than this has failed in all but name.
pub const CATALOG_WAIT: Duration = Duration::from_secs(30);

/// Findings waiting for their database's catalog.
#[derive(Debug)]
pub(super) struct TableNames {
    /// By finding id, with when the wait began; later sightings merge in.
    waiting: HashMap<String, (Instant, Finding)>,
    cap: usize,
}

impl TableNames {
    pub(super) fn new(cap: usize) -> Self {
        TableNames {
            waiting: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Findings waiting for a catalog.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// `fresh` findings and those that waited, with their tables
    /// qualified; those whose catalog is still loading wait on, unless
    /// `now` is past their wait, the wait is full, or `release_all`
    /// (shutdown).
    pub(super) fn settle(
        &mut self,
        indexes: &IndexAdvisor,
        fresh: Vec<Finding>,
        now: Instant,
        release_all: bool,
    ) -> Vec<Finding> {
        let mut out = Vec::with_capacity(fresh.len());
        let waited = std::mem::take(&mut self.waiting);
        let all = waited
            .into_values()
            .chain(fresh.into_iter().map(|f| (now, f)));
        for (since, mut f) in all {
            let Some(table) = f.table.as_deref() else {
                out.push(f);
                continue;
            };
            let why = match indexes.resolve_table(f.database.as_deref(), table) {
                TableName::Qualified(q) => {
                    f.table = Some(q);
                    f.details.remove(TABLE_UNRESOLVED);
                    out.push(f);
                    continue;
                }
                TableName::Pending
                    if !release_all
                        && now.saturating_duration_since(since) < CATALOG_WAIT
                        && (self.waiting.len() < self.cap || self.waiting.contains_key(&f.id)) =>
                {
                    self.wait(since, f);
                    continue;
                }
                TableName::Pending => "the database's catalog had not loaded in time",
                TableName::Unresolved(why) => why,
            };
            // A name the statement qualified itself needs no catalog.
            if !table.contains('.') {
                f.details.insert(
                    TABLE_UNRESOLVED.into(),
                    format!("{why}; the table is named as the statement wrote it").into(),
                );
            }
            out.push(f);
        }
        out
    }

    fn wait(&mut self, since: Instant, f: Finding) {
        match self.waiting.get_mut(&f.id) {
            Some((first, existing)) => {
                *first = (*first).min(since);
                existing.merge(&f);
            }
            None => {
                self.waiting.insert(f.id.clone(), (since, f));
            }
        }
    }
}
