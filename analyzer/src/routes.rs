//! Per-route figures: how many statements a route's requests run, and the
//! rule that turns a growth since a baseline into a
//! `query_count_regression`.
//!
//! # What is counted
//! When a request context ends, the pipeline hands its route (the `route`
//! tag, or `controller#action`) and its statements of application work
//! (transaction control, session settings and request-id statements are
//! bookkeeping and not counted, as for the query budget) to a
//! [`RouteTable`]. Only requests the application named (a tag, `SET
//! qproxy.request_id`, a per-request `application_name`) count: fallback
//! groups (a transaction, a burst between idle gaps) may hold several
//! requests or part of one, and a figure built on them would drift with
//! load rather than with the code.
//!
//! # Bounded
//! The table tracks at most `max_routes` routes, the first ones seen;
//! requests of later routes are folded into one `other` entry. Per route,
//! the statements-per-request distribution is a histogram (exact up to
//! [`EXACT_UP_TO`] statements, then eight buckets per power of two), and at
//! most [`ROUTE_SHAPES`] shapes are kept, those with the most executions.
//!
//! # Regressions
//! [`regressions`] compares a baseline's figures with the current ones by
//! route: a route regressed when its median statements per request grew
//! beyond the [`Tolerance`] (by default more than 1.5× and by at least 5).
//! Routes new since the baseline, routes gone, and the `other` bucket are
//! never regressions. The shapes whose executions per request grew are
//! named, so the finding points at the loop that was added.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::detect::n_plus_one::ShapeCount;
use crate::finding::{details_map, finding_id, Finding, FindingKind, RequestRef, Severity};

/// The name of the bucket that holds the requests of routes past the cap.
pub const OTHER_ROUTE: &str = "other";

/// Shapes kept per route (those with the most executions).
pub const ROUTE_SHAPES: usize = 20;

/// Statement counts up to this are kept exactly in a route's histogram;
/// larger ones share buckets of an eighth of a power of two.
pub const EXACT_UP_TO: u64 = 64;

/// Default for the number of routes a table tracks before folding the
/// rest into `other`.
pub const DEFAULT_MAX_ROUTES: usize = 100;

/// Grown shapes named in one regression.
pub const GROWN_SHAPES: usize = 5;

/// A shape's executions per request must grow by at least this much to be
/// named as a shape that grew (averages move a little between runs).
pub const SHAPE_GROWTH: f64 = 0.5;

/// One statement shape of a route, accumulated over its requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteShape {
    /// Fingerprint (16 hex digits).
    pub fingerprint: String,
    /// Normalized SQL.
    pub query: String,
    /// Executions over all the route's requests.
    pub executions: u64,
    /// Most executions in one request.
    pub max_per_request: u64,
}

/// A route's accumulated figures: mergeable, so flushes, runs and stores
/// combine by adding up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RouteStats {
    /// The route label ([`OTHER_ROUTE`] for the overflow bucket).
    pub route: String,
    /// Whether this is the overflow bucket rather than a route of that
    /// name.
    pub other: bool,
    /// Requests counted.
    pub requests: u64,
    /// Most statements one request ran.
    pub statements_max: u64,
    /// Statements per request (bucketed, see [`bucket`]) → requests.
    pub histogram: BTreeMap<u64, u64>,
    /// The shapes with the most executions, most first; at most
    /// [`ROUTE_SHAPES`].
    pub shapes: Vec<RouteShape>,
}

/// The histogram key of a statement count: exact up to [`EXACT_UP_TO`],
/// then rounded down to the top four significant bits (eight buckets per
/// power of two, at most 12.5 % low), so a route's histogram holds a few
/// hundred keys at most whatever its requests ran.
pub fn bucket(statements: u64) -> u64 {
    if statements <= EXACT_UP_TO {
        return statements;
    }
    let bits = 64 - statements.leading_zeros();
    let drop = bits.saturating_sub(4);
    statements >> drop << drop
}

impl RouteStats {
    /// An empty entry for `route`.
    pub fn new(route: &str, other: bool) -> RouteStats {
        RouteStats {
            route: route.to_string(),
            other,
            ..RouteStats::default()
        }
    }

    /// Counts one request that ran `statements` statements, `shapes` being
    /// its shapes with their executions in it.
    pub fn record(&mut self, statements: u64, shapes: &[ShapeCount]) {
        self.requests += 1;
        self.statements_max = self.statements_max.max(statements);
        *self.histogram.entry(bucket(statements)).or_default() += 1;
        for s in shapes {
            self.add_shape(RouteShape {
                fingerprint: s.fingerprint.to_string(),
                query: s.normalized.to_string(),
                executions: s.count,
                max_per_request: s.count,
            });
        }
        self.trim_shapes();
    }

