//! Correlator behaviour on synthetic event streams: each precedence source,
//! the fallbacks, ending rules, prepared statements and the caps.

mod correlation_support;

use std::time::Duration;

use correlation_support::Harness;
use qproxy_analyzer::correlation::{
    CorrelationConfig, CorrelationSource as Src, EndReason, StatementRole,
};
use qproxy_analyzer::event::TxStatus;

const GRACE_MS: u64 = 2_100;

fn tagged(sql: &str, id: &str) -> String {
    format!("{sql} /*request_id='{id}'*/")
}

#[test]
fn comment_request_id_groups_and_a_new_id_starts_a_new_context() {
    let mut h = Harness::default();
    let a1 = h.run(1, &tagged("SELECT * FROM users WHERE id = 1", "r1"));
    let a2 = h.run(1, &tagged("SELECT * FROM posts WHERE user_id = 1", "r1"));
    assert_eq!(
        (a1.id, a1.source, a1.request_id.as_deref()),
        (a2.id, Src::Comment, Some("r1"))
    );
    let b = h.run(1, &tagged("SELECT 1", "r2"));
    assert_ne!(b.id, a1.id);
    assert_eq!(b.request_id.as_deref(), Some("r2"));
    // r1 may still continue on another pooled connection for the grace period.
    assert!(h.ended().is_empty());
    h.sleep_ms(GRACE_MS);
    h.expire();
    let ended = h.ended();
    assert_eq!(ended.len(), 1, "r2 is still its connection's request");
    assert_eq!(ended[0].request.request_id.as_deref(), Some("r1"));
    assert_eq!((ended[0].statements, ended[0].work_statements), (2, 2));
    assert_eq!(ended[0].reason, EndReason::Released);
}

#[test]
fn current_request_ends_at_idle_timeout() {
    let mut h = Harness::default();
    h.run(1, &tagged("SELECT 1", "r1"));
    h.sleep_ms(GRACE_MS);
    h.expire();
    assert!(h.ended().is_empty());
    h.sleep_ms(30_000);
    h.expire();
    assert_eq!(
        h.ended_summary(),
        [(
            "r1".into(),
            EndReason::IdleTimeout,
            vec!["SELECT 1 /*request_id='r1'*/".into()]
        )]
    );
}

