//! The findings read from statements and the catalog, end to end: `non_sargable_filter`,
//! `offset_pagination` and `unindexed_foreign_key` from a psycopg 3 workload
//! (`tests/python/sql_findings.py`) through the real `qproxy` binary in front of a real
//! PostgreSQL, then `qproxy report --format json`.
//!
//! Like `detectors.rs`: one cluster per test binary holds a template database ([`SCHEMA`]);
//! each test copies it, starts its own proxy and store, waits for the proxy to load the
//! catalog, runs one part of the workload (planted problems next to look-alike controls) and
//! checks the report holds exactly the planted findings. Thresholds are the defaults: tables of
//! >= 10,000 estimated rows, OFFSET >= 1,000.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use qproxy_tests::programs::{psql, python, python_script, run, run_ok};
use qproxy_tests::report::{self, all_findings, report_json, wait_for_report};
use qproxy_tests::{mode, Mode, PgCluster, Proxy, ProxyOptions, SUPERUSER};
use serde_json::Value;

/// The database every test database is copied from.
const TEMPLATE: &str = "sql_findings_template";

/// `accounts` (30k): btrees on email, created_at and score, an expression index on
/// lower(handle), a trigram index on bio. `members` (30k) references `teams` (200) with no
/// index on team_id; `tasks` (30k) references `projects` (200) with one. `notes` (2k) is small.
const SCHEMA: &str = "
CREATE EXTENSION pg_trgm;
CREATE TABLE accounts (
    id int PRIMARY KEY,
    email text NOT NULL,
    handle text NOT NULL,
    bio text NOT NULL,
    created_at timestamptz NOT NULL,
    score int NOT NULL
);
CREATE INDEX accounts_email_idx ON accounts (email);
CREATE INDEX accounts_lower_handle_idx ON accounts (lower(handle));
CREATE INDEX accounts_created_at_idx ON accounts (created_at);
CREATE INDEX accounts_score_idx ON accounts (score);
CREATE INDEX accounts_bio_trgm_idx ON accounts USING gin (bio gin_trgm_ops);
CREATE TABLE teams (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE members (id int PRIMARY KEY, team_id int NOT NULL REFERENCES teams (id), name text NOT NULL);
CREATE TABLE projects (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE tasks (id int PRIMARY KEY, project_id int NOT NULL REFERENCES projects (id), title text NOT NULL);
CREATE INDEX tasks_project_id_idx ON tasks (project_id);
CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);
INSERT INTO accounts SELECT g, 'user' || g || '@example.com', 'Handle' || g, 'bio of user ' || g,
    now() - g * interval '1 minute', g FROM generate_series(1, 30000) g;
INSERT INTO teams SELECT g, 'team ' || g FROM generate_series(1, 200) g;
INSERT INTO members SELECT g, 1 + g % 200, 'member ' || g FROM generate_series(1, 30000) g;
INSERT INTO projects SELECT g, 'project ' || g FROM generate_series(1, 200) g;
INSERT INTO tasks SELECT g, 1 + g % 200, 'task ' || g FROM generate_series(1, 30000) g;
INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 2000) g;
ANALYZE;
";

fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = PgCluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
        cluster
            .create_database(TEMPLATE)
            .expect("creating the template database");
        cluster
            .psql_superuser(TEMPLATE, SCHEMA)
            .expect("loading the schema");
        cluster
    })
}

/// Whether python3 with psycopg 3 is there; the tests are skipped (saying so) without it.
fn has_psycopg() -> bool {
    let mut cmd = python(Path::new("-c"), &["import psycopg"]);
    run(&mut cmd, Duration::from_secs(30)).is_ok_and(|o| o.status.success())
}

