//! Unindexed filters and sorts in the pipeline (and the other kinds read
//! from a statement and the catalog: non-sargable filters, offset
//! pagination, unindexed foreign keys): which database catalogs are
//! needed, analysing each statement shape once per database, counting its
//! executions, and folding in hypopg verdicts.
//!
//! An `offset_pagination` finding is prepared per shape like the others
//! but counted only for executions whose OFFSET the pipeline found large
//! ([`IndexAdvisor::large_offset`]): the same shape pages with small and
//! large OFFSETs alike.
//!
//! The catalog lives on the other side of an async boundary (the proxy
//! loads it over its own short-lived connection), so this part only says
//! what it needs ([`IndexAdvisor::take_catalog_loads`],
//! [`IndexAdvisor::take_verification_batch`]) and takes results when they
//! arrive. When loads run is decided in `catalogs.rs` (coalesced, debounced
//! after DDL); verifications wait in the bounded queue of
//! `verify_queue.rs`. Statements seen before their database's catalog is
//! loaded wait in a bounded map.
//!
//! A suggestion the column statistics call unselective
//! ([`unindexed::UnindexedIssue::withheld`]) is prepared and verified like
//! the others but not reported unless hypopg shows the planner would use
//! the index and it lowers the cost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;

use super::catalogs::{CatalogSlots, CatalogState};
use super::findings;
use super::verify_queue::{VerificationConfig, VerifyQueue};
pub use super::verify_queue::{VerifyBatch, VerifyRequest};
use crate::catalog::Catalog;
use crate::detect::unindexed::{self, SkipReason, UnindexedConfig, Verification};
use crate::finding::{Finding, FindingKind, Severity};
use crate::fingerprint::FingerprintId;

pub use super::catalogs::CATALOG_REFRESH;

/// Statements waiting for their catalog.
const MAX_PENDING: usize = 2_000;
/// Analysed statement shapes remembered (per database and fingerprint).
const MAX_STATEMENTS: usize = 20_000;

#[derive(Debug)]
struct StatementIssues {
    templates: Vec<Finding>,
    /// Parallel to `templates`: held back until hypopg proves the index
    /// helps (see the module docs).
    withheld: Vec<bool>,
    hits: u64,
    last_seen: Option<OffsetDateTime>,
    /// Executions with a large OFFSET: what the `offset_pagination`
    /// template counts instead of `hits`.
    offsets: LargeOffsets,
}

/// Executions of one shape whose OFFSET reached the threshold.
#[derive(Debug, Clone, Copy, Default)]
struct LargeOffsets {
    /// Since the last flush.
    hits: u64,
    /// The largest OFFSET's order of magnitude so far (never the value).
    magnitude: u64,
    severity: Option<Severity>,
    last_seen: Option<OffsetDateTime>,
}

impl LargeOffsets {
    fn add(&mut self, other: &LargeOffsets) {
        self.hits += other.hits;
        self.magnitude = self.magnitude.max(other.magnitude);
        self.severity = self.severity.max(other.severity);
        self.last_seen = self.last_seen.max(other.last_seen);
    }
}

/// A statement seen before its database's catalog arrived, with the
/// executions counted meanwhile (they count once it is analysed).
#[derive(Debug, Clone)]
struct Waiting {
    sql: String,
    normalized: Arc<str>,
    user: Option<Arc<str>>,
    hits: u64,
    last_seen: OffsetDateTime,
    offsets: LargeOffsets,
}

/// How a table name a statement wrote resolves in its database's catalog
/// ([`IndexAdvisor::resolve_table`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableName {
    /// `schema.table` as the catalog names it.
    Qualified(String),
    /// The database's catalog is loading: ask again when it has arrived.
    Pending,
    /// It cannot be resolved, for this reason.
    Unresolved(&'static str),
}

/// One execution as [`IndexAdvisor::executed`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Execution<'a> {
    /// The database it ran in.
    pub database: &'a Arc<str>,
    /// Its fingerprint.
    pub fingerprint: FingerprintId,
    /// Its normalized SQL.
    pub normalized: &'a Arc<str>,
    /// The user the client connected as.
    pub user: Option<&'a Arc<str>>,
    /// When it started.
    pub at: OffsetDateTime,
}

