//! When to load which database's catalog.
//!
//! A catalog is loaded on first sight of a database and reloaded after DDL
//! and every [`CATALOG_REFRESH`] while the database is in use. Loads are
//! not free (a connection and five catalog queries; a thousand-table
//! catalog takes a while), and test suites run DDL in bursts: one reload
//! per DDL statement made such suites several times slower. So:
//! - at most one load per database is in flight;
//! - after DDL the reload waits until DDL has been quiet for
//!   [`DDL_QUIET`], or at most [`DDL_MAX_DELAY`] after the burst's first
//!   statement, so a burst costs one or two loads; DDL that arrives while
//!   a load runs triggers one more after it;
//! - a failed load is retried after [`RETRY_AFTER`], and only if the
//!   database was used since (a dropped database is not retried forever);
//!   the periodic refresh, likewise, only for databases in use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::Catalog;

/// Catalogs are reloaded this often while their database is in use, so
/// table sizes and new indexes are noticed.
pub const CATALOG_REFRESH: Duration = Duration::from_secs(300);
/// A reload after DDL waits until no DDL came for this long.
pub const DDL_QUIET: Duration = Duration::from_secs(1);
/// ... but no longer than this after the first DDL of a burst.
pub const DDL_MAX_DELAY: Duration = Duration::from_secs(10);
/// A failed load is retried after this long (if the database is in use).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What is known of one database's catalog.
#[derive(Debug)]
pub(crate) enum CatalogState {
    /// Never loaded yet.
    Unknown,
    /// Loaded; `hypopg` says whether suggestions can be verified.
    Loaded { catalog: Arc<Catalog>, hypopg: bool },
    /// The last load failed.
    Unavailable,
}

#[derive(Debug)]
struct Slot {
    state: CatalogState,
    /// When `state` last changed.
    at: Instant,
    loading: bool,
    /// First and last DDL since the last load started.
    ddl: Option<(Instant, Instant)>,
    /// Statements ran since the last load started.
    used: bool,
}

