//! The PostgreSQL findings store against a real PostgreSQL 15 started by
//! the test harness: it reads back what the SQLite store reads back, its
//! UPSERTs follow `Finding::merge`, concurrent writers lose no update,
//! migrations run once, a lost connection is reopened; and the filters and
//! retention both backends share.

mod store_support;

use std::path::Path;
use std::sync::{Arc, Barrier, OnceLock};

use qproxy_analyzer::finding::{Finding, FindingKind, RowStats, Severity, Summary};
use qproxy_analyzer::report::{self, Format, RenderOptions};
use qproxy_analyzer::store::postgres::schema::SCHEMA_VERSION;
use qproxy_analyzer::store::{
    PgConnector, PgLocation, RunFilter, RunId, RunSelection, Store, StoreError, StoreLocation,
};
use qproxy_tests::{PgCluster, SUPERUSER};
use store_support::*;
use time::OffsetDateTime;
use tokio_postgres::NoTls;

/// One cluster per test binary; each test works in its own database.
fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| PgCluster::start().expect("start PostgreSQL"))
}

/// The store in `schema` of `db`.
fn location(db: &str, schema: &str) -> PgLocation {
    let config = cluster().url(SUPERUSER, db, "disable").parse().unwrap();
    PgLocation::new(
        config,
        schema,
        PgConnector::new(NoTls),
        format!("test:{db}"),
    )
    .unwrap()
}

/// A new database and the store location in its `qproxy` schema.
fn fresh(db: &str) -> PgLocation {
    cluster().create_database(db).unwrap();
    location(db, "qproxy")
}