#[test]
fn trace_id_names_the_request_and_aliases_with_request_id() {
    let mut h = Harness::default();
    let tp = "traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'";
    let a = h.run(1, &format!("SELECT 1 /*{tp}*/"));
    assert_eq!(a.source, Src::Comment);
    assert_eq!(a.request_id, None);
    assert_eq!(
        a.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    let b = h.run(1, &format!("SELECT 2 /*request_id='r9',{tp}*/"));
    assert_eq!(b.id, a.id);
    assert_eq!(b.request_id.as_deref(), Some("r9"));
    let c = h.run(2, "SELECT 3 /*request_id='r9'*/");
    assert_eq!(c.id, a.id, "request id now finds the trace's context");
}

#[test]
fn untagged_statements_stay_in_the_tagged_request_until_a_gap() {
    let mut h = Harness::default();
    // psycopg2 sends BEGIN/COMMIT itself, without the middleware's comment.
    let begin = h.run(1, "BEGIN");
    let a = h.run(1, &tagged("SELECT * FROM cart", "r1"));
    let insert = h.run(1, "INSERT INTO audit VALUES (1)");
    let commit = h.run(1, "COMMIT");
    assert_eq!(begin.source, Src::Transaction);
    assert_eq!((insert.id, commit.id), (a.id, a.id));
    let raw = h.run(1, "SELECT now()");
    assert_eq!(raw.id, a.id);
    h.sleep_ms(300);
    let later = h.run(1, "SELECT now()");
    assert_eq!(later.source, Src::IdleGap);
    let ended = h.ended_summary();
    assert_eq!(
        ended,
        [(
            "transaction".into(),
            EndReason::RequestChanged,
            vec!["BEGIN".into()]
        )]
    );
}

#[test]
fn set_session_variable_names_the_request_until_reset() {
    let mut h = Harness::default();
    let set = h.run(1, "SET qproxy.request_id = 'abc'");
    assert_eq!(
        (set.source, set.role, set.request_id.as_deref()),
        (Src::SetVariable, StatementRole::Correlation, Some("abc"))
    );
    h.sleep_ms(5_000); // a session value survives gaps
    let q = h.run(1, "SELECT * FROM items");
    assert_eq!(q.id, set.id);
    let reset = h.run(1, "RESET qproxy.request_id");
    assert_eq!((reset.id, reset.role), (set.id, StatementRole::Correlation));
    let after = h.run(1, "SELECT 1");
    assert_eq!(after.source, Src::IdleGap);
    let set2 = h.run(1, "SET qproxy.request_id TO 'def'");
    assert_ne!(set2.id, set.id);
    let default = h.run(1, "SET qproxy.request_id TO DEFAULT");
    assert_eq!(default.id, set2.id);
    assert_eq!(h.run(1, "SELECT 2").source, Src::IdleGap);
}

#[test]
fn set_local_ends_at_commit() {
    let mut h = Harness::default();
    h.run(1, "BEGIN");
    let set = h.run(1, "SET LOCAL qproxy.request_id = 'tx-1'");
    let q = h.run(1, "SELECT 1");
    let commit = h.run(1, "COMMIT");
    assert_eq!((q.id, commit.id), (set.id, set.id));
    let after = h.run(1, "SELECT 2");
    assert_ne!(after.id, set.id);
    assert_eq!(after.source, Src::IdleGap);
    h.sleep_ms(GRACE_MS);
    h.expire();
    let ended = h.ended_summary();
    let tx1 = ended.iter().find(|(name, _, _)| name == "tx-1").unwrap();
    assert_eq!(
        tx1.2,
        ["SET LOCAL qproxy.request_id = 'tx-1'", "SELECT 1", "COMMIT"]
    );
}

#[test]
fn set_config_local_and_parameter_forms() {
    let mut h = Harness::default();
    h.run(1, "BEGIN");
    let s = h.run(1, "SELECT set_config('qproxy.request_id', 'lit', true)");
    assert_eq!(
        (s.source, s.role, s.request_id.as_deref()),
        (Src::SetVariable, StatementRole::Correlation, Some("lit"))
    );
    h.run(1, "ROLLBACK");
    assert_eq!(h.run(1, "SELECT 1").source, Src::IdleGap);

    // Extended protocol: the id is a bind parameter; equal hashes, one request.
    let p1 = h
        .stmt(2, "SELECT set_config('qproxy.request_id', $1, false)")
        .params(&[Some(7)])
        .run();
    assert_eq!(p1.request_id.as_deref(), Some("param:0000000000000007"));
    let p2 = h
        .stmt(3, "SELECT set_config('qproxy.request_id', $1, false)")
        .params(&[Some(7)])
        .run();
    assert_eq!(p2.id, p1.id, "same id from two connections is one request");
}

#[test]
fn application_name_names_requests_only_when_it_changes() {
    let mut h = Harness::default();
    h.set_app(1, "myapp");
    let a = h.run(1, "SELECT 1");
    assert_eq!(
        a.source,
        Src::IdleGap,
        "a static application_name says nothing"
    );
    h.run(1, "SET application_name = 'req-1'");
    h.set_app(1, "req-1");
    let r1 = h.run(1, "SELECT 2");
    let r1b = h.run(1, "SELECT 3");
    assert_eq!(
        (r1.source, r1.request_id.as_deref(), r1b.id),
        (Src::ApplicationName, Some("req-1"), r1.id)
    );
    h.set_app(1, "req-2");
    let r2 = h.run(1, "SELECT 4");
    assert_ne!(r2.id, r1.id);
    h.set_app(1, "myapp");
    assert_eq!(h.run(1, "SELECT 5").source, Src::IdleGap);
    let ended = h.ended_summary();
    assert_eq!(
        ended[1],
        (
            "req-1".into(),
            EndReason::RequestChanged,
            vec!["SELECT 2".into(), "SELECT 3".into()]
        )
    );
    assert_eq!(ended[2].0, "req-2");
}

#[test]
fn precedence_comment_over_set_over_application_name() {
    let mut h = Harness::default();
    h.set_app(1, "base");
    h.run(1, "SELECT 0");
    h.set_app(1, "app-req");
    assert_eq!(h.run(1, "SELECT 1").source, Src::ApplicationName);
    assert_eq!(
        h.run(1, "SET qproxy.request_id = 's'").source,
        Src::SetVariable
    );
    assert_eq!(h.run(1, "SELECT 2").source, Src::SetVariable);
    let c = h.run(1, &tagged("SELECT 3", "c"));
    assert_eq!(
        (c.source, c.request_id.as_deref()),
        (Src::Comment, Some("c"))
    );
    assert_eq!(h.run(1, "SELECT 4").request_id.as_deref(), Some("s"));
}

#[test]
fn transaction_fallback() {
    let mut h = Harness::default();
    let pre = h.run(1, "SELECT 0");
    let begin = h.run(1, "BEGIN");
    assert_eq!(begin.source, Src::Transaction);
    assert_ne!(begin.id, pre.id);
    h.sleep_ms(1_000); // a slow transaction is still one transaction
    h.run(1, "SAVEPOINT s1");
    h.run(1, "SELECT 1");
    h.run(1, "RELEASE SAVEPOINT s1");
    let commit = h.run(1, "COMMIT");
    assert_eq!(commit.id, begin.id);
    let post = h.run(1, "SELECT 2");
    assert_eq!(post.source, Src::IdleGap);
    let ended = h.ended_summary();
    assert_eq!(ended[0].1, EndReason::RequestChanged);
    assert_eq!(ended[1].0, "transaction");
    assert_eq!(ended[1].1, EndReason::TransactionEnded);
    assert_eq!(ended[1].2.len(), 5);
}

#[test]
fn pipelined_begin_and_missed_commit() {
    let mut h = Harness::default();
    // JDBC: BEGIN and the first query share one Sync, both report Idle.
    let begin = h.stmt(1, "BEGIN").status(TxStatus::Idle).run();
    let first = h.stmt(1, "SELECT 1").status(TxStatus::Idle).run();
    let second = h.run(1, "SELECT 2");
    assert_eq!((first.id, second.id), (begin.id, begin.id));
    // The COMMIT event was dropped: the status change to Idle ends it.
    h.stmt(1, "SELECT 3").run();
    let after = h.stmt(1, "SELECT 4").status(TxStatus::Idle).run();
    assert_ne!(after.id, begin.id);
    assert_eq!(after.source, Src::IdleGap);
}

#[test]
fn idle_gaps_split_untagged_traffic() {
    let mut h = Harness::default();
    let a = h.run(1, "SELECT 1");
    h.sleep_ms(200);
    assert_eq!(h.run(1, "SELECT 2").id, a.id, "under the 250 ms gap");
    h.sleep_ms(260);
    let b = h.run(1, "SELECT 3");
    assert_ne!(b.id, a.id);
    let ended = h.ended_summary();
    assert_eq!(
        ended,
        [(
            "idle_gap".into(),
            EndReason::IdleGap,
            vec!["SELECT 1".into(), "SELECT 2".into()]
        )]
    );
    h.sleep_ms(GRACE_MS);
    h.expire();
    assert_eq!(h.ended_summary()[0].1, EndReason::IdleGap);
}

#[test]
fn route_change_splits_untagged_requests() {
    let mut h = Harness::default();
    let a = h.run(1, "SELECT 1 /*action='index',controller='users'*/");
    assert_eq!(
        (a.source, a.route.as_deref()),
        (Src::IdleGap, Some("users#index"))
    );
    assert_eq!(h.run(1, "SELECT 2").id, a.id);
    let b = h.run(1, "SELECT 3 /*action='show',controller='posts'*/");
    assert_ne!(b.id, a.id);
    assert_eq!(b.route.as_deref(), Some("posts#show"));
}

#[test]
fn statement_prepared_in_one_request_joins_the_next() {
    let mut h = Harness::default();
    let parse_text = tagged("SELECT * FROM users WHERE id = $1", "A");
    let a1 = h.stmt(1, &parse_text).named("s1").params(&[Some(1)]).run();
    let a2 = h.stmt(1, &parse_text).named("s1").params(&[Some(2)]).run();
    assert_eq!((a1.request_id.as_deref(), a2.id), (Some("A"), a1.id));
    // Request B starts with a freshly tagged statement on the same connection.
    let b = h.run(1, &tagged("SELECT * FROM orders", "B"));
    let reuse = h.stmt(1, &parse_text).named("s1").params(&[Some(3)]).run();
    assert_eq!(reuse.id, b.id, "cached statement must not drag B into A");
    assert_eq!(h.c.stats().stale_tags_ignored, 1);
    // Request C names itself with SET; the cached statement follows it too.
    h.run(1, "SET qproxy.request_id = 'C'");
    let reuse_c = h.stmt(1, &parse_text).named("s1").params(&[Some(4)]).run();
    assert_eq!(reuse_c.request_id.as_deref(), Some("C"));
}

#[test]
fn prepared_statement_keeps_parse_tags_until_another_source_applies() {
    let mut h = Harness::default();
    let parse_text = tagged("SELECT * FROM users WHERE id = $1", "A");
    let a = h.stmt(1, &parse_text).named("s1").run();
    h.sleep_ms(300);
    // Untagged work since is not a newer tag source: the Parse tags still apply.
    assert_eq!(h.stmt(1, &parse_text).named("s1").run().id, a.id);
    // Re-prepared under the same name with other tags: fresh.
    let b_text = tagged("SELECT * FROM users WHERE id = $1", "B");
    assert_eq!(
        h.stmt(1, &b_text).named("s1").run().request_id.as_deref(),
        Some("B")
    );
    // DISCARD ALL drops statements and ends the request.
    h.run(1, "DISCARD ALL");
    let again = h.stmt(1, &parse_text).named("s1").run();
    assert_eq!(again.request_id.as_deref(), Some("A"));
}

#[test]
fn interleaved_requests_on_two_connections_never_mix() {
    let mut h = Harness::default();
    let mut ids = [vec![], vec![]];
    for i in 0..6 {
        ids[0].push(h.run(1, &tagged(&format!("SELECT {i}"), "r1")).id);
        ids[1].push(h.run(2, &tagged(&format!("SELECT {i}"), "r2")).id);
    }
    assert!(ids[0].iter().all(|id| *id == ids[0][0]));
    assert!(ids[1].iter().all(|id| *id == ids[1][0]));
    assert_ne!(ids[0][0], ids[1][0]);
    // Untagged: per connection.
    let u1 = h.run(3, "SELECT 1");
    let u2 = h.run(4, "SELECT 1");
    assert_eq!(h.run(3, "SELECT 2").id, u1.id);
    assert_ne!(u1.id, u2.id);
}

#[test]
fn one_request_id_across_pooled_connections_is_one_context() {
    let mut h = Harness::default();
    // node-postgres Pool.query: each query may take another connection.
    let a = h.run(1, &tagged("SELECT 1", "req"));
    let other = h.run(1, &tagged("SELECT 1", "other"));
    let b = h.run(2, &tagged("SELECT 2", "req"));
    let c = h.run(3, &tagged("SELECT 3", "req"));
    assert_eq!((b.id, c.id), (a.id, a.id));
    assert_ne!(other.id, a.id);
    h.close(2);
    assert!(h.ended().is_empty(), "connection 3 still uses it");
    h.close(3);
    let ended = h.ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].reason, EndReason::ConnectionClosed);
    assert_eq!(ended[0].statements, 3);
    assert_eq!(ended[0].connections.as_slice(), [1, 2, 3]);
}

