//! The SQLite findings store: round trips, delta merging, runs, sharing a
//! file between processes, reading while writing, migrations.

mod store_support;

use qproxy_analyzer::finding::{Finding, Severity, Summary};
use qproxy_analyzer::store::{schema, RunSelection, Store, StoreError};
use store_support::*;

fn temp_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/findings.db");
    (dir, path)
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

fn only(report: &qproxy_analyzer::report::Report, id: &str) -> Finding {
    report
        .findings
        .iter()
        .find(|f| f.id == id)
        .cloned()
        .expect("finding in report")
}

#[test]
fn round_trip_keeps_every_field() {
    let (_dir, path) = temp_store();
    let mut store = Store::open(&path).unwrap();
    let run = store.begin_run(&run_info("host-a", 0)).unwrap();
    let recorded = store.record(run, &one_of_each()).unwrap();
    assert_eq!(recorded.new_in_run, [0, 1, 2, 3, 4]);
    store.update_summary(run, &poor_summary()).unwrap();
    store.end_run(run, at(900)).unwrap();

    let report = store.load_report(&RunSelection::Latest).unwrap();
    let mut expected = one_of_each();
    expected.sort_by(qproxy_analyzer::report::report_order);
    assert_eq!(report.findings, expected);
    assert_eq!(report.summary, poor_summary());
    let meta = &report.runs[0];
    assert_eq!(
        (meta.id, meta.host.as_str(), meta.pid, meta.version.as_str()),
        (run.0, "host-a", 4242, "0.1.0")
    );
    assert_eq!((meta.started_at, meta.ended_at), (at(0), Some(at(900))));
}

#[test]
fn deltas_from_two_flushes_merge() {
    let (_dir, path) = temp_store();
    let mut store = Store::open(&path).unwrap();
    let run = store.begin_run(&run_info("h", 0)).unwrap();
    let f = n_plus_one();

    let mut first = delta(&f, 2, Some(10), 10, 20);
    first.severity = Severity::Warning;
    first.rows = Some(qproxy_analyzer::finding::RowStats { max: 5 });
    assert_eq!(store.record(run, &[first.clone()]).unwrap().new_in_run, [0]);

    let mut second = delta(&f, 3, Some(7), 5, 15);
    second.severity = Severity::Error;
    second.rows = Some(qproxy_analyzer::finding::RowStats { max: 3 });
    second.request = request("other", "GET /other");
    assert!(store.record(run, &[second]).unwrap().new_in_run.is_empty());

    let got = only(&store.load_report(&RunSelection::Latest).unwrap(), &f.id);
    assert_eq!(got.occurrences, 5, "occurrences add");
    assert_eq!(got.count, Some(10), "count keeps the max");
    assert_eq!(got.request, first.request, "the worst request stays");
    assert_eq!(got.severity, Severity::Error, "severity keeps the max");
    assert_eq!(got.rows.unwrap().max, 5, "rows keep the max");
    assert_eq!(
        (got.first_seen, got.last_seen),
        (at(5), at(20)),
        "min first_seen, max last_seen"
    );
    assert_eq!(store.finding(&f.id).unwrap().unwrap().occurrences, 5);
}

#[test]
fn two_writers_sharing_a_file_lose_nothing() {
    const FLUSHES: u64 = 40;
    let (_dir, path) = temp_store();
    let shared = unbounded_select();
    let writers: Vec<_> = ["proxy-a", "proxy-b"]
        .into_iter()
        .map(|host| {
            let (path, shared) = (path.clone(), shared.clone());
            std::thread::spawn(move || {
                // Each thread opens its own handle, as two processes would.
                let mut store = Store::open(&path).unwrap();
                let run = store.begin_run(&run_info(host, 0)).unwrap();
                let mut own = repeated_query();
                own.request = request(host, host);
                own.id = own.compute_id();
                for i in 0..FLUSHES {
                    let batch = [
                        delta(&shared, 1, None, 0, i as i64),
                        delta(&own, 1, Some(i), 0, 0),
                    ];
                    store.record(run, &batch).unwrap();
                }
                (run, own.id)
            })
        })
        .collect();
    let results: Vec<_> = writers.into_iter().map(|t| t.join().unwrap()).collect();

    let store = Store::open_read_only(&path).unwrap();
    let all = store.load_report(&RunSelection::All).unwrap();
    assert_eq!(all.runs.len(), 2);
    assert_eq!(only(&all, &shared.id).occurrences, 2 * FLUSHES);
    for (run, own_id) in &results {
        assert_eq!(only(&all, own_id).occurrences, FLUSHES);
        let one = store.load_report(&RunSelection::Id(run.0)).unwrap();
        assert_eq!(one.findings.len(), 2);
        assert_eq!(only(&one, &shared.id).occurrences, FLUSHES);
    }
}

