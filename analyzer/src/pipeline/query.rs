//! One query event through the pipeline: fingerprinted (cached by
//! text), its tags read, assigned to a request and recorded in it, timed
//! for slow queries, checked for idle transactions, unbounded results and
//! large OFFSETs, and handed to the index advisor.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use smallvec::SmallVec;
use time::OffsetDateTime;
use xxhash_rust::xxh3::Xxh3;

use super::facts::{statement_facts, StatementFacts};
use super::{
    findings, grouping, indexes, statement_text, Analyzer, Origin, Processed, Returned,
    MAX_COUNTED_FINGERPRINTS,
};
use crate::correlation::StatementRole;
use crate::detect::idle_in_transaction;
use crate::detect::n_plus_one::{Execution, ShapeClass};
use crate::detect::slow_query::{self, Timed};
use crate::detect::unbounded;
use crate::event::{Outcome, QueryEvent};
use crate::fingerprint::{Fingerprint, FingerprintCache, StatementKind};
use crate::offset::{magnitude, top_level_offset, OffsetClause};

impl Analyzer {
    pub(super) fn query(&mut self, q: &QueryEvent, now: Instant) -> Option<Processed> {
        self.stats.queries += 1;
        // One hash of the text keys both per-text caches.
        let text_key = match &self.last_text {
            Some((text, _, key)) if Arc::ptr_eq(text, &q.sql) => *key,
            _ => {
                let key = FingerprintCache::text_key(&q.sql);
                self.last_text = Some((q.sql.clone(), q.text_hold.clone(), key));
                key
            }
        };
        let all = self.fingerprints.get_keyed(text_key, &q.sql);
        let Some(fp) = all
            .iter()
            .find(|f| f.statement_index == q.statement_index)
            .or_else(|| all.last())
        else {
            self.stats.unmatched_statements += 1;
            return None;
        };
        if fp.statement_index != q.statement_index {
            self.stats.unmatched_statements += 1;
        }
        if fp.fallback {
            self.stats.parse_failures += 1;
        }
        if self.seen.len() < MAX_COUNTED_FINGERPRINTS && self.seen.insert(fp.id) {
            self.stats.fingerprints += 1;
        }
        self.live
            .record_execution(fp.id, &fp.normalized, fp.kind, q.duration);
        let facts = self.facts_for(fp, q);
        let tags = self.tags.get(text_key, &q.sql);
        let source = tags.and_then(|t| t.source.clone());
        let observed = self.correlator.observe(q, tags, now);
        let origin = Origin {
            source,
            trace_id: observed.request.trace_id.clone(),
        };
        if origin.source.is_some() || origin.trace_id.is_some() {
            if self.origins.len() >= self.config.max_statement_facts
                && !self.origins.contains_key(&fp.id)
            {
                // Bounded like the facts cache: start over.
                self.origins.clear();
            }
            self.origins.insert(fp.id, origin.clone());
        }
        let processed = Processed {
            fingerprint: fp.id,
            kind: fp.kind,
            duration: q.duration,
            rows: q.rows,
            error: matches!(
                q.outcome,
                crate::event::Outcome::Error { .. } | crate::event::Outcome::CopyFailed
            ),
            fallback: fp.fallback,
            correlated: observed.request.source.is_correlated(),
        };
        if observed.role == StatementRole::Normal {
            let mut params: SmallVec<[u64; 4]> = SmallVec::new();
            let tuple_hash = match q.params_hash {
                Some(h) => {
                    params.extend(q.param_hashes.iter().flatten().copied());
                    h
                }
                None => {
                    params.extend(fp.literal_hashes.iter().copied());
                    let mut h = Xxh3::new();
                    for l in &fp.literal_hashes {
                        h.update(&l.to_le_bytes());
                    }
                    h.digest()
                }
            };
            let changed = match (&q.outcome, ShapeClass::of(fp.kind)) {
                (Outcome::Complete { tag }, ShapeClass::Write) => rows_changed(tag),
                _ => None,
            };
            // A SELECT whose WITH clause writes is no read N+1 child, and
            // its command tag counts the rows it returned, not the rows it
            // changed: only the query budget counts it.
            let kind = if facts.modifies {
                StatementKind::Other
            } else {
                fp.kind
            };
            let execution = Execution {
                fingerprint: fp.id,
                normalized: &fp.normalized,
                kind,
                changed,
                statement_index: q.statement_index,
                tuple_hash,
                param_hashes: &params,
                result_hashes: &q.result_hashes,
                rows: q.rows,
                duration: q.duration,
                at: q.started_at,
            };
            observed.state.record(&execution, &self.config.n_plus_one);
            if slow_query::is_measured(fp.kind)
                && !matches!(q.outcome, Outcome::Aborted | Outcome::CopyFailed)
            {
                self.slow.record(&Timed {
                    fingerprint: fp.id,
                    normalized: &fp.normalized,
                    table: fp.tables.first().map(String::as_str),
                    database: q.database.as_ref(),
                    duration: q.duration,
                    at: q.started_at,
                });
            }
        }
        // Every statement, bookkeeping included: the COMMIT after an idle
        // gap is where the gap ends.
        let statement = idle_in_transaction::Statement {
            connection_id: q.connection_id,
            fingerprint: fp.id,
            normalized: &fp.normalized,
            kind: fp.kind,
            locking_read: facts.locking,
            cte_write: facts.modifies,
            completed: matches!(q.outcome, Outcome::Complete { .. }),
            statement_index: q.statement_index,
            tx_status: q.tx_status,
            started_at: q.started_at,
            ended_at: q.started_at.checked_add(q.duration).unwrap_or(q.started_at),
        };
        let request = observed.request;
        if let Some(gap) = self
            .idle
            .observe(&statement, request.id, || grouping::request_labels(request))
        {
            self.book.add(findings::idle_finding(&gap));
        }
        self.check_unbounded(
            fp,
            &facts,
            q.database.as_ref(),
            q.rows,
            q.started_at,
            Returned::Execution(&origin),
        );
        self.follow_cursor(fp, q, now);
        if let Some(db) = &q.database {
            if fp.kind == StatementKind::Ddl {
                self.indexes.schema_changed(db, now);
            } else if !fp.fallback
                && matches!(
                    fp.kind,
                    StatementKind::Select
                        | StatementKind::Update
                        | StatementKind::Delete
                        | StatementKind::Insert
                )
                && !fp.tables.is_empty()
            {
                let execution = indexes::Execution {
                    database: db,
                    fingerprint: fp.id,
                    normalized: &fp.normalized,
                    user: q.user.as_ref(),
                    at: to_offset(q.started_at),
                };
                self.indexes
                    .executed(execution, || statement_text(q, fp), now);
                if facts.offset {
                    self.check_offset(db, fp, q);
                }
            }
        }
        Some(processed)
    }

