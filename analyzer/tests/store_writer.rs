//! The background writer: batches reach the store, finish ends the run,
//! dropping the handle still writes what was submitted, nothing is lost;
//! and while another connection holds the file locked, findings wait in
//! memory and reach the store once it is free, or are counted as lost.

mod store_support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qproxy_analyzer::finding::{Finding, Summary};
use qproxy_analyzer::store::{
    Batch, RunSelection, Store, StoreError, Submitted, Writer, WriterConfig,
};
use store_support::*;

fn batch(findings: Vec<qproxy_analyzer::finding::Finding>, queries: u64) -> Batch {
    Batch {
        findings,
        summary: Summary {
            queries,
            catalog: "available".into(),
            ..Summary::default()
        },
    }
}

#[test]
fn submit_and_finish_persist_and_end_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.db");
    let mut writer = Writer::spawn(&path, run_info("h", 0)).unwrap();
    let run = writer.run();
    let stats = writer.stats();
    assert_ne!(
        writer.submit(batch(vec![n_plus_one()], 10)),
        Submitted::Lost
    );
    writer
        .finish(batch(vec![unbounded_select(), n_plus_one()], 25))
        .unwrap();

    assert_eq!(stats.findings_lost.load(Ordering::Relaxed), 0);
    assert_eq!(stats.write_failures.load(Ordering::Relaxed), 0);
    let report = Store::open_read_only(&path)
        .unwrap()
        .load_report(&RunSelection::Latest)
        .unwrap();
    assert_eq!(report.runs[0].id, run.0);
    assert!(report.runs[0].ended_at.is_some(), "finish ends the run");
    assert_eq!(report.summary.queries, 25, "the last summary wins");
    let n1 = report
        .findings
        .iter()
        .find(|f| f.id == n_plus_one().id)
        .unwrap();
    assert_eq!(n1.occurrences, 2 * n_plus_one().occurrences);
    assert_eq!(report.findings.len(), 2);
}

#[test]
fn dropping_without_finish_still_writes_submitted_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.db");
    {
        let mut writer = Writer::spawn(&path, run_info("h", 0)).unwrap();
        writer.submit(batch(vec![repeated_query()], 5));
        writer.submit(batch(vec![unindexed_filter()], 8));
    }
    let report = Store::open_read_only(&path)
        .unwrap()
        .load_report(&RunSelection::Latest)
        .unwrap();
    assert_eq!(report.findings.len(), 2);
    assert_eq!(report.summary.queries, 8);
    assert_eq!(
        report.runs[0].ended_at, None,
        "no finish: the run looks unfinished, as after a crash"
    );
}

#[test]
fn a_burst_of_submissions_loses_nothing() {
    const BATCHES: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.db");
    let mut writer = Writer::spawn(&path, run_info("h", 0)).unwrap();
    let stats = writer.stats();
    let mut f = n_plus_one();
    f.occurrences = 1;
    for i in 0..BATCHES {
        // Faster than the thread writes, so some submissions are held and merged.
        writer.submit(batch(vec![f.clone()], i));
    }
    writer.finish(batch(vec![], BATCHES)).unwrap();

    let report = Store::open_read_only(&path)
        .unwrap()
        .load_report(&RunSelection::Latest)
        .unwrap();
    assert_eq!(report.findings[0].occurrences, BATCHES);
    assert_eq!(report.summary.queries, BATCHES);
    assert_eq!(stats.findings_lost.load(Ordering::Relaxed), 0);
    let written = stats.batches_written.load(Ordering::Relaxed);
    let held = stats.batches_held.load(Ordering::Relaxed);
    assert!(
        (1..=BATCHES + 1).contains(&written),
        "written {written}, held {held}"
    );
}

#[test]
fn spawn_fails_at_startup_on_a_bad_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = Writer::spawn(file.join("findings.db"), run_info("h", 0)).unwrap_err();
    assert!(
        matches!(err, StoreError::CreateDir { .. } | StoreError::Open { .. }),
        "{err}"
    );
}

/// Retries fast, so a test of a locked store takes a fraction of a second
/// per phase.
fn quick(pending_max: usize, final_flush_timeout: Duration) -> WriterConfig {
    WriterConfig {
        pending_max,
        busy_timeout: Duration::from_millis(20),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(80),
        final_flush_timeout,
        retention: None,
    }
}

/// Another process's exclusive lock on the store file, as `sqlite3 db
/// 'BEGIN EXCLUSIVE'` or a backup tool would hold it; released on drop.
fn lock(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    conn
}

