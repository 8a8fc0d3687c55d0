//! The PostgreSQL store's statements, with the schema name filled in once.
//!
//! The UPSERTs are [`Finding::merge`](crate::finding::Finding::merge) in
//! SQL: `INSERT .. ON CONFLICT DO UPDATE` locks the conflicting row and
//! computes the new values from the row as it is then, so proxies folding
//! deltas into the same finding at once add up instead of overwriting
//! each other. Keep the two in step; `tests/store_postgres.rs` checks them
//! against each other.

/// The statements for one schema.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    /// The schema, quoted for SQL text.
    pub schema: String,
    /// The schema name as given, for parameters.
    pub schema_name: String,
    /// `schema.qproxy_schema_version`, quoted, for `to_regclass`.
    pub version_table: String,
    pub create_version_table: String,
    pub max_version: String,
    pub insert_version: String,
    pub begin_run: String,
    pub end_run: String,
    pub update_summary: String,
    pub heartbeat: String,
    pub upsert_finding: String,
    pub upsert_run_finding: String,
    pub select_runs: String,
    pub select_latest_run: String,
    pub select_run_findings: String,
    pub select_finding: String,
    pub prune_runs: String,
    pub prune_findings: String,
}

/// Severities from least to most severe: the merge keeps the worst.
const SEVERITY_ORDER: &str = "ARRAY['info', 'warning', 'error']";

/// The columns of `findings` read back, jsonb as text, in the order
/// `RawFinding` takes them.
const FINDING_COLUMNS: &str = "f.id, f.kind, f.severity, f.fingerprint, f.query, \
     f.table_name, f.columns::text, f.count, f.occurrences, f.request::text, f.parent::text, \
     f.rows_max, f.suggestion, f.database, f.details::text, f.first_seen, f.last_seen";

/// The per-run columns of `run_findings`, read after [`FINDING_COLUMNS`].
const RUN_COLUMNS: &str = "rf.severity, rf.occurrences, rf.count, rf.request::text, \
     rf.rows_max, rf.first_seen, rf.last_seen";

const RUN_META_COLUMNS: &str = "id, started_at, ended_at, host, pid, version, queries, \
     fingerprints, requests, correlated_fraction, parse_failures, dropped_events, catalog, \
     findings_lost, statements_not_analysed, instance, verifications_skipped";

/// Whether the delta (`EXCLUDED`) is a worse sighting than the row `t`:
/// `later.count > self.count` on `Option`s, where any count beats none.
fn later_is_worse(t: &str) -> String {
    format!("(EXCLUDED.count IS NOT NULL AND ({t}.count IS NULL OR EXCLUDED.count > {t}.count))")
}

/// The SET clauses both tables share: the run-varying fields.
fn merge_run_fields(t: &str) -> String {
    let worse = later_is_worse(t);
    format!(
        "occurrences = CASE WHEN {t}.occurrences > 9223372036854775807 - EXCLUDED.occurrences \
             THEN 9223372036854775807 ELSE {t}.occurrences + EXCLUDED.occurrences END, \
         count = GREATEST({t}.count, EXCLUDED.count), \
         request = CASE WHEN {worse} THEN EXCLUDED.request ELSE {t}.request END, \
         severity = CASE WHEN array_position({SEVERITY_ORDER}, EXCLUDED.severity) \
             > array_position({SEVERITY_ORDER}, {t}.severity) \
             THEN EXCLUDED.severity ELSE {t}.severity END, \
         rows_max = GREATEST({t}.rows_max, EXCLUDED.rows_max), \
         first_seen = LEAST({t}.first_seen, EXCLUDED.first_seen), \
         last_seen = GREATEST({t}.last_seen, EXCLUDED.last_seen)"
    )
}