    /// Folds `other`'s requests into this entry.
    pub fn merge(&mut self, other: &RouteStats) {
        self.requests += other.requests;
        self.statements_max = self.statements_max.max(other.statements_max);
        for (&k, &n) in &other.histogram {
            *self.histogram.entry(k).or_default() += n;
        }
        for s in &other.shapes {
            self.add_shape(s.clone());
        }
        self.trim_shapes();
    }

    fn add_shape(&mut self, shape: RouteShape) {
        match self
            .shapes
            .iter_mut()
            .find(|s| s.fingerprint == shape.fingerprint)
        {
            Some(s) => {
                s.executions += shape.executions;
                s.max_per_request = s.max_per_request.max(shape.max_per_request);
            }
            None => self.shapes.push(shape),
        }
    }

    /// Keeps the [`ROUTE_SHAPES`] shapes with the most executions (ties by
    /// fingerprint, so the order is deterministic).
    fn trim_shapes(&mut self) {
        self.shapes.sort_by(|a, b| {
            b.executions
                .cmp(&a.executions)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        self.shapes.truncate(ROUTE_SHAPES);
    }

    /// The median statements per request: the lower middle request's count
    /// (a count some request actually ran), bucketed past [`EXACT_UP_TO`].
    pub fn median(&self) -> u64 {
        if self.requests == 0 {
            return 0;
        }
        let middle = (self.requests - 1) / 2;
        let mut seen = 0;
        for (&statements, &n) in &self.histogram {
            seen += n;
            if seen > middle {
                return statements;
            }
        }
        self.statements_max
    }

    /// What reports and baselines show of this entry.
    pub fn figures(&self) -> RouteFigures {
        let per_request = |executions: u64| {
            if self.requests == 0 {
                0.0
            } else {
                round2(executions as f64 / self.requests as f64)
            }
        };
        RouteFigures {
            route: self.route.clone(),
            other: self.other,
            requests: self.requests,
            statements: StatementFigures {
                median: self.median(),
                max: self.statements_max,
            },
            shapes: self
                .shapes
                .iter()
                .map(|s| ShapeFigures {
                    fingerprint: s.fingerprint.clone(),
                    query: s.query.clone(),
                    per_request: per_request(s.executions),
                    max_per_request: s.max_per_request,
                })
                .collect(),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Statements per request of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatementFigures {
    /// Median over the route's requests.
    pub median: u64,
    /// Most in one request.
    pub max: u64,
}

/// One shape of a route, as reports and baselines show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeFigures {
    /// Fingerprint (16 hex digits): what a baseline matches on.
    pub fingerprint: String,
    /// Normalized SQL (in a baseline, its start).
    pub query: String,
    /// Executions per request of the route, on average (two decimals).
    pub per_request: f64,
    /// Most executions in one request.
    #[serde(default)]
    pub max_per_request: u64,
}

/// A route's figures as the JSON report's `routes` array and a baseline's
/// `routes` hold them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteFigures {
    /// The route label.
    pub route: String,
    /// Requests counted.
    pub requests: u64,
    /// Statements per request.
    pub statements: StatementFigures,
    /// The shapes with the most executions, most first.
    #[serde(default)]
    pub shapes: Vec<ShapeFigures>,
    /// `true` for the bucket of the routes past the cap (absent otherwise).
    #[serde(default, skip_serializing_if = "is_false")]
    pub other: bool,
}

/// The routes of a run: what the pipeline records as requests end.
#[derive(Debug)]
pub struct RouteTable {
    routes: HashMap<Arc<str>, RouteStats>,
    other: Option<RouteStats>,
    max_routes: usize,
    /// Whether anything was recorded since the last [`RouteTable::take_changed`].
    changed: bool,
}

impl RouteTable {
    /// A table that tracks at most `max_routes` routes (at least one)
    /// before folding requests into `other`.
    pub fn new(max_routes: usize) -> RouteTable {
        RouteTable {
            routes: HashMap::new(),
            other: None,
            max_routes: max_routes.max(1),
            changed: false,
        }
    }

    /// Counts one ended request of `route`.
    pub fn record(&mut self, route: &Arc<str>, statements: u64, shapes: &[ShapeCount]) {
        self.changed = true;
        if let Some(stats) = self.routes.get_mut(route) {
            stats.record(statements, shapes);
        } else if self.routes.len() < self.max_routes {
            let mut stats = RouteStats::new(route, false);
            stats.record(statements, shapes);
            self.routes.insert(route.clone(), stats);
        } else {
            self.other
                .get_or_insert_with(|| RouteStats::new(OTHER_ROUTE, true))
                .record(statements, shapes);
        }
    }

    /// Every entry, most requests first (ties by route; `other` last).
    pub fn snapshot(&self) -> Vec<RouteStats> {
        let mut out: Vec<RouteStats> = self.routes.values().cloned().collect();
        sort_routes(&mut out);
        out.extend(self.other.iter().cloned());
        out
    }

    /// The run's totals so far when anything changed since the last call:
    /// what the store replaces the run's rows with.
    pub fn take_changed(&mut self) -> Option<Vec<RouteStats>> {
        std::mem::take(&mut self.changed).then(|| self.snapshot())
    }

    /// Routes tracked (not counting `other`).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no request was recorded.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.other.is_none()
    }
}

/// Sorts entries for reports: most requests first, then by route, the
/// `other` bucket last.
pub fn sort_routes(routes: &mut [RouteStats]) {
    routes.sort_by(|a, b| {
        a.other
            .cmp(&b.other)
            .then(b.requests.cmp(&a.requests))
            .then_with(|| a.route.cmp(&b.route))
    });
}

/// Combines entries of several runs (or stores) by route, keeping routes
/// and the `other` bucket apart.
pub fn merge_routes<'a>(entries: impl IntoIterator<Item = &'a RouteStats>) -> Vec<RouteStats> {
    let mut merged: BTreeMap<(bool, &str), RouteStats> = BTreeMap::new();
    for e in entries {
        match merged.get_mut(&(e.other, e.route.as_str())) {
            Some(acc) => acc.merge(e),
            None => {
                merged.insert((e.other, e.route.as_str()), e.clone());
            }
        }
    }
    let mut out: Vec<RouteStats> = merged.into_values().collect();
    sort_routes(&mut out);
    out
}

/// When a route's growth is a regression: its median statements per
/// request grew by more than `ratio` times and by at least `min_increase`
/// statements. Both, so a route going from 1 to 2 statements (2×) or from
/// 200 to 206 (+6) stays quiet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// The growth factor that must be exceeded (default 1.5).
    pub ratio: f64,
    /// The smallest growth, in statements, that counts (default 5).
    pub min_increase: u64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            ratio: 1.5,
            min_increase: 5,
        }
    }
}