/// Copies the template into a database of its own, starts a proxy in front of it, waits until
/// the proxy has loaded its catalog, runs `part` of the workload through it, stops the proxy
/// (SIGTERM flushes everything) and returns the report. `None` when the test cannot run here.
fn run_part(name: &str, part: &str) -> Option<Value> {
    if mode() == Mode::Direct {
        eprintln!("{name}: skipped in direct mode (the detectors live in the proxy)");
        return None;
    }
    if !has_psycopg() {
        eprintln!("{name}: skipped (python3 with psycopg 3 not installed)");
        return None;
    }
    let cluster = cluster();
    let db = format!("sql_{name}");
    cluster
        .psql_superuser(
            "postgres",
            &format!("CREATE DATABASE \"{db}\" TEMPLATE \"{TEMPLATE}\";"),
        )
        .expect("creating the test database");
    let mut proxy = Proxy::start(&ProxyOptions {
        shutdown_grace_secs: Some(5),
        ..ProxyOptions::new(cluster.url(SUPERUSER, "postgres", "disable"))
    })
    .unwrap_or_else(|e| panic!("starting qproxy: {e:#}"));
    let url = proxy.url(SUPERUSER, &db, "disable");
    let store = proxy.store_path();
    let catalog_loaded = |why: &str| {
        wait_for_report(&store, Duration::from_secs(30), |r| {
            r["summary"]["catalog"] == "available"
        })
        .unwrap_or_else(|e| panic!("{name}: catalog never loaded ({why}): {e:#}"));
    };
    // A finding-free statement makes the proxy load the catalog before the workload, so every
    // statement is judged as it runs.
    run_ok(
        psql(&url).args([
            "-c",
            "SELECT id FROM accounts WHERE id = 1 /*request_id='warm-up'*/",
        ]),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{name}: warm-up: {e:#}\n{}", proxy.log()));
    catalog_loaded("warm-up");
    let out = run(
        &mut python(&python_script("sql_findings.py"), &[&url, part]),
        Duration::from_secs(120),
    )
    .expect("running python");
    assert!(
        out.status.success(),
        "{name}: psycopg workload failed: {out}\n{}",
        proxy.log()
    );
    catalog_loaded("after the workload");
    proxy.terminate().expect("SIGTERM");
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .expect("qproxy exits after SIGTERM");
    assert!(status.success(), "{name}: qproxy exited with {status}");
    Some(report_json(&store, "latest").unwrap_or_else(|e| panic!("{name}: report: {e:#}")))
}

/// Checks that `report` holds exactly one finding per `(kind, query fragment)` and nothing
/// else (a missing one is a recall failure, an extra one a precision failure), prints the
/// `detector-score:` line, and returns the findings in `planted` order.
fn verify_exact<'a>(test: &str, report: &'a Value, planted: &[(&str, &str)]) -> Vec<&'a Value> {
    report::verify_exact(
        test,
        report,
        all_findings(report),
        planted,
        |(kind, fragment), f| {
            f["kind"] == *kind && f["query"].as_str().unwrap_or("").contains(fragment)
        },
    )
}

/// A finding's text fields (not its timestamps), to check no bound value leaked into it.
fn content(f: &Value) -> String {
    let mut f = f.clone();
    if let Some(o) = f.as_object_mut() {
        o.remove("first_seen");
        o.remove("last_seen");
        o.remove("id");
        o.remove("fingerprint");
    }
    f.to_string()
}

