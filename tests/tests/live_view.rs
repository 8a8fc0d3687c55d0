//! The live view in a real headless browser: Debian's `chromium`, driven by Python playwright
//! (`tests/python/live_view.py`), opens the admin port of the real `qproxy` binary in front of a
//! real PostgreSQL, and a psycopg workload runs through the proxy while the page is open. The
//! script checks what a developer would see, without reloading: coverage moving, an N+1 and an
//! unbounded SELECT appearing, the kind filter, an expanded finding's suggestion and hypopg
//! verdict, fingerprints and routes, a request id holding markup shown as text with no script
//! run, and no request to anything but the admin port.
//!
//! Needs `chromium` and `playwright` (`scripts/install-deps.sh` installs both); the test fails,
//! rather than skips, when they are missing.

use std::process::Command;
use std::time::Duration;

use qproxy_tests::programs::{python, python_script, run};
use qproxy_tests::{mode, Mode, PgCluster, Proxy, ProxyOptions, SUPERUSER};

const DB: &str = "live_view";

/// `posts` (300 rows, returned whole by the unbounded SELECT) and `authors` (the N+1's
/// children) are small; `events` (20,000 rows, `kind` not indexed) is large enough for an
/// unindexed filter, which hypopg verifies.
const SCHEMA: &str = "
CREATE EXTENSION hypopg;
CREATE TABLE authors (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE posts (id int PRIMARY KEY, author_id int NOT NULL, title text NOT NULL);
CREATE TABLE events (id int PRIMARY KEY, kind text NOT NULL);
INSERT INTO authors SELECT g, 'author ' || g FROM generate_series(1, 50) g;
INSERT INTO posts SELECT g, 1 + g % 50, 'post ' || g FROM generate_series(1, 300) g;
INSERT INTO events SELECT g, 'kind' || (g % 10) FROM generate_series(1, 20000) g;
ANALYZE;
";

/// The chromium binary playwright drives (never a browser playwright downloads).
const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_shows_findings_as_they_happen() {
    if mode() == Mode::Direct {
        eprintln!("live view: skipped in direct mode (the view lives in the proxy)");
        return;
    }
    tokio::task::spawn_blocking(run_in_browser).await.unwrap();
}

fn run_in_browser() {
    let ready = run(
        Command::new("python3").args(["-c", "import playwright, psycopg"]),
        Duration::from_secs(60),
    )
    .expect("running python3");
    assert!(
        ready.status.success() && std::path::Path::new(CHROMIUM).exists(),
        "the live-view test needs {CHROMIUM} and Python's playwright and psycopg: run \
         scripts/install-deps.sh\n{ready}"
    );
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
    cluster.create_database(DB).unwrap();
    cluster.psql_superuser(DB, SCHEMA).unwrap();
    let proxy = Proxy::start(&ProxyOptions::new(cluster.url(SUPERUSER, DB, "disable")))
        .unwrap_or_else(|e| panic!("starting qproxy: {e:#}"));
    let admin = format!("http://127.0.0.1:{}/", proxy.admin_port());
    let dsn = proxy.url(SUPERUSER, DB, "disable");
    let out = run(
        &mut python(&python_script("live_view.py"), &[&admin, &dsn, CHROMIUM]),
        Duration::from_secs(240),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n--- qproxy log ---\n{}", proxy.log()));
    println!("{}", out.combined());
    assert!(
        out.status.success(),
        "the live view failed in the browser: {out}\n--- qproxy log ---\n{}",
        proxy.log()
    );
    assert!(out.stdout.contains("live view: all checks passed"), "{out}");
}