/// See the module docs.
#[derive(Debug)]
pub struct IndexAdvisor {
    config: UnindexedConfig,
    catalogs: CatalogSlots,
    statements: HashMap<(Arc<str>, FingerprintId), StatementIssues>,
    pending: HashMap<(Arc<str>, FingerprintId), Waiting>,
    verifications: VerifyQueue,
    /// Statements not analysed because the pending queue was full.
    pub skipped: u64,
}

impl IndexAdvisor {
    /// An advisor with the given thresholds and verification limits.
    pub fn new(config: UnindexedConfig, verification: VerificationConfig) -> Self {
        IndexAdvisor {
            config,
            catalogs: CatalogSlots::default(),
            statements: HashMap::new(),
            pending: HashMap::new(),
            verifications: VerifyQueue::new(verification),
            skipped: 0,
        }
    }

    /// Whether any database's catalog is loaded.
    pub fn catalog_available(&self) -> bool {
        self.catalogs.any_loaded()
    }

    /// One execution of a statement that can filter or sort (SELECT,
    /// UPDATE, DELETE, INSERT ... SELECT). `sql` gives that statement's
    /// text; it is only called for a shape not analysed yet, so a repeated
    /// execution costs a map lookup, not a scan of its text.
    pub fn executed<'s>(&mut self, e: Execution<'_>, sql: impl FnOnce() -> &'s str, now: Instant) {
        let key = (e.database.clone(), e.fingerprint);
        if let Some(s) = self.statements.get_mut(&key) {
            s.hits += 1;
            s.last_seen = Some(e.at);
            return;
        }
        match self.catalogs.get_or_add(e.database, now) {
            CatalogState::Loaded { catalog, hypopg } => {
                let (catalog, hypopg) = (catalog.clone(), *hypopg);
                let user = e.user.map(|u| u.to_string());
                self.analyze(key.clone(), e.normalized, sql(), user, &catalog, hypopg);
                if let Some(s) = self.statements.get_mut(&key) {
                    s.hits += 1;
                    s.last_seen = Some(e.at);
                }
            }
            CatalogState::Unavailable => self.catalogs.used(e.database),
            CatalogState::Unknown => {
                if let Some(w) = self.pending.get_mut(&key) {
                    w.hits += 1;
                    w.last_seen = e.at;
                } else if self.pending.len() >= MAX_PENDING {
                    self.skipped += 1;
                } else {
                    self.pending.insert(
                        key,
                        Waiting {
                            sql: sql().to_string(),
                            normalized: e.normalized.clone(),
                            user: e.user.cloned(),
                            hits: 1,
                            last_seen: e.at,
                            offsets: LargeOffsets::default(),
                        },
                    );
                }
            }
        }
    }

    /// The execution just passed to [`IndexAdvisor::executed`] had an
    /// OFFSET at or above the threshold: its `offset_pagination` finding, if
    /// the shape has one, counts it. Only the OFFSET's order of magnitude
    /// ([`crate::offset::magnitude`]) is passed and kept.
    pub fn large_offset(
        &mut self,
        database: &Arc<str>,
        fingerprint: FingerprintId,
        magnitude: u64,
        severity: Severity,
        at: OffsetDateTime,
    ) {
        let seen = LargeOffsets {
            hits: 1,
            magnitude,
            severity: Some(severity),
            last_seen: Some(at),
        };
        if let Some(s) = self.statements.get_mut(&(database.clone(), fingerprint)) {
            s.offsets.add(&seen);
        } else if let Some(w) = self.pending.get_mut(&(database.clone(), fingerprint)) {
            w.offsets.add(&seen);
        }
    }

    fn analyze(
        &mut self,
        key: (Arc<str>, FingerprintId),
        normalized: &Arc<str>,
        sql: &str,
        user: Option<String>,
        catalog: &Catalog,
        hypopg: bool,
    ) {
        if self.statements.len() >= MAX_STATEMENTS {
            // Bounded: forget everything rather than track recency; shapes
            // seen again are simply analysed again.
            self.statements.clear();
        }
        let fingerprint = key.1.to_string();
        let now = OffsetDateTime::now_utc();
        let mut issues = unindexed::analyze_statement(sql, catalog, &self.config);
        for issue in &mut issues {
            unindexed::number_placeholder(issue, normalized);
        }
        let withheld: Vec<bool> = issues.iter().map(|i| i.withheld.is_some()).collect();
        // What hypopg checks: the partial-index DDL with its value where
        // there is one (kept only as long as the check is queued).
        let verify_ddl: Vec<Option<String>> = issues
            .iter()
            .map(|i| i.verify_ddl.as_ref().map(|d| d.as_str().to_string()))
            .collect();
        let mut templates: Vec<Finding> = issues
            .into_iter()
            .map(|issue| findings::issue_template(issue, &fingerprint, normalized, &key.0, now))
            .collect();
        // hypopg checks what an index does to this statement's plan: an
        // index suggestion for its own filter or sort. A foreign key's
        // index serves PostgreSQL's lookups, not the plan of the DELETE
        // that triggers them, and the other kinds suggest rewrites.
        let verifiable = |t: &Finding| {
            matches!(
                t.kind,
                FindingKind::UnindexedFilter | FindingKind::UnindexedSort
            )
        };
        let mut withheld = withheld;
        for ((t, ddl), held) in templates.iter_mut().zip(verify_ddl).zip(&mut withheld) {
            if !verifiable(t) {
                continue;
            }
            if !hypopg {
                // Say so in the finding, so an unverified suggestion is not
                // mistaken for a checked one.
                let verdict = Verification::Unverified {
                    reason: "the hypopg extension is not installed in this database".into(),
                };
                findings::apply_verdict(t, &verdict);
                continue;
            }
            let request = VerifyRequest {
                database: key.0.to_string(),
                sql: sql.to_string(),
                ddl: ddl.unwrap_or_else(|| t.suggestion.clone().unwrap_or_default()),
                finding_id: t.id.clone(),
                user: user.clone(),
                key: key.clone(),
            };
            if let Some(verdict) = self.verifications.push(request) {
                findings::apply_verdict(t, &verdict);
                findings::promote_if_proven(t, held, &verdict);
            }
        }
        self.statements.insert(
            key,
            StatementIssues {
                templates,
                withheld,
                hits: 0,
                last_seen: None,
                offsets: LargeOffsets::default(),
            },
        );
    }

    /// `table` (as written in the SQL, maybe `schema.table`) as the
    /// catalog names it, `schema.table`; unchanged when the catalog is not
    /// loaded or does not know it.
    pub fn qualify(&self, database: Option<&str>, table: &str) -> String {
        match self.resolve_table(database, table) {
            TableName::Qualified(q) => q,
            _ => table.to_string(),
        }
    }

    /// How `table` (as written in the SQL, maybe `schema.table`) resolves
    /// in `database`'s catalog: the lookup PostgreSQL itself does
    /// ([`Catalog::resolve_table`]: a qualified name in its schema, an
    /// unqualified one along the search path the catalog load recorded),
    /// which is also how the index advisor's own findings name tables.
    pub fn resolve_table(&self, database: Option<&str>, table: &str) -> TableName {
        let Some(database) = database else {
            return TableName::Unresolved("the statement's database is not known");
        };
        let catalog = match self.catalogs.get(database) {
            Some(CatalogState::Loaded { catalog, .. }) => catalog,
            Some(CatalogState::Unknown) => return TableName::Pending,
            Some(CatalogState::Unavailable) => {
                return TableName::Unresolved("the database's catalog could not be loaded")
            }
            None => return TableName::Unresolved("the database's catalog was not loaded"),
        };
        let (schema, name) = match table.split_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, table),
        };
        match catalog.resolve_table(schema, name) {
            Some(t) => TableName::Qualified(t.qualified_name()),
            None => TableName::Unresolved("the database's catalog has no such table"),
        }
    }

    /// Whether a database's first catalog load is still to come (asked
    /// for, waiting for its turn, or in flight).
    pub fn catalogs_in_flight(&self) -> bool {
        self.catalogs.any_unknown()
    }

    /// Up to `max` databases whose catalog should be (re)loaded now; each
    /// must be answered with [`IndexAdvisor::install_catalog`], and no
    /// other load of it is asked for until then.
    pub fn take_catalog_loads(&mut self, now: Instant, max: usize) -> Vec<String> {
        self.catalogs.take_due(now, max)
    }

    /// The next suggestions to verify with hypopg: one database's, up to
    /// the batch size, for one connection. Each must be answered with
    /// [`IndexAdvisor::install_verification`].
    pub fn take_verification_batch(&mut self) -> Option<VerifyBatch> {
        self.verifications.take_batch()
    }

    /// The verification limits in force.
    pub fn verification_config(&self) -> &VerificationConfig {
        self.verifications.config()
    }

    /// Verifications queued or being checked.
    pub fn verifications_queued(&self) -> usize {
        self.verifications.len()
    }

    /// Catalog loads in flight.
    pub fn catalog_loads_in_flight(&self) -> usize {
        self.catalogs.loading()
    }

    /// Suggestions hypopg could have checked but did not, by reason.
    pub fn verifications_skipped(&self) -> [(SkipReason, u64); SkipReason::ALL.len()] {
        let counts = self.verifications.skipped();
        std::array::from_fn(|i| (SkipReason::ALL[i], counts[i]))
    }

    /// A catalog load finished (`None`: it failed). Pending statements of
    /// that database are analysed now.
    pub fn install_catalog(&mut self, database: &str, loaded: Option<(Arc<Catalog>, bool)>) {
        self.catalogs
            .loaded(database, loaded.clone(), Instant::now());
        let waiting: Vec<((Arc<str>, FingerprintId), Waiting)> = {
            let keys: Vec<(Arc<str>, FingerprintId)> = self
                .pending
                .keys()
                .filter(|(d, _)| **d == *database)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| self.pending.remove(&k).map(|w| (k, w)))
                .collect()
        };
        let Some((catalog, hypopg)) = loaded else {
            return;
        };
        // A reload may change verdicts (new index, bigger table).
        self.statements.retain(|(d, _), _| **d != *database);
        for (key, w) in waiting {
            let user = w.user.as_deref().map(str::to_string);
            self.analyze(key.clone(), &w.normalized, &w.sql, user, &catalog, hypopg);
            if let Some(s) = self.statements.get_mut(&key) {
                s.hits += w.hits;
                s.last_seen = Some(w.last_seen);
                s.offsets.add(&w.offsets);
            }
        }
    }

    /// A hypopg verdict arrived for a suggestion.
    pub fn install_verification(&mut self, request: &VerifyRequest, verdict: Verification) {
        self.verifications.done(request, &verdict);
        let Some(s) = self.statements.get_mut(&request.key) else {
            return;
        };
        for (t, withheld) in s
            .templates
            .iter_mut()
            .zip(&mut s.withheld)
            .filter(|(t, _)| t.id == request.finding_id)
        {
            findings::apply_verdict(t, &verdict);
            findings::promote_if_proven(t, withheld, &verdict);
            // Make sure the verdict reaches the store even if the statement
            // does not run again.
            s.hits = s.hits.max(1);
        }
    }

    /// DDL ran in `database`: reload its catalog once the burst is over.
    pub fn schema_changed(&mut self, database: &str, now: Instant) {
        self.catalogs.ddl(database, now);
    }

    /// Periodic upkeep: refreshes, retries and reloads after DDL may have
    /// become due.
    pub fn tick(&mut self, _now: Instant) {
        self.catalogs.tick();
    }

    /// Sightings since the last call, as finding deltas.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut used: HashSet<Arc<str>> = HashSet::new();
        for ((db, _), s) in self.statements.iter_mut() {
            if s.hits == 0 && s.offsets.hits == 0 {
                continue;
            }
            if !used.contains(db) {
                used.insert(db.clone());
            }
            for (t, _) in s.templates.iter().zip(&s.withheld).filter(|(_, w)| !**w) {
                let mut f = t.clone();
                let (hits, last_seen) = if t.kind == FindingKind::OffsetPagination {
                    findings::count_offsets(&mut f, s.offsets.magnitude, s.offsets.severity);
                    (s.offsets.hits, s.offsets.last_seen)
                } else {
                    (s.hits, s.last_seen)
                };
                if hits == 0 {
                    continue;
                }
                let at = last_seen.unwrap_or_else(OffsetDateTime::now_utc);
                f.occurrences = hits;
                f.last_seen = at;
                f.first_seen = f.first_seen.min(at);
                out.push(f);
            }
            s.hits = 0;
            s.offsets.hits = 0;
        }
        // The database is in use: keep its catalog fresh (see catalogs.rs).
        for db in used {
            self.catalogs.used(&db);
        }
        out
    }
}
