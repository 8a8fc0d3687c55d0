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
//! what it needs ([`IndexAdvisor::catalog_requests`],
//! [`IndexAdvisor::verification_requests`]) and takes results when they
//! arrive. Statements seen before their database's catalog is loaded wait
//! in a bounded queue.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::catalog::Catalog;
use crate::detect::unindexed::{self, UnindexedConfig, Verification};
use crate::finding::{finding_id, Finding, FindingKind, Severity};
use crate::fingerprint::FingerprintId;

/// Statements waiting for their catalog.
const MAX_PENDING: usize = 2_000;
/// Analysed statement shapes remembered (per database and fingerprint).
const MAX_STATEMENTS: usize = 20_000;
/// Catalogs are reloaded this often while their database is in use, so
/// table sizes and new indexes are noticed.
pub const CATALOG_REFRESH: Duration = Duration::from_secs(300);

#[derive(Debug)]
enum CatalogSlot {
    /// A load was asked for and has not come back.
    Requested,
    /// Loaded; `hypopg` says whether suggestions can be verified.
    Loaded {
        catalog: Arc<Catalog>,
        hypopg: bool,
        at: Instant,
        refreshing: bool,
    },
    /// The last load failed.
    Unavailable { at: Instant },
}

#[derive(Debug)]
struct StatementIssues {
    templates: Vec<Finding>,
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
    database: Arc<str>,
    fingerprint: FingerprintId,
    sql: String,
    normalized: Arc<str>,
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
    key: (Arc<str>, FingerprintId),
}

/// See the module docs.
#[derive(Debug)]
pub struct IndexAdvisor {
    config: UnindexedConfig,
    catalogs: HashMap<Arc<str>, CatalogSlot>,
    statements: HashMap<(Arc<str>, FingerprintId), StatementIssues>,
    pending: VecDeque<Waiting>,
    requests: Vec<String>,
    verifications: Vec<VerifyRequest>,
    /// Statements not analysed because the pending queue was full.
    pub skipped: u64,
}

impl IndexAdvisor {
    /// An advisor with the given thresholds.
    pub fn new(config: UnindexedConfig) -> Self {
        IndexAdvisor {
            config,
            catalogs: HashMap::new(),
            statements: HashMap::new(),
            pending: VecDeque::new(),
            requests: Vec::new(),
            verifications: Vec::new(),
            skipped: 0,
        }
    }

    /// Whether any database's catalog is loaded.
    pub fn catalog_available(&self) -> bool {
        self.catalogs
            .values()
            .any(|s| matches!(s, CatalogSlot::Loaded { .. }))
    }

