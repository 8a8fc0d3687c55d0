//! The proxy's own connections, end to end through the real `qproxy` binary and a real
//! PostgreSQL with hypopg: index suggestions are verified with the rights of the client who
//! sent the statement and never run client code with the upstream's rights (issue 10, item 1);
//! verification work stays bounded under a flood of new statement shapes (item 2); catalog
//! reloads after DDL bursts are coalesced and the catalog stays available (item 7).
//!
//! The upstream URL is the superuser's, as it often is in practice. Client roles: `mallory`
//! (may create functions and operators in `public`, SELECT on `big`), `alice` (SELECT on `big`),
//! `nosel` (no privileges on `big`), and `qproxy_limited`, a non-superuser used as the upstream
//! role of one test. Each test has its own database (a copy of the template) and its own proxy.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use qproxy_tests::report::{findings_of, report_json, run_report, wait_for_report};
use qproxy_tests::{connect, mode, Login, Mode, PgCluster, Proxy, ProxyOptions, SUPERUSER};
use serde_json::Value;
use tokio_postgres::Client;

const TEMPLATE: &str = "security_template";

const MALLORY: Login = Login {
    user: "mallory",
    password: Some("mallory-secret"),
};
const ALICE: Login = Login {
    user: "alice",
    password: Some("alice-secret"),
};
const NOSEL: Login = Login {
    user: "nosel",
    password: Some("nosel-secret"),
};
const LIMITED: Login = Login {
    user: "qproxy_limited",
    password: Some("limited-secret"),
};

const ROLES: &str = "
CREATE ROLE mallory LOGIN PASSWORD 'mallory-secret';
CREATE ROLE alice LOGIN PASSWORD 'alice-secret';
CREATE ROLE nosel LOGIN PASSWORD 'nosel-secret';
CREATE ROLE qproxy_limited LOGIN PASSWORD 'limited-secret';
";

/// `big` is large enough for the unindexed detectors (20,000 rows) and `col` has no index;
/// `col = 1` matches the first rows, so `LIMIT 1` queries return at once.
const SCHEMA: &str = "
CREATE EXTENSION hypopg;
CREATE TABLE big (id int PRIMARY KEY, col int NOT NULL, note text NOT NULL);
INSERT INTO big SELECT g, g % 100, 'note ' || g FROM generate_series(1, 20000) g;
ANALYZE big;
GRANT SELECT ON big TO mallory, alice;
";

/// What `mallory` plants: an IMMUTABLE function that, once it is running with a superuser's
/// rights, terminates every backend named `canary`. It first tries to become the session user
/// (which is how code under `SET ROLE` escapes it), so only never running it is safe. Reached
/// three ways: by its name, through an operator, and as an overload of a built-in name that
/// wins resolution for an `unknown` literal.
const MALLORY_OBJECTS: &str = "
SET ROLE mallory;
CREATE FUNCTION public.evil(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  BEGIN
    PERFORM pg_catalog.set_config('role', session_user::text, true);
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    PERFORM pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
      WHERE application_name = 'canary';
  END IF;
  RETURN x;
END $$;
CREATE FUNCTION public.evil_sum(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE
  AS 'SELECT public.evil(a) + b';
CREATE OPERATOR public.### (LEFTARG = int, RIGHTARG = int, FUNCTION = public.evil_sum);
CREATE FUNCTION public.abs(x text) RETURNS int LANGUAGE sql IMMUTABLE
  AS 'SELECT public.evil(1)';
RESET ROLE;
";

/// The cluster of this test binary: roles, and the template database.
fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = PgCluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
        cluster.psql_superuser("postgres", ROLES).expect("roles");
        cluster.create_database(TEMPLATE).expect("template");
        cluster.psql_superuser(TEMPLATE, SCHEMA).expect("schema");
        cluster
    })
}

/// One test's database and proxy.
struct Scenario {
    db: String,
    proxy: Proxy,
}

