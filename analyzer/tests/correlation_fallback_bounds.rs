//! Untagged groups are bounded: a connection that never goes quiet (a batch
//! worker, a benchmark loop) and an untagged transaction that runs on and on
//! are judged in slices of at most `fallback_max_statements` statements and
//! `fallback_max_duration`, and each slice says it was cut. Named requests
//! are never cut.

mod correlation_support;

use std::time::Duration;

use correlation_support::Harness;
use qproxy_analyzer::correlation::{
    Confidence, CorrelationConfig, CorrelationSource as Src, EndReason,
};

fn bounded(statements: u64, duration_ms: u64) -> Harness {
    Harness::with_config(CorrelationConfig {
        fallback_max_statements: statements,
        fallback_max_duration: Duration::from_millis(duration_ms),
        ..CorrelationConfig::default()
    })
}

#[test]
fn a_stream_without_idle_gaps_is_cut_at_the_statement_bound() {
    let mut h = bounded(10, 60_000);
    let placed: Vec<_> = (0..25)
        .map(|i| h.run(1, &format!("SELECT * FROM orders WHERE id = {i}")))
        .collect();
    assert!(placed.iter().all(|p| p.source == Src::IdleGap));
    assert_ne!(placed[9].id, placed[10].id);
    assert_eq!(placed[10].id, placed[19].id);
    h.close(1);
    let ended = h.ended();
    let sizes: Vec<u64> = ended.iter().map(|e| e.statements).collect();
    assert_eq!(sizes, [10, 10, 5]);
    let reasons: Vec<EndReason> = ended.iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [
            EndReason::FallbackBound,
            EndReason::FallbackBound,
            EndReason::ConnectionClosed
        ]
    );
    for e in &ended {
        assert!(
            e.request.cut,
            "every slice says it was cut: {:?}",
            e.request
        );
        assert_eq!(e.request.confidence(), Confidence::Low);
    }
}

#[test]
fn a_stream_without_idle_gaps_is_cut_at_the_time_bound() {
    // Each statement takes 1 ms and the client 1 ms more: 50 fit in 100 ms.
    let mut h = bounded(1_000, 100);
    for i in 0..120 {
        h.run(1, &format!("SELECT * FROM orders WHERE id = {i}"));
    }
    h.close(1);
    let sizes: Vec<u64> = h.ended().iter().map(|e| e.statements).collect();
    assert_eq!(sizes, [50, 50, 20]);
}

#[test]
fn a_short_burst_is_one_group_not_cut() {
    let mut h = bounded(10, 60_000);
    for i in 0..10 {
        h.run(1, &format!("SELECT * FROM orders WHERE id = {i}"));
    }
    h.close(1);
    let ended = h.ended();
    assert_eq!(ended.len(), 1);
    assert!(!ended[0].request.cut);
    assert_eq!(
        ended[0].request.confidence(),
        Confidence::Low,
        "idle gaps are a guess"
    );
}

#[test]
fn a_long_untagged_transaction_is_cut_and_its_commit_ends_the_last_slice() {
    let mut h = bounded(10, 60_000);
    assert_eq!(h.run(1, "BEGIN").source, Src::Transaction);
    for i in 0..24 {
        let p = h.run(1, &format!("SELECT * FROM orders WHERE id = {i}"));
        assert_eq!(
            p.source,
            Src::Transaction,
            "slices of a transaction stay transactions"
        );
    }
    h.run(1, "COMMIT");
    let ended = h.ended();
    let sizes: Vec<u64> = ended.iter().map(|e| e.statements).collect();
    assert_eq!(sizes, [10, 10, 6], "BEGIN + 24 + COMMIT in slices of 10");
    assert_eq!(ended[2].reason, EndReason::TransactionEnded);
    assert!(ended.iter().all(|e| e.request.cut));
    assert!(ended
        .iter()
        .all(|e| e.request.confidence() == Confidence::Low));
    // After the transaction, untagged work starts afresh, uncut.
    h.run(1, "SELECT 1");
    h.close(1);
    let after = h.ended();
    assert_eq!(after.len(), 1);
    assert!(!after[0].request.cut);
}

#[test]
fn a_transaction_within_the_bounds_has_medium_confidence() {
    let mut h = bounded(10, 60_000);
    h.run(1, "BEGIN");
    for i in 0..5 {
        h.run(1, &format!("SELECT * FROM orders WHERE id = {i}"));
    }
    h.run(1, "COMMIT");
    let ended = h.ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].request.confidence(), Confidence::Medium);
}

#[test]
fn named_requests_are_never_cut() {
    let mut h = bounded(10, 10);
    for i in 0..40 {
        h.run(
            1,
            &format!("SELECT * FROM orders WHERE id = {i} /*request_id='big'*/"),
        );
    }
    h.close(1);
    let ended = h.ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].statements, 40);
    assert!(!ended[0].request.cut);
    assert_eq!(ended[0].request.confidence(), Confidence::High);
}

#[test]
fn the_bounds_are_read_from_the_config_with_units() {
    let c: CorrelationConfig =
        serde_json::from_str(r#"{"fallback_max_duration": "3s", "fallback_max_statements": 200}"#)
            .unwrap();
    assert_eq!(c.fallback_max_duration, Duration::from_secs(3));
    assert_eq!(c.fallback_max_statements, 200);
    let d = CorrelationConfig::default();
    assert_eq!(
        (d.fallback_max_duration, d.fallback_max_statements),
        (Duration::from_secs(10), 1_000)
    );
}