#[test]
fn connection_close_ends_its_contexts() {
    let mut h = Harness::default();
    h.run(1, &tagged("SELECT 1", "r1"));
    h.run(2, "BEGIN");
    h.run(2, "SELECT 1");
    h.close(1);
    h.close(2);
    let ended = h.ended_summary();
    assert_eq!(ended.len(), 2);
    assert!(ended
        .iter()
        .all(|(_, reason, _)| *reason == EndReason::ConnectionClosed));
    assert_eq!(h.c.live_contexts(), 0);
    h.close(99); // unknown: nothing happens
}

#[test]
fn live_contexts_are_capped() {
    let config = CorrelationConfig {
        max_contexts: 3,
        ..CorrelationConfig::default()
    };
    let mut h = Harness::with_config(config);
    for (conn, id) in [(1, "r1"), (1, "r2"), (2, "r3"), (2, "r4")] {
        h.run(conn, &tagged("SELECT 1", id));
    }
    assert_eq!(h.c.live_contexts(), 3);
    let ended = h.ended_summary();
    assert_eq!(
        ended,
        [(
            "r1".into(),
            EndReason::Evicted,
            vec!["SELECT 1 /*request_id='r1'*/".into()]
        )]
    );
    assert_eq!(h.c.stats().contexts_evicted, 1);
    // Connection states are capped the same way; the oldest is forgotten.
    for conn in 5..=50 {
        h.run(conn, "SELECT 1");
    }
    assert!(h.c.live_contexts() <= 3);
}

