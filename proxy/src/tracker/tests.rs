//! The tracker fed with message sequences as real clients and servers
//! produce them.

use postgres_protocol::message::frontend as fe;
use qproxy_analyzer::event::{Outcome, Protocol, SessionEvent, TxStatus};

use super::test_support::*;
use super::*;
use crate::wire::scan::NotHeld;

#[test]
fn simple_query_with_several_statements() {
    let mut h = harness();
    h.client(&[query("select 1; select 2 from generate_series(1,2)")]);
    h.server(&[
        b('T', b"\0\0"),
        row(),
        cc("SELECT 1"),
        b('T', b"\0\0"),
        row(),
        row(),
        cc("SELECT 2"),
        b('Z', b"I"),
    ]);
    let ev = h.events();
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].statement_index, ev[0].rows), (0, 1));
    assert_eq!((ev[1].statement_index, ev[1].rows), (1, 2));
    assert_eq!(ev[1].protocol, Protocol::Simple);
    assert_eq!(ev[0].database.as_deref(), Some("shop"));
    assert!(h.t.is_idle());
}

#[test]
fn error_ends_a_simple_query_string() {
    let mut h = harness();
    h.client(&[query("begin; select 1/0; select 3")]);
    h.server(&[cc("BEGIN"), err("22012"), b('Z', b"E")]);
    let ev = h.events();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[1].outcome,
        Outcome::Error {
            sqlstate: *b"22012"
        }
    );
    assert_eq!(ev[1].tx_status, TxStatus::InTransaction);
    assert!(!h.t.is_idle(), "failed transaction is not idle");
    h.client(&[query("rollback")]);
    h.server(&[cc("ROLLBACK"), b('Z', b"I")]);
    assert_eq!(h.events()[0].tx_status, TxStatus::Failed);
    assert!(h.t.is_idle());
}

#[test]
fn pipelined_extended_queries_match_their_replies() {
    let mut h = harness();
    h.client(&[
        parse("s1", "select * from users where id = $1"),
        bind("", "s1", &[Some("1")]),
        execute(""),
        bind("", "s1", &[Some("2")]),
        execute(""),
        sync(),
        parse("", "select now()"),
        bind("", "", &[]),
        execute(""),
        sync(),
    ]);
    h.server(&[
        b('1', b""),
        b('2', b""),
        row(),
        cc("SELECT 1"),
        b('2', b""),
        cc("SELECT 0"),
        b('Z', b"I"),
        b('1', b""),
        b('2', b""),
        row(),
        cc("SELECT 1"),
        b('Z', b"I"),
    ]);
    let ev = h.events();
    assert_eq!(ev.len(), 3);
    assert_eq!(&*ev[0].sql, "select * from users where id = $1");
    assert_eq!(ev[0].statement_name.as_deref(), Some("s1"));
    assert_eq!((ev[0].rows, ev[1].rows), (1, 0));
    assert_ne!(ev[0].params_hash, ev[1].params_hash);
    assert_eq!(ev[0].param_hashes.len(), 1);
    assert_eq!(&*ev[2].sql, "select now()");
    assert_eq!(ev[2].statement_name, None);
    assert_eq!(ev[2].protocol, Protocol::Extended);
    assert!(h.t.is_idle());
}

#[test]
fn equal_parameters_hash_equal() {
    let mut h = harness();
    for v in ["7", "7", "8"] {
        h.client(&[
            parse("", "select $1"),
            bind("", "", &[Some(v)]),
            execute(""),
            sync(),
        ]);
        h.server(&[
            b('1', b""),
            b('2', b""),
            row(),
            cc("SELECT 1"),
            b('Z', b"I"),
        ]);
    }
    let ev = h.events();
    assert_eq!(ev[0].params_hash, ev[1].params_hash);
    assert_ne!(ev[0].params_hash, ev[2].params_hash);
    // The same text re-parsed shares one allocation.
    assert!(Arc::ptr_eq(&ev[0].sql, &ev[2].sql));
}