impl Sql {
    /// The statements for `schema_name` (already checked to be a plain
    /// identifier; quoted here all the same).
    pub fn new(schema_name: &str) -> Sql {
        let s = format!("\"{}\"", schema_name.replace('"', "\"\""));
        let worse = later_is_worse("f");
        // $18: whether the kind's details and suggestion follow the worst
        // count (FindingKind::details_follow_count) or merge key by key.
        let upsert_finding = format!(
            "INSERT INTO {s}.findings AS f (id, kind, severity, fingerprint, query, table_name, \
                 columns, count, occurrences, request, parent, rows_max, suggestion, database, \
                 details, first_seen, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10::text::jsonb, \
                 $11::text::jsonb, $12, $13, $14, $15::text::jsonb, $16, $17) \
             ON CONFLICT (id) DO UPDATE SET {run_fields}, \
                 suggestion = CASE WHEN $18::boolean AND ({worse} OR f.details = '{{}}'::jsonb) \
                     THEN COALESCE(EXCLUDED.suggestion, f.suggestion) \
                     ELSE COALESCE(f.suggestion, EXCLUDED.suggestion) END, \
                 details = CASE WHEN $18::boolean \
                     THEN CASE WHEN {worse} OR f.details = '{{}}'::jsonb \
                         THEN EXCLUDED.details ELSE f.details END \
                     ELSE f.details || EXCLUDED.details END",
            run_fields = merge_run_fields("f"),
        );
        let upsert_run_finding = format!(
            "INSERT INTO {s}.run_findings AS rf (run_id, finding_id, severity, occurrences, \
                 count, request, rows_max, first_seen, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9) \
             ON CONFLICT (run_id, finding_id) DO UPDATE SET {run_fields} \
             RETURNING (xmax = 0) AS inserted",
            run_fields = merge_run_fields("rf"),
        );
        let run_filter = "($1::text IS NULL OR instance = $1) \
             AND ($2::bigint IS NULL OR COALESCE(ended_at, updated_at) >= $2) \
             AND ($3::bigint IS NULL OR id = $3)";
        Sql {
            version_table: format!("{s}.qproxy_schema_version"),
            create_version_table: format!(
                "CREATE TABLE IF NOT EXISTS {s}.qproxy_schema_version (\
                     version integer PRIMARY KEY, \
                     applied_at timestamptz NOT NULL DEFAULT now(), \
                     qproxy_version text NOT NULL)"
            ),
            max_version: format!("SELECT COALESCE(max(version), 0) FROM {s}.qproxy_schema_version"),
            insert_version: format!(
                "INSERT INTO {s}.qproxy_schema_version (version, qproxy_version) VALUES ($1, $2)"
            ),
            begin_run: format!(
                "INSERT INTO {s}.runs (instance, started_at, updated_at, host, pid, version) \
                 VALUES ($1, $2, $2, $3, $4, $5) RETURNING id"
            ),
            end_run: format!("UPDATE {s}.runs SET ended_at = $2, updated_at = $2 WHERE id = $1"),
            update_summary: format!(
                "UPDATE {s}.runs SET queries = $2, fingerprints = $3, requests = $4, \
                 correlated_fraction = $5, parse_failures = $6, dropped_events = $7, \
                 catalog = $8, findings_lost = $9, statements_not_analysed = $10, \
                 updated_at = $11, verifications_skipped = $12 WHERE id = $1"
            ),
            heartbeat: format!("UPDATE {s}.runs SET updated_at = $2 WHERE id = $1"),
            upsert_finding,
            upsert_run_finding,
            select_runs: format!(
                "SELECT {RUN_META_COLUMNS} FROM {s}.runs WHERE {run_filter} \
                 ORDER BY started_at, id"
            ),
            select_latest_run: format!(
                "SELECT {RUN_META_COLUMNS} FROM {s}.runs WHERE {run_filter} \
                 ORDER BY started_at DESC, id DESC LIMIT 1"
            ),
            // The runs' order, then the finding id: the order the SQLite
            // store merges in, so ties resolve the same way.
            select_run_findings: format!(
                "SELECT {FINDING_COLUMNS}, {RUN_COLUMNS} FROM {s}.run_findings rf \
                 JOIN {s}.findings f ON f.id = rf.finding_id \
                 JOIN {s}.runs r ON r.id = rf.run_id \
                 WHERE rf.run_id = ANY($1) AND rf.last_seen >= $2 \
                 ORDER BY r.started_at, r.id, rf.finding_id"
            ),
            select_finding: format!("SELECT {FINDING_COLUMNS} FROM {s}.findings f WHERE f.id = $1"),
            // run_findings go with their run (ON DELETE CASCADE).
            prune_runs: format!(
                "DELETE FROM {s}.runs WHERE COALESCE(ended_at, updated_at) < $1 \
                 AND id IS DISTINCT FROM $2"
            ),
            prune_findings: format!(
                "DELETE FROM {s}.findings f WHERE f.last_seen < $1 AND NOT EXISTS \
                 (SELECT 1 FROM {s}.run_findings rf WHERE rf.finding_id = f.id)"
            ),
            schema: s,
            schema_name: schema_name.to_string(),
        }
    }
}
