//! Portals fetched in chunks (see `suspended.rs`), fed as asyncpg, JDBC
//! and psycopg produce them.

use std::time::{Duration, Instant};

use qproxy_analyzer::event::Outcome;

use super::test_support::{
    b, bind, cc, close_portal, err, fetch, flush, harness, harness_with, parse, query, row, rows,
    suspended, sync, Harness,
};
use super::TrackerLimits;

fn complete() -> Outcome {
    Outcome::Complete {
        tag: "SELECT 1".into(),
    }
}

/// BEGIN, then a named portal bound and fetched two rows at a time
/// (asyncpg's `Cursor.fetch(2)`: Execute + Flush, then Sync at the end).
fn begin_and_bind(h: &mut Harness, portal: &str) {
    h.client(&[query("begin")]);
    h.server(&[cc("BEGIN"), b('Z', b"T")]);
    h.client(&[
        parse("s1", "select id from orders"),
        bind(portal, "s1", &[]),
        sync(),
    ]);
    h.server(&[b('1', b""), b('2', b""), b('Z', b"T")]);
}

fn fetch_chunk(h: &mut Harness, portal: &str, n: usize, last: bool) {
    h.client(&[fetch(portal, 2), flush()]);
    h.server(&rows(n));
    if last {
        h.server(&[cc(&format!("SELECT {n}"))]);
    } else {
        h.server(&[suspended()]);
    }
}

#[test]
fn chunks_of_one_portal_are_one_execution_with_every_row() {
    let mut h = harness();
    begin_and_bind(&mut h, "c1");
    assert_eq!(h.events().len(), 1, "only the BEGIN so far");
    let t0 = Instant::now();
    fetch_chunk(&mut h, "c1", 2, false);
    fetch_chunk(&mut h, "c1", 2, false);
    assert!(h.events().is_empty(), "a suspended portal is still running");
    fetch_chunk(&mut h, "c1", 1, true);
    let elapsed = t0.elapsed();
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].rows, 5);
    assert_eq!(ev[0].outcome, complete());
    assert!(ev[0].duration <= elapsed, "timed from the first Execute");
    // Closing the finished portal and committing add only the COMMIT.
    h.client(&[close_portal("c1"), sync()]);
    h.server(&[b('3', b""), b('Z', b"T")]);
    h.client(&[query("commit")]);
    h.server(&[cc("COMMIT"), b('Z', b"I")]);
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].outcome,
        Outcome::Complete {
            tag: "COMMIT".into()
        }
    );
    assert!(h.t.is_idle());
}

#[test]
fn a_portal_closed_early_is_one_execution_timed_to_its_last_chunk() {
    let mut h = harness();
    begin_and_bind(&mut h, "c1");
    h.events();
    let t0 = Instant::now();
    fetch_chunk(&mut h, "c1", 2, false);
    fetch_chunk(&mut h, "c1", 2, false);
    let until_last_chunk = t0.elapsed();
    // The client looks at what it has for a while, then gives up.
    std::thread::sleep(Duration::from_millis(50));
    h.client(&[close_portal("c1"), sync()]);
    assert!(h.events().is_empty(), "ends with the CloseComplete");
    h.server(&[b('3', b""), b('Z', b"T")]);
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].rows, 4);
    assert_eq!(ev[0].outcome, Outcome::Suspended);
    assert!(
        ev[0].duration <= until_last_chunk,
        "{:?} > {until_last_chunk:?}: the pause after the last chunk is not the query's",
        ev[0].duration
    );
}

#[test]
fn chunks_pipelined_before_their_replies_still_add_up() {
    let mut h = harness();
    begin_and_bind(&mut h, "c1");
    h.events();
    h.client(&[fetch("c1", 2), fetch("c1", 2), fetch("c1", 2), sync()]);
    h.server(&rows(2));
    h.server(&[suspended()]);
    h.server(&rows(2));
    h.server(&[suspended()]);
    h.server(&rows(2));
    h.server(&[suspended(), b('Z', b"T")]);
    assert!(h.events().is_empty());
    h.client(&[fetch("c1", 2), sync()]);
    h.server(&[cc("SELECT 0"), b('Z', b"T")]);
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].rows, 6);
}

#[test]
fn the_transaction_end_reports_an_open_portal_before_the_commit() {
    let mut h = harness();
    begin_and_bind(&mut h, "c1");
    h.events();
    fetch_chunk(&mut h, "c1", 2, false);
    h.client(&[query("commit")]);
    h.server(&[cc("COMMIT"), b('Z', b"I")]);
    let ev = h.events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!((ev[0].rows, &ev[0].outcome), (2, &Outcome::Suspended));
    assert_eq!(
        ev[0].tx_status,
        qproxy_analyzer::event::TxStatus::InTransaction
    );
    assert_eq!(
        ev[1].outcome,
        Outcome::Complete {
            tag: "COMMIT".into()
        }
    );
}

