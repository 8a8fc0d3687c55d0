//! The detectors end to end: app-like workloads through the real `qproxy` binary in front of a
//! real PostgreSQL, then `qproxy report --format json` over the findings store.
//!
//! One cluster per test binary holds a template database (`SCHEMA`: tables big enough to matter,
//! ANALYZEd, plus small ones); every test copies it into a database of its own and starts a proxy
//! of its own with a store of its own, so findings never mix between tests and each test's
//! catalog is loaded fresh.
//!
//! Every scenario first runs one finding-free statement and waits for the proxy to load the
//! database's catalog ([`Scenario::warm_up`]), so that unindexed filters and sorts in the
//! workload are judged as they run; one test covers statements that ran before the catalog.
//!
//! Each test plants known problems next to negative controls and checks the report holds
//! exactly the planted findings ([`Expect`], [`verify_exact`]): a missing finding is a recall
//! failure, an extra one a precision failure. Each check prints a `detector-score:` line (run
//! with `--nocapture`) from which the suite's precision and recall are tallied.
//!
//! Detector defaults these workloads are sized for: N+1 = one SELECT shape with >= 5 distinct
//! parameter tuples in one request; repeated query = one tuple >= 3 times; unindexed findings
//! only for tables of >= 10,000 estimated rows; unbounded SELECT from 100 returned rows
//! (info), 1,000 (warning), 10,000 (error).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use qproxy_tests::programs::{python, run};
use qproxy_tests::report::{
    self, all_findings, fail_on_exit_code, findings_of, report_json, wait_for_report,
};
use qproxy_tests::{connect, mode, Mode, PgCluster, Proxy, ProxyOptions, SUPERUSER};
use serde_json::Value;
use tokio::sync::Barrier;
use tokio_postgres::{Client, Row, SimpleQueryMessage};

// ---------------------------------------------------------------------------------------------
// The schema and the per-test scenario
// ---------------------------------------------------------------------------------------------

/// The database every test database is copied from.
const TEMPLATE: &str = "detectors_template";

/// Tables of an app: `posts` (50k rows), `comments` (30k) and `events` (20k) are large enough
/// for the unindexed detectors; `authors` (2k), `settings` (11) and `tags` (500) are not.
/// `posts.author_id`, `posts.created_at`, `events.kind`, `events.created_at` and `tags.code`
/// have no index on purpose; `comments.post_id` has one.
const SCHEMA: &str = "
CREATE TABLE authors (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE);
CREATE TABLE posts (
    id int PRIMARY KEY,
    author_id int NOT NULL,
    title text NOT NULL,
    published boolean NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE comments (id int PRIMARY KEY, post_id int NOT NULL, body text NOT NULL);
CREATE INDEX comments_post_id_idx ON comments (post_id);
CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE tags (id int PRIMARY KEY, code text NOT NULL, label text NOT NULL);
INSERT INTO authors SELECT g, 'author ' || g, 'author' || g || '@example.com'
    FROM generate_series(1, 2000) g;
INSERT INTO posts SELECT g, 1 + (g * 7919) % 2000, 'post ' || g, g % 2 = 0,
    now() - g * interval '1 minute' FROM generate_series(1, 50000) g;
INSERT INTO comments SELECT g, 1 + (g::bigint * 104729) % 50000, 'comment ' || g
    FROM generate_series(1, 30000) g;
INSERT INTO events SELECT g, 'kind' || (g % 10), now() - g * interval '1 second'
    FROM generate_series(1, 20000) g;
INSERT INTO settings SELECT 'key' || g, 'value' || g FROM generate_series(1, 10) g;
INSERT INTO settings VALUES ('theme', 'dark');
INSERT INTO tags SELECT g, 'code' || g, 'label ' || g FROM generate_series(1, 500) g;
ANALYZE;
";

/// The cluster of this test binary, with [`TEMPLATE`] loaded.
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

/// One test's world: its own database (a copy of [`TEMPLATE`]) and its own proxy and store.
struct Scenario {
    name: &'static str,
    db: String,
    proxy: Proxy,
}

/// How a [`Scenario`] starts.
struct Setup {
    /// Superuser SQL run in the new database before the proxy ever sees it.
    sql: &'static str,
    /// The store, when not the proxy's own fresh one.
    store: Option<PathBuf>,
    /// Load the proxy's catalog of the database before the workload (see [`Scenario::warm_up`]).
    warm: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            sql: "",
            store: None,
            warm: true,
        }
    }
}

/// The statement [`Scenario::warm_up`] runs: a tagged primary-key lookup, finding-free.
const WARM_UP: &str = "SELECT id FROM posts WHERE id = $1 /*request_id='warm-up',route='warm-up'*/";

impl Scenario {
    /// A fresh database and proxy, catalog loaded; `None` in direct mode (the detectors live in
    /// the proxy).
    async fn start(name: &'static str) -> Option<Scenario> {
        Scenario::start_with(name, Setup::default()).await
    }

    /// A fresh database (a copy of the template, then `setup.sql`) and a proxy in front of it.
    async fn start_with(name: &'static str, setup: Setup) -> Option<Scenario> {
        if mode() == Mode::Direct {
            eprintln!("{name}: skipped in direct mode (the detectors live in the proxy)");
            return None;
        }
        let db = format!("det_{name}");
        let sql = setup.sql;
        let created = db.clone();
        blocking(move || {
            let cluster = cluster();
            cluster
                .psql_superuser(
                    "postgres",
                    &format!("CREATE DATABASE \"{created}\" TEMPLATE \"{TEMPLATE}\";"),
                )
                .expect("creating the test database");
            if !sql.is_empty() {
                cluster
                    .psql_superuser(&created, sql)
                    .expect("test setup SQL");
            }
        })
        .await;
        Some(Scenario::resume(name, &db, setup.store, setup.warm).await)
    }

    /// A new proxy in front of an existing test database.
    async fn resume(name: &'static str, db: &str, store: Option<PathBuf>, warm: bool) -> Scenario {
        let db = db.to_string();
        let proxy = blocking(move || start_proxy(store)).await;
        let scenario = Scenario { name, db, proxy };
        if warm {
            scenario.warm_up().await;
        }
        scenario
    }