    fn facts_for(&mut self, fp: &Fingerprint, q: &QueryEvent) -> Arc<StatementFacts> {
        self.facts_for_text(fp, statement_text(q, fp), q.database.as_ref())
    }

    pub(super) fn facts_for_text(
        &mut self,
        fp: &Fingerprint,
        text: &str,
        database: Option<&Arc<str>>,
    ) -> Arc<StatementFacts> {
        if let Some(f) = self.facts.get(&fp.id) {
            return f.clone();
        }
        let mut facts = if fp.kind == StatementKind::Select && !fp.fallback {
            statement_facts(text)
        } else {
            StatementFacts::default()
        };
        facts.table = fp.tables.first().cloned();
        facts.database = database.cloned();
        let facts = Arc::new(facts);
        if self.facts.len() >= self.config.max_statement_facts {
            // Crude but bounded: start over rather than track recency.
            self.facts.clear();
        }
        self.facts.insert(fp.id, facts.clone());
        facts
    }

    /// Rates one execution of `fp` that returned `rows`; `cursor`: the rows
    /// of a SQL cursor's FETCHes, added up.
    pub(super) fn check_unbounded(
        &mut self,
        fp: &Fingerprint,
        facts: &StatementFacts,
        database: Option<&Arc<str>>,
        rows: u64,
        started_at: SystemTime,
        returned: Returned<'_>,
    ) {
        if !facts.parsed
            || !unbounded::is_candidate(
                fp.kind == StatementKind::Select,
                fp.has_limit,
                facts.aggregate_only,
                facts.exists_only,
                &fp.tables,
            )
        {
            return;
        }
        let how = match returned {
            Returned::Execution(_) => unbounded::Returned::Execution,
            Returned::Cursor => unbounded::Returned::Cursor,
        };
        let Some(verdict) = unbounded::evaluate(&self.config.unbounded, rows, how) else {
            return;
        };
        // This very execution's origin, not the shape's latest.
        let origin = match returned {
            Returned::Execution(origin) => Some(findings::ExecutionOrigin {
                source: origin.source.as_deref(),
                trace_id: origin.trace_id.as_deref(),
            }),
            Returned::Cursor => None,
        };
        self.book.add(findings::unbounded_finding(
            &verdict, fp, database, started_at, origin,
        ));
    }