/// Waits (up to 30 s) until `counter` reaches `at_least`.
fn wait_for(counter: &AtomicU64, at_least: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter.load(Ordering::Relaxed) < at_least {
        assert!(Instant::now() < deadline, "{what}: still {counter:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn once(mut f: Finding) -> Finding {
    f.occurrences = 1;
    f
}

fn latest(path: &Path) -> qproxy_analyzer::report::Report {
    Store::open_read_only(path)
        .unwrap()
        .load_report(&RunSelection::Latest)
        .unwrap()
}

#[test]
fn a_locked_store_holds_findings_in_memory_and_loses_none() {
    const BATCHES: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.db");
    let mut writer =
        Writer::spawn_with(&path, run_info("h", 0), quick(100, Duration::from_secs(10))).unwrap();
    let stats = writer.stats();
    let lock = lock(&path);
    for i in 0..BATCHES {
        // Every batch while locked: more than the channel holds, so the
        // thread must keep taking batches between failed writes.
        writer.submit(batch(vec![once(n_plus_one()), once(repeated_query())], i));
        if i == 0 {
            wait_for(&stats.write_failures, 1, "a write fails while locked");
        }
    }
    wait_for(&stats.write_failures, 3, "writes are retried while locked");
    assert_eq!(stats.batches_written.load(Ordering::Relaxed), 0);
    assert_eq!(stats.findings_lost.load(Ordering::Relaxed), 0);
    drop(lock);
    wait_for(
        &stats.batches_written,
        1,
        "the pending findings reach the store",
    );
    assert_eq!(stats.pending_findings.load(Ordering::Relaxed), 0);
    writer.finish(batch(vec![], BATCHES)).unwrap();

    let report = latest(&path);
    assert_eq!(report.findings.len(), 2);
    assert!(
        report.findings.iter().all(|f| f.occurrences == BATCHES),
        "{:?}",
        report.findings
    );
    assert_eq!(report.summary.findings_lost, 0);
    assert_eq!(report.summary.queries, BATCHES);
    assert!(report.runs[0].ended_at.is_some());
    assert_eq!(stats.findings_lost.load(Ordering::Relaxed), 0);
}

#[test]
fn past_the_pending_cap_new_findings_are_dropped_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.db");
    let mut writer =
        Writer::spawn_with(&path, run_info("h", 0), quick(1, Duration::from_secs(10))).unwrap();
    let stats = writer.stats();
    let lock = lock(&path);
    writer.submit(batch(vec![once(n_plus_one())], 1));
    wait_for(&stats.write_failures, 1, "a write fails while locked");
    // A second distinct finding does not fit under the cap of one; the
    // held one keeps merging.
    let mut lost = unbounded_select();
    lost.occurrences = 3;
    writer.submit(batch(vec![lost, once(n_plus_one())], 2));
    wait_for(
        &stats.findings_lost,
        3,
        "the dropped occurrences are counted",
    );
    assert_eq!(stats.pending_findings.load(Ordering::Relaxed), 1);
    drop(lock);
    wait_for(
        &stats.batches_written,
        1,
        "the held finding reaches the store",
    );
    writer.finish(batch(vec![], 3)).unwrap();

    let report = latest(&path);
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].id, n_plus_one().id);
    assert_eq!(report.findings[0].occurrences, 2);
    assert_eq!(stats.findings_lost.load(Ordering::Relaxed), 3);
    assert_eq!(
        report.summary.findings_lost, 3,
        "the loss is written with the run's summary"
    );
}

#[test]
fn the_final_flush_gives_up_after_its_timeout_and_counts_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.db");
    let mut writer = Writer::spawn_with(
        &path,
        run_info("h", 0),
        quick(100, Duration::from_millis(300)),
    )
    .unwrap();
    let stats = writer.stats();
    writer.submit(batch(vec![once(n_plus_one())], 1));
    wait_for(&stats.batches_written, 1, "the first batch is written");
    let lock = lock(&path);
    let mut last = repeated_query();
    last.occurrences = 4;
    let started = Instant::now();
    let err = writer.finish(batch(vec![last], 2)).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert!(stats.write_failures.load(Ordering::Relaxed) >= 2);
    assert_eq!(stats.findings_lost.load(Ordering::Relaxed), 4);
    drop(lock);

    let report = latest(&path);
    assert_eq!(report.findings.len(), 1, "only what was written before");
    assert_eq!(report.runs[0].ended_at, None, "the run could not be ended");
}

/// Retention runs when the writer starts, before the proxy takes clients,
/// and then on its interval; it never deletes the writer's own run, and
/// findings only deleted runs saw go with them.
#[test]
fn retention_prunes_at_start_and_then_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.db");
    let old_finding = unbounded_select();
    {
        let mut store = Store::open(&path).unwrap();
        let old = store.begin_run(&run_info("old", 0)).unwrap();
        store
            .record(old, std::slice::from_ref(&old_finding))
            .unwrap();
    }
    // Written long ago: last active when it started (2024).
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE runs SET updated_at = started_at")
        .unwrap();

    let retention = Duration::from_secs(2);
    let config = WriterConfig {
        retention: Some(retention),
        ..quick(100, Duration::from_secs(10))
    };
    // The writer's own run also started "in 2024": kept all the same.
    let mut writer = Writer::spawn_with(&path, run_info("new", 0), config).unwrap();
    let own = writer.run();
    let stats = writer.stats();
    assert_eq!(
        stats.runs_pruned.load(Ordering::Relaxed),
        1,
        "pruned at start"
    );
    let store = Store::open_read_only(&path).unwrap();
    let ids = |store: &Store| -> Vec<i64> { store.runs().unwrap().iter().map(|r| r.id).collect() };
    assert_eq!(ids(&store), [own.0]);
    assert!(store.finding(&old_finding.id).unwrap().is_none());

    // Another proxy's run that goes quiet is pruned once it is older than
    // the retention, at the next interval.
    let mut other = Store::open(&path).unwrap();
    let mut info = run_info("quiet", 0);
    info.started_at = time::OffsetDateTime::now_utc();
    let quiet = other.begin_run(&info).unwrap();
    assert_eq!(ids(&store), [own.0, quiet.0]);
    assert_ne!(writer.submit(batch(vec![n_plus_one()], 5)), Submitted::Lost);
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.runs_pruned.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "the quiet run was never pruned");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ids(&store), [own.0]);
    writer.finish(batch(vec![], 5)).unwrap();
    let report = store.load_report(&RunSelection::All).unwrap();
    assert_eq!(report.findings.len(), 1, "the writer's own findings stay");
}