    /// Runs [`WARM_UP`] and waits until the proxy has loaded the database's catalog.
    ///
    /// The catalog loads asynchronously on the first statement a proxy sees for a database;
    /// with it loaded before the workload, every statement is analysed for unindexed filters
    /// and sorts as it runs, so their findings (and, for the controls, their absence) are real.
    /// Costs one tagged query in the summary.
    async fn warm_up(&self) {
        let c = self.client().await;
        rows(&c, WARM_UP, &[&1i32]).await;
        drop(c);
        self.wait_for_catalog().await;
    }

    /// Waits until a flush to the store says the catalog is loaded (about a second at most).
    async fn wait_for_catalog(&self) {
        let store = self.store();
        blocking(move || {
            wait_for_report(&store, Duration::from_secs(30), |r| {
                r["summary"]["catalog"] == "available"
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{}: catalog never loaded: {e:#}", self.name));
    }

    /// A new tokio-postgres connection through the proxy.
    async fn client(&self) -> Client {
        let url = self.url();
        connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}\n{}", self.proxy.log()))
    }

    /// The proxy's URL for this scenario's database.
    fn url(&self) -> String {
        self.proxy.url(SUPERUSER, &self.db, "disable")
    }

    /// Ends the scenario: waits until the catalog has arrived (so unindexed findings, or their
    /// absence, are real), stops the proxy with SIGTERM (which flushes every open request) and
    /// returns the latest run's report. Drop every client first. The store stays readable
    /// ([`Scenario::store`]) until the scenario is dropped.
    async fn finish(&mut self) -> Value {
        self.wait_for_catalog().await;
        self.stop().await;
        report_at(&self.store(), "latest").await
    }

    /// The findings store.
    fn store(&self) -> PathBuf {
        self.proxy.store_path()
    }

    /// Sends SIGTERM and waits for exit 0.
    async fn stop(&mut self) {
        // Let dropped clients' connection tasks say goodbye, so no session holds up the drain.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.proxy.terminate().expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.proxy.try_wait().expect("waiting for qproxy") {
                assert!(
                    status.success(),
                    "{}: qproxy exited with {status}\n{}",
                    self.name,
                    self.proxy.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: qproxy still running 30 s after SIGTERM\n{}",
                self.name,
                self.proxy.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn start_proxy(store: Option<PathBuf>) -> Proxy {
    let options = ProxyOptions {
        shutdown_grace_secs: Some(5),
        store,
        ..ProxyOptions::new(cluster().url(SUPERUSER, "postgres", "disable"))
    };
    Proxy::start(&options).unwrap_or_else(|e| panic!("starting qproxy: {e:#}"))
}

/// Runs blocking work (child processes, polling) off the runtime's thread, so connection tasks
/// keep running meanwhile.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

/// `qproxy report --format json --run RUN` over `store`.
async fn report_at(store: &std::path::Path, run: &str) -> Value {
    let (store, run) = (store.to_owned(), run.to_owned());
    blocking(move || report_json(&store, &run))
        .await
        .unwrap_or_else(|e| panic!("reading the report: {e:#}"))
}

/// `qproxy report --fail-on KINDS` exit code over the latest run of `store`.
async fn gate(store: &std::path::Path, kinds: &str) -> i32 {
    let (store, kinds) = (store.to_owned(), kinds.to_owned());
    blocking(move || fail_on_exit_code(&store, &kinds))
        .await
        .unwrap_or_else(|e| panic!("qproxy report --fail-on: {e:#}"))
}

// ---------------------------------------------------------------------------------------------
// Expected findings: exactly these, no more
// ---------------------------------------------------------------------------------------------

/// A planted problem: the finding it must produce, identified by kind and whichever of route,
/// table and query text tell it apart from the rest of its test's findings.
#[derive(Debug, Clone, Copy)]
struct Expect {
    kind: &'static str,
    route: Option<&'static str>,
    table: Option<&'static str>,
    query: Option<&'static str>,
}

fn expect(kind: &'static str) -> Expect {
    Expect {
        kind,
        route: None,
        table: None,
        query: None,
    }
}

impl Expect {
    fn route(self, route: &'static str) -> Expect {
        Expect {
            route: Some(route),
            ..self
        }
    }
    fn table(self, table: &'static str) -> Expect {
        Expect {
            table: Some(table),
            ..self
        }
    }
    fn query(self, fragment: &'static str) -> Expect {
        Expect {
            query: Some(fragment),
            ..self
        }
    }

    fn matches(&self, f: &Value) -> bool {
        f["kind"] == self.kind
            && self.route.is_none_or(|r| f["request"]["route"] == r)
            // Findings name tables schema-qualified once the catalog is loaded.
            && self.table.is_none_or(|t| {
                let table = f["table"].as_str().unwrap_or("");
                table == t || table.strip_prefix("public.") == Some(t)
            })
            && self
                .query
                .is_none_or(|q| f["query"].as_str().unwrap_or("").contains(q))
    }
}

/// Checks that `report` holds exactly the `planted` findings (each matched by exactly one
/// finding, and every finding planted), prints the `detector-score:` line for the suite's
/// precision/recall tally, and returns the findings in `planted` order.
fn verify_exact<'a>(test: &str, report: &'a Value, planted: &[Expect]) -> Vec<&'a Value> {
    report::verify_exact(test, report, all_findings(report), planted, |e, f| {
        e.matches(f)
    })
}

// ---------------------------------------------------------------------------------------------
// Workload helpers
// ---------------------------------------------------------------------------------------------

/// A sqlcommenter comment as Django's middleware appends it.
fn django(request: &str, route: &str) -> String {
    format!("/*framework='django%3A4.2',request_id='{request}',route='{route}'*/")
}

/// A plain sqlcommenter comment.
fn sqlcommenter(request: &str, route: &str) -> String {
    format!("/*request_id='{request}',route='{route}'*/")
}

/// A Rails QueryLogs comment in the legacy marginalia format.
fn rails(controller: &str, action: &str, request: &str) -> String {
    format!("/*application:Blog,controller:{controller},action:{action},request_id:{request}*/")
}

/// The N+1 parent: a page of published posts with their authors' ids.
fn parent_sql(limit: u32, tag: &str) -> String {
    format!(
        "SELECT id, author_id, title FROM posts WHERE published ORDER BY id LIMIT {limit} {tag}"
    )
}

/// The N+1 child: one author by primary key.
const AUTHOR_BY_ID: &str = "SELECT id, name FROM authors WHERE id = $1";

/// Runs `sql` (extended protocol), panicking with the statement on error.
async fn rows(
    c: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<Row> {
    c.query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs `sql` (simple protocol) and returns its rows' text values.
async fn simple(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// A classic N+1 request over the extended protocol: the parent page of `limit` posts, then
/// one prepared author lookup per post, with the author ids the parent returned. Returns the
/// number of lookups.
async fn n_plus_one_request(c: &Client, limit: u32, tag: &str) -> usize {
    let posts = rows(c, &parent_sql(limit, tag), &[]).await;
    let child = c.prepare(&format!("{AUTHOR_BY_ID} {tag}")).await.unwrap();
    for post in &posts {
        let author: i32 = post.get(1);
        c.query_one(&child, &[&author]).await.unwrap();
    }
    posts.len()
}

/// The same request done right: the authors of the page in one `= ANY($1)` query.
async fn batched_request(c: &Client, limit: u32, tag: &str) {
    let posts = rows(c, &parent_sql(limit, tag), &[]).await;
    let ids: Vec<i32> = posts.iter().map(|p| p.get(1)).collect();
    let authors = rows(
        c,
        &format!("SELECT id, name FROM authors WHERE id = ANY($1) {tag}"),
        &[&ids],
    )
    .await;
    assert_eq!(authors.len(), ids.len());
}

/// The fingerprint `qproxy fingerprint` gives `sql`.
/// The filter and the sort no index serves: three lookups of posts by `author_id`, one page of
/// events by `created_at`.
async fn unindexed_workload(c: &Client) {
    for author in [1i32, 2, 3] {
        rows(
            c,
            "SELECT id, title FROM posts WHERE author_id = $1",
            &[&author],
        )
        .await;
    }
    rows(
        c,
        "SELECT id, kind FROM events ORDER BY created_at DESC LIMIT 20",
        &[],
    )
    .await;
}

async fn fingerprint_of(sql: &str) -> String {
    let sql = sql.to_owned();
    let out = blocking(move || {
        let mut cmd = std::process::Command::new(qproxy_tests::proxy::qproxy_bin()?);
        cmd.arg("fingerprint").arg(&sql);
        run(&mut cmd, Duration::from_secs(30))
    })
    .await
    .expect("qproxy fingerprint");
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("fingerprint JSON");
    v["fingerprint"].as_str().expect("fingerprint").to_string()
}

// ---------------------------------------------------------------------------------------------
// N+1: positives
// ---------------------------------------------------------------------------------------------

/// sqlcommenter-tagged requests over the extended protocol (prepared child statement), the
/// parent named from its returned values; also what `--fail-on` and the summary say.
#[tokio::test]
async fn n_plus_one_sqlcommenter_extended_protocol_names_the_parent() {
    let Some(mut s) = Scenario::start("np_sqlcommenter").await else {
        return;
    };
    let c = s.client().await;
    assert_eq!(
        n_plus_one_request(&c, 20, &django("sc-1", "posts.index")).await,
        20
    );
    assert_eq!(
        n_plus_one_request(&c, 10, &django("sc-2", "posts.index")).await,
        10
    );
    drop(c);
    let report = s.finish().await;
    let store = s.store();

    let found = verify_exact(
        "np_sqlcommenter",
        &report,
        &[expect("n_plus_one").route("posts.index")],
    );
    let f = found[0];
    assert_eq!(f["query"], AUTHOR_BY_ID);
    assert_eq!(f["fingerprint"], fingerprint_of(AUTHOR_BY_ID).await);
    assert_eq!(f["table"], "public.authors");
    assert_eq!(f["columns"], serde_json::json!(["id"]));
    assert_eq!(f["count"], 20, "the worst request ran 20 lookups: {f:#}");
    assert_eq!(f["occurrences"], 2, "two requests had the N+1: {f:#}");
    assert_eq!(f["details"]["distinct_parameters"], 20);
    assert_eq!(f["request"]["id"], "sc-1", "the worst request is named");
    assert_eq!(f["request"]["correlation"], "comment");
    assert_eq!(f["rows"]["max"], 1);
    assert_eq!(f["severity"], "warning");
    let parent_plain = parent_sql(20, "");
    assert_eq!(
        f["parent"]["fingerprint"],
        fingerprint_of(parent_plain.trim()).await,
        "the parent is the posts page: {f:#}"
    );
    assert!(
        f["parent"]["query"]
            .as_str()
            .unwrap()
            .starts_with("SELECT id, author_id, title FROM posts"),
        "{f:#}"
    );
    let suggestion = f["suggestion"].as_str().unwrap();
    assert!(suggestion.contains("WHERE id = ANY($1)"), "{suggestion}");
    assert!(suggestion.contains("select_related"), "{suggestion}");

    // CI gating and the coverage summary.
    assert_eq!(gate(&store, "n_plus_one").await, 1);
    assert_eq!(gate(&store, "all").await, 1);
    assert_eq!(gate(&store, "unbounded_select,unindexed_filter").await, 0);
    let summary = &report["summary"];
    assert_eq!(summary["catalog"], "available");
    assert!(summary["queries"].as_u64().unwrap() >= 32, "{summary}");
    assert_eq!(
        summary["correlated_fraction"].as_f64(),
        Some(1.0),
        "every statement was tagged: {summary}"
    );
    assert_eq!(summary["dropped_events"], 0);
}

/// Rails marginalia tags over the simple protocol: the children's parameters are inline
/// literals taken from the parent's text-format results.
#[tokio::test]
async fn n_plus_one_marginalia_simple_protocol() {
    let Some(mut s) = Scenario::start("np_marginalia").await else {
        return;
    };
    let c = s.client().await;
    let tag = rails("posts", "index", "rails-1");
    let posts = simple(&c, &parent_sql(8, &tag)).await;
    assert_eq!(posts.len(), 8);
    for post in &posts {
        let author = post[1].as_deref().unwrap();
        let found = simple(
            &c,
            &format!("SELECT id, name FROM authors WHERE id = {author} {tag}"),
        )
        .await;
        assert_eq!(found.len(), 1);
    }
    drop(c);
    let report = s.finish().await;

    let f = verify_exact(
        "np_marginalia",
        &report,
        &[expect("n_plus_one").route("posts#index")],
    )[0];
    assert_eq!(
        f["query"], AUTHOR_BY_ID,
        "literals normalize to placeholders"
    );
    assert_eq!(f["count"], 8);
    assert_eq!(f["request"]["id"], "rails-1");
    assert_eq!(f["request"]["correlation"], "comment");
    let suggestion = f["suggestion"].as_str().unwrap();
    assert!(
        suggestion.contains("includes()"),
        "Rails idiom: {suggestion}"
    );
}

/// The parent of a simple-protocol N+1: the children's inline literals are the values the
/// parent returned, so the parent must be named as it is over the extended protocol.
#[tokio::test]
async fn n_plus_one_simple_protocol_names_the_parent() {
    let Some(mut s) = Scenario::start("np_simple_parent").await else {
        return;
    };
    let c = s.client().await;
    let tag = sqlcommenter("simple-1", "posts.simple");
    let posts = simple(&c, &parent_sql(8, &tag)).await;
    for post in &posts {
        let author = post[1].as_deref().unwrap();
        simple(
            &c,
            &format!("SELECT id, name FROM authors WHERE id = {author} {tag}"),
        )
        .await;
    }
    drop(c);
    let report = s.finish().await;
    let f = verify_exact(
        "np_simple_parent",
        &report,
        &[expect("n_plus_one").route("posts.simple")],
    )[0];
    assert_eq!(f["count"], 8);
    assert_eq!(
        f["parent"]["fingerprint"],
        fingerprint_of(parent_sql(8, "").trim()).await,
        "the parent is named: {f:#}"
    );
}

/// Untagged traffic is grouped by transaction, and the finding says so; a request id given
/// with `SET qproxy.request_id` groups the same way a comment does.
#[tokio::test]
async fn n_plus_one_untagged_transaction_and_set_request_id() {
    let Some(mut s) = Scenario::start("np_untagged").await else {
        return;
    };
    let c = s.client().await;
    for limit in [6, 7] {
        c.batch_execute("BEGIN").await.unwrap();
        assert_eq!(n_plus_one_request(&c, limit, "").await, limit as usize);
        c.batch_execute("COMMIT").await.unwrap();
    }
    // A request named by SET, on another connection, with another child shape.
    let d = s.client().await;
    d.batch_execute("SET qproxy.request_id = 'set-1'")
        .await
        .unwrap();
    let posts = rows(&d, &parent_sql(5, ""), &[]).await;
    let child = d
        .prepare("SELECT id, email FROM authors WHERE id = $1")
        .await
        .unwrap();
    for p in &posts {
        d.query_one(&child, &[&p.get::<_, i32>(1)]).await.unwrap();
    }
    d.batch_execute("RESET qproxy.request_id").await.unwrap();
    drop((c, d));
    let report = s.finish().await;

    let found = verify_exact(
        "np_untagged",
        &report,
        &[
            expect("n_plus_one").query("SELECT id, name FROM authors"),
            expect("n_plus_one").query("SELECT id, email FROM authors"),
        ],
    );
    let tx = found[0];
    assert_eq!(tx["request"]["correlation"], "transaction", "{tx:#}");
    assert_eq!(tx["request"]["route"], Value::Null);
    assert_eq!(tx["count"], 7);
    assert_eq!(tx["occurrences"], 2, "one per transaction: {tx:#}");
    assert_eq!(
        tx["details"]["grouping"],
        "untagged: grouped by transaction"
    );
    assert!(
        tx["parent"]["query"]
            .as_str()
            .is_some_and(|q| q.contains("FROM posts")),
        "parent named without tags too: {tx:#}"
    );
    let set = found[1];
    assert_eq!(set["request"]["correlation"], "set_variable", "{set:#}");
    assert_eq!(set["request"]["id"], "set-1");
    assert_eq!(set["count"], 5);
    assert!(
        set["parent"]["query"]
            .as_str()
            .is_some_and(|q| q.contains("FROM posts")),
        "{set:#}"
    );
}

/// A statement prepared (and used once) in one request and executed again in later requests
/// counts in the later requests, under their tags (a driver's statement cache).
#[tokio::test]
async fn n_plus_one_prepared_statement_reused_across_requests() {
    let Some(mut s) = Scenario::start("np_prepared").await else {
        return;
    };
    let c = s.client().await;
    // Request A prepares the lookup with its own tags and uses it once.
    let lookup = c
        .prepare(&format!(
            "{AUTHOR_BY_ID} {}",
            sqlcommenter("prep-a", "authors.show")
        ))
        .await
        .unwrap();
    c.query_one(&lookup, &[&1i32]).await.unwrap();
    // Requests B and C run their own parent and reuse A's statement in a loop.
    for (request, limit) in [("prep-b", 6u32), ("prep-c", 7)] {
        let tag = sqlcommenter(request, "posts.feed");
        let posts = rows(&c, &parent_sql(limit, &tag), &[]).await;
        for p in &posts {
            c.query_one(&lookup, &[&p.get::<_, i32>(1)]).await.unwrap();
        }
    }
    drop((lookup, c));
    let report = s.finish().await;

    let f = verify_exact(
        "np_prepared",
        &report,
        &[expect("n_plus_one").route("posts.feed")],
    )[0];
    assert_eq!(f["occurrences"], 2, "one N+1 in B and one in C: {f:#}");
    assert_eq!(f["count"], 7);
    assert_eq!(f["request"]["id"], "prep-c");
    assert!(f["parent"]["query"].as_str().is_some(), "{f:#}");
}

/// A statement prepared in one request (a statement cache warming up) but first executed in
/// the next: DESIGN says a later tag source applies, so the executions belong to the request
/// that ran them.
#[tokio::test]
async fn n_plus_one_statement_prepared_in_one_request_first_executed_in_the_next() {
    let Some(mut s) = Scenario::start("np_prepared_late").await else {
        return;
    };
    let c = s.client().await;
    let a = sqlcommenter("late-a", "home.show");
    rows(&c, &format!("SELECT key, value FROM settings {a}"), &[]).await;
    let lookup = c.prepare(&format!("{AUTHOR_BY_ID} {a}")).await.unwrap();
    let b = sqlcommenter("late-b", "posts.late");
    let posts = rows(&c, &parent_sql(6, &b), &[]).await;
    for p in &posts {
        c.query_one(&lookup, &[&p.get::<_, i32>(1)]).await.unwrap();
    }
    drop((lookup, c));
    let report = s.finish().await;

    let f = verify_exact(
        "np_prepared_late",
        &report,
        &[expect("n_plus_one").route("posts.late")],
    )[0];
    assert_eq!(f["request"]["id"], "late-b", "{f:#}");
    assert_eq!(f["count"], 6);
}

/// How [`lockstep`] marks its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    /// A sqlcommenter request id per request.
    Comment,
    /// Untagged, one transaction per request.
    Transaction,
    /// Untagged, requests separated by idle time longer than the 250 ms idle gap.
    IdleGap,
}

/// On every connection at once: `rounds` requests each running `lookups` executions of
/// `child` with distinct ids, the connections kept in lock step statement by statement (a
/// barrier before every lookup), so the proxy sees the requests' statements interleaved.
async fn lockstep(
    clients: &[Arc<Client>],
    grouping: Grouping,
    route: &'static str,
    child: &'static str,
    rounds: usize,
    lookups: usize,
) {
    let barrier = Arc::new(Barrier::new(clients.len()));
    let tasks = clients.iter().enumerate().map(|(conn, c)| {
        let (c, barrier) = (c.clone(), barrier.clone());
        async move {
            for round in 0..rounds {
                let tag = match grouping {
                    Grouping::Comment => sqlcommenter(&format!("{route}-{conn}-{round}"), route),
                    _ => String::new(),
                };
                if grouping == Grouping::Transaction {
                    c.batch_execute("BEGIN").await.unwrap();
                }
                let stmt = c.prepare(&format!("{child} {tag}")).await.unwrap();
                for i in 0..lookups {
                    barrier.wait().await;
                    let id = (1 + conn * 300 + round * 20 + i) as i32;
                    c.query_one(&stmt, &[&id]).await.unwrap();
                }
                if grouping == Grouping::Transaction {
                    c.batch_execute("COMMIT").await.unwrap();
                }
                if grouping == Grouping::IdleGap {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                barrier.wait().await;
            }
        }
    });
    join_all(tasks).await;
}

/// Requests running at the same time on three connections, their lookups interleaved
/// statement by statement: each request's N+1 is judged on its own. Three lookups per request
/// on three connections are nine lookups in flight, but no N+1; five per request are three
/// N+1s of five, not one of fifteen. Tagged, untagged in transactions, untagged by idle gaps.
///
/// Tagged and untagged traffic get connections of their own: by design an untagged statement
/// right after a tagged request on the same connection (no idle gap between) joins that
/// request, as a driver's own BEGIN before the first tagged query must.
#[tokio::test]
async fn concurrent_requests_on_several_connections_never_merge() {
    let Some(mut s) = Scenario::start("np_concurrent").await else {
        return;
    };
    let connections = || async {
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(Arc::new(s.client().await));
        }
        clients
    };
    let tagged = connections().await;
    lockstep(&tagged, Grouping::Comment, "conc.small", AUTHOR_BY_ID, 4, 3).await;
    lockstep(&tagged, Grouping::Comment, "conc.big", AUTHOR_BY_ID, 1, 5).await;
    let in_transactions = connections().await;
    let by_email = "SELECT id, email FROM authors WHERE id = $1";
    lockstep(&in_transactions, Grouping::Transaction, "", by_email, 3, 3).await;
    let full = "SELECT id, name, email FROM authors WHERE id = $1";
    lockstep(&in_transactions, Grouping::Transaction, "", full, 1, 5).await;
    let by_gaps = connections().await;
    let names = "SELECT name FROM authors WHERE id = $1";
    lockstep(&by_gaps, Grouping::IdleGap, "", names, 2, 3).await;
    drop((tagged, in_transactions, by_gaps));
    let report = s.finish().await;

    let found = verify_exact(
        "np_concurrent",
        &report,
        &[
            expect("n_plus_one").route("conc.big"),
            expect("n_plus_one").query(full),
        ],
    );
    for f in &found {
        assert_eq!(f["count"], 5, "never merged across connections: {f:#}");
        assert_eq!(f["occurrences"], 3, "one per connection: {f:#}");
        assert_eq!(
            f["parent"],
            Value::Null,
            "no parent ran, none is guessed: {f:#}"
        );
    }
    assert_eq!(found[0]["request"]["correlation"], "comment");
    assert_eq!(found[1]["request"]["correlation"], "transaction");
}

/// psycopg 3 (server-side binding, text results, and its automatic prepared statement after
/// five executions of one query) running a Django-style N+1 and its batched fix.
#[tokio::test]
async fn n_plus_one_from_psycopg() {
    let Some(mut s) = Scenario::start("np_psycopg").await else {
        return;
    };
    let has_psycopg = blocking(|| {
        let mut cmd = python(std::path::Path::new("-c"), &["import psycopg"]);
        run(&mut cmd, Duration::from_secs(30)).is_ok_and(|o| o.status.success())
    })
    .await;
    if !has_psycopg {
        eprintln!("n_plus_one_from_psycopg: skipped (python3 with psycopg 3 not installed)");
        s.stop().await;
        return;
    }
    let url = s.url();
    let out = blocking(move || {
        let mut cmd = python(std::path::Path::new("-c"), &[PSYCOPG_WORKLOAD, &url]);
        run(&mut cmd, Duration::from_secs(60))
    })
    .await
    .expect("running python");
    assert!(out.status.success(), "psycopg workload failed: {out}");
    let report = s.finish().await;

    let f = verify_exact(
        "np_psycopg",
        &report,
        &[expect("n_plus_one").route("psycopg.index")],
    )[0];
    assert_eq!(f["count"], 8);
    assert_eq!(f["request"]["id"], "py-1");
    assert!(
        f["parent"]["query"]
            .as_str()
            .is_some_and(|q| q.contains("FROM posts")),
        "text-format parameters match text-format results: {f:#}"
    );
}

/// A Django-like view with psycopg 3: an N+1 (request py-1) and the batched fix (py-2).
const PSYCOPG_WORKLOAD: &str = r#"
import sys
import psycopg

def tag(request, route):
    return f"/*request_id='{request}',route='{route}'*/"

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    t = tag("py-1", "psycopg.index")
    posts = conn.execute(
        f"SELECT id, author_id, title FROM posts WHERE published ORDER BY id LIMIT 8 {t}"
    ).fetchall()
    for _id, author, _title in posts:
        assert conn.execute(f"SELECT id, name FROM authors WHERE id = %s {t}", (author,)).fetchone()
    t = tag("py-2", "psycopg.batched")
    posts = conn.execute(
        f"SELECT id, author_id, title FROM posts WHERE published ORDER BY id LIMIT 8 {t}"
    ).fetchall()
    ids = [author for _id, author, _title in posts]
    found = conn.execute(f"SELECT id, name FROM authors WHERE id = ANY(%s) {t}", (ids,)).fetchall()
    assert len(found) == len(ids)
"#;

// ---------------------------------------------------------------------------------------------
// Negative controls
// ---------------------------------------------------------------------------------------------

/// Everything an app does right, over both protocols, tagged and untagged: no finding of any
/// kind, `--fail-on all` passes, and the summary shows the run was not blind.
#[tokio::test]
async fn clean_workload_has_no_findings() {
    let Some(mut s) = Scenario::start("clean").await else {
        return;
    };
    let c = s.client().await;
    let mut n = 0u32;
    let mut tag = |route: &str| {
        n += 1;
        sqlcommenter(&format!("clean-{n}"), route)
    };

    // N+1 controls.
    batched_request(&c, 20, &tag("posts.batched")).await;
    for id in 1..=12i32 {
        // One lookup per request, over many requests.
        let t = tag("authors.show");
        rows(&c, &format!("{AUTHOR_BY_ID} {t}"), &[&id]).await;
    }
    let t = tag("authors.few");
    for id in [3i32, 5, 7, 9] {
        // Four distinct lookups: below the threshold of five.
        rows(&c, &format!("{AUTHOR_BY_ID} {t}"), &[&id]).await;
    }
    // Repeated-query control: the same lookup only twice.
    let t = tag("settings.twice");
    for _ in 0..2 {
        rows(
            &c,
            &format!("SELECT value FROM settings WHERE key = $1 {t}"),
            &[&"theme"],
        )
        .await;
    }
    // Batched over the simple protocol: an IN list.
    let t = tag("authors.in_list");
    let list: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    simple(
        &c,
        &format!(
            "SELECT id, name FROM authors WHERE id IN ({}) {t}",
            list.join(", ")
        ),
    )
    .await;
    // Untagged: one lookup per transaction, simple protocol. On a connection of its own: an
    // untagged statement right after a tagged one on the same connection joins the tagged
    // request (by design: the BEGIN a driver sends before the request's first tagged query).
    let untagged = s.client().await;
    for id in 1..=8 {
        simple(&untagged, "BEGIN").await;
        simple(
            &untagged,
            &format!("SELECT id, name FROM authors WHERE id = {id}"),
        )
        .await;
        simple(&untagged, "COMMIT").await;
    }
    drop(untagged);

    // Unindexed controls: primary key, indexed filter, indexed sort, small tables.
    let t = tag("posts.show");
    rows(
        &c,
        &format!("SELECT id, title FROM posts WHERE id = $1 {t}"),
        &[&42i32],
    )
    .await;
    let t = tag("comments.index");
    rows(
        &c,
        &format!("SELECT id, body FROM comments WHERE post_id = $1 {t}"),
        &[&42i32],
    )
    .await;
    let t = tag("posts.latest");
    rows(
        &c,
        &format!("SELECT id, title FROM posts ORDER BY id DESC LIMIT 10 {t}"),
        &[],
    )
    .await;
    let t = tag("tags.show");
    rows(
        &c,
        &format!("SELECT id, label FROM tags WHERE code = $1 {t}"),
        &[&"code7"],
    )
    .await;
    rows(
        &c,
        &format!("SELECT id, code FROM tags ORDER BY code LIMIT 5 {t}"),
        &[],
    )
    .await;

    // Unbounded controls: LIMITed, aggregates, few rows, small table read whole.
    let t = tag("posts.page");
    let page = rows(
        &c,
        &format!("SELECT id, title FROM posts ORDER BY id LIMIT 500 {t}"),
        &[],
    )
    .await;
    assert_eq!(page.len(), 500);
    let t = tag("stats");
    rows(&c, &format!("SELECT count(*) FROM posts {t}"), &[]).await;
    rows(
        &c,
        &format!("SELECT count(*) FROM comments WHERE post_id = $1 {t}"),
        &[&7i32],
    )
    .await;
    simple(
        &c,
        &format!("SELECT published, count(*) FROM posts GROUP BY published {t}"),
    )
    .await;
    let few = simple(
        &c,
        &format!("SELECT id, title FROM posts WHERE id < 50 {t}"),
    )
    .await;
    assert_eq!(few.len(), 49);
    let t = tag("settings.index");
    rows(&c, &format!("SELECT key, value FROM settings {t}"), &[]).await;
    drop(c);
    let report = s.finish().await;
    let store = s.store();

    verify_exact("clean", &report, &[]);
    assert_eq!(gate(&store, "n_plus_one").await, 0);
    assert_eq!(gate(&store, "all").await, 0);
    let summary = &report["summary"];
    assert_eq!(summary["catalog"], "available");
    // The warm-up, 32 tagged statements, and 8 × (BEGIN, lookup, COMMIT) untagged.
    assert_eq!(summary["queries"], 1 + 32 + 24, "{summary}");
    let fraction = summary["correlated_fraction"].as_f64().unwrap();
    let expected = 33.0 / 57.0;
    assert!(
        (fraction - expected).abs() < 1e-6,
        "correlated_fraction {fraction}, expected {expected}: {summary}"
    );
    assert_eq!(summary["parse_failures"], 0);
}

// ---------------------------------------------------------------------------------------------
// Repeated queries
// ---------------------------------------------------------------------------------------------

/// The same lookup with the same parameters three or more times in a request, over either
/// protocol; twice is fine.
#[tokio::test]
async fn repeated_query_positive_and_control() {
    let Some(mut s) = Scenario::start("repeated").await else {
        return;
    };
    let c = s.client().await;
    let setting = "SELECT value FROM settings WHERE key = $1";
    let t = rails("settings", "show", "rep-1");
    for _ in 0..4 {
        rows(&c, &format!("{setting} {t}"), &[&"theme"]).await;
    }
    let t = sqlcommenter("rep-2", "settings.twice");
    for _ in 0..2 {
        rows(&c, &format!("{setting} {t}"), &[&"theme"]).await;
    }
    let t = sqlcommenter("rep-3", "settings.simple");
    for _ in 0..3 {
        simple(
            &c,
            &format!("SELECT value FROM settings WHERE key = 'theme' {t}"),
        )
        .await;
    }
    drop(c);
    let report = s.finish().await;

    let found = verify_exact(
        "repeated",
        &report,
        &[
            expect("repeated_query").route("settings#show"),
            expect("repeated_query").route("settings.simple"),
        ],
    );
    assert_eq!(found[0]["count"], 4);
    assert_eq!(found[0]["query"], setting);
    assert_eq!(found[0]["request"]["id"], "rep-1");
    assert_eq!(found[1]["count"], 3);
    assert_eq!(found[1]["query"], setting, "the literal normalizes away");
    assert!(found[0]["suggestion"]
        .as_str()
        .unwrap()
        .contains("identical parameters"));
}

// ---------------------------------------------------------------------------------------------
// Unindexed filters and sorts
// ---------------------------------------------------------------------------------------------

/// A filter and a sort no index serves on large tables, over both protocols, with the exact
/// `CREATE INDEX CONCURRENTLY` that would serve them; without hypopg they say unverified.
#[tokio::test]
async fn unindexed_filter_and_sort_with_suggestions() {
    let Some(mut s) = Scenario::start("unindexed").await else {
        return;
    };
    let c = s.client().await;
    unindexed_workload(&c).await;
    simple(&c, "SELECT count(*) FROM events WHERE kind = 'kind3'").await;
    // Controls next to them: primary key, indexed filter, indexed sort, small table.
    rows(&c, "SELECT id, title FROM posts WHERE id = $1", &[&5i32]).await;
    rows(&c, "SELECT body FROM comments WHERE post_id = $1", &[&5i32]).await;
    rows(&c, "SELECT id FROM events ORDER BY id DESC LIMIT 5", &[]).await;
    rows(&c, "SELECT id FROM tags WHERE code = $1", &[&"code1"]).await;
    drop(c);
    let report = s.finish().await;

    let found = verify_exact(
        "unindexed",
        &report,
        &[
            expect("unindexed_filter").table("public.posts"),
            expect("unindexed_sort").table("public.events"),
            expect("unindexed_filter").table("public.events"),
        ],
    );
    let (filter, sort, simple_filter) = (found[0], found[1], found[2]);
    assert_eq!(
        filter["suggestion"],
        "CREATE INDEX CONCURRENTLY ON public.posts (author_id);"
    );
    assert_eq!(filter["columns"], serde_json::json!(["author_id"]));
    assert_eq!(filter["occurrences"], 3);
    assert_eq!(filter["database"], "det_unindexed");
    assert_eq!(filter["details"]["hypopg"]["verified"], false, "{filter:#}");
    assert_eq!(
        sort["suggestion"],
        "CREATE INDEX CONCURRENTLY ON public.events (created_at);"
    );
    assert_eq!(sort["columns"], serde_json::json!(["created_at"]));
    assert_eq!(
        simple_filter["suggestion"],
        "CREATE INDEX CONCURRENTLY ON public.events (kind);"
    );
}

/// Statements that ran before the proxy had loaded the database's catalog are analysed when it
/// arrives, and count: a short CI run whose statements all come in the first few hundred
/// milliseconds on a database must still get its unindexed findings.
#[tokio::test]
async fn unindexed_findings_for_statements_run_before_the_catalog_loaded() {
    let setup = Setup {
        warm: false,
        ..Setup::default()
    };
    let Some(mut s) = Scenario::start_with("unindexed_cold", setup).await else {
        return;
    };
    let c = s.client().await;
    unindexed_workload(&c).await;
    drop(c);
    let report = s.finish().await;

    let found = verify_exact(
        "unindexed_cold",
        &report,
        &[
            expect("unindexed_filter").table("public.posts"),
            expect("unindexed_sort").table("public.events"),
        ],
    );
    assert_eq!(found[0]["occurrences"], 3, "{:#}", found[0]);
}

/// With hypopg in the database, the suggested index is checked against the planner: verified,
/// used, and cheaper.
#[tokio::test]
async fn unindexed_filter_verified_with_hypopg() {
    let Some(mut s) = Scenario::start_with(
        "hypopg",
        Setup {
            sql: "CREATE EXTENSION hypopg;",
            ..Setup::default()
        },
    )
    .await
    else {
        return;
    };
    let c = s.client().await;
    rows(
        &c,
        "SELECT id, title FROM posts WHERE author_id = $1",
        &[&11i32],
    )
    .await;
    drop(c);
    // The verification runs asynchronously after the catalog arrives: wait for it to be flushed.
    let store = s.proxy.store_path();
    blocking(move || {
        wait_for_report(&store, Duration::from_secs(30), |r| {
            findings_of(r, "unindexed_filter")
                .iter()
                .any(|f| f["details"]["hypopg"]["verified"] == true)
        })
    })
    .await
    .unwrap_or_else(|e| panic!("hypopg verification never arrived: {e:#}"));
    let report = s.finish().await;

    let f = verify_exact(
        "hypopg",
        &report,
        &[expect("unindexed_filter").table("public.posts")],
    )[0];
    assert_eq!(
        f["suggestion"],
        "CREATE INDEX CONCURRENTLY ON public.posts (author_id);"
    );
    let hypopg = &f["details"]["hypopg"];
    assert_eq!(hypopg["verified"], true, "{f:#}");
    assert_eq!(hypopg["uses_index"], true, "{f:#}");
    let before = hypopg["cost_before"].as_f64().unwrap();
    let after = hypopg["cost_after"].as_f64().unwrap();
    assert!(
        after < before,
        "the index lowers the cost: {before} -> {after}"
    );
}

// ---------------------------------------------------------------------------------------------
// Unbounded selects
// ---------------------------------------------------------------------------------------------

/// SELECTs without LIMIT rated by the rows they returned; LIMITed ones, aggregates and small
/// results are left alone.
#[tokio::test]
async fn unbounded_select_by_rows_returned() {
    let Some(mut s) = Scenario::start("unbounded").await else {
        return;
    };
    let c = s.client().await;
    let published = rows(&c, "SELECT id, title FROM posts WHERE published", &[]).await;
    assert_eq!(published.len(), 25_000);
    let authors = rows(&c, "SELECT id, name FROM authors", &[]).await;
    assert_eq!(authors.len(), 2_000);
    let range = simple(&c, "SELECT id FROM posts WHERE id <= 150").await;
    assert_eq!(range.len(), 150);
    // Controls.
    rows(&c, "SELECT id, title FROM posts ORDER BY id LIMIT 500", &[]).await;
    simple(&c, "SELECT id, name FROM authors FETCH FIRST 300 ROWS ONLY").await;
    rows(&c, "SELECT count(*), max(created_at) FROM posts", &[]).await;
    rows(&c, "SELECT id, title FROM posts WHERE id < 50", &[]).await;
    rows(
        &c,
        "SELECT id, name, email FROM authors WHERE id = $1",
        &[&9i32],
    )
    .await;
    rows(
        &c,
        "SELECT EXISTS (SELECT 1 FROM posts WHERE published)",
        &[],
    )
    .await;
    drop(c);
    let report = s.finish().await;
    let store = s.store();

    let found = verify_exact(
        "unbounded",
        &report,
        &[
            expect("unbounded_select").query("SELECT id, title FROM posts WHERE published"),
            expect("unbounded_select").query("SELECT id, name FROM authors"),
            expect("unbounded_select").query("SELECT id FROM posts WHERE id <="),
        ],
    );
    let tiers = [(25_000, "error"), (2_000, "warning"), (150, "info")];
    for (f, (rows_max, severity)) in found.iter().zip(tiers) {
        assert_eq!(f["rows"]["max"], rows_max, "{f:#}");
        assert_eq!(f["severity"], severity, "{f:#}");
    }
    assert_eq!(gate(&store, "unbounded_select").await, 1);
    assert_eq!(gate(&store, "n_plus_one").await, 0);
}

// ---------------------------------------------------------------------------------------------
// The store across runs
// ---------------------------------------------------------------------------------------------

/// Two proxy runs over one store: `--run all` has both runs' findings with occurrences added
/// up, `--run latest` only the second run's.
#[tokio::test]
async fn store_survives_a_proxy_restart() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let store = dir.path().join("shared-findings.db");

    // Run 1: an N+1 and a repeated query.
    let Some(mut s) = Scenario::start_with(
        "restart",
        Setup {
            store: Some(store.clone()),
            ..Setup::default()
        },
    )
    .await
    else {
        return;
    };
    let c = s.client().await;
    n_plus_one_request(&c, 6, &sqlcommenter("ra-1", "restart.shared")).await;
    let t = sqlcommenter("ra-2", "restart.a");
    for _ in 0..3 {
        rows(
            &c,
            &format!("SELECT value FROM settings WHERE key = $1 {t}"),
            &[&"key1"],
        )
        .await;
    }
    drop(c);
    let first = s.finish().await;
    verify_exact(
        "restart_run1",
        &first,
        &[
            expect("n_plus_one").route("restart.shared"),
            expect("repeated_query").route("restart.a"),
        ],
    );

    // Run 2 on the same database and store: the same N+1 again, and an unbounded select.
    let mut s2 = Scenario::resume("restart", &s.db, Some(store.clone()), true).await;
    let c = s2.client().await;
    n_plus_one_request(&c, 7, &sqlcommenter("rb-1", "restart.shared")).await;
    rows(&c, "SELECT id, name FROM authors", &[]).await;
    drop(c);
    let latest = s2.finish().await;

    let found = verify_exact(
        "restart_latest",
        &latest,
        &[
            expect("n_plus_one").route("restart.shared"),
            expect("unbounded_select").table("authors"),
        ],
    );
    assert_eq!(found[0]["occurrences"], 1, "the latest run saw it once");
    assert_eq!(found[0]["count"], 7);

    let all = report_at(&store, "all").await;
    let found = verify_exact(
        "restart_all",
        &all,
        &[
            expect("n_plus_one").route("restart.shared"),
            expect("repeated_query").route("restart.a"),
            expect("unbounded_select").table("authors"),
        ],
    );
    let n1 = found[0];
    assert_eq!(n1["occurrences"], 2, "seen once in each run: {n1:#}");
    assert_eq!(n1["count"], 7, "the worst request of both runs: {n1:#}");
    assert_eq!(n1["request"]["id"], "rb-1");
    let first_n1 = findings_of(&first, "n_plus_one")[0];
    assert_eq!(
        n1["id"], first_n1["id"],
        "finding ids are stable across runs"
    );
    let queries = |r: &Value| r["summary"]["queries"].as_u64().unwrap();
    assert_eq!(
        queries(&all),
        queries(&first) + queries(&latest),
        "the summary of all runs adds theirs up"
    );
}
