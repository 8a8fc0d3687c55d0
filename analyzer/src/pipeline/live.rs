//! Running figures for the proxy's live view that no finding carries: the
//! fingerprints that took the most time, and how many statements each
//! route's requests ran.
//!
//! Both are bounded, since the traffic decides how many fingerprints and
//! routes there are. Fingerprints: at most [`MAX_FINGERPRINTS`]; when a new
//! one arrives at the cap, the one with the least total time so far makes
//! room, so the heavy ones stay (a newcomer has to earn its place again if
//! it is evicted in turn). Routes: the first [`MAX_ROUTES`] get their own
//! figures, later ones are pooled as [`RouteKey::Overflow`]; the median is
//! over each route's last [`RECENT_REQUESTS`] requests.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::Duration;

use crate::detect::n_plus_one::IdHasher;
use crate::fingerprint::{FingerprintId, StatementKind};

/// Fingerprints whose totals are kept.
pub const MAX_FINGERPRINTS: usize = 512;
/// Routes with figures of their own.
pub const MAX_ROUTES: usize = 256;
/// Requests per route the median is taken over.
pub const RECENT_REQUESTS: usize = 256;

/// Calls and time of one fingerprint since the proxy started (or since it
/// last entered the table; see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct FingerprintTotal {
    /// The fingerprint.
    pub fingerprint: FingerprintId,
    /// Its normalized SQL (placeholders only).
    pub normalized: Arc<str>,
    /// What the statement does.
    pub kind: StatementKind,
    /// Executions counted.
    pub calls: u64,
    /// Their summed duration (send to completion message).
    pub total: Duration,
}

impl FingerprintTotal {
    /// Mean duration per call.
    pub fn mean(&self) -> Duration {
        match u32::try_from(self.calls) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total / n,
            Err(_) => Duration::from_secs_f64(self.total.as_secs_f64() / self.calls as f64),
        }
    }
}

/// Which requests a [`RouteFigures`] row counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    /// Requests tagged with this route.
    Named(Arc<str>),
    /// Requests with no route (untagged, or tagged without one).
    Unnamed,
    /// Routes that arrived after [`MAX_ROUTES`] others, pooled.
    Overflow,
}

/// Statements per request of one route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteFigures {
    /// Which requests.
    pub route: RouteKey,
    /// Requests ended.
    pub requests: u64,
    /// Median statements per request over the last [`RECENT_REQUESTS`].
    pub median: u64,
    /// Most statements one request ran.
    pub max: u64,
}

/// One route's running figures.
#[derive(Debug, Default)]
struct RouteTally {
    requests: u64,
    max: u64,
    /// Ring of the last [`RECENT_REQUESTS`] statement counts.
    recent: Vec<u32>,
    next: usize,
}

impl RouteTally {
    fn record(&mut self, statements: u64) {
        self.requests += 1;
        self.max = self.max.max(statements);
        let value = u32::try_from(statements).unwrap_or(u32::MAX);
        if self.recent.len() < RECENT_REQUESTS {
            self.recent.push(value);
        } else {
            self.recent[self.next] = value;
        }
        self.next = (self.next + 1) % RECENT_REQUESTS;
    }

    /// The lower median, so it is always a count some request ran.
    fn median(&self) -> u64 {
        if self.recent.is_empty() {
            return 0;
        }
        let mut sorted = self.recent.clone();
        let mid = (sorted.len() - 1) / 2;
        let (_, median, _) = sorted.select_nth_unstable(mid);
        u64::from(*median)
    }
}

/// The live view's running figures, kept by the [`super::Analyzer`].
#[derive(Debug, Default)]
pub struct LiveTally {
    fingerprints: HashMap<FingerprintId, FingerprintTotal, BuildHasherDefault<IdHasher>>,
    routes: HashMap<RouteKey, RouteTally>,
}

impl LiveTally {
    /// Counts one execution of a fingerprint.
    pub fn record_execution(
        &mut self,
        fingerprint: FingerprintId,
        normalized: &Arc<str>,
        kind: StatementKind,
        duration: Duration,
    ) {
        if let Some(total) = self.fingerprints.get_mut(&fingerprint) {
            total.calls += 1;
            total.total += duration;
            return;
        }
        if self.fingerprints.len() >= MAX_FINGERPRINTS {
            let lightest = self
                .fingerprints
                .values()
                .min_by_key(|t| (t.total, t.calls))
                .map(|t| t.fingerprint);
            if let Some(id) = lightest {
                self.fingerprints.remove(&id);
            }
        }
        self.fingerprints.insert(
            fingerprint,
            FingerprintTotal {
                fingerprint,
                normalized: normalized.clone(),
                kind,
                calls: 1,
                total: duration,
            },
        );
    }

    /// Counts one ended request of `route` that ran `statements`
    /// statements of real work.
    pub fn record_request(&mut self, route: Option<&Arc<str>>, statements: u64) {
        let key = match route {
            Some(r) => RouteKey::Named(r.clone()),
            None => RouteKey::Unnamed,
        };
        let key = if self.routes.contains_key(&key)
            || key == RouteKey::Unnamed
            || self.named_routes() < MAX_ROUTES
        {
            key
        } else {
            RouteKey::Overflow
        };
        self.routes.entry(key).or_default().record(statements);
    }