impl Scenario {
    /// A copy of the template named `db`, `setup` run in it as the superuser, and a proxy in
    /// front of it whose upstream role is `upstream`; `None` in direct mode.
    async fn start(db: &str, setup: &str, upstream: Login, extra: &[&str]) -> Option<Scenario> {
        if mode() == Mode::Direct {
            eprintln!("{db}: skipped in direct mode (verification lives in the proxy)");
            return None;
        }
        let (name, setup) = (db.to_string(), setup.to_string());
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let proxy = blocking(move || {
            let cluster = cluster();
            cluster
                .psql_superuser(
                    "postgres",
                    &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{TEMPLATE}\";"),
                )
                .expect("creating the test database");
            if !setup.is_empty() {
                cluster.psql_superuser(&name, &setup).expect("test setup");
            }
            let options = ProxyOptions {
                shutdown_grace_secs: Some(5),
                extra_args: extra,
                ..ProxyOptions::new(cluster.url(upstream, "postgres", "disable"))
            };
            Proxy::start(&options).unwrap_or_else(|e| panic!("starting qproxy: {e:#}"))
        })
        .await;
        Some(Scenario {
            db: db.to_string(),
            proxy,
        })
    }

    /// A client through the proxy as `login`.
    async fn client(&self, login: Login) -> Client {
        let url = self.proxy.url(login, &self.db, "disable");
        connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}\n{}", self.proxy.log()))
    }

    fn store(&self) -> PathBuf {
        self.proxy.store_path()
    }

    /// Waits until `n` unindexed findings carry a hypopg verdict (verified or not), flushed.
    async fn wait_for_verdicts(&self, n: usize) -> Value {
        let store = self.store();
        let log = self.proxy.log();
        blocking(move || {
            wait_for_report(&store, Duration::from_secs(60), |r| verdicts(r).len() >= n)
        })
        .await
        .unwrap_or_else(|e| panic!("verdicts never arrived: {e:#}\n--- qproxy log ---\n{log}"))
    }

    /// SIGTERM, exit 0, then the latest run's report.
    async fn finish(&mut self) -> Value {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.proxy.terminate().expect("SIGTERM");
        let status = blocking_ref(&mut self.proxy, |p| p.wait_exit(Duration::from_secs(30)))
            .expect("qproxy exits");
        assert!(
            status.success(),
            "qproxy exited with {status}\n{}",
            self.proxy.log()
        );
        let store = self.store();
        blocking(move || report_json(&store, "latest"))
            .await
            .expect("report")
    }

    fn metrics(&self) -> String {
        let (status, body) = self.proxy.admin_get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Unindexed findings that carry a hypopg verdict.
fn verdicts(report: &Value) -> Vec<&Value> {
    ["unindexed_filter", "unindexed_sort"]
        .iter()
        .flat_map(|k| findings_of(report, k))
        .filter(|f| f["details"]["hypopg"].is_object())
        .collect()
}

/// The one unindexed filter finding whose query contains `fragment`.
fn filter_for<'a>(report: &'a Value, fragment: &str) -> &'a Value {
    let found: Vec<&Value> = findings_of(report, "unindexed_filter")
        .into_iter()
        .filter(|f| f["query"].as_str().unwrap_or("").contains(fragment))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one unindexed_filter for {fragment:?}: {report:#}"
    );
    found[0]
}