#[test]
fn an_implicit_transaction_ends_its_portal_at_ready_for_query() {
    // Outside BEGIN, Sync ends the implicit transaction and its portals
    // (a client that asked for two rows and no more).
    let mut h = harness();
    h.client(&[
        parse("", "select id from orders"),
        bind("", "", &[]),
        fetch("", 2),
        sync(),
    ]);
    h.server(&[b('1', b""), b('2', b"")]);
    h.server(&rows(2));
    h.server(&[suspended()]);
    assert!(h.events().is_empty());
    h.server(&[b('Z', b"I")]);
    let ev = h.events();
    assert_eq!((ev.len(), ev[0].rows), (1, 2));
    assert_eq!(ev[0].outcome, Outcome::Suspended);
    assert!(h.t.is_idle());
}

#[test]
fn a_bind_replacing_the_unnamed_portal_ends_its_execution() {
    let mut h = harness();
    h.client(&[query("begin")]);
    h.server(&[cc("BEGIN"), b('Z', b"T")]);
    h.events();
    h.client(&[
        parse("s1", "select id from orders where id > $1"),
        bind("", "s1", &[Some("1")]),
        fetch("", 2),
        bind("", "s1", &[Some("2")]),
        fetch("", 2),
        sync(),
    ]);
    h.server(&[b('1', b""), b('2', b"")]);
    h.server(&rows(2));
    h.server(&[suspended(), b('2', b"")]);
    h.server(&rows(1));
    h.server(&[cc("SELECT 1"), b('Z', b"T")]);
    let ev = h.events();
    assert_eq!(ev.len(), 2, "two portals, two executions: {ev:?}");
    assert_eq!((ev[0].rows, &ev[0].outcome), (2, &Outcome::Suspended));
    assert_eq!((ev[1].rows, &ev[1].outcome), (1, &complete()));
    assert_ne!(ev[0].params_hash, ev[1].params_hash);
}

#[test]
fn a_simple_query_destroys_the_unnamed_portal() {
    let mut h = harness();
    h.client(&[query("begin")]);
    h.server(&[cc("BEGIN"), b('Z', b"T")]);
    h.events();
    h.client(&[
        parse("", "select id from orders"),
        bind("", "", &[]),
        fetch("", 2),
        sync(),
    ]);
    h.server(&[b('1', b""), b('2', b"")]);
    h.server(&rows(2));
    h.server(&[suspended(), b('Z', b"T")]);
    h.client(&[query("select 1")]);
    h.server(&[row(), cc("SELECT 1"), b('Z', b"T")]);
    let ev = h.events();
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].rows, &ev[0].outcome), (2, &Outcome::Suspended));
    assert_eq!(&*ev[1].sql, "select 1");
}

#[test]
fn an_error_mid_fetch_ends_the_execution_with_the_rows_so_far() {
    let mut h = harness();
    begin_and_bind(&mut h, "c1");
    h.events();
    fetch_chunk(&mut h, "c1", 2, false);
    h.client(&[fetch("c1", 2), sync()]);
    h.server(&[row(), err("22012"), b('Z', b"E")]);
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].rows, 3);
    assert_eq!(
        ev[0].outcome,
        Outcome::Error {
            sqlstate: *b"22012"
        }
    );
}

#[test]
fn suspended_portals_are_capped_per_connection() {
    let mut h = harness_with(
        TrackerLimits {
            max_suspended_portals: 2,
            ..TrackerLimits::default()
        },
        false,
    );
    h.client(&[query("begin")]);
    h.server(&[cc("BEGIN"), b('Z', b"T")]);
    h.client(&[parse("s1", "select id from orders"), sync()]);
    h.server(&[b('1', b""), b('Z', b"T")]);
    h.events();
    for portal in ["a", "b", "c"] {
        h.client(&[bind(portal, "s1", &[]), fetch(portal, 2), sync()]);
        h.server(&[b('2', b"")]);
        h.server(&rows(2));
        h.server(&[suspended(), b('Z', b"T")]);
    }
    // Parking the third reported the oldest with what it had fetched.
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].rows, &ev[0].outcome), (2, &Outcome::Suspended));
    // The other two are still open, and end with the session.
    h.close();
    let ev = h.events();
    assert_eq!(ev.len(), 2);
    assert!(ev
        .iter()
        .all(|e| e.outcome == Outcome::Suspended && e.rows == 2));
}

#[test]
fn a_portal_per_query_is_unaffected() {
    // The common case: Execute without a limit on a fresh portal each time.
    let mut h = harness();
    for _ in 0..3 {
        h.client(&[
            parse("", "select id from orders"),
            bind("", "", &[]),
            fetch("", 0),
            sync(),
        ]);
        h.server(&[b('1', b""), b('2', b"")]);
        h.server(&rows(3));
        h.server(&[cc("SELECT 3"), b('Z', b"I")]);
    }
    let ev = h.events();
    assert_eq!(ev.len(), 3);
    assert!(ev
        .iter()
        .all(|e| e.rows == 3 && matches!(e.outcome, Outcome::Complete { .. })));
}