    /// One execution of a statement that can filter or sort (SELECT,
    /// UPDATE, DELETE, INSERT ... SELECT). `sql` gives that statement's
    /// text; it is only called for a shape not analysed yet, so a repeated
    /// execution costs a map lookup, not a scan of its text.
    pub fn executed<'s>(
        &mut self,
        database: &Arc<str>,
        fingerprint: FingerprintId,
        normalized: &Arc<str>,
        sql: impl FnOnce() -> &'s str,
        at: OffsetDateTime,
    ) {
        let key = (database.clone(), fingerprint);
        if let Some(s) = self.statements.get_mut(&key) {
            s.hits += 1;
            s.last_seen = Some(at);
            return;
        }
        match self.catalogs.get(database) {
            Some(CatalogSlot::Loaded {
                catalog, hypopg, ..
            }) => {
                let (catalog, hypopg) = (catalog.clone(), *hypopg);
                self.analyze(key.clone(), normalized, sql(), &catalog, hypopg);
                if let Some(s) = self.statements.get_mut(&key) {
                    s.hits += 1;
                    s.last_seen = Some(at);
                }
            }
            Some(CatalogSlot::Unavailable { .. }) => {}
            slot => {
                if slot.is_none() {
                    self.catalogs
                        .insert(database.clone(), CatalogSlot::Requested);
                    self.requests.push(database.to_string());
                }
                if let Some(w) = self
                    .pending
                    .iter_mut()
                    .find(|w| w.database == *database && w.fingerprint == fingerprint)
                {
                    w.hits += 1;
                    w.last_seen = at;
                } else if self.pending.len() >= MAX_PENDING {
                    self.skipped += 1;
                } else {
                    self.pending.push_back(Waiting {
                        database: database.clone(),
                        fingerprint,
                        sql: sql().to_string(),
                        normalized: normalized.clone(),
                        hits: 1,
                        last_seen: at,
                        offsets: LargeOffsets::default(),
                    });
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
        } else if let Some(w) = self
            .pending
            .iter_mut()
            .find(|w| w.database == *database && w.fingerprint == fingerprint)
        {
            w.offsets.add(&seen);
        }
    }

    fn analyze(
        &mut self,
        key: (Arc<str>, FingerprintId),
        normalized: &Arc<str>,
        sql: &str,
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
        let templates: Vec<Finding> = unindexed::analyze_statement(sql, catalog, &self.config)
            .into_iter()
            .map(|issue| Finding {
                id: finding_id(
                    issue.kind,
                    &fingerprint,
                    Some(&issue.table),
                    &issue.columns,
                    None,
                    None,
                ),
                kind: issue.kind,
                severity: issue.severity,
                fingerprint: fingerprint.clone(),
                query: normalized.to_string(),
                table: Some(issue.table),
                columns: issue.columns,
                count: None,
                occurrences: 0,
                request: None,
                parent: None,
                rows: None,
                suggestion: Some(issue.suggestion),
                database: Some(key.0.to_string()),
                details: issue.details,
                first_seen: now,
                last_seen: now,
            })
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
        for t in templates.iter().filter(|t| verifiable(t)) {
            let request = VerifyRequest {
                database: key.0.to_string(),
                sql: sql.to_string(),
                ddl: t.suggestion.clone().unwrap_or_default(),
                finding_id: t.id.clone(),
                key: key.clone(),
            };
            if hypopg {
                self.verifications.push(request);
            }
        }
        if !hypopg {
            // Say so in the finding, so an unverified suggestion is not
            // mistaken for a checked one.
            let unverified = Verification::Unverified {
                reason: "the hypopg extension is not installed in this database".into(),
            }
            .to_details();
            let mut templates = templates;
            for t in templates.iter_mut().filter(|t| verifiable(t)) {
                t.details.extend(unverified.clone());
            }
            self.statements.insert(
                key,
                StatementIssues {
                    templates,
                    hits: 0,
                    last_seen: None,
                    offsets: LargeOffsets::default(),
                },
            );
            return;
        }
        self.statements.insert(
            key,
            StatementIssues {
                templates,
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
            Some(CatalogSlot::Loaded { catalog, .. }) => catalog,
            Some(CatalogSlot::Requested) => return TableName::Pending,
            Some(CatalogSlot::Unavailable { .. }) => {
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

    /// Whether a catalog load was asked for and has not come back.
    pub fn catalogs_in_flight(&self) -> bool {
        self.catalogs
            .values()
            .any(|s| matches!(s, CatalogSlot::Requested))
    }

    /// Databases whose catalog should be (re)loaded now.
    pub fn catalog_requests(&mut self) -> Vec<String> {
        std::mem::take(&mut self.requests)
    }

    /// Suggestions to verify with hypopg.
    pub fn verification_requests(&mut self) -> Vec<VerifyRequest> {
        std::mem::take(&mut self.verifications)
    }

    /// A catalog load finished (`None`: it failed). Pending statements of
    /// that database are analysed now.
    pub fn install_catalog(&mut self, database: &str, loaded: Option<(Arc<Catalog>, bool)>) {
        let db: Arc<str> = Arc::from(database);
        match loaded {
            Some((catalog, hypopg)) => {
                // A reload may change verdicts (new index, bigger table).
                self.statements.retain(|(d, _), _| **d != *database);
                self.catalogs.insert(
                    db.clone(),
                    CatalogSlot::Loaded {
                        catalog: catalog.clone(),
                        hypopg,
                        at: Instant::now(),
                        refreshing: false,
                    },
                );
                let waiting: Vec<Waiting> = self
                    .pending
                    .iter()
                    .filter(|w| *w.database == *database)
                    .cloned()
                    .collect();
                self.pending.retain(|w| *w.database != *database);
                for w in waiting {
                    let key = (w.database.clone(), w.fingerprint);
                    self.analyze(key.clone(), &w.normalized, &w.sql, &catalog, hypopg);
                    if let Some(s) = self.statements.get_mut(&key) {
                        s.hits += w.hits;
                        s.last_seen = Some(w.last_seen);
                        s.offsets.add(&w.offsets);
                    }
                }
            }
            None => {
                self.pending.retain(|w| *w.database != *database);
                self.catalogs
                    .insert(db, CatalogSlot::Unavailable { at: Instant::now() });
            }
        }
    }

    /// A hypopg verdict arrived for a suggestion.
    pub fn install_verification(&mut self, request: &VerifyRequest, verdict: Verification) {
        let Some(s) = self.statements.get_mut(&request.key) else {
            return;
        };
        for t in s
            .templates
            .iter_mut()
            .filter(|t| t.id == request.finding_id)
        {
            if verdict.improves() == Some(false) {
                // The planner would not use the index: keep the finding,
                // but as a note, not a recommendation.
                t.severity = Severity::Info;
            }
            t.details.extend(verdict.to_details());
            // Make sure the verdict reaches the store even if the statement
            // does not run again.
            s.hits = s.hits.max(1);
        }
    }

    /// DDL ran in `database`: reload its catalog.
    pub fn schema_changed(&mut self, database: &str) {
        if let Some(CatalogSlot::Loaded { refreshing, .. }) = self.catalogs.get_mut(database) {
            if !*refreshing {
                *refreshing = true;
                self.requests.push(database.to_string());
            }
        }
    }

    /// Periodic upkeep: refresh old catalogs, retry failed ones.
    pub fn tick(&mut self, now: Instant) {
        for (db, slot) in &mut self.catalogs {
            match slot {
                CatalogSlot::Loaded { at, refreshing, .. }
                    if !*refreshing && now.duration_since(*at) >= CATALOG_REFRESH =>
                {
                    *refreshing = true;
                    self.requests.push(db.to_string());
                }
                CatalogSlot::Unavailable { at }
                    if now.duration_since(*at) >= Duration::from_secs(30) =>
                {
                    *slot = CatalogSlot::Requested;
                    self.requests.push(db.to_string());
                }
                _ => {}
            }
        }
    }

    /// Sightings since the last call, as finding deltas.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        let mut out = Vec::new();
        for s in self.statements.values_mut() {
            if s.hits == 0 && s.offsets.hits == 0 {
                continue;
            }
            for t in &s.templates {
                let mut f = t.clone();
                let (hits, last_seen) = if t.kind == FindingKind::OffsetPagination {
                    f.severity = f.severity.max(s.offsets.severity.unwrap_or(f.severity));
                    f.details
                        .insert("max_offset".into(), s.offsets.magnitude.into());
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
        out
    }
}