/// The value of the sample written exactly as `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Connections the server logged (`log_connections`) for `db` with `application_name`.
fn server_connections(db: &str, application_name: &str) -> usize {
    let user = format!("database={db} application_name={application_name}");
    cluster()
        .log()
        .lines()
        .filter(|l| l.contains("connection authorized") && l.contains(&user))
        .count()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

fn blocking_ref<T, R>(value: &mut T, f: impl FnOnce(&mut T) -> R) -> R {
    tokio::task::block_in_place(|| f(value))
}

/// A direct connection (not through the proxy) named `application_name`, as the superuser.
async fn direct(db: &str, application_name: &str) -> Client {
    let url = format!(
        "{}&application_name={application_name}",
        cluster().url(SUPERUSER, db, "disable")
    );
    connect(&url).await.expect("direct connection")
}

async fn run(c: &Client, sql: &str, times: usize) {
    for _ in 0..times {
        c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Least privilege
// ---------------------------------------------------------------------------------------------

/// The attack: mallory's IMMUTABLE function would terminate the canary if it ever ran with a
/// superuser's rights, and the planner runs IMMUTABLE functions of constants while planning.
/// Through the proxy, mallory's statements on the large unindexed table produce findings whose
/// suggestions hypopg would check; none of the three ways to reach the function gets planned,
/// each finding says which object was refused, and the canary survives.
#[tokio::test(flavor = "multi_thread")]
async fn client_code_never_runs_with_the_upstream_superusers_rights() {
    let Some(mut s) = Scenario::start("sec_attack", MALLORY_OBJECTS, SUPERUSER, &[]).await else {
        return;
    };
    // The trap is armed: planned by a superuser, the function does terminate a canary.
    let armed = direct(&s.db, "canary").await;
    let superuser = direct(&s.db, "trap-check").await;
    superuser
        .simple_query("SELECT * FROM big WHERE col = evil(3) LIMIT 1")
        .await
        .expect("the superuser's own query runs");
    assert!(
        armed.simple_query("SELECT 1").await.is_err(),
        "the trap did not fire for a superuser, so this test proves nothing"
    );
    drop(superuser);

    let canary = direct(&s.db, "canary").await;
    let mallory = s.client(MALLORY).await;
    let attacks = [
        (
            "SELECT * FROM big WHERE col = evil(3) LIMIT 1",
            "evil(",
            "public.evil()",
        ),
        (
            "SELECT * FROM big WHERE col = 1 ### 2 LIMIT 1",
            "###",
            "public.###",
        ),
        (
            "SELECT * FROM big WHERE col = abs('3') LIMIT 1",
            "abs(",
            "public.abs()",
        ),
    ];
    for (sql, _, _) in attacks {
        run(&mallory, sql, 3).await;
    }
    drop(mallory);
    let _ = s.wait_for_verdicts(attacks.len()).await;
    canary
        .simple_query("SELECT 1")
        .await
        .expect("the canary was terminated: client code ran with the upstream's rights");
    let report = s.finish().await;
    for (sql, fragment, named) in attacks {
        let f = filter_for(&report, fragment);
        let hypopg = &f["details"]["hypopg"];
        assert_eq!(hypopg["verified"], false, "{sql}: {f:#}");
        assert_eq!(hypopg["skipped"], "refused", "{sql}: {f:#}");
        let reason = hypopg["reason"].as_str().unwrap_or("");
        assert!(reason.contains(named), "{sql}: {reason}");
        assert!(hypopg.get("cost_before").is_none(), "{sql}: {f:#}");
    }
    canary.simple_query("SELECT 1").await.expect("canary alive");
}

/// A role without SELECT on the table: its statement fails for it, and the proxy does not
/// plan it for the role either, so the report holds no plan costs for a table the role may
/// not read.
#[tokio::test(flavor = "multi_thread")]
async fn a_role_without_select_gets_no_plan_costs() {
    let Some(mut s) = Scenario::start("sec_nosel", "", SUPERUSER, &[]).await else {
        return;
    };
    let nosel = s.client(NOSEL).await;
    let denied = nosel
        .simple_query("SELECT note FROM big WHERE col = 5")
        .await
        .expect_err("nosel may not read big");
    assert_eq!(denied.code().map(|c| c.code()), Some("42501"), "{denied}");
    drop(nosel);
    let _ = s.wait_for_verdicts(1).await;
    let report = s.finish().await;
    let f = filter_for(&report, "SELECT note FROM big");
    let hypopg = &f["details"]["hypopg"];
    assert_eq!(hypopg["verified"], false, "{f:#}");
    assert_eq!(
        hypopg["reason"], "not verified: the client role cannot run this statement",
        "{f:#}"
    );
    for key in ["cost_before", "cost_after", "uses_index"] {
        assert!(hypopg.get(key).is_none(), "{key}: {f:#}");
    }
}

/// The control: a role that may read the table gets its suggestion verified, planned as
/// itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_plain_query_from_a_role_with_select_is_verified() {
    let Some(mut s) = Scenario::start("sec_alice", "", SUPERUSER, &[]).await else {
        return;
    };
    let alice = s.client(ALICE).await;
    alice
        .query("SELECT id, note FROM big WHERE col = $1", &[&7i32])
        .await
        .expect("alice reads big");
    drop(alice);
    let _ = s.wait_for_verdicts(1).await;
    let report = s.finish().await;
    let f = filter_for(&report, "SELECT id, note FROM big");
    let hypopg = &f["details"]["hypopg"];
    assert_eq!(hypopg["verified"], true, "{f:#}");
    assert_eq!(hypopg["uses_index"], true, "{f:#}");
    assert!(
        hypopg["cost_after"].as_f64() < hypopg["cost_before"].as_f64(),
        "{f:#}"
    );
    assert_eq!(
        f["suggestion"],
        "CREATE INDEX CONCURRENTLY ON public.big (col);"
    );
}

/// An upstream role that is not a superuser and not a member of the client's role cannot
/// `SET ROLE` to it: the suggestion is skipped with that reason rather than planned as the
/// upstream role. Granted the membership, the next statement is verified.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_cannot_become_the_client_plans_nothing() {
    let Some(mut s) = Scenario::start("sec_limited", "", LIMITED, &[]).await else {
        return;
    };
    let alice = s.client(ALICE).await;
    run(&alice, "SELECT id FROM big WHERE col = 7", 1).await;
    let _ = s.wait_for_verdicts(1).await;
    blocking(|| cluster().psql_superuser("postgres", "GRANT alice TO qproxy_limited"))
        .await
        .expect("grant");
    run(&alice, "SELECT note FROM big WHERE col = 8", 1).await;
    drop(alice);
    let _ = s.wait_for_verdicts(2).await;
    blocking(|| cluster().psql_superuser("postgres", "REVOKE alice FROM qproxy_limited"))
        .await
        .expect("revoke");
    let report = s.finish().await;
    let refused = &filter_for(&report, "SELECT id FROM big")["details"]["hypopg"];
    assert_eq!(refused["verified"], false, "{refused:#}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or("")
            .contains("may not SET ROLE"),
        "{refused:#}"
    );
    let granted = &filter_for(&report, "SELECT note FROM big")["details"]["hypopg"];
    assert_eq!(granted["verified"], true, "{granted:#}");
}

// ---------------------------------------------------------------------------------------------
// Bounded background work
// ---------------------------------------------------------------------------------------------

/// A config file with small verification limits, so the flood overflows them quickly.
fn flood_config(dir: &Path) -> PathBuf {
    let path = dir.join("flood.toml");
    std::fs::write(
        &path,
        "[analyzer.verification]\nmax_queued = 32\nbatch_size = 8\nconnections_per_second = 2.0\n",
    )
    .expect("writing the config");
    path
}

/// 2,000 distinct unindexed-filter shapes as fast as one connection sends them: verification
/// connections stay within the token bucket (burst 4, then 2 a second) however many shapes
/// arrive, each checks a batch, what does not fit is skipped and counted (report coverage,
/// `/metrics`), and once the queue is empty no further verification connection is opened.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_new_shapes_keeps_verification_connections_bounded() {
    const SHAPES: usize = 2_000;
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let config = flood_config(dir.path());
    let config_arg = config.to_string_lossy().to_string();
    let started = Instant::now();
    let Some(mut s) = Scenario::start("sec_flood", "", SUPERUSER, &["--config", &config_arg]).await
    else {
        return;
    };
    let alice = s.client(ALICE).await;
    for i in 0..SHAPES {
        run(
            &alice,
            &format!("SELECT id AS c{i} FROM big WHERE col = 1 LIMIT 1"),
            1,
        )
        .await;
    }
    drop(alice);
    let flood_took = started.elapsed();

    // The queue drains (at most 32 waiting, 8 per connection, 2 connections a second).
    let deadline = Instant::now() + Duration::from_secs(90);
    let text = loop {
        let text = s.metrics();
        let queued = sample(&text, "qproxy_verification_queue");
        let analysed: f64 = text
            .lines()
            .filter(|l| l.starts_with("qproxy_queries_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        // Until the catalog is in, the shapes wait for it and the queue is empty for
        // another reason (on a loaded machine the first load can take seconds).
        let catalog = sample(&text, "qproxy_catalog_available");
        if catalog == Some(1.0) && queued == Some(0.0) && analysed >= SHAPES as f64 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the verification queue never drained:\n{text}\n{}",
            s.proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained_after = started.elapsed();
    let opened = server_connections(&s.db, "qproxy-hypopg");
    // Burst of 4, then 2 a second, over the whole life of the proxy so far; one spare for a
    // connection that was starting as the queue emptied.
    let allowed = 4 + (2.0 * drained_after.as_secs_f64()).ceil() as usize + 1;
    eprintln!(
        "flood: {SHAPES} shapes sent in {flood_took:?}, queue empty after {drained_after:?}, \
         {opened} verification connections (at most {allowed} allowed)"
    );
    assert!(opened >= 1, "no verification ran at all");
    assert!(opened <= allowed, "{opened} > {allowed}");
    assert!(
        opened < SHAPES / 20,
        "{opened} connections for {SHAPES} shapes"
    );
    assert_eq!(
        sample(
            &text,
            "qproxy_background_connections_total{purpose=\"verification\"}"
        ),
        Some(opened as f64),
        "the proxy's own count matches the server's"
    );
    let skipped = sample(
        &text,
        "qproxy_verifications_skipped_total{reason=\"queue_full\"}",
    )
    .unwrap_or(0.0);
    assert!(
        skipped >= (SHAPES / 2) as f64,
        "queue_full skips: {skipped}\n{text}"
    );

    // After the load: no new verification connection.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        server_connections(&s.db, "qproxy-hypopg"),
        opened,
        "verification connections kept coming after the load stopped"
    );

    let report = s.finish().await;
    let in_report = report["summary"]["verifications_skipped"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        in_report >= skipped,
        "report {in_report} < metrics {skipped}"
    );
    let queue_full: Vec<&Value> = findings_of(&report, "unindexed_filter")
        .into_iter()
        .filter(|f| f["details"]["hypopg"]["skipped"] == "queue_full")
        .collect();
    assert!(queue_full.len() >= SHAPES / 2, "{}", queue_full.len());
    let verified = findings_of(&report, "unindexed_filter")
        .into_iter()
        .filter(|f| f["details"]["hypopg"]["verified"] == true)
        .count();
    assert!(verified >= 1, "some shapes were verified");
    let store = s.store();
    let text = blocking(move || run_report(&store, &["--format", "text"]))
        .await
        .expect("text report");
    assert!(
        text.stdout.contains("verifications skipped"),
        "{}",
        text.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Catalog reloads
// ---------------------------------------------------------------------------------------------

/// "catalog loaded" log lines for `db`.
fn catalog_loads(log: &str, db: &str) -> usize {
    let field = format!("\"database\":\"{db}\"");
    log.lines()
        .filter(|l| l.contains("catalog loaded") && l.contains(&field))
        .count()
}

/// A burst of DDL through the proxy (50 tables created, indexed and dropped, one large table
/// created and kept): the catalog is reloaded a few times, not once per statement, and after
/// the burst it is loaded again and knows the new table, whose unindexed filter is reported.
#[tokio::test(flavor = "multi_thread")]
async fn ddl_bursts_coalesce_catalog_reloads() {
    let Some(mut s) = Scenario::start("sec_ddl", "", SUPERUSER, &[]).await else {
        return;
    };
    let c = s.client(SUPERUSER).await;
    // First sight of the database: the initial load.
    run(&c, "SELECT id FROM big WHERE id = 1", 1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while catalog_loads(&s.proxy.log(), &s.db) == 0 {
        assert!(
            Instant::now() < deadline,
            "no initial load:\n{}",
            s.proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..50 {
        run(
            &c,
            &format!(
                "CREATE TABLE burst_{i} (id int, v text); CREATE INDEX ON burst_{i} (id, v); \
                 DROP TABLE burst_{i}"
            ),
            1,
        )
        .await;
        if i == 25 {
            run(
                &c,
                "CREATE TABLE kept AS SELECT g AS id, g % 50 AS grp FROM generate_series(1, 20000) g; \
                 ANALYZE kept",
                1,
            )
            .await;
        }
    }
    // Quiet for the debounce, then the reload that reads `kept`: its filter gets a finding.
    let store = s.store();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        run(&c, "SELECT id FROM kept WHERE grp = 7", 1).await;
        let found = {
            let store = store.clone();
            blocking(move || report_json(&store, "latest")).await
        };
        if let Ok(report) = found {
            if findings_of(&report, "unindexed_filter")
                .iter()
                .any(|f| f["table"] == "public.kept")
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the catalog was never reloaded after the burst:\n{}",
            s.proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(c);
    let loads = catalog_loads(&s.proxy.log(), &s.db);
    let text = s.metrics();
    eprintln!("ddl burst: 151 DDL statements, {loads} catalog loads");
    assert!(loads >= 2, "initial load and one after the burst: {loads}");
    assert!(loads <= 5, "{loads} catalog loads for one DDL burst");
    assert_eq!(
        sample(&text, "qproxy_catalog_loads_total{outcome=\"ok\"}"),
        Some(loads as f64)
    );
    assert_eq!(sample(&text, "qproxy_catalog_available"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "qproxy_background_task_panics_total{task=\"catalog_load\"}"
        ),
        Some(0.0)
    );
    let report = s.finish().await;
    assert_eq!(report["summary"]["catalog"], "available");
}