#[test]
fn non_sargable_filters_and_their_rewrites() {
    let Some(report) = run_part("non_sargable", "non_sargable") else {
        return;
    };
    let found = verify_exact(
        "non_sargable",
        &report,
        &[
            ("non_sargable_filter", "WHERE lower(email) = lower("),
            ("non_sargable_filter", "created_at::DATE"),
            ("non_sargable_filter", "score + "),
            ("non_sargable_filter", "email LIKE"),
        ],
    );
    let (function, cast, arithmetic, like) = (found[0], found[1], found[2], found[3]);
    for f in &found {
        assert_eq!(f["table"], "public.accounts", "{f:#}");
        assert_eq!(f["severity"], "warning", "{f:#}");
        assert_eq!(f["details"]["rows_estimate"], 30_000, "{f:#}");
    }
    assert_eq!(function["columns"], serde_json::json!(["email"]));
    assert_eq!(function["details"]["wrapper"], "function");
    assert!(
        function["suggestion"]
            .as_str()
            .unwrap()
            .ends_with("CREATE INDEX CONCURRENTLY ON public.accounts ((lower(email)));"),
        "{function:#}"
    );
    assert_eq!(cast["columns"], serde_json::json!(["created_at"]));
    assert_eq!(cast["details"]["cast_to"], "date");
    assert!(
        cast["suggestion"]
            .as_str()
            .unwrap()
            .contains("created_at >= $1 AND created_at < $1 + interval '1 day'"),
        "{cast:#}"
    );
    assert_eq!(arithmetic["columns"], serde_json::json!(["score"]));
    assert!(
        arithmetic["suggestion"]
            .as_str()
            .unwrap()
            .contains("score = $1 - k"),
        "{arithmetic:#}"
    );
    assert_eq!(like["details"]["wrapper"], "leading_wildcard");
    assert!(
        like["suggestion"]
            .as_str()
            .unwrap()
            .ends_with("USING gin (email gin_trgm_ops);"),
        "{like:#}"
    );
    assert!(
        !content(function).contains("USER7"),
        "bound values stay out: {function:#}"
    );
}

#[test]
fn offset_pagination_bound_binary_prepared_and_literal() {
    let Some(report) = run_part("offset", "offset") else {
        return;
    };
    let found = verify_exact(
        "offset",
        &report,
        &[
            ("offset_pagination", "SELECT id, email FROM accounts"),
            ("offset_pagination", "SELECT id, handle FROM accounts"),
            ("offset_pagination", "ORDER BY score"),
            ("offset_pagination", "SELECT id, bio FROM accounts"),
            ("offset_pagination", "SELECT email, handle FROM accounts"),
        ],
    );
    let magnitudes: Vec<&Value> = found.iter().map(|f| &f["details"]["max_offset"]).collect();
    assert_eq!(magnitudes, [1000, 10000, 1000, 1000, 1000], "{found:#?}");
    for f in &found {
        assert_eq!(f["table"], "public.accounts");
        assert_eq!(f["severity"], "warning");
        assert_eq!(f["occurrences"], 1);
        let text = content(f);
        for value in ["4321", "12345", "2500", "7654", "3333"] {
            assert!(!text.contains(value), "OFFSET {value} leaked: {f:#}");
        }
    }
    assert!(
        found[1]["suggestion"].as_str().unwrap().contains(
            "WHERE (created_at, id) < ($last_created_at, $last_id) \
             ORDER BY created_at DESC, id DESC LIMIT n"
        ),
        "{:#}",
        found[1]
    );
    assert_eq!(
        found[1]["details"]["keyset"],
        serde_json::json!(["created_at", "id"])
    );
}

#[test]
fn unindexed_foreign_keys_by_delete_key_update_and_join() {
    let Some(report) = run_part("foreign_key", "foreign_key") else {
        return;
    };
    let found = verify_exact(
        "foreign_key",
        &report,
        &[
            ("unindexed_foreign_key", "DELETE FROM teams"),
            ("unindexed_foreign_key", "UPDATE teams SET id"),
            ("unindexed_foreign_key", "JOIN members"),
            ("unindexed_filter", "JOIN members"),
        ],
    );
    let exercised: Vec<&Value> = found[..3]
        .iter()
        .map(|f| &f["details"]["exercised_by"])
        .collect();
    assert_eq!(exercised, ["delete", "update_key", "join"]);
    for f in &found {
        assert_eq!(f["table"], "public.members", "{f:#}");
        assert_eq!(f["columns"], serde_json::json!(["team_id"]), "{f:#}");
        assert_eq!(
            f["suggestion"],
            "CREATE INDEX CONCURRENTLY ON public.members (team_id);"
        );
    }
    assert_eq!(found[0]["details"]["constraint"], "members_team_id_fkey");
    assert_eq!(found[0]["details"]["referenced_table"], "public.teams");
}
