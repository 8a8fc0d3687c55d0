//! N+1 writes: the evidence and severity of an `n_plus_one_write` finding.
//!
//! The bookkeeping is shared with read N+1s ([`RequestWork`]): each write
//! shape of a request counts its single-row executions that waited for the
//! previous reply, and [`RequestWork::evaluate`] gives the verdict (see the
//! [`n_plus_one`](super::n_plus_one) module docs for what counts as one
//! write per row). This module says how such a verdict is reported, and
//! its tests pin the rule: loops fire, pipelines, multi-statement queries,
//! set-based statements and a few writes do not.
//!
//! [`RequestWork`]: super::n_plus_one::RequestWork
//! [`RequestWork::evaluate`]: super::n_plus_one::RequestWork::evaluate

use serde::{Deserialize, Serialize};

use super::n_plus_one::{Detection, WriteStats};
use crate::finding::Severity;

/// `details` of an `n_plus_one_write` finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NPlusOneWriteDetails {
    /// `insert`, `update`, `delete` or `merge`.
    pub statement: String,
    /// Distinct parameter tuples among the executions (at least).
    pub distinct_parameters: u64,
    /// Executions that changed at most one row and waited for the previous
    /// reply: one round trip per row.
    pub round_trips: u64,
    /// Executions sent before the previous one completed (a pipeline or
    /// batch), not counted as round trips.
    pub pipelined_executions: u64,
    /// Executions that changed more than one row, not counted.
    pub set_based_executions: u64,
    /// Time all executions of the shape took in the request.
    pub total_duration_ms: f64,
    /// Whether an earlier query's results fed the parameters.
    pub parent_evidence: String,
    /// How the request was grouped when the application did not name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grouping: Option<String>,
}