    /// Reads this execution's OFFSET (bound, or a literal in its text),
    /// compares it with the threshold and hands on only its order of
    /// magnitude (see [`crate::offset`]).
    fn check_offset(&mut self, db: &Arc<str>, fp: &Fingerprint, q: &QueryEvent) {
        let fingerprint = fp.id;
        let offset = q
            .offset
            .or_else(|| match top_level_offset(statement_text(q, fp)) {
                Some(OffsetClause::Literal(v)) => Some(v),
                _ => None,
            });
        let Some(offset) = offset else {
            return;
        };
        if let Some(severity) = self.config.offset_pagination.severity(offset) {
            self.indexes.large_offset(
                db,
                fingerprint,
                magnitude(offset),
                severity,
                to_offset(q.started_at),
            );
        }
    }
}

/// Rows a write changed, from its command tag (`INSERT 0 3`, `UPDATE 2`,
/// `DELETE 0`, `MERGE 1`): the last number.
fn rows_changed(tag: &str) -> Option<u64> {
    tag.rsplit(' ').next()?.parse().ok()
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{Outcome, Protocol, SessionEvent, TxStatus};
    use crate::pipeline::AnalyzerConfig;

    fn statement(sql: &Arc<str>, index: u16, hold: Option<crate::event::TextHold>) -> SessionEvent {
        SessionEvent::Query(QueryEvent {
            connection_id: 1,
            sql: sql.clone(),
            statement_index: index,
            statement_name: None,
            prepared_at: None,
            protocol: Protocol::Simple,
            params_hash: None,
            param_hashes: SmallVec::new(),
            result_hashes: Vec::new(),
            offset: None,
            started_at: SystemTime::now(),
            duration: Duration::from_millis(1),
            rows: 1,
            outcome: Outcome::Complete {
                tag: "SELECT 1".into(),
            },
            tx_status: TxStatus::Idle,
            application_name: None,
            database: None,
            user: None,
            text_hold: hold,
        })
    }

    #[test]
    fn statements_of_one_text_are_analysed_up_to_the_cap() {
        let mut analyzer = Analyzer::new(AnalyzerConfig {
            max_statements_per_text: 3,
            ..AnalyzerConfig::default()
        });
        let sql: Arc<str> = Arc::from("SELECT 1; SELECT 2 FROM t; SELECT 3 FROM u; SELECT 4");
        let now = Instant::now();
        let kinds: Vec<_> = (0..3)
            .map(|i| analyzer.process(&statement(&sql, i, None), now).unwrap())
            .collect();
        assert_eq!(analyzer.stats().queries, 3);
        assert_eq!(analyzer.stats().unmatched_statements, 0);
        assert_eq!(analyzer.stats().fingerprints, 3);
        assert!(kinds.iter().all(|p| !p.fallback));
        // A later statement has no fingerprint of its own (the proxy never
        // sends one): counted as unmatched, not fingerprinted afresh.
        analyzer.process(&statement(&sql, 3, None), now);
        assert_eq!(analyzer.stats().unmatched_statements, 1);
        assert_eq!(analyzer.stats().fingerprints, 3);
    }

    #[test]
    fn a_large_texts_hold_is_kept_while_its_text_is_and_let_go_at_the_tick() {
        let mut analyzer = Analyzer::new(AnalyzerConfig::default());
        let sql: Arc<str> = Arc::from("SELECT 1; SELECT 2");
        let hold: crate::event::TextHold = Arc::new("charged");
        let now = Instant::now();
        for i in 0..2 {
            let event = statement(&sql, i, Some(hold.clone()));
            analyzer.process(&event, now);
        }
        // The analyzer still refers to the text, so it keeps the hold too.
        assert_eq!(Arc::strong_count(&hold), 2);
        assert_eq!(Arc::strong_count(&sql), 2);
        analyzer.tick(now);
        assert_eq!(Arc::strong_count(&hold), 1);
        assert_eq!(Arc::strong_count(&sql), 1);
    }

    #[test]
    fn a_statements_text_comes_from_the_split_that_numbered_it() {
        // Vertical tab: whitespace to the lexer (and to PostgreSQL 16+), so
        // the second statement is the SELECT, not the `\x0b` between.
        let sql: Arc<str> = Arc::from("SELECT 1;\x0b; SELECT a FROM t OFFSET 5; SELECT 2");
        let mut cache = FingerprintCache::default();
        let fps = cache.get(&sql);
        let texts: Vec<_> = fps
            .iter()
            .map(|fp| {
                let SessionEvent::Query(q) = statement(&sql, fp.statement_index, None) else {
                    unreachable!("a query event");
                };
                statement_text(&q, fp).trim().to_owned()
            })
            .collect();
        assert_eq!(texts, ["SELECT 1", "SELECT a FROM t OFFSET 5", "SELECT 2"]);
    }
}
