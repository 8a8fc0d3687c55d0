//! Findings gathered since the last flush, merged by stable id, and the
//! first-sighting log: each finding is logged once per process as one
//! structured event.

use std::collections::{HashMap, HashSet};

use crate::finding::Finding;

/// Pending findings (deltas for the store) and ids already announced.
#[derive(Debug)]
pub struct FindingsBook {
    pending: HashMap<String, Finding>,
    announced: HashSet<String>,
    max_pending: usize,
    max_announced: usize,
    /// Findings dropped because `max_pending` distinct ids were waiting.
    pub dropped: u64,
}

impl FindingsBook {
    /// A book holding at most `max_pending` distinct findings between flushes.
    pub fn new(max_pending: usize) -> Self {
        FindingsBook {
            pending: HashMap::new(),
            announced: HashSet::new(),
            max_pending: max_pending.max(1),
            max_announced: 100_000,
            dropped: 0,
        }
    }

    /// Adds a sighting; merges with a pending one of the same id.
    pub fn add(&mut self, finding: Finding) {
        if !self.announced.contains(&finding.id) && self.announced.len() < self.max_announced {
            self.announced.insert(finding.id.clone());
            tracing::warn!(
                kind = finding.kind.as_str(),
                severity = finding.severity.as_str(),
                fingerprint = %finding.fingerprint,
                finding_id = %finding.id,
                request_id = finding.request.as_ref().and_then(|r| r.id.as_deref()),
                route = finding.request.as_ref().and_then(|r| r.route.as_deref()),
                table = finding.table.as_deref(),
                count = finding.count,
                query = %finding.query,
                "new finding"
            );
        }
        let room = self.pending.len() < self.max_pending;
        match self.pending.get_mut(&finding.id) {
            Some(existing) => existing.merge(&finding),
            None if room => {
                self.pending.insert(finding.id.clone(), finding);
            }
            None => self.dropped += 1,
        }
    }

    /// Takes everything gathered since the last call.
    pub fn take(&mut self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self.pending.drain().map(|(_, f)| f).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Distinct findings waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}
