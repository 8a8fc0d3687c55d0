//! The bounded queue of hypopg verifications.
//!
//! Every new statement shape with an unindexed finding asks for a check,
//! and a workload of many distinct shapes asks faster than checks can run
//! (each takes a connection to the client's database). So the queue has a
//! cap and what does not fit is skipped, said in the finding and counted;
//! a suggestion already queued or being checked is not queued again; and
//! verdicts are remembered (bounded), so a shape analysed again after its
//! catalog was reloaded does not cost another connection. The proxy takes
//! work out in per-database batches, one connection each.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::Deserialize;

use crate::detect::unindexed::{SkipReason, Verification};
use crate::fingerprint::FingerprintId;

/// Verdicts remembered across catalog reloads; past this many the memory
/// starts over.
const MAX_REMEMBERED: usize = 20_000;

/// How much verification work runs (the `[analyzer.verification]` part of
/// the config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerificationConfig {
    /// Suggestions waiting or being checked at most; more are skipped and
    /// counted (`queue_full`).
    pub max_queued: usize,
    /// Suggestions checked on one connection to one database.
    pub batch_size: usize,
    /// New connections per second the proxy opens for catalog loads and
    /// verifications together (a token bucket that holds two seconds'
    /// worth, at least one).
    pub connections_per_second: f64,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        VerificationConfig {
            max_queued: 256,
            batch_size: 16,
            connections_per_second: 2.0,
        }
    }
}

/// A suggestion to check with hypopg.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// Database to connect to.
    pub database: String,
    /// The statement as the client sent it.
    pub sql: String,
    /// The suggested `CREATE INDEX CONCURRENTLY ...`.
    pub ddl: String,
    /// The finding the verdict belongs to.
    pub finding_id: String,
    /// The user whose statement it is; it is planned with that role's
    /// rights only.
    pub user: Option<String>,
    pub(crate) key: (Arc<str>, FingerprintId),
}

/// Suggestions of one database, to check on one connection.
#[derive(Debug, Clone)]
pub struct VerifyBatch {
    /// The database.
    pub database: String,
    /// At most the configured batch size.
    pub requests: Vec<VerifyRequest>,
}

/// What makes two requests the same check.
type CheckKey = (Arc<str>, FingerprintId, String);