#[test]
fn error_in_pipeline_skips_to_sync() {
    let mut h = harness();
    h.client(&[
        parse("", "select 1/0"),
        bind("", "", &[]),
        execute(""),
        parse("", "select 2"),
        bind("", "", &[]),
        execute(""),
        sync(),
        parse("", "select 3"),
        bind("", "", &[]),
        execute(""),
        sync(),
    ]);
    h.server(&[
        b('1', b""),
        b('2', b""),
        err("22012"),
        b('Z', b"I"),
        b('1', b""),
        b('2', b""),
        row(),
        cc("SELECT 1"),
        b('Z', b"I"),
    ]);
    let ev = h.events();
    assert_eq!(ev.len(), 2, "the skipped execution produces no event");
    assert_eq!(
        ev[0].outcome,
        Outcome::Error {
            sqlstate: *b"22012"
        }
    );
    assert_eq!(&*ev[1].sql, "select 3");
    assert!(h.t.is_idle());
}

#[test]
fn failed_parse_leaves_no_statement() {
    let mut h = harness();
    h.client(&[parse("s1", "selec 1"), sync()]);
    h.server(&[err("42601"), b('Z', b"I")]);
    h.client(&[bind("", "s1", &[]), execute(""), sync()]);
    h.server(&[err("26000"), b('Z', b"I")]);
    assert!(h.events().is_empty());
    assert_eq!(h.count(|e| matches!(e, Effect::Untracked)), 1);
    assert!(h.t.is_idle());
}

#[test]
fn flush_gets_replies_without_ready_for_query() {
    let mut h = harness();
    h.client(&[
        parse("", "select $1::int"),
        bind("", "", &[Some("1")]),
        describe_portal(),
    ]);
    h.client(&[enc(fe::flush)]);
    h.server(&[b('1', b""), b('2', b""), b('T', b"\0\0")]);
    assert!(h.t.pending.is_empty());
    h.client(&[execute(""), sync()]);
    h.server(&[row(), cc("SELECT 1"), b('Z', b"I")]);
    assert_eq!(h.events().len(), 1);
    assert!(h.t.is_idle());
}

#[test]
fn extended_copy_ignores_the_pipelined_sync() {
    let mut h = harness();
    // libpq: Parse/Bind/Describe/Execute/Sync, then after CopyInResponse the
    // data, CopyDone and a second Sync; the server ignored the first.
    h.client(&[
        parse("", "copy t from stdin"),
        bind("", "", &[]),
        describe_portal(),
        execute(""),
        sync(),
    ]);
    h.server(&[b('1', b""), b('2', b""), b('n', b""), b('G', b"\0\0\0")]);
    h.client(&[enc(fe::sync), b('d', b"1\n"), enc(fe::copy_done), sync()]);
    h.server(&[cc("COPY 1"), b('Z', b"I")]);
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].outcome,
        Outcome::Complete {
            tag: "COPY 1".into()
        }
    );
    assert!(h.t.is_idle(), "pending: {:?}", h.t.pending);
    h.client(&[query("select 1")]);
    h.server(&[b('T', b"\0\0"), row(), cc("SELECT 1"), b('Z', b"I")]);
    assert_eq!(h.events().len(), 1);
}

#[test]
fn copy_fail_and_simple_copy_out() {
    let mut h = harness();
    h.client(&[query("copy t from stdin")]);
    h.server(&[b('G', b"\0\0\0")]);
    h.client(&[enc(|b| fe::copy_fail("nope", b).unwrap())]);
    h.server(&[err("57014"), b('Z', b"I")]);
    h.client(&[query("copy t to stdout")]);
    h.server(&[
        b('H', b"\0\0\0"),
        b('d', b"1\n"),
        b('c', b""),
        cc("COPY 1"),
        b('Z', b"I"),
    ]);
    let ev = h.events();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[0].outcome,
        Outcome::Error {
            sqlstate: *b"57014"
        }
    );
    assert_eq!(
        ev[1].outcome,
        Outcome::Complete {
            tag: "COPY 1".into()
        }
    );
    assert!(h.t.is_idle());
}

#[test]
fn application_name_follows_parameter_status() {
    let mut h = harness();
    h.server(&[b('S', b"application_name\0checkout\0")]);
    h.client(&[query("select 1")]);
    h.server(&[cc("SELECT 1"), b('Z', b"I")]);
    assert_eq!(h.events()[0].application_name.as_deref(), Some("checkout"));
}

