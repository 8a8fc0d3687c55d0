//! The background writer: batches reach the store, finish ends the run,
//! dropping the handle still writes what was submitted, nothing is lost.

mod store_support;

use std::sync::atomic::Ordering;

use qproxy_analyzer::finding::Summary;
use qproxy_analyzer::store::{Batch, RunSelection, Store, StoreError, Submitted, Writer};
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