#[test]
fn a_reader_sees_consistent_snapshots_while_a_writer_writes() {
    const FLUSHES: u64 = 60;
    let (_dir, path) = temp_store();
    let mut store = Store::open(&path).unwrap();
    let run = store.begin_run(&run_info("h", 0)).unwrap();
    let (a, b) = (n_plus_one(), unbounded_select());
    let writer = std::thread::spawn(move || {
        for _ in 0..FLUSHES {
            // Both in one transaction: a reader must never see one without the other.
            store
                .record(
                    run,
                    &[delta(&a, 1, Some(3), 0, 0), delta(&b, 1, None, 0, 0)],
                )
                .unwrap();
        }
    });
    let reader = Store::open_read_only(&path).unwrap();
    let mut last = 0;
    loop {
        let done = writer.is_finished();
        let report = reader.load_report(&RunSelection::Latest).unwrap();
        let counts: Vec<u64> = report.findings.iter().map(|f| f.occurrences).collect();
        if let [x, y] = counts[..] {
            assert_eq!(x, y, "a half-applied batch was visible");
            assert!(x >= last, "occurrences went backwards");
            last = x;
        } else {
            assert!(counts.is_empty());
        }
        if done {
            break;
        }
    }
    writer.join().unwrap();
    assert_eq!(last, FLUSHES);
}

#[test]
fn reopening_keeps_data_and_starts_a_new_run() {
    let (_dir, path) = temp_store();
    let f = n_plus_one();
    let first_run = {
        let mut store = Store::open(&path).unwrap();
        let run = store.begin_run(&run_info("h", 0)).unwrap();
        store.record(run, &[delta(&f, 4, Some(48), 0, 10)]).unwrap();
        run
    };
    let mut store = Store::open(&path).unwrap();
    let second_run = store.begin_run(&run_info("h", 100)).unwrap();
    store
        .record(second_run, &[delta(&f, 1, Some(20), 100, 110)])
        .unwrap();

    let latest = store.load_report(&RunSelection::Latest).unwrap();
    assert_eq!(latest.runs[0].id, second_run.0);
    assert_eq!(only(&latest, &f.id).occurrences, 1);
    assert_eq!(only(&latest, &f.id).count, Some(20));
    let first = store.load_report(&RunSelection::Id(first_run.0)).unwrap();
    assert_eq!(only(&first, &f.id).occurrences, 4);
    assert_eq!(first.runs[0].ended_at, None, "never ended cleanly");
    let all = only(&store.load_report(&RunSelection::All).unwrap(), &f.id);
    assert_eq!((all.occurrences, all.count), (5, Some(48)));
    assert_eq!((all.first_seen, all.last_seen), (at(0), at(110)));
}

#[test]
fn run_selection() {
    let (_dir, path) = temp_store();
    let mut store = Store::open(&path).unwrap();
    let empty = store.load_report(&RunSelection::Latest).unwrap();
    assert!(empty.runs.is_empty() && empty.findings.is_empty());
    assert_eq!(empty.summary.catalog, "unavailable");

    let later = store.begin_run(&run_info("later", 500)).unwrap();
    // Inserted second but started earlier: Latest goes by start time.
    let earlier = store.begin_run(&run_info("earlier", 100)).unwrap();
    store.record(later, &[unbounded_select()]).unwrap();
    store.record(earlier, &[unindexed_sort()]).unwrap();
    store
        .update_summary(
            later,
            &Summary {
                queries: 300,
                correlated_fraction: 0.4,
                fingerprints: 20,
                catalog: "available".into(),
                ..Summary::default()
            },
        )
        .unwrap();
    store
        .update_summary(
            earlier,
            &Summary {
                queries: 100,
                correlated_fraction: 0.8,
                fingerprints: 30,
                catalog: "unavailable".into(),
                findings_lost: 5,
                ..Summary::default()
            },
        )
        .unwrap();

    let latest = store.load_report(&RunSelection::Latest).unwrap();
    assert_eq!(
        latest.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [later.0]
    );
    assert_eq!(latest.findings, [unbounded_select()]);

    let all = store.load_report(&RunSelection::All).unwrap();
    assert_eq!(
        all.runs.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(),
        ["earlier", "later"]
    );
    assert_eq!(all.findings.len(), 2);
    assert_eq!(all.summary.queries, 400);
    assert_eq!(all.summary.findings_lost, 5, "losses add up over runs");
    assert_eq!(latest.summary.findings_lost, 0);
    assert!(
        (all.summary.correlated_fraction - 0.5).abs() < 1e-9,
        "weighted by queries"
    );
    assert_eq!(all.summary.catalog, "available");
    assert_eq!(
        all.summary.fingerprints, 30,
        "largest run's distinct fingerprints"
    );

    let by_id = store.load_report(&RunSelection::Id(earlier.0)).unwrap();
    assert_eq!(by_id.findings, [unindexed_sort()]);
    assert!(matches!(
        store.load_report(&RunSelection::Id(999)),
        Err(StoreError::NoSuchRun(999))
    ));

    assert_eq!("latest".parse(), Ok(RunSelection::Latest));
    assert_eq!("all".parse(), Ok(RunSelection::All));
    assert_eq!("7".parse(), Ok(RunSelection::Id(7)));
    assert!("newest".parse::<RunSelection>().is_err());
}