#[test]
fn scram_plus_is_stripped_only_when_asked() {
    let sasl = b('R', b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
    let mut keep = Tracker::new(
        SessionInfo::default(),
        TrackerLimits::default(),
        false,
        now(),
    );
    assert_eq!(keep.backend(&sasl, now()), Verdict::Forward);
    let mut strip = Tracker::new(
        SessionInfo::default(),
        TrackerLimits::default(),
        true,
        now(),
    );
    match strip.backend(&sasl, now()) {
        Verdict::Replace(m) => assert_eq!(m, b('R', b"\0\0\0\x0aSCRAM-SHA-256\0\0")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn overflowing_the_fifo_stops_analysis_not_traffic() {
    let limits = TrackerLimits {
        max_pending: 8,
        ..Default::default()
    };
    let mut h = harness_with(limits, false);
    for _ in 0..20 {
        h.client(&[sync()]);
    }
    assert_eq!(h.t.phase, Phase::Desynced);
    h.client(&[query("select 1")]);
    h.server(&[cc("SELECT 1"), b('Z', b"I")]);
    assert!(h.events().is_empty());
    assert_eq!(h.count(|e| matches!(e, Effect::Desynced)), 1);
}

#[test]
fn close_aborts_what_is_in_flight_and_ends_the_session() {
    let mut h = harness();
    h.client(&[query("select pg_sleep(10)")]);
    h.close();
    let got = h.session_events();
    assert!(matches!(&got[0], SessionEvent::Query(q) if q.outcome == Outcome::Aborted));
    assert!(matches!(
        got[1],
        SessionEvent::Closed {
            connection_id: 7,
            ..
        }
    ));
}

#[test]
fn close_reports_the_last_transaction_status() {
    // An application that began a transaction and then went quiet: the
    // analyzer learns at close that the transaction was still open.
    let mut h = harness();
    h.client(&[query("begin")]);
    h.server(&[cc("BEGIN"), b('Z', b"T")]);
    h.close();
    let mut closed = None;
    for e in h.session_events() {
        if let SessionEvent::Closed { tx_status, .. } = e {
            closed = Some(tx_status);
        }
    }
    assert_eq!(closed, Some(Some(TxStatus::InTransaction)));

    // Before startup finished there is no status to vouch for.
    let mut t = Harness::new(Tracker::new(
        SessionInfo::default(),
        TrackerLimits::default(),
        false,
        now(),
    ));
    t.close();
    assert!(matches!(
        t.session_events()[..],
        [SessionEvent::Closed {
            tx_status: None,
            ..
        }]
    ));
}

#[test]
fn closed_statement_is_forgotten() {
    let mut h = harness();
    h.client(&[parse("s1", "select 1"), sync()]);
    h.server(&[b('1', b""), b('Z', b"I")]);
    h.client(&[enc(|b| fe::close(b'S', "s1", b).unwrap()), sync()]);
    h.server(&[b('3', b""), b('Z', b"I")]);
    assert!(h.t.statements.is_empty());
    assert!(h.t.is_idle());
}

/// A Parse whose body ends early, its length field fixed to match: framed
/// correctly, but not decodable.
fn garbled_parse() -> Vec<u8> {
    let mut bad = parse("s1", "select 1");
    bad.truncate(bad.len() - 3);
    let len = (bad.len() - 1) as u32;
    bad[1..5].copy_from_slice(&len.to_be_bytes());
    bad
}

fn unread(h: &mut Harness) -> u64 {
    h.count(|e| matches!(e, Effect::Unread(_)))
}

#[test]
fn garbled_parse_is_forwarded_and_the_servers_error_followed() {
    let mut h = harness();
    // Pipelined: the garbled Parse and its Sync, then a good query.
    h.client(&[garbled_parse(), sync(), query("select 2")]);
    assert_eq!(unread(&mut h), 1);
    h.server(&[err("08P01"), b('Z', b"I")]);
    assert!(h.t.statements.is_empty(), "a rejected Parse leaves nothing");
    h.server(&[row(), cc("SELECT 1"), b('Z', b"I")]);
    let events = h.events();
    assert_eq!(events.len(), 1);
    assert_eq!(&*events[0].sql, "select 2");
    assert_eq!(events[0].rows, 1);
    assert_ne!(h.t.phase, Phase::Desynced);
    assert!(h.t.is_idle());
}

#[test]
fn garbled_simple_query_ends_at_its_ready_for_query() {
    let mut h = harness();
    let mut bad = query("select 1");
    // No terminating NUL: PostgreSQL answers "invalid string in message".
    bad.pop();
    let len = (bad.len() - 1) as u32;
    bad[1..5].copy_from_slice(&len.to_be_bytes());
    h.client(&[bad, query("select 2")]);
    h.server(&[err("08P01"), b('Z', b"I")]);
    h.server(&[cc("SELECT 1"), b('Z', b"I")]);
    let events = h.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(&*events[0].sql, "select 2");
    assert!(h.t.is_idle());
}

#[test]
fn a_server_that_accepts_what_the_tracker_could_not_read_stops_analysis() {
    let mut h = harness();
    h.client(&[garbled_parse(), sync()]);
    h.server(&[b('1', b""), b('Z', b"I")]);
    assert_eq!(h.t.phase, Phase::Desynced);
}

#[test]
fn oversized_server_error_is_followed_from_its_first_bytes() {
    let mut h = harness();
    h.client(&[
        parse("", "select f()"),
        bind("", "", &[]),
        execute(""),
        sync(),
        query("select 2"),
    ]);
    h.server(&[b('1', b""), b('2', b"")]);
    // An ErrorResponse too large to hold: only its start is at hand.
    let mut huge = b'E'.to_be_bytes().to_vec();
    huge.extend_from_slice(&(2_000_000u32).to_be_bytes());
    huge.extend_from_slice(b"SERROR\0VERROR\0CP0001\0Mxxxx");
    h.t.backend_unheld(b'E', &huge, NotHeld::OverCap, now());
    h.server(&[b('Z', b"I"), cc("SELECT 1"), b('Z', b"I")]);
    let events = h.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0].outcome,
        Outcome::Error {
            sqlstate: *b"P0001"
        }
    );
    assert_eq!(&*events[1].sql, "select 2");
    assert_eq!(unread(&mut h), 1);
    // Without the code at hand, the error still ends the execution.
    h.client(&[query("select 3")]);
    h.t.backend_unheld(b'E', &huge[..5], NotHeld::OverCap, now());
    h.server(&[b('Z', b"I")]);
    assert_eq!(
        h.events()[0].outcome,
        Outcome::Error {
            sqlstate: *b"XX000"
        }
    );
    assert!(h.t.is_idle());
}

#[test]
fn channel_binding_announced_after_a_stripped_offer_is_refused() {
    let offer = b('R', b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
    let initial =
        |flag: &[u8]| enc(|buf| fe::sasl_initial_response("SCRAM-SHA-256", flag, buf).unwrap());
    let tracker = |strip| {
        Tracker::new(
            SessionInfo::default(),
            TrackerLimits::default(),
            strip,
            now(),
        )
    };
    // The client would send `y`: it supports channel binding and sees no offer.
    let mut t = tracker(true);
    assert!(!t.frontend_inspects(b'p'));
    assert!(matches!(t.backend(&offer, now()), Verdict::Replace(_)));
    assert!(t.frontend_inspects(b'p'));
    match t.frontend(&initial(b"y,,n=,r=nonce"), now()) {
        Verdict::Refuse { kind, message } => {
            assert_eq!(kind.sqlstate(), "08P01");
            assert!(message.contains("channel_binding=disable"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Only the one message after the offer is read.
    assert!(!t.frontend_inspects(b'p'));
    // A client without channel binding goes through.
    let mut t = tracker(true);
    t.backend(&offer, now());
    assert_eq!(
        t.frontend(&initial(b"n,,n=,r=nonce"), now()),
        Verdict::Forward
    );
    // Nothing was stripped (plain upstream leg): the SASL messages are not read.
    let mut t = tracker(true);
    t.backend(&b('R', b"\0\0\0\x0aSCRAM-SHA-256\0\0"), now());
    assert!(!t.frontend_inspects(b'p'));
    assert_eq!(
        t.frontend(&initial(b"y,,n=,r=nonce"), now()),
        Verdict::Forward
    );
}

#[test]
fn the_offset_parameter_is_decoded_and_nothing_else() {
    let mut h = harness();
    let page = "SELECT id FROM posts ORDER BY id LIMIT $1 OFFSET $2";
    let replies = [
        b('1', b""),
        b('2', b""),
        row(),
        cc("SELECT 1"),
        b('Z', b"I"),
    ];
    // Text format, unnamed statement.
    h.client(&[
        parse("", page),
        bind("", "", &[Some("20"), Some("5000")]),
        execute(""),
        sync(),
    ]);
    h.server(&replies);
    // Binary int8, named statement, bound twice.
    h.client(&[
        parse("page", page),
        bind_binary("", "page", &[20, 40]),
        execute(""),
        sync(),
    ]);
    h.server(&replies);
    h.client(&[bind_binary("", "page", &[20, 123_456]), execute(""), sync()]);
    h.server(&replies[1..]);
    // No OFFSET parameter: a literal, a LIMIT only, or a NULL value.
    h.client(&[
        parse("", "SELECT id FROM posts ORDER BY id LIMIT $1 OFFSET 9000"),
        bind("", "", &[Some("5000")]),
        execute(""),
        sync(),
    ]);
    h.server(&replies);
    h.client(&[
        parse("", page),
        bind("", "", &[Some("20"), None]),
        execute(""),
        sync(),
    ]);
    h.server(&replies);
    h.client(&[query(
        "SELECT id FROM posts ORDER BY id LIMIT 20 OFFSET 7000",
    )]);
    h.server(&[row(), cc("SELECT 1"), b('Z', b"I")]);
    let offsets: Vec<Option<u64>> = h.events().iter().map(|e| e.offset).collect();
    assert_eq!(
        offsets,
        [Some(5000), Some(40), Some(123_456), None, None, None]
    );
}

fn not_analysed(h: &mut Harness) -> u64 {
    h.count(|e| matches!(e, Effect::NotAnalysed))
}

#[test]
fn statements_past_the_per_message_cap_are_counted_not_emitted() {
    let mut h = harness_with(
        TrackerLimits {
            max_statements_per_message: 2,
            ..TrackerLimits::default()
        },
        false,
    );
    h.client(&[query("select 1; select 2; select 3; select 4")]);
    let mut replies: Vec<Vec<u8>> = (0..4).map(|_| cc("SELECT 1")).collect();
    replies.push(b('Z', b"I"));
    h.server(&replies);
    let ev = h.events();
    assert_eq!(
        ev.iter().map(|e| e.statement_index).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(not_analysed(&mut h), 2);
    assert!(h.t.is_idle());
    // The cap is per message: the next Query starts over.
    h.client(&[query("select 5")]);
    h.server(&[cc("SELECT 1"), b('Z', b"I")]);
    assert_eq!(h.events().len(), 1);
    assert_eq!(not_analysed(&mut h), 2);
}

#[test]
fn messages_not_held_are_followed_but_not_analysed() {
    let mut h = harness();
    // Only the first bytes of each reach the tracker.
    let big_query = query(&format!("select '{}'", "x".repeat(100)));
    h.t.frontend_unheld(&big_query[..20], now());
    h.server(&[b('T', b"\0\0"), row(), cc("SELECT 1"), b('Z', b"I")]);
    assert!(h.events().is_empty());
    assert_eq!(not_analysed(&mut h), 1);
    assert!(h.t.is_idle());

    // A named Parse and a Bind not held: the replies still match, the
    // executions are counted, and a later whole Bind of the same statement
    // is still not analysed (its text is unknown).
    let big_parse = parse("s1", &format!("select '{}' where $1", "x".repeat(100)));
    h.t.frontend_unheld(&big_parse[..12], now());
    let big_bind = bind("", "s1", &[Some(&"y".repeat(100))]);
    h.t.frontend_unheld(&big_bind[..12], now());
    h.client(&[
        execute(""),
        bind("", "s1", &[Some("1")]),
        execute(""),
        sync(),
    ]);
    h.server(&[
        b('1', b""),
        b('2', b""),
        cc("SELECT 1"),
        b('2', b""),
        cc("SELECT 1"),
        b('Z', b"I"),
    ]);
    assert!(h.events().is_empty());
    assert_eq!(not_analysed(&mut h), 3);
    assert!(h.t.is_idle());

    // A Parse held whole afterwards is analysed again.
    h.client(&[
        parse("s1", "select 1"),
        bind("", "s1", &[]),
        execute(""),
        sync(),
    ]);
    h.server(&[b('1', b""), b('2', b""), cc("SELECT 1"), b('Z', b"I")]);
    assert_eq!(h.events().len(), 1);

    // A Bind whose names did not arrive: the tracker cannot follow; it
    // stops analysing instead of guessing.
    h.t.frontend_unheld(&big_bind[..7], now());
    assert_eq!(h.count(|e| matches!(e, Effect::Desynced)), 1);
}

#[test]
fn a_server_error_not_held_still_ends_its_statement() {
    let mut h = harness();
    h.client(&[
        parse("", "select 1"),
        bind("", "", &[]),
        execute(""),
        sync(),
    ]);
    let big_error = b(
        'E',
        format!("SERROR\0VERROR\0C22012\0M{}\0\0", "x".repeat(100)).as_bytes(),
    );
    h.server(&[b('1', b""), b('2', b"")]);
    h.t.backend_unheld(b'E', &big_error[..40], NotHeld::OverBudget, now());
    h.server(&[b('Z', b"I")]);
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].outcome,
        Outcome::Error {
            sqlstate: *b"22012"
        }
    );
    assert!(h.t.is_idle());
}

#[test]
fn large_texts_are_charged_to_the_budget_until_their_last_event_is_gone() {
    use crate::limits::{HeldBudget, UNCHARGED_BYTES};
    let budget = std::sync::Arc::new(HeldBudget::new(3 * UNCHARGED_BYTES));
    let mut h = harness();
    h.t = Tracker::new(
        SessionInfo::default(),
        TrackerLimits::default(),
        false,
        now(),
    )
    .with_budget(budget.clone());
    h.server(&[b('Z', b"I")]);
    let sql = format!("select '{}'; select 2", "x".repeat(2 * UNCHARGED_BYTES));
    h.client(&[query(&sql)]);
    assert_eq!(budget.held(), sql.len() as u64);
    // A second copy does not fit while the first is held: not analysed.
    h.client(&[query(&sql)]);
    h.server(&[cc("SELECT 1"), cc("SELECT 1"), b('Z', b"I")]);
    h.server(&[cc("SELECT 1"), cc("SELECT 1"), b('Z', b"I")]);
    assert_eq!(not_analysed(&mut h), 2);
    // The tracker is done with the text; its two events still hold it.
    let events = h.events();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.text_hold.is_some()));
    assert_eq!(budget.held(), sql.len() as u64);
    drop(events);
    assert_eq!(budget.held(), 0);
    // Small texts are never charged.
    h.client(&[query("select 1")]);
    assert_eq!(budget.held(), 0);
}

#[test]
fn the_first_ready_for_query_ends_startup_once() {
    // The connection gives its startup slot back on `Effect::Started`
    // (see `session::effects`).
    let mut h = Harness::new(Tracker::new(
        SessionInfo::default(),
        TrackerLimits::default(),
        false,
        now(),
    ));
    h.server(&[b('R', &[0, 0, 0, 0])]);
    assert_eq!(h.count(|e| matches!(e, Effect::Started)), 0);
    assert!(!h.t.is_started());
    h.server(&[b('Z', b"I")]);
    assert_eq!(h.count(|e| matches!(e, Effect::Started)), 1);
    assert!(h.t.is_started());
    h.client(&[query("select 1")]);
    h.server(&[cc("SELECT 1"), b('Z', b"I")]);
    assert_eq!(h.count(|e| matches!(e, Effect::Started)), 1);
}

#[test]
fn the_cancel_key_is_reported_for_the_connection_to_register() {
    let mut h = Harness::new(Tracker::new(
        SessionInfo::default(),
        TrackerLimits::default(),
        false,
        now(),
    ));
    h.server(&[b('R', &[0, 0, 0, 0]), b('K', &[0, 0, 1, 0, 9, 9, 9, 9])]);
    let keys: Vec<_> = h
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::BackendKey { pid, secret } => Some((*pid, secret.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(keys, [(256, vec![9, 9, 9, 9])]);
}

#[test]
fn the_tracker_and_the_scanner_do_no_io_read_no_clock_and_log_nothing() {
    // The agreement that keeps them testable, fuzzable and benchmarkable,
    // checked rather than reviewed: what they do is returned as effects.
    let sources = [
        ("tracker/mod.rs", include_str!("mod.rs")),
        ("tracker/frontend.rs", include_str!("frontend.rs")),
        ("tracker/backend.rs", include_str!("backend.rs")),
        ("tracker/suspended.rs", include_str!("suspended.rs")),
        ("tracker/effect.rs", include_str!("effect.rs")),
        ("tracker/inspect.rs", include_str!("inspect.rs")),
        ("wire/scan.rs", include_str!("../wire/scan.rs")),
    ];
    let forbidden = [
        "tokio",
        "tracing::",
        "crate::events",
        "crate::session",
        "crate::net",
        "StartupSlot",
        "CancelKeys",
        "Instant::now",
        "SystemTime::now",
        "static mut",
        "thread_local!",
        "LazyLock",
    ];
    for (file, source) in sources {
        // Unit tests below a file's `#[cfg(test)]` may read clocks.
        let code = source
            .split("#[cfg(test)]\nmod tests {")
            .next()
            .unwrap_or(source);
        for word in forbidden {
            assert!(!code.contains(word), "{file} uses `{word}`");
        }
    }
}