impl Slot {
    fn due(&self, now: Instant) -> bool {
        if self.loading {
            return false;
        }
        let since = |t: Instant| now.saturating_duration_since(t);
        match self.state {
            CatalogState::Unknown => true,
            CatalogState::Unavailable => self.used && since(self.at) >= RETRY_AFTER,
            CatalogState::Loaded { .. } => {
                let ddl_settled = self.ddl.is_some_and(|(first, last)| {
                    since(last) >= DDL_QUIET || since(first) >= DDL_MAX_DELAY
                });
                ddl_settled || (self.used && since(self.at) >= CATALOG_REFRESH)
            }
        }
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct CatalogSlots {
    slots: HashMap<Arc<str>, Slot>,
    /// Something changed that may make a load due, so the next
    /// [`CatalogSlots::take_due`] looks (it also looks after every tick).
    look: bool,
}

impl CatalogSlots {
    /// The state of `database`'s catalog, creating an `Unknown` slot (whose
    /// load is then due) on first sight.
    pub(crate) fn get_or_add(&mut self, database: &Arc<str>, now: Instant) -> &CatalogState {
        if !self.slots.contains_key(database) {
            self.look = true;
            self.slots.insert(
                database.clone(),
                Slot {
                    state: CatalogState::Unknown,
                    at: now,
                    loading: false,
                    ddl: None,
                    used: true,
                },
            );
        }
        &self.slots[database].state
    }

    pub(crate) fn get(&self, database: &str) -> Option<&CatalogState> {
        self.slots.get(database).map(|s| &s.state)
    }

    /// Statements ran in `database`.
    pub(crate) fn used(&mut self, database: &str) {
        if let Some(s) = self.slots.get_mut(database) {
            s.used = true;
        }
    }

    /// DDL ran in `database` (ignored for a database not seen yet: its
    /// first load reads the result).
    pub(crate) fn ddl(&mut self, database: &str, now: Instant) {
        if let Some(s) = self.slots.get_mut(database) {
            s.used = true;
            let first = s.ddl.map_or(now, |(first, _)| first);
            s.ddl = Some((first, now));
        }
    }

    /// Time passed: loads may have become due.
    pub(crate) fn tick(&mut self) {
        self.look = true;
    }

    /// Up to `max` databases whose load is due now, marked as loading:
    /// each must be answered with [`CatalogSlots::loaded`].
    pub(crate) fn take_due(&mut self, now: Instant, max: usize) -> Vec<String> {
        if max == 0 || !std::mem::take(&mut self.look) {
            return Vec::new();
        }
        let mut due: Vec<(&Arc<str>, &mut Slot)> =
            self.slots.iter_mut().filter(|(_, s)| s.due(now)).collect();
        // First loads first: a database nobody has a catalog for yet waits
        // on it for every finding.
        due.sort_by_key(|(_, s)| !matches!(s.state, CatalogState::Unknown));
        if due.len() > max {
            // The rest stay due; look again next time.
            self.look = true;
        }
        due.into_iter()
            .take(max)
            .map(|(db, slot)| {
                slot.loading = true;
                slot.ddl = None;
                slot.used = false;
                db.to_string()
            })
            .collect()
    }

    /// A load of `database` ended (`None`: it failed or its task died).
    pub(crate) fn loaded(
        &mut self,
        database: &str,
        result: Option<(Arc<Catalog>, bool)>,
        now: Instant,
    ) {
        // A catalog handed in before any statement asked for it (loaded
        // ahead of traffic) is kept like one that was asked for.
        let slot = self
            .slots
            .entry(Arc::from(database))
            .or_insert_with(|| Slot {
                state: CatalogState::Unknown,
                at: now,
                loading: false,
                ddl: None,
                used: false,
            });
        slot.loading = false;
        slot.at = now;
        slot.state = match result {
            Some((catalog, hypopg)) => CatalogState::Loaded { catalog, hypopg },
            None => CatalogState::Unavailable,
        };
        self.look = true;
    }

    /// Whether any database's catalog is loaded.
    pub(crate) fn any_loaded(&self) -> bool {
        self.slots
            .values()
            .any(|s| matches!(s.state, CatalogState::Loaded { .. }))
    }

    /// Whether some database has never had a catalog load answered.
    pub(crate) fn any_unknown(&self) -> bool {
        self.slots
            .values()
            .any(|s| matches!(s.state, CatalogState::Unknown))
    }

    /// Loads in flight.
    pub(crate) fn loading(&self) -> usize {
        self.slots.values().filter(|s| s.loading).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded() -> Option<(Arc<Catalog>, bool)> {
        Some((Arc::new(Catalog::default()), false))
    }

    #[test]
    fn first_load_is_due_at_once_and_only_once_in_flight() {
        let t0 = Instant::now();
        let mut slots = CatalogSlots::default();
        let db: Arc<str> = Arc::from("app");
        slots.get_or_add(&db, t0);
        assert_eq!(slots.take_due(t0, 4), ["app"]);
        slots.tick();
        assert!(slots.take_due(t0, 4).is_empty(), "one load in flight");
        slots.ddl("app", t0);
        slots.tick();
        assert!(slots.take_due(t0 + DDL_MAX_DELAY * 2, 4).is_empty());
        assert_eq!(slots.loading(), 1);
        slots.loaded("app", loaded(), t0);
        assert!(slots.any_loaded());
        // DDL that came during the load makes another one due once quiet.
        assert!(slots
            .take_due(t0 + Duration::from_millis(500), 4)
            .is_empty());
        slots.tick();
        assert_eq!(slots.take_due(t0 + DDL_QUIET, 4), ["app"]);
    }

    #[test]
    fn a_ddl_burst_waits_for_quiet_or_the_max_delay() {
        let t0 = Instant::now();
        let mut slots = CatalogSlots::default();
        let db: Arc<str> = Arc::from("app");
        slots.get_or_add(&db, t0);
        slots.take_due(t0, 1);
        slots.loaded("app", loaded(), t0);
        let step = Duration::from_millis(300);
        let mut now = t0;
        let mut loads = 0;
        // DDL every 300 ms for 25 s: never quiet, so the max delay rules.
        while now < t0 + Duration::from_secs(25) {
            now += step;
            slots.ddl("app", now);
            slots.tick();
            for db in slots.take_due(now, 4) {
                loads += 1;
                slots.loaded(&db, loaded(), now);
            }
        }
        assert_eq!(loads, 2, "one load per {DDL_MAX_DELAY:?} of continuous DDL");
        slots.tick();
        assert!(slots
            .take_due(now + Duration::from_millis(200), 4)
            .is_empty());
        slots.tick();
        assert_eq!(slots.take_due(now + DDL_QUIET, 4), ["app"]);
    }

    #[test]
    fn failures_and_refreshes_only_for_databases_in_use() {
        let t0 = Instant::now();
        let mut slots = CatalogSlots::default();
        let db: Arc<str> = Arc::from("gone");
        slots.get_or_add(&db, t0);
        slots.take_due(t0, 1);
        slots.loaded("gone", None, t0);
        slots.tick();
        assert!(slots.take_due(t0 + RETRY_AFTER * 10, 4).is_empty());
        slots.used("gone");
        slots.tick();
        assert!(slots.take_due(t0 + RETRY_AFTER / 2, 4).is_empty());
        slots.tick();
        assert_eq!(slots.take_due(t0 + RETRY_AFTER, 4), ["gone"]);
        slots.loaded("gone", loaded(), t0 + RETRY_AFTER);
        slots.tick();
        assert!(slots.take_due(t0 + CATALOG_REFRESH * 3, 4).is_empty());
        slots.used("gone");
        slots.tick();
        assert_eq!(slots.take_due(t0 + CATALOG_REFRESH * 3, 4), ["gone"]);
    }
}
