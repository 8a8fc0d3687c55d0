//! Findings gathered since the last flush, merged by stable id. (Each new
//! finding is logged once, by the store writer, when a run first records
//! it.)

use std::collections::HashMap;

use crate::finding::Finding;

/// Pending findings: deltas for the store.
#[derive(Debug)]
pub struct FindingsBook {
    pending: HashMap<String, Finding>,
    max_pending: usize,
    /// Findings dropped because `max_pending` distinct ids were waiting.
    pub dropped: u64,
}

impl FindingsBook {
    /// A book holding at most `max_pending` distinct findings between flushes.
    pub fn new(max_pending: usize) -> Self {
        FindingsBook {
            pending: HashMap::new(),
            max_pending: max_pending.max(1),
            dropped: 0,
        }
    }

    /// Adds a sighting; merges with a pending one of the same id.
    pub fn add(&mut self, finding: Finding) {
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