fn psql(db: &str, sql: &str) -> String {
    cluster()
        .psql_superuser(db, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
}

/// `f` as a delta: the given occurrences, count and times.
fn delta(f: &Finding, occurrences: u64, count: Option<u64>, first: i64, last: i64) -> Finding {
    let mut d = f.clone();
    d.occurrences = occurrences;
    d.count = count;
    d.first_seen = at(first);
    d.last_seen = at(last);
    d
}

/// The same writes, in the same order, to any store.
fn write_history(store: &mut Store) {
    let first = store.begin_run(&run_info("host-a", 0)).unwrap();
    assert_eq!(
        store.record(first, &one_of_each()).unwrap().new_in_run,
        [0, 1, 2, 3, 4]
    );
    store.update_summary(first, &poor_summary()).unwrap();
    store.end_run(first, at(900)).unwrap();
    let second = store.begin_run(&run_info("host-b", 1000)).unwrap();
    let f = n_plus_one();
    let mut worse = delta(&f, 3, Some(90), 1000, 1100);
    worse.request = request("req-b", "GET /posts");
    worse.severity = Severity::Warning;
    let recorded = store
        .record(
            second,
            &[worse, delta(&unbounded_select(), 2, None, 1000, 1200)],
        )
        .unwrap();
    assert_eq!(recorded.new_in_run, [0, 1]);
    assert!(store
        .record(second, &[delta(&f, 1, Some(5), 1300, 1300)])
        .unwrap()
        .new_in_run
        .is_empty());
    store
        .update_summary(
            second,
            &Summary {
                queries: 50,
                catalog: "available".into(),
                ..Summary::default()
            },
        )
        .unwrap();
}

#[test]
fn reads_back_what_sqlite_reads_back_in_every_format() {
    let pg_location = fresh("same_as_sqlite");
    let dir = tempfile::tempdir().unwrap();
    let sqlite_path = dir.path().join("findings.db");
    let mut pg = Store::open(pg_location.clone()).unwrap();
    let mut sqlite = Store::open(&sqlite_path).unwrap();
    write_history(&mut pg);
    write_history(&mut sqlite);
    let mut pg = Store::open_read_only(pg_location).unwrap();
    let sqlite = Store::open_read_only(&sqlite_path).unwrap();
    for selection in [RunSelection::All, RunSelection::Latest, RunSelection::Id(1)] {
        let from_pg = pg.load_report(&selection).unwrap();
        let from_sqlite = sqlite.load_report(&selection).unwrap();
        assert_eq!(from_pg, from_sqlite, "{selection:?}");
        for format in Format::ALL {
            assert_eq!(
                report::render(&from_pg, format, RenderOptions::default()),
                report::render(&from_sqlite, format, RenderOptions::default()),
                "{selection:?} {format:?}"
            );
        }
    }
    let all = pg.load_report(&RunSelection::All).unwrap();
    assert_eq!(all.runs.len(), 2);
    assert_eq!(all.runs[1].instance, "host-b:6432");
    let n1 = all
        .findings
        .iter()
        .find(|f| f.id == n_plus_one().id)
        .unwrap();
    assert_eq!((n1.occurrences, n1.count), (12 + 3 + 1, Some(90)));
    assert_eq!(n1.request, request("req-b", "GET /posts"));
    assert_eq!(n1.severity, Severity::Error);
    let first = pg.load_report(&RunSelection::Id(1)).unwrap();
    let mut expected = one_of_each();
    expected.sort_by(report::report_order);
    assert_eq!(first.findings, expected, "every field, every kind");
    assert_eq!(first.summary, poor_summary());
    assert!(
        pg.finding("no-such-id").unwrap().is_none() && pg.begin_run(&run_info("h", 0)).is_err(),
        "read-only handles do not write"
    );
}

/// A small deterministic generator, so a failure replays.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// A delta of `base` with every merged field drawn at random.
fn random_delta(base: &Finding, rng: &mut Lcg) -> Finding {
    let mut d = base.clone();
    d.occurrences = 1 + rng.next(5);
    d.count = (rng.next(4) > 0).then(|| rng.next(60));
    d.severity = [Severity::Info, Severity::Warning, Severity::Error][rng.next(3) as usize];
    d.rows = (rng.next(3) > 0).then(|| RowStats {
        max: rng.next(1000),
    });
    let first = rng.next(1000) as i64;
    d.first_seen = at(first);
    d.last_seen = at(first + rng.next(1000) as i64);
    d.request = match rng.next(3) {
        0 => None,
        n => request(&format!("req-{n}-{}", rng.next(9)), "GET /x"),
    };
    d.suggestion = (rng.next(3) > 0).then(|| format!("suggestion {}", rng.next(9)));
    d.details = Default::default();
    for key in ["p95_ms", "statements", "note"] {
        if rng.next(2) == 0 {
            d.details
                .insert(key.into(), serde_json::json!(rng.next(500)));
        }
    }
    d
}

/// The fields a run's row keeps, for comparing per-run views.
fn run_fields(f: &Finding) -> impl PartialEq + std::fmt::Debug {
    (
        f.severity,
        f.occurrences,
        f.count,
        f.request.clone(),
        f.rows,
        f.first_seen,
        f.last_seen,
    )
}

#[test]
fn upserts_follow_finding_merge() {
    let mut store = Store::open(fresh("merge_semantics")).unwrap();
    let runs = [
        store.begin_run(&run_info("a", 0)).unwrap(),
        store.begin_run(&run_info("b", 1)).unwrap(),
    ];
    // One kind whose details merge key by key, one whose details and
    // suggestion follow the worst count.
    let mut follows = n_plus_one();
    follows.kind = FindingKind::SlowQuery;
    follows.id = follows.compute_id();
    assert!(follows.kind.details_follow_count() && !FindingKind::NPlusOne.details_follow_count());
    let bases = [n_plus_one(), follows];

    let mut rng = Lcg(0x5eed);
    let mut all_time: Vec<Option<Finding>> = vec![None, None];
    let mut per_run: Vec<Vec<Option<Finding>>> = vec![vec![None, None], vec![None, None]];
    for round in 0..60 {
        let run = (round % 2) as usize;
        let mut batch = Vec::new();
        for (i, base) in bases.iter().enumerate() {
            if rng.next(3) == 0 {
                continue;
            }
            let d = random_delta(base, &mut rng);
            for slot in [&mut all_time[i], &mut per_run[run][i]] {
                match slot {
                    Some(acc) => acc.merge(&d),
                    None => *slot = Some(d.clone()),
                }
            }
            batch.push(d);
        }
        store.record(runs[run], &batch).unwrap();
        for (i, base) in bases.iter().enumerate() {
            assert_eq!(
                store.finding(&base.id).unwrap(),
                all_time[i].clone(),
                "round {round}, {:?}",
                base.kind
            );
        }
    }
    for (run, expected) in runs.iter().zip(&per_run) {
        let report = store.load_report(&RunSelection::Id(run.0)).unwrap();
        for (i, base) in bases.iter().enumerate() {
            let got = report.findings.iter().find(|f| f.id == base.id);
            assert_eq!(
                got.map(run_fields),
                expected[i].as_ref().map(run_fields),
                "run {run:?}, {:?}",
                base.kind
            );
        }
    }
}

#[test]
fn concurrent_writers_lose_no_update() {
    const WRITERS: usize = 4;
    const FLUSHES: u64 = 25;
    let location = fresh("concurrent_writers");
    drop(Store::open(location.clone()).unwrap());
    let (a, b) = (n_plus_one(), unbounded_select());
    let start = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (location, start) = (location.clone(), Arc::clone(&start));
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || {
                // Each thread its own store and connection, as each proxy.
                let mut store = Store::open(location).unwrap();
                let run = store.begin_run(&run_info(&format!("w{w}"), 0)).unwrap();
                let mut own = repeated_query();
                own.request = request(&format!("w{w}"), &format!("w{w}"));
                own.id = own.compute_id();
                start.wait();
                for i in 0..FLUSHES {
                    // Half the writers hand the shared findings over in the
                    // other order: the store must not deadlock on them.
                    let mut batch = vec![
                        delta(&a, 1, Some(i), 0, i as i64),
                        delta(&b, 2, None, 0, 0),
                        delta(&own, 1, Some(3), 0, 0),
                    ];
                    if w % 2 == 1 {
                        batch.reverse();
                    }
                    store.record(run, &batch).unwrap();
                }
                (run, own.id)
            })
        })
        .collect();
    let results: Vec<(RunId, String)> = writers.into_iter().map(|t| t.join().unwrap()).collect();

    let store = Store::open_read_only(location).unwrap();
    let total = WRITERS as u64 * FLUSHES;
    assert_eq!(store.finding(&a.id).unwrap().unwrap().occurrences, total);
    assert_eq!(
        store.finding(&b.id).unwrap().unwrap().occurrences,
        2 * total
    );
    let all = store.load_report(&RunSelection::All).unwrap();
    assert_eq!(all.runs.len(), WRITERS);
    let merged = all.findings.iter().find(|f| f.id == a.id).unwrap();
    assert_eq!(
        (merged.occurrences, merged.count),
        (total, Some(FLUSHES - 1))
    );
    for (run, own) in &results {
        let one = store.load_report(&RunSelection::Id(run.0)).unwrap();
        assert_eq!(one.findings.len(), 3);
        let occurrences = |id: &str| {
            one.findings
                .iter()
                .find(|f| f.id == id)
                .unwrap()
                .occurrences
        };
        assert_eq!(
            (occurrences(&a.id), occurrences(&b.id), occurrences(own)),
            (FLUSHES, 2 * FLUSHES, FLUSHES)
        );
    }
}