fn check_key(r: &VerifyRequest) -> CheckKey {
    (r.key.0.clone(), r.key.1, r.finding_id.clone())
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct VerifyQueue {
    config: VerificationConfig,
    queue: VecDeque<VerifyRequest>,
    /// Queued or being checked.
    known: HashSet<CheckKey>,
    remembered: HashMap<CheckKey, Verification>,
    skipped: [u64; SkipReason::ALL.len()],
}

impl VerifyQueue {
    pub(crate) fn new(config: VerificationConfig) -> Self {
        VerifyQueue {
            config,
            queue: VecDeque::new(),
            known: HashSet::new(),
            remembered: HashMap::new(),
            skipped: [0; SkipReason::ALL.len()],
        }
    }

    /// Queues a check. `Some` is the verdict to use now instead: one
    /// remembered from an earlier check, or a skip because the queue is
    /// full. `None`: queued, or already queued or being checked.
    pub(crate) fn push(&mut self, request: VerifyRequest) -> Option<Verification> {
        let key = check_key(&request);
        if let Some(verdict) = self.remembered.get(&key) {
            return Some(verdict.clone());
        }
        if self.known.contains(&key) {
            return None;
        }
        if self.known.len() >= self.config.max_queued.max(1) {
            self.skipped[SkipReason::QueueFull.index()] += 1;
            return Some(Verification::skipped(
                SkipReason::QueueFull,
                "not verified: skipped because the verification queue was full \
                 (analyzer.verification.max_queued)",
            ));
        }
        self.known.insert(key);
        self.queue.push_back(request);
        None
    }

    /// The next batch: the oldest request's database, with up to the batch
    /// size of that database's requests, oldest first.
    pub(crate) fn take_batch(&mut self) -> Option<VerifyBatch> {
        let database = self.queue.front()?.database.clone();
        let max = self.config.batch_size.max(1);
        let mut requests = Vec::with_capacity(max.min(self.queue.len()));
        let mut rest = VecDeque::with_capacity(self.queue.len());
        for r in self.queue.drain(..) {
            if requests.len() < max && r.database == database {
                requests.push(r);
            } else {
                rest.push_back(r);
            }
        }
        self.queue = rest;
        Some(VerifyBatch { database, requests })
    }

    /// A check ended (whatever its verdict).
    pub(crate) fn done(&mut self, request: &VerifyRequest, verdict: &Verification) {
        let key = check_key(request);
        self.known.remove(&key);
        if let Verification::Skipped { why, .. } = verdict {
            self.skipped[why.index()] += 1;
        }
        // Errors are worth trying again later; the rest (refusals too)
        // would come out the same.
        let retry = matches!(
            verdict,
            Verification::Skipped {
                why: SkipReason::Error | SkipReason::QueueFull,
                ..
            }
        );
        if !retry {
            if self.remembered.len() >= MAX_REMEMBERED {
                self.remembered.clear();
            }
            self.remembered.insert(key, verdict.clone());
        }
    }

    /// Requests queued or being checked.
    pub(crate) fn len(&self) -> usize {
        self.known.len()
    }

    /// Skips so far, by reason (in [`SkipReason::ALL`] order).
    pub(crate) fn skipped(&self) -> [u64; SkipReason::ALL.len()] {
        self.skipped
    }

    pub(crate) fn config(&self) -> &VerificationConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(db: &str, fp: u64, id: &str) -> VerifyRequest {
        VerifyRequest {
            database: db.into(),
            sql: format!("SELECT {fp}"),
            ddl: "CREATE INDEX ON t (a)".into(),
            finding_id: id.into(),
            user: Some("app".into()),
            key: (Arc::from(db), FingerprintId(fp)),
        }
    }

    fn queue(max_queued: usize, batch_size: usize) -> VerifyQueue {
        VerifyQueue::new(VerificationConfig {
            max_queued,
            batch_size,
            ..VerificationConfig::default()
        })
    }

    #[test]
    fn bounded_with_skips_counted_and_duplicates_dropped() {
        let mut q = queue(3, 10);
        assert!(q.push(request("a", 1, "f1")).is_none());
        assert!(q.push(request("a", 1, "f1")).is_none(), "duplicate");
        assert!(q.push(request("a", 2, "f2")).is_none());
        assert!(q.push(request("b", 3, "f3")).is_none());
        assert_eq!(q.len(), 3);
        let skipped = q.push(request("b", 4, "f4")).expect("queue full");
        assert!(matches!(
            skipped,
            Verification::Skipped {
                why: SkipReason::QueueFull,
                ..
            }
        ));
        assert_eq!(q.skipped(), [1, 0, 0]);
    }

    #[test]
    fn batches_are_per_database_and_capped() {
        let mut q = queue(100, 2);
        for (db, fp) in [("a", 1), ("b", 2), ("a", 3), ("a", 4)] {
            q.push(request(db, fp, &format!("f{fp}")));
        }
        let first = q.take_batch().unwrap();
        assert_eq!(first.database, "a");
        let fps: Vec<u64> = first.requests.iter().map(|r| r.key.1 .0).collect();
        assert_eq!(fps, [1, 3]);
        // In flight: still known, so not queued twice.
        assert!(q.push(request("a", 1, "f1")).is_none());
        assert_eq!(q.len(), 4);
        assert_eq!(q.take_batch().unwrap().database, "b");
        assert_eq!(q.take_batch().unwrap().requests.len(), 1);
        assert!(q.take_batch().is_none());
    }

    #[test]
    fn verdicts_are_remembered_errors_are_not() {
        let mut q = queue(100, 10);
        let r = request("a", 1, "f1");
        q.push(r.clone());
        let batch = q.take_batch().unwrap();
        let verified = Verification::Verified {
            cost_before: 10.0,
            cost_after: 1.0,
            uses_index: true,
        };
        q.done(&batch.requests[0], &verified);
        assert_eq!(q.len(), 0);
        assert_eq!(q.push(r), Some(verified));

        let e = request("a", 2, "f2");
        q.push(e.clone());
        let batch = q.take_batch().unwrap();
        q.done(
            &batch.requests[0],
            &Verification::skipped(SkipReason::Error, "x"),
        );
        assert_eq!(q.skipped(), [0, 0, 1]);
        assert!(q.push(e).is_none(), "an error is tried again");
    }
}