impl NPlusOneWriteDetails {
    /// The details of an N+1 write verdict; `grouping`: how its request
    /// was grouped when the application did not name it.
    pub fn of(d: &Detection, grouping: Option<&str>) -> Self {
        let parent_evidence = match &d.parent {
            Some(p) => format!(
                "{} of {} checked executions used values this query returned",
                p.matched, p.checked
            ),
            None => "no earlier query in the request returned the parameter values these \
                     executions used"
                .to_string(),
        };
        let mut details = NPlusOneWriteDetails {
            statement: serde_json::to_value(d.statement)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            distinct_parameters: d.distinct,
            round_trips: 0,
            pipelined_executions: 0,
            set_based_executions: 0,
            total_duration_ms: (d.total_duration.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            parent_evidence,
            grouping: grouping.map(str::to_string),
        };
        if let Some(w) = &d.writes {
            details.counts(w);
        }
        details
    }

    /// The write counters of a verdict.
    pub fn counts(&mut self, w: &WriteStats) {
        self.round_trips = u64::from(w.looped);
        self.pipelined_executions = u64::from(w.pipelined);
        self.set_based_executions = u64::from(w.set_based);
    }
}

/// Warning; error from 25 executions in one request, as for read N+1s:
/// at a millisecond per round trip that is a noticeable share of a page.
pub fn severity(executions: u64) -> Severity {
    if executions >= 25 {
        Severity::Error
    } else {
        Severity::Warning
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::detect::n_plus_one::{Detection, Execution, NPlusOneConfig, RequestWork};
    use crate::finding::FindingKind;
    use crate::fingerprint::{FingerprintId, StatementKind};
    use crate::values::value_hash;

    /// How an execution went out.
    #[derive(Clone, Copy)]
    enum Sent {
        /// After the previous reply.
        Waited,
        /// Before the previous execution completed.
        Pipelined,
        /// As a later statement of one multi-statement query.
        SameQuery,
    }

    /// One request; each execution takes 1 ms and, when the client waits,
    /// the next starts 1 ms after it ends.
    struct Req {
        work: RequestWork,
        cfg: NPlusOneConfig,
        sql: Arc<str>,
        clock: SystemTime,
    }

    fn req() -> Req {
        Req {
            work: RequestWork::default(),
            cfg: NPlusOneConfig::default(),
            sql: Arc::from("insert into reads (post_id) values ($1)"),
            clock: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
        }
    }

    impl Req {
        fn exec(
            &mut self,
            fp: u64,
            kind: StatementKind,
            param: Option<i64>,
            results: &[i64],
            changed: Option<u64>,
            sent: Sent,
        ) {
            let hash = |v: &i64| value_hash(v.to_string().as_bytes(), false);
            let params: Vec<u64> = param.iter().map(hash).collect();
            let res: Vec<u64> = results.iter().map(hash).collect();
            let ms = Duration::from_millis(1);
            let at = match sent {
                Sent::Waited => self.clock,
                Sent::Pipelined => self.clock - ms - ms,
                Sent::SameQuery => self.clock - ms,
            };
            self.work.record(
                &Execution {
                    fingerprint: FingerprintId(fp),
                    normalized: &self.sql,
                    kind,
                    changed,
                    statement_index: u16::from(matches!(sent, Sent::SameQuery)),
                    tuple_hash: params.first().copied().unwrap_or(0),
                    param_hashes: &params,
                    result_hashes: &res,
                    rows: results.len() as u64,
                    duration: ms,
                    at,
                },
                &self.cfg,
            );
            self.clock = at + ms + ms;
        }

        fn write(&mut self, fp: u64, param: i64, changed: u64, sent: Sent) {
            let kind = StatementKind::Insert;
            self.exec(fp, kind, Some(param), &[], Some(changed), sent);
        }

        fn evaluate(&self) -> Vec<Detection> {
            self.work.evaluate(&self.cfg)
        }
    }

    #[test]
    fn severity_steps_at_twenty_five() {
        assert_eq!(severity(5), Severity::Warning);
        assert_eq!(severity(24), Severity::Warning);
        assert_eq!(severity(25), Severity::Error);
    }

    #[test]
    fn loop_of_single_row_writes_is_an_n_plus_one_write_with_its_parent() {
        let mut r = req();
        let parent_ids = [11, 12, 13, 14, 15, 16];
        r.exec(
            10,
            StatementKind::Select,
            None,
            &parent_ids,
            None,
            Sent::Waited,
        );
        for post in parent_ids {
            r.write(31, post, 1, Sent::Waited);
        }
        let d = r.evaluate();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].kind, d[0].count, d[0].distinct, d[0].statement),
            (FindingKind::NPlusOneWrite, 6, 6, StatementKind::Insert)
        );
        assert_eq!(
            d[0].writes,
            Some(WriteStats {
                looped: 6,
                pipelined: 0,
                set_based: 0
            })
        );
        assert_eq!(
            d[0].parent.as_ref().map(|p| p.fingerprint),
            Some(FingerprintId(10))
        );
    }

    #[test]
    fn writes_are_never_read_n_plus_one_or_repeated_children() {
        let mut r = req();
        // Identical writes: not a repeated query, and not an N+1 write
        // either (one parameter tuple).
        for _ in 0..6 {
            r.write(31, 7, 1, Sent::Waited);
        }
        // Distinct writes below the write threshold.
        r.cfg.write_threshold = 10;
        for id in 0..8 {
            r.write(33, id, 1, Sent::Waited);
        }
        assert!(r.evaluate().is_empty());
        r.cfg.write_threshold = 8;
        let d = r.evaluate();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, FindingKind::NPlusOneWrite);
    }

    #[test]
    fn batched_and_set_based_writes_are_clean() {
        // A pipeline (executemany), a multi-statement query, chunked bulk
        // inserts, and three single inserts.
        let mut r = req();
        r.write(31, 0, 1, Sent::Waited);
        for id in 1..50 {
            r.write(31, id, 1, Sent::Pipelined);
        }
        r.write(33, 0, 1, Sent::Waited);
        for id in 1..10 {
            r.write(33, id, 1, Sent::SameQuery);
        }
        for chunk in 0..6 {
            r.write(35, chunk, 500, Sent::Waited);
        }
        for id in 0..3 {
            r.write(37, id, 1, Sent::Waited);
        }
        assert!(r.evaluate().is_empty(), "{:?}", r.evaluate());
    }

    #[test]
    fn top_shapes_count_every_statement_kind() {
        let mut r = req();
        r.exec(10, StatementKind::Select, None, &[], None, Sent::Waited);
        for id in 0..3 {
            r.write(31, id, 1, Sent::Waited);
        }
        for _ in 0..2 {
            r.exec(41, StatementKind::Ddl, None, &[], None, Sent::Waited);
        }
        let top = r.work.top_shapes(2);
        let got: Vec<(u64, u64)> = top.iter().map(|s| (s.fingerprint.0, s.count)).collect();
        assert_eq!(got, [(31, 3), (41, 2)]);
        assert_eq!(r.work.top_shapes(10).len(), 3);
        assert_eq!(r.work.shape_count(), 3);
    }
}