#[test]
fn migrations_run_once_when_proxies_start_together() {
    const OPENERS: usize = 4;
    let location = fresh("migrations");
    let start = Arc::new(Barrier::new(OPENERS));
    let openers: Vec<_> = (0..OPENERS)
        .map(|_| {
            let (location, start) = (location.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                Store::open(location).map(drop)
            })
        })
        .collect();
    for opener in openers {
        opener.join().unwrap().unwrap();
    }
    let versions = psql(
        "migrations",
        "SELECT string_agg(version || ':' || n, ',' ORDER BY version) FROM \
         (SELECT version, count(*) AS n FROM qproxy.qproxy_schema_version GROUP BY version) v",
    );
    let expected: Vec<String> = (1..=SCHEMA_VERSION).map(|v| format!("{v}:1")).collect();
    assert_eq!(versions.trim(), expected.join(","));
    // Opening a current store changes nothing.
    drop(Store::open(location.clone()).unwrap());
    let rows = psql(
        "migrations",
        "SELECT count(*) FROM qproxy.qproxy_schema_version",
    );
    assert_eq!(rows.trim(), SCHEMA_VERSION.to_string());

    // Another schema in the same database is another store.
    let mut other = Store::open(crate::location("migrations", "staging")).unwrap();
    other.begin_run(&run_info("staging-host", 0)).unwrap();
    let first = Store::open_read_only(location.clone()).unwrap();
    assert!(first.runs().unwrap().is_empty());

    // A newer qproxy's store is refused, for writing and for reading.
    psql(
        "migrations",
        "INSERT INTO qproxy.qproxy_schema_version (version, qproxy_version) VALUES (99, 'x')",
    );
    for err in [
        Store::open(location.clone()).unwrap_err(),
        Store::open_read_only(location).unwrap_err(),
    ] {
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }
}