#[test]
fn migrates_an_empty_file_and_refuses_a_newer_schema() {
    let (dir, path) = temp_store();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"").unwrap();
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Opening again is a no-op migration.
    drop(Store::open(&path).unwrap());

    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(matches!(
        Store::open_read_only(&path),
        Err(StoreError::SchemaTooNew { .. })
    ));

    let foreign = dir.path().join("other.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let err = Store::open_read_only(&foreign).unwrap_err();
    assert!(
        err.to_string().contains("is not a qproxy findings store"),
        "{err}"
    );
}

#[test]
fn read_only_open_of_a_missing_file_is_a_clear_error() {
    let (_dir, path) = temp_store();
    let err = Store::open_read_only(&path).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("no findings store at") && msg.contains("findings.db"),
        "{msg}"
    );
    assert!(!path.exists(), "a read must not create the file");

    drop(Store::open(&path).unwrap());
    let mut reader = Store::open_read_only(&path).unwrap();
    assert!(
        reader.begin_run(&run_info("h", 0)).is_err(),
        "read-only handles cannot write"
    );
}

/// Literal values cannot reach the store: its only input is [`Finding`],
/// whose `query` is normalized SQL, and it stores that text as given
/// (no re-rendering that could pull values back in). `details` is JSON.
#[test]
fn query_is_stored_as_given_and_details_are_json() {
    let (_dir, path) = temp_store();
    let mut store = Store::open(&path).unwrap();
    let run = store.begin_run(&run_info("h", 0)).unwrap();
    let f = unindexed_filter();
    store.record(run, std::slice::from_ref(&f)).unwrap();

    let conn = rusqlite::Connection::open(&path).unwrap();
    let (query, details, columns): (String, String, String) = conn
        .query_row("SELECT query, details, columns FROM findings", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(query, f.query);
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(
        details,
        serde_json::json!({"table_rows": 1_250_000, "verified": false})
    );
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&columns).unwrap(),
        f.columns
    );
}

#[test]
fn a_v1_store_migrates_and_reports_no_losses() {
    let (_dir, path) = temp_store();
    let mut store = Store::open(&path).unwrap();
    let run = store.begin_run(&run_info("old", 0)).unwrap();
    store.record(run, &[n_plus_one()]).unwrap();
    drop(store);
    // What qproxy before `findings_lost` left behind.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX runs_by_instance; ALTER TABLE runs DROP COLUMN instance; \
         ALTER TABLE runs DROP COLUMN updated_at; \
         ALTER TABLE runs DROP COLUMN verifications_skipped; \
         ALTER TABLE runs DROP COLUMN statements_not_analysed; \
         ALTER TABLE runs DROP COLUMN findings_lost; PRAGMA user_version = 1",
    )
    .unwrap();
    assert!(matches!(
        Store::open_read_only(&path),
        Err(StoreError::SchemaOutdated { found: 1, .. })
    ));
    drop(Store::open(&path).unwrap());
    let report = Store::open_read_only(&path)
        .unwrap()
        .load_report(&RunSelection::All)
        .unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.summary.findings_lost, 0);
    // Runs from before instances are named after their host, and were last
    // active when they started (they never ended).
    assert_eq!(report.runs[0].instance, "old");
    let report = Store::open_read_only(&path)
        .unwrap()
        .load_report_filtered(
            &RunSelection::All,
            &qproxy_analyzer::store::RunFilter {
                since: Some(at(1)),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(report.runs.is_empty(), "{:?}", report.runs);
}
