//! The live view: a page on the admin port (`GET /`) that shows coverage,
//! findings, the fingerprints that take the most time and statements per
//! request by route as they happen, polling `GET /api/live`.
//!
//! The analysis task owns a [`LiveView`]: each flush it folds the new
//! findings into its own bounded set and, when someone has looked at the
//! page lately, serializes a [`snapshot`] once and swaps it into the shared
//! [`LiveFeed`]. The admin server only clones those bytes, so any number of
//! viewers cost the analysis nothing beyond that one serialization per
//! flush, and nobody watching costs it none at all.
//!
//! The page ([`page`]) is one HTML document with its CSS and JavaScript
//! inline, allowed by hash in a strict Content-Security-Policy; it builds
//! every element with `textContent`, since request tags and SQL come from
//! clients.

pub(crate) mod page;
pub(crate) mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qproxy_analyzer::finding::{Finding, Summary};
use qproxy_analyzer::pipeline::Analyzer;
use qproxy_analyzer::report::report_order;

/// Distinct findings the live view holds; past it, the least severe (in
/// report order) make room.
pub const MAX_HELD_FINDINGS: usize = 1_000;

/// After a view of the page, snapshots are built for this long; then the
/// analysis stops building them until someone looks again.
pub const WATCH_WINDOW: Duration = Duration::from_secs(60);

/// What the analysis task publishes and the admin server serves.
#[derive(Debug)]
pub struct LiveFeed {
    /// The latest snapshot, serialized.
    snapshot: Mutex<Bytes>,
    /// Origin of `last_viewed`.
    clock: Instant,
    /// Milliseconds after `clock` of the latest `/api/live` request, plus
    /// one (0: never).
    last_viewed: AtomicU64,
}

impl LiveFeed {
    /// A feed whose first snapshot is an empty one.
    pub fn new() -> Arc<LiveFeed> {
        let empty = snapshot::build(&Summary::default(), Vec::new(), 0, None);
        Arc::new(LiveFeed {
            snapshot: Mutex::new(snapshot::to_json(&empty)),
            clock: Instant::now(),
            last_viewed: AtomicU64::new(0),
        })
    }

    /// The latest snapshot; counts as a view, so fresh ones keep coming.
    /// After a quiet spell the first view gets the last snapshot built (the
    /// page shows its time) and the views after it fresh ones.
    pub fn view(&self) -> Bytes {
        let now = u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_viewed.store(now + 1, Ordering::Relaxed);
        crate::lock(&self.snapshot).clone()
    }

    /// Whether someone looked within [`WATCH_WINDOW`].
    fn watched(&self) -> bool {
        match self.last_viewed.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let viewed = self.clock + Duration::from_millis(at - 1);
                viewed.elapsed() < WATCH_WINDOW
            }
        }
    }

    fn publish(&self, snapshot: Bytes) {
        *crate::lock(&self.snapshot) = snapshot;
    }
}

/// The analysis task's side: findings so far, merged, and the feed.
#[derive(Debug)]
pub struct LiveView {
    feed: Arc<LiveFeed>,
    findings: HashMap<String, Finding>,
}

impl LiveView {
    /// Publishes into `feed`.
    pub fn new(feed: Arc<LiveFeed>) -> LiveView {
        LiveView {
            feed,
            findings: HashMap::new(),
        }
    }

    /// Folds a flush's findings in and, if someone is watching, publishes a
    /// snapshot.
    pub fn flush(&mut self, analyzer: &Analyzer, summary: &Summary, findings: &[Finding]) {
        findings.iter().for_each(|f| self.add(f));
        if self.feed.watched() {
            self.publish(analyzer, summary);
        }
    }

    /// Folds the last findings in and publishes, watched or not: what the
    /// page shows while the proxy drains.
    pub fn finish(mut self, analyzer: &Analyzer, summary: &Summary, findings: &[Finding]) {
        findings.iter().for_each(|f| self.add(f));
        self.publish(analyzer, summary);
    }

    fn publish(&self, analyzer: &Analyzer, summary: &Summary) {
        let mut shown: Vec<&Finding> = self.findings.values().collect();
        shown.sort_by(|a, b| report_order(a, b));
        shown.truncate(snapshot::MAX_SHOWN_FINDINGS);
        let snapshot = snapshot::build(summary, shown, self.findings.len(), Some(analyzer.live()));
        self.feed.publish(snapshot::to_json(&snapshot));
    }