#[test]
fn reading_a_database_without_a_store_is_a_clear_error() {
    let location = fresh("no_store");
    let err = Store::open_read_only(location).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::PgMissing { .. }), "{message}");
    assert!(
        message.contains("no findings store in schema qproxy of test:no_store"),
        "{message}"
    );
    assert_eq!(
        psql(
            "no_store",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'qproxy'"
        )
        .trim(),
        "0",
        "a read creates nothing"
    );
    let nowhere = PgLocation::new(
        "postgres://postgres@127.0.0.1:1/x?connect_timeout=2"
            .parse()
            .unwrap(),
        "qproxy",
        PgConnector::new(NoTls),
        "postgres://postgres@127.0.0.1:1/x",
    )
    .unwrap();
    let err = Store::open(nowhere).unwrap_err().to_string();
    assert!(
        err.starts_with("cannot connect to the findings store postgres://postgres@127.0.0.1:1/x"),
        "{err}"
    );
}

#[test]
fn a_lost_connection_is_reopened() {
    let location = fresh("reconnect");
    let mut store = Store::open(location).unwrap();
    let run = store.begin_run(&run_info("h", 0)).unwrap();
    let f = n_plus_one();
    store.record(run, &[delta(&f, 1, Some(5), 0, 0)]).unwrap();
    let killed = psql(
        "postgres",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = 'reconnect' AND application_name = 'qproxy-store'",
    );
    assert_eq!(killed.trim(), "1");
    // pg_terminate_backend only signals: wait until the backend is gone, so
    // the next write meets a dead connection however loaded the machine is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = 'reconnect' AND application_name = 'qproxy-store'",
    )
    .trim()
        != "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the backend never went"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The first write may find the connection dead (and fails whole); the
    // next opens a new one.
    let mut written = 1;
    let mut failures = 0;
    for _ in 0..3 {
        match store.record(run, &[delta(&f, 1, Some(5), 0, 0)]) {
            Ok(_) => written += 1,
            Err(_) => failures += 1,
        }
    }
    assert!(failures <= 1, "{failures} failed writes");
    assert_eq!(
        store.finding(&f.id).unwrap().unwrap().occurrences,
        written,
        "a failed write left nothing behind"
    );
}

// ---------------------------------------------------------------------------------------------
// Filters and retention, the same on both backends
// ---------------------------------------------------------------------------------------------

const DAY: i64 = 86_400;

/// Sets a run's times `days` back, as if it had started, last written and
/// ended then.
type AgeRun = dyn Fn(RunId, i64);

/// `f` as a delta seen `secs_ago` seconds ago.
fn seen(f: &Finding, secs_ago: i64) -> Finding {
    let mut d = f.clone();
    let t = OffsetDateTime::now_utc() - time::Duration::seconds(secs_ago);
    d.first_seen = t;
    d.last_seen = t;
    d.occurrences = 1;
    d
}