impl Tolerance {
    /// Whether going from `before` to `after` statements per request
    /// exceeds the tolerance.
    pub fn exceeded(&self, before: u64, after: u64) -> bool {
        after > before
            && after - before >= self.min_increase
            && after as f64 > before as f64 * self.ratio
    }
}

/// A shape whose executions per request grew.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrownShape {
    /// Fingerprint (16 hex digits).
    pub fingerprint: String,
    /// Normalized SQL.
    pub query: String,
    /// Executions per request in the baseline (0 when the baseline did not
    /// list the shape).
    pub before: f64,
    /// Executions per request now.
    pub after: f64,
}

/// A route whose statements per request grew beyond the tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    /// The baseline's figures of the route.
    pub before: RouteFigures,
    /// The current figures.
    pub after: RouteFigures,
    /// The shapes whose executions per request grew, most growth first (at
    /// most [`GROWN_SHAPES`]).
    pub grown: Vec<GrownShape>,
}

/// Compares current route figures with a baseline's; one [`Regression`]
/// per route that grew beyond `tolerance`, in the order of `current`.
pub fn regressions(
    baseline: &[RouteFigures],
    current: &[RouteFigures],
    tolerance: &Tolerance,
) -> Vec<Regression> {
    let before: HashMap<&str, &RouteFigures> = baseline
        .iter()
        .filter(|r| !r.other)
        .map(|r| (r.route.as_str(), r))
        .collect();
    let mut out = Vec::new();
    for after in current.iter().filter(|r| !r.other) {
        let Some(before) = before.get(after.route.as_str()) else {
            continue;
        };
        if !tolerance.exceeded(before.statements.median, after.statements.median) {
            continue;
        }
        out.push(Regression {
            before: (*before).clone(),
            after: after.clone(),
            grown: grown_shapes(before, after),
        });
    }
    out
}