    fn add(&mut self, f: &Finding) {
        if let Some(held) = self.findings.get_mut(&f.id) {
            held.merge(f);
            return;
        }
        if self.findings.len() >= MAX_HELD_FINDINGS {
            let least = self
                .findings
                .values()
                .max_by(|a, b| report_order(a, b))
                .map(|f| f.id.clone());
            match least {
                // The newcomer would be the least of all: it is the one left out.
                Some(id) if report_order(f, &self.findings[&id]).is_gt() => return,
                Some(id) => {
                    self.findings.remove(&id);
                }
                None => {}
            }
        }
        self.findings.insert(f.id.clone(), snapshot::trimmed(f));
    }

    /// Findings held (tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.findings.len()
    }
}

#[cfg(test)]
mod tests {
    use qproxy_analyzer::finding::{FindingKind, Severity};
    use qproxy_analyzer::pipeline::AnalyzerConfig;

    use super::*;

    pub(crate) fn finding(id: &str, kind: FindingKind, severity: Severity) -> Finding {
        let at = time_now();
        Finding {
            id: id.into(),
            kind,
            severity,
            fingerprint: "00000000000000aa".into(),
            query: "SELECT * FROM t WHERE id = $1".into(),
            table: Some("public.t".into()),
            columns: vec!["id".into()],
            count: Some(6),
            occurrences: 1,
            request: None,
            parent: None,
            rows: None,
            suggestion: Some("batch it".into()),
            database: None,
            details: serde_json::Map::new(),
            first_seen: at,
            last_seen: at,
        }
    }

    fn time_now() -> time::OffsetDateTime {
        time::OffsetDateTime::from(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1))
    }

    fn findings_in(feed: &LiveFeed) -> Vec<serde_json::Value> {
        let json: serde_json::Value = serde_json::from_slice(&feed.view()).unwrap();
        json["findings"].as_array().unwrap().clone()
    }

    #[test]
    fn snapshots_are_built_only_while_someone_watches() {
        let feed = LiveFeed::new();
        let mut view = LiveView::new(feed.clone());
        let analyzer = Analyzer::new(AnalyzerConfig::default());
        let f = finding("a", FindingKind::NPlusOne, Severity::Warning);
        // Nobody has looked yet: the finding is held, not published.
        view.flush(&analyzer, &Summary::default(), std::slice::from_ref(&f));
        assert_eq!(view.held(), 1);
        // That look counted: the next flush publishes.
        assert!(findings_in(&feed).is_empty());
        view.flush(&analyzer, &Summary::default(), &[]);
        let shown = findings_in(&feed);
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0]["id"], "a");
    }

    #[test]
    fn sightings_merge_and_the_least_make_room_at_the_cap() {
        let feed = LiveFeed::new();
        let mut view = LiveView::new(feed.clone());
        let analyzer = Analyzer::new(AnalyzerConfig::default());
        let a = finding("a", FindingKind::NPlusOne, Severity::Warning);
        view.flush(&analyzer, &Summary::default(), &[a.clone(), a.clone()]);
        assert_eq!(view.findings["a"].occurrences, 2);
        let infos: Vec<Finding> = (0..MAX_HELD_FINDINGS)
            .map(|i| {
                finding(
                    &format!("i{i:04}"),
                    FindingKind::UnboundedSelect,
                    Severity::Info,
                )
            })
            .collect();
        view.flush(&analyzer, &Summary::default(), &infos);
        assert_eq!(view.held(), MAX_HELD_FINDINGS);
        // The warning stayed; the info last in report order was left out.
        assert!(view.findings.contains_key("a"));
        assert!(!view
            .findings
            .contains_key(&format!("i{:04}", MAX_HELD_FINDINGS - 1)));
        // An error pushes an info out; another info past the cap is left out.
        let e = finding("e", FindingKind::SlowQuery, Severity::Error);
        let late = finding("zzzz", FindingKind::UnboundedSelect, Severity::Info);
        view.flush(&analyzer, &Summary::default(), &[e, late]);
        assert!(view.findings.contains_key("e") && !view.findings.contains_key("zzzz"));
        assert_eq!(view.held(), MAX_HELD_FINDINGS);
        // What is shown is capped and worst first.
        feed.view();
        view.flush(&analyzer, &Summary::default(), &[]);
        let shown = findings_in(&feed);
        assert_eq!(shown.len(), snapshot::MAX_SHOWN_FINDINGS);
        assert_eq!(shown[0]["id"], "e");
        assert_eq!(shown[1]["id"], "a");
    }
}