fn check_filters_and_retention(location: StoreLocation, age: &AgeRun) {
    let mut store = Store::open(location).unwrap();
    let (x, y, z) = (n_plus_one(), unbounded_select(), unindexed_sort());
    let now = OffsetDateTime::now_utc();
    let info = |instance: &str, secs_ago: i64| {
        let mut info = run_info(instance, 0);
        info.instance = instance.into();
        info.started_at = now - time::Duration::seconds(secs_ago);
        info
    };
    let old = store.begin_run(&info("shop-a", 40 * DAY)).unwrap();
    store.record(old, &[seen(&z, 40 * DAY)]).unwrap();
    let a = store.begin_run(&info("shop-a", 60)).unwrap();
    store.record(a, &[seen(&x, 30), seen(&y, 30)]).unwrap();
    let b = store.begin_run(&info("shop-b", 50)).unwrap();
    store.record(b, &[seen(&x, 20)]).unwrap();
    age(old, 40);

    let ids = |selection: RunSelection, instance: Option<&str>, since_days: Option<i64>| {
        let filter = RunFilter {
            instance: instance.map(Into::into),
            since: since_days.map(|d| now - time::Duration::seconds(d * DAY)),
        };
        let report = store.load_report_filtered(&selection, &filter).unwrap();
        let runs: Vec<i64> = report.runs.iter().map(|r| r.id).collect();
        let x_occurrences = report
            .findings
            .iter()
            .find(|f| f.id == x.id)
            .map(|f| f.occurrences);
        (runs, report.findings.len(), x_occurrences)
    };
    use RunSelection::{All, Id, Latest};
    assert_eq!(ids(All, None, None), (vec![old.0, a.0, b.0], 3, Some(2)));
    assert_eq!(ids(All, None, Some(7)), (vec![a.0, b.0], 2, Some(2)));
    assert_eq!(
        ids(All, Some("shop-a"), None),
        (vec![old.0, a.0], 3, Some(1))
    );
    assert_eq!(ids(All, Some("shop-a"), Some(7)), (vec![a.0], 2, Some(1)));
    assert_eq!(ids(Latest, Some("shop-a"), None), (vec![a.0], 2, Some(1)));
    assert_eq!(ids(Latest, None, None), (vec![b.0], 1, Some(1)));
    assert_eq!(ids(All, Some("shop-c"), None), (vec![], 0, None));
    assert!(matches!(
        store.load_report_filtered(
            &Id(old.0),
            &RunFilter {
                since: Some(now - time::Duration::seconds(DAY)),
                ..RunFilter::default()
            }
        ),
        Err(StoreError::NoSuchRun(_))
    ));
    // A finding seen before --since is left out of a run that is in.
    let mut late = seen(&y, 0);
    late.id = "late-finding".into();
    store.record(b, &[late]).unwrap();
    let since_now = RunFilter {
        since: Some(OffsetDateTime::now_utc() - time::Duration::seconds(5)),
        ..RunFilter::default()
    };
    let recent = store.load_report_filtered(&All, &since_now).unwrap();
    let found: Vec<&str> = recent.findings.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(found, ["late-finding"]);

    // Retention: the old run goes, and z, which only it saw; the run the
    // caller keeps stays whatever its age.
    age(b, 40);
    let cutoff = now - time::Duration::seconds(30 * DAY);
    let pruned = store.prune(cutoff, Some(b)).unwrap();
    assert_eq!((pruned.runs, pruned.findings), (1, 1));
    let left: Vec<i64> = store.runs().unwrap().iter().map(|r| r.id).collect();
    assert_eq!(left, [b.0, a.0], "oldest start first");
    assert!(store.finding(&z.id).unwrap().is_none());
    assert!(store.finding(&x.id).unwrap().is_some());
    let pruned = store.prune(cutoff, None).unwrap();
    assert_eq!(pruned.runs, 1, "without a kept run, the aged one goes too");
    assert_eq!(
        store
            .runs()
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [a.0]
    );
}

#[test]
fn filters_and_retention_in_postgres() {
    let location = fresh("filters");
    check_filters_and_retention(location.into(), &|run, days| {
        psql(
            "filters",
            &format!(
                "UPDATE qproxy.runs SET started_at = started_at - {ns}, \
                 updated_at = updated_at - {ns}, ended_at = updated_at - {ns} WHERE id = {}",
                run.0,
                ns = days * DAY * 1_000_000_000
            ),
        );
    });
}

#[test]
fn filters_and_retention_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.db");
    let age_path = path.clone();
    check_filters_and_retention(path.into(), &move |run, days| {
        age_sqlite_run(&age_path, run, days);
    });
}

fn age_sqlite_run(path: &Path, run: RunId, days: i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute(
        "UPDATE runs SET started_at = started_at - ?2, updated_at = updated_at - ?2, \
         ended_at = updated_at - ?2 WHERE id = ?1",
        rusqlite::params![run.0, days * DAY * 1_000_000_000],
    )
    .unwrap();
}