/// The shapes of `after` whose executions per request grew by at least
/// [`SHAPE_GROWTH`] over `before`'s, most growth first.
fn grown_shapes(before: &RouteFigures, after: &RouteFigures) -> Vec<GrownShape> {
    let mut grown: Vec<GrownShape> = after
        .shapes
        .iter()
        .filter_map(|s| {
            let was = before
                .shapes
                .iter()
                .find(|b| b.fingerprint == s.fingerprint)
                .map_or(0.0, |b| b.per_request);
            (s.per_request - was >= SHAPE_GROWTH).then(|| GrownShape {
                fingerprint: s.fingerprint.clone(),
                query: s.query.clone(),
                before: was,
                after: s.per_request,
            })
        })
        .collect();
    grown.sort_by(|a, b| {
        (b.after - b.before)
            .total_cmp(&(a.after - a.before))
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    grown.truncate(GROWN_SHAPES);
    grown
}

/// `details` of a `query_count_regression` finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryCountRegressionDetails {
    /// The route.
    pub route: String,
    /// Median statements per request in the baseline.
    pub median_before: u64,
    /// Median statements per request now.
    pub median_after: u64,
    /// Most statements in one request in the baseline.
    pub max_before: u64,
    /// Most statements in one request now.
    pub max_after: u64,
    /// Requests the baseline's figures rest on.
    pub requests_before: u64,
    /// Requests the current figures rest on.
    pub requests_after: u64,
    /// `median_after / median_before`, two decimals.
    pub ratio: f64,
    /// The tolerance's growth factor.
    pub tolerance_ratio: f64,
    /// The tolerance's smallest growth in statements.
    pub tolerance_min_increase: u64,
    /// The shapes whose executions per request grew.
    pub grown_shapes: Vec<GrownShape>,
}

impl Regression {
    /// The severity rule: a warning; an error from four times the
    /// baseline's median, as the query budget's.
    pub fn severity(&self) -> Severity {
        if self.ratio() >= 4.0 {
            Severity::Error
        } else {
            Severity::Warning
        }
    }

    /// `after / before` median statements per request.
    pub fn ratio(&self) -> f64 {
        let before = self.before.statements.median.max(1);
        self.after.statements.median as f64 / before as f64
    }

    /// The finding `qproxy report --baseline` shows and gates on. One per
    /// route: its id hashes only the kind and the route, so a baseline or a
    /// dashboard follows it from one run to the next. `seen` is the time
    /// span of the runs compared.
    pub fn finding(
        &self,
        tolerance: &Tolerance,
        seen: (OffsetDateTime, OffsetDateTime),
    ) -> Finding {
        let route = &self.after.route;
        let ratio = self.ratio();
        let details = QueryCountRegressionDetails {
            route: route.clone(),
            median_before: self.before.statements.median,
            median_after: self.after.statements.median,
            max_before: self.before.statements.max,
            max_after: self.after.statements.max,
            requests_before: self.before.requests,
            requests_after: self.after.requests,
            ratio: round2(ratio),
            tolerance_ratio: tolerance.ratio,
            tolerance_min_increase: tolerance.min_increase,
            grown_shapes: self.grown.clone(),
        };
        let top = self.grown.first();
        Finding {
            id: finding_id(
                FindingKind::QueryCountRegression,
                "",
                None,
                &[],
                Some(route),
                None,
            ),
            kind: FindingKind::QueryCountRegression,
            severity: self.severity(),
            fingerprint: top.map(|s| s.fingerprint.clone()).unwrap_or_default(),
            query: top.map(|s| s.query.clone()).unwrap_or_default(),
            table: None,
            columns: Vec::new(),
            count: Some(self.after.statements.median),
            occurrences: self.after.requests,
            request: Some(RequestRef {
                id: None,
                route: Some(route.clone()),
                correlation: None,
            }),
            parent: None,
            rows: None,
            suggestion: Some(self.suggestion()),
            database: None,
            details: details_map(&details),
            first_seen: seen.0,
            last_seen: seen.1,
        }
    }

    fn suggestion(&self) -> String {
        let (before, after) = (self.before.statements.median, self.after.statements.median);
        let mut s = format!(
            "Requests to {} now run {after} statements (median) where the baseline ran {before}.",
            self.after.route
        );
        match self.grown.first() {
            Some(g) => s.push_str(&format!(
                " The shape that grew most ran {} times per request, up from {}: look for a \
                 loop that queries once per item and batch it (WHERE id = ANY($1), a join, or \
                 the ORM's eager loading).",
                trim(g.after),
                trim(g.before)
            )),
            None => s.push_str(
                " No single shape grew much: many shapes each ran a little more often. Compare \
                 the route's shapes in the two reports.",
            ),
        }
        s.push_str(
            " If the growth is intended, accept it by writing a new baseline \
             (qproxy report --write-baseline FILE).",
        );
        s
    }
}

/// A per-request figure without a needless `.0`.
pub fn trim(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::FingerprintId;

    fn shape(fp: u64, count: u64) -> ShapeCount {
        ShapeCount {
            fingerprint: FingerprintId(fp),
            normalized: Arc::from(format!("SELECT {fp}")),
            count,
        }
    }

    fn figures(route: &str, median: u64, shapes: &[(u64, f64)]) -> RouteFigures {
        RouteFigures {
            route: route.into(),
            requests: 10,
            statements: StatementFigures {
                median,
                max: median,
            },
            shapes: shapes
                .iter()
                .map(|&(fp, per_request)| ShapeFigures {
                    fingerprint: FingerprintId(fp).to_string(),
                    query: format!("SELECT {fp}"),
                    per_request,
                    max_per_request: per_request.ceil() as u64,
                })
                .collect(),
            other: false,
        }
    }

    #[test]
    fn buckets_are_exact_then_an_eighth_of_a_power_of_two() {
        for n in 0..=EXACT_UP_TO {
            assert_eq!(bucket(n), n);
        }
        assert_eq!(bucket(65), 64);
        assert_eq!(bucket(71), 64);
        assert_eq!(bucket(72), 72);
        assert_eq!(bucket(1000), 960);
        assert_eq!(bucket(u64::MAX), 0xf << 60, "no overflow at the top");
        // Few keys, however wide the range.
        let keys: std::collections::BTreeSet<u64> = (0..1_000_000).map(bucket).collect();
        assert!(keys.len() < 200, "{}", keys.len());
    }

    #[test]
    fn median_max_and_per_request_shapes() {
        let mut r = RouteStats::new("/orders", false);
        for statements in [3, 3, 23, 3, 5] {
            r.record(statements, &[shape(1, 1), shape(2, statements - 1)]);
        }
        let f = r.figures();
        assert_eq!(f.requests, 5);
        assert_eq!(f.statements, StatementFigures { median: 3, max: 23 });
        assert_eq!(f.shapes[0].fingerprint, FingerprintId(2).to_string());
        assert_eq!(f.shapes[0].per_request, 6.4);
        assert_eq!(f.shapes[0].max_per_request, 22);
        assert_eq!(f.shapes[1].per_request, 1.0);
        // An even count: the lower middle request.
        let mut even = RouteStats::new("/a", false);
        even.record(3, &[]);
        even.record(23, &[]);
        assert_eq!(even.median(), 3);
        assert_eq!(RouteStats::new("/none", false).median(), 0);
    }

    #[test]
    fn merging_adds_up_like_recording_everything_once() {
        let mut whole = RouteStats::new("/r", false);
        let mut a = RouteStats::new("/r", false);
        let mut b = RouteStats::new("/r", false);
        for (i, n) in [4u64, 9, 4, 100, 7, 4].into_iter().enumerate() {
            let shapes = [shape(i as u64 % 2, n)];
            whole.record(n, &shapes);
            (if i < 3 { &mut a } else { &mut b }).record(n, &shapes);
        }
        a.merge(&b);
        assert_eq!(a, whole);
    }

    #[test]
    fn shapes_per_route_are_capped_to_the_busiest() {
        let mut r = RouteStats::new("/r", false);
        let shapes: Vec<ShapeCount> = (0..50).map(|i| shape(i, i + 1)).collect();
        r.record(1275, &shapes);
        assert_eq!(r.shapes.len(), ROUTE_SHAPES);
        assert_eq!(r.shapes[0].executions, 50);
        assert_eq!(r.shapes[ROUTE_SHAPES - 1].executions, 31);
    }

    #[test]
    fn the_table_folds_routes_past_the_cap_into_other() {
        let mut t = RouteTable::new(2);
        assert!(t.take_changed().is_none());
        for (route, n) in [("/a", 2), ("/b", 3), ("/c", 4), ("/a", 2), ("/d", 5)] {
            t.record(&Arc::from(route), n, &[]);
        }
        assert_eq!(t.len(), 2);
        let routes = t.take_changed().expect("changed");
        let names: Vec<(&str, bool, u64)> = routes
            .iter()
            .map(|r| (r.route.as_str(), r.other, r.requests))
            .collect();
        assert_eq!(
            names,
            [("/a", false, 2), ("/b", false, 1), ("other", true, 2)]
        );
        assert!(t.take_changed().is_none(), "nothing new since");
        // A route literally named "other" stays apart from the bucket.
        let mut real = RouteStats::new("other", false);
        real.record(1, &[]);
        let merged = merge_routes(routes.iter().chain([&real]));
        assert_eq!(merged.len(), 4);
        assert!(merged.last().is_some_and(|r| r.other && r.requests == 2));
    }

    #[test]
    fn tolerance_edges() {
        let t = Tolerance::default();
        // More than 1.5×, and at least +5: both must hold.
        assert!(t.exceeded(3, 23));
        assert!(t.exceeded(10, 16));
        assert!(!t.exceeded(10, 15), "exactly 1.5× is within");
        assert!(t.exceeded(1, 6));
        assert!(!t.exceeded(1, 5), "+4 is within");
        assert!(!t.exceeded(20, 29), "+9 but only 1.45×");
        assert!(t.exceeded(20, 31));
        assert!(!t.exceeded(23, 3), "a drop is no regression");
        assert!(!t.exceeded(5, 5));
        let strict = Tolerance {
            ratio: 1.0,
            min_increase: 1,
        };
        assert!(strict.exceeded(3, 4));
        assert!(!strict.exceeded(3, 3));
    }

    #[test]
    fn regressions_name_the_grown_shapes_and_skip_new_unchanged_and_other_routes() {
        let baseline = [
            figures("/orders", 3, &[(1, 1.0), (2, 2.0)]),
            figures("/users", 4, &[(3, 4.0)]),
            RouteFigures {
                other: true,
                ..figures(OTHER_ROUTE, 2, &[])
            },
        ];
        let current = [
            figures("/orders", 23, &[(2, 22.0), (1, 1.0), (9, 0.6)]),
            figures("/users", 4, &[(3, 4.0)]),
            figures("/new", 90, &[(4, 90.0)]),
            RouteFigures {
                other: true,
                ..figures(OTHER_ROUTE, 90, &[])
            },
        ];
        let found = regressions(&baseline, &current, &Tolerance::default());
        assert_eq!(found.len(), 1, "{found:?}");
        let r = &found[0];
        assert_eq!(r.after.route, "/orders");
        let grown: Vec<(&str, f64, f64)> = r
            .grown
            .iter()
            .map(|g| (g.fingerprint.as_str(), g.before, g.after))
            .collect();
        assert_eq!(
            grown,
            [
                ("0000000000000002", 2.0, 22.0),
                ("0000000000000009", 0.0, 0.6)
            ]
        );
        let f = r.finding(
            &Tolerance::default(),
            (OffsetDateTime::UNIX_EPOCH, OffsetDateTime::UNIX_EPOCH),
        );
        assert_eq!(f.kind, FindingKind::QueryCountRegression);
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.count, Some(23));
        assert_eq!(f.fingerprint, "0000000000000002");
        assert_eq!(f.id, f.compute_id(), "the id follows the route only");
        assert_eq!(f.details["median_before"], 3);
        assert_eq!(f.details["ratio"], 7.67);
        assert!(f
            .suggestion
            .as_deref()
            .unwrap()
            .contains("22 times per request, up from 2"));
    }

    #[test]
    fn a_regression_is_an_error_from_four_times_the_baseline() {
        let regression = |after: u64| Regression {
            before: figures("/a", 10, &[]),
            after: figures("/a", after, &[]),
            grown: Vec::new(),
        };
        assert_eq!(regression(20).severity(), Severity::Warning);
        assert_eq!(regression(39).severity(), Severity::Warning);
        assert_eq!(regression(40).severity(), Severity::Error);
    }

    #[test]
    fn figures_round_trip_and_old_shapes_without_max_load() {
        let f = figures("/a", 3, &[(1, 1.5)]);
        let json = serde_json::to_value(&f).unwrap();
        assert!(json.get("other").is_none());
        assert_eq!(json["statements"]["median"], 3);
        let back: RouteFigures = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
        let minimal: RouteFigures = serde_json::from_str(
            r#"{"route":"/a","requests":1,"statements":{"median":1,"max":1}}"#,
        )
        .unwrap();
        assert!(minimal.shapes.is_empty() && !minimal.other);
        assert_eq!(trim(2.0), "2");
        assert_eq!(trim(0.6), "0.6");
        assert_eq!(trim(5.25), "5.25");
    }
}