    fn named_routes(&self) -> usize {
        self.routes
            .keys()
            .filter(|k| matches!(k, RouteKey::Named(_)))
            .count()
    }

    /// The `n` fingerprints with the most total time, most first.
    pub fn top_fingerprints(&self, n: usize) -> Vec<FingerprintTotal> {
        let mut all: Vec<&FingerprintTotal> = self.fingerprints.values().collect();
        all.sort_by(|a, b| {
            b.total
                .cmp(&a.total)
                .then(b.calls.cmp(&a.calls))
                .then(a.fingerprint.0.cmp(&b.fingerprint.0))
        });
        all.into_iter().take(n).cloned().collect()
    }

    /// The `n` routes with the most requests, most first.
    pub fn top_routes(&self, n: usize) -> Vec<RouteFigures> {
        let mut all: Vec<RouteFigures> = self
            .routes
            .iter()
            .map(|(route, t)| RouteFigures {
                route: route.clone(),
                requests: t.requests,
                median: t.median(),
                max: t.max,
            })
            .collect();
        all.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| route_order(&a.route).cmp(&route_order(&b.route)))
        });
        all.truncate(n);
        all
    }
}

/// Ties in requests: named routes by name, then the unnamed, then the pooled.
fn route_order(key: &RouteKey) -> (u8, &str) {
    match key {
        RouteKey::Named(r) => (0, r),
        RouteKey::Unnamed => (1, ""),
        RouteKey::Overflow => (2, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fingerprints_rank_by_total_time_with_calls_and_mean() {
        let mut t = LiveTally::default();
        let (a, b) = (sql("SELECT a"), sql("SELECT b"));
        for _ in 0..4 {
            t.record_execution(FingerprintId(1), &a, StatementKind::Select, ms(1));
        }
        t.record_execution(FingerprintId(2), &b, StatementKind::Select, ms(10));
        let top = t.top_fingerprints(10);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].fingerprint, FingerprintId(2));
        assert_eq!(
            (top[1].calls, top[1].total, top[1].mean()),
            (4, ms(4), ms(1))
        );
        assert_eq!(&*top[1].normalized, "SELECT a");
        assert_eq!(t.top_fingerprints(1).len(), 1);
    }

    #[test]
    fn at_the_cap_the_lightest_fingerprint_makes_room() {
        let mut t = LiveTally::default();
        let s = sql("SELECT ?");
        for i in 0..MAX_FINGERPRINTS as u64 {
            // Fingerprint 0 is the lightest.
            t.record_execution(FingerprintId(i), &s, StatementKind::Select, ms(i + 1));
        }
        t.record_execution(FingerprintId(9_999), &s, StatementKind::Select, ms(1_000));
        let top = t.top_fingerprints(usize::MAX);
        assert_eq!(top.len(), MAX_FINGERPRINTS);
        assert_eq!(top[0].fingerprint, FingerprintId(9_999));
        assert!(top.iter().all(|f| f.fingerprint != FingerprintId(0)));
        assert!(top.iter().any(|f| f.fingerprint == FingerprintId(1)));
    }

    #[test]
    fn routes_have_requests_median_and_max() {
        let mut t = LiveTally::default();
        let show = sql("posts#show");
        for n in [3, 7, 5, 40, 5] {
            t.record_request(Some(&show), n);
        }
        t.record_request(None, 2);
        let routes = t.top_routes(10);
        assert_eq!(
            routes[0],
            RouteFigures {
                route: RouteKey::Named(show.clone()),
                requests: 5,
                median: 5,
                max: 40,
            }
        );
        assert_eq!(
            (
                routes[1].route.clone(),
                routes[1].requests,
                routes[1].median
            ),
            (RouteKey::Unnamed, 1, 2)
        );
    }

    #[test]
    fn the_median_covers_recent_requests_and_the_max_all() {
        let mut t = LiveTally::default();
        let r = sql("r");
        t.record_request(Some(&r), 1_000);
        for _ in 0..RECENT_REQUESTS {
            t.record_request(Some(&r), 2);
        }
        let figures = &t.top_routes(1)[0];
        assert_eq!(figures.requests, RECENT_REQUESTS as u64 + 1);
        assert_eq!((figures.median, figures.max), (2, 1_000));
        // Even counts: the lower median.
        let mut t = LiveTally::default();
        for n in [1, 2, 3, 4] {
            t.record_request(Some(&r), n);
        }
        assert_eq!(t.top_routes(1)[0].median, 2);
    }

    #[test]
    fn routes_past_the_cap_are_pooled() {
        let mut t = LiveTally::default();
        for i in 0..MAX_ROUTES + 10 {
            t.record_request(Some(&sql(&format!("route{i}"))), 1);
        }
        // Known routes and requests without a route keep their own rows.
        t.record_request(Some(&sql("route0")), 1);
        t.record_request(None, 1);
        let routes = t.top_routes(usize::MAX);
        assert_eq!(routes.len(), MAX_ROUTES + 2);
        let pooled = routes
            .iter()
            .find(|r| r.route == RouteKey::Overflow)
            .unwrap();
        assert_eq!(pooled.requests, 10);
        assert_eq!(routes[0].requests, 10);
        assert_eq!(routes[1].route, RouteKey::Named(sql("route0")));
    }
}