#[test]
fn ended_queue_is_bounded_when_never_drained() {
    let config = CorrelationConfig {
        max_contexts: 2,
        ..CorrelationConfig::default()
    };
    let mut h = Harness::with_config(config);
    for i in 0..10 {
        h.run(1, &tagged("SELECT 1", &format!("r{i}")));
    }
    h.c.finish_all();
    assert_eq!(h.ended().len(), 2);
    assert!(h.c.stats().ended_dropped > 0);
}

#[test]
fn multi_statement_query_parts() {
    let mut h = Harness::default();
    let parts = h.run_multi(1, "SET qproxy.request_id = 'm1'; SELECT 1; SELECT 2", 3);
    assert!(parts.iter().all(|p| p.request_id.as_deref() == Some("m1")));
    // SET LOCAL outside a transaction block holds for its own query string only.
    let local = h.run_multi(2, "SET LOCAL qproxy.request_id = 'l1'; SELECT 1", 2);
    assert_eq!(local[1].request_id.as_deref(), Some("l1"));
    assert_eq!(h.run(2, "SELECT 2").request_id, None);
}

#[test]
fn stats_and_shutdown() {
    let mut h = Harness::default();
    h.run(1, &tagged("SELECT 1", "r"));
    h.run(1, &tagged("SELECT 2", "r"));
    h.run(2, "SELECT 1");
    h.run(2, "SELECT 2");
    let stats = h.c.stats();
    assert_eq!((stats.events, stats.correlated), (4, 2));
    assert!((stats.correlated_fraction() - 0.5).abs() < 1e-9);
    h.c.finish_all();
    let ended = h.ended();
    assert_eq!(ended.len(), 2);
    assert!(ended.iter().all(|e| e.reason == EndReason::Shutdown));
    assert_eq!(h.c.stats().contexts_ended, 2);
    assert!(ended[0].started_at <= ended[0].ended_at);
    assert_eq!(
        ended[0]
            .ended_at
            .duration_since(ended[0].started_at)
            .unwrap(),
        Duration::from_millis(3)
    );
}

#[test]
fn config_deserializes_with_units() {
    let c: CorrelationConfig = serde_json::from_str(
        r#"{"idle_gap":"100ms","request_grace":3000,"context_idle_timeout":"1m"}"#,
    )
    .unwrap();
    assert_eq!(c.idle_gap, Duration::from_millis(100));
    assert_eq!(c.request_grace, Duration::from_secs(3));
    assert_eq!(c.context_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.max_contexts, 10_000);
    assert!(serde_json::from_str::<CorrelationConfig>(r#"{"idle_gap":"soon"}"#).is_err());
    assert!(serde_json::from_str::<CorrelationConfig>(r#"{"idle_gapp":1}"#).is_err());
}
