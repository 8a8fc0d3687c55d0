//! Statement roles, request-id statements and multi-statement splitting.

mod correlation_support;

use correlation_support::Harness;
use qproxy_analyzer::correlation::statement::nth_statement;
use qproxy_analyzer::correlation::{
    request_id_signal, statement_role, RequestIdSignal, SetScope, StatementRole,
};
use qproxy_analyzer::event::TxStatus;

fn role(sql: &str) -> StatementRole {
    let mut h = Harness::default();
    let ev = h.stmt(1, sql).ev.clone();
    statement_role(&ev)
}

fn set(id: &str, scope: SetScope) -> Option<RequestIdSignal> {
    Some(RequestIdSignal::Set {
        id: id.into(),
        scope,
    })
}

#[test]
fn roles_from_text_and_tag() {
    use StatementRole::*;
    for (sql, want) in [
        ("SELECT * FROM users WHERE id = $1", Normal),
        ("INSERT INTO t VALUES (1)", Normal),
        ("BEGIN", TransactionControl),
        ("begin isolation level serializable", TransactionControl),
        ("START TRANSACTION READ ONLY", TransactionControl),
        ("COMMIT", TransactionControl),
        ("END", TransactionControl),
        ("ROLLBACK", TransactionControl),
        ("ABORT", TransactionControl),
        ("SAVEPOINT \"s1_x\"", TransactionControl),
        ("RELEASE SAVEPOINT s1", TransactionControl),
        ("ROLLBACK TO SAVEPOINT s1", TransactionControl),
        ("PREPARE TRANSACTION 'gid'", TransactionControl),
        ("COMMIT PREPARED 'gid'", TransactionControl),
        ("/* leading */ -- line\n commit", TransactionControl),
        ("SET TIME ZONE 'UTC'", SessionSetting),
        ("SET search_path TO public", SessionSetting),
        ("SHOW transaction_isolation", SessionSetting),
        ("RESET ALL", SessionSetting),
        ("DISCARD ALL", SessionSetting),
        ("DEALLOCATE pdo_stmt_1", SessionSetting),
        (
            "SELECT pg_catalog.set_config('search_path', '', false)",
            SessionSetting,
        ),
        ("SHOW qproxy.request_id", SessionSetting),
        ("SET qproxy.request_id = 'abc'", Correlation),
        ("SET LOCAL qproxy.request_id TO 'abc'", Correlation),
        ("RESET qproxy.request_id", Correlation),
        (
            "SELECT set_config('qproxy.request_id', 'abc', false)",
            Correlation,
        ),
        ("SELECT current_setting('qproxy.request_id')", Normal),
    ] {
        assert_eq!(role(sql), want, "{sql}");
    }
}

#[test]
fn failed_set_is_not_a_correlation_statement() {
    let mut h = Harness::default();
    let ev = h
        .stmt(1, "SET qproxy.request_id = 'abc'")
        .failed()
        .ev
        .clone();
    assert_eq!(statement_role(&ev), StatementRole::SessionSetting);
}

#[test]
fn set_forms() {
    use SetScope::*;
    let p: &[Option<u64>] = &[];
    for (sql, want) in [
        ("SET qproxy.request_id = 'abc'", set("abc", Session)),
        ("set QPROXY.REQUEST_ID to 'abc'", set("abc", Session)),
        ("SET SESSION qproxy.request_id = 'abc'", set("abc", Session)),
        ("SET LOCAL qproxy.request_id TO 'abc'", set("abc", Local)),
        ("SET qproxy.request_id = abc123", set("abc123", Session)),
        ("SET qproxy.request_id = 42", set("42", Session)),
        ("SET \"qproxy.request_id\" = 'q'", set("q", Session)),
        ("SET qproxy.request_id = 'it''s'", set("it's", Session)),
        ("SET qproxy.request_id = E'a\\'b'", set("a'b", Session)),
        ("/* by app */ SET qproxy.request_id='x' ", set("x", Session)),
        (
            "SET qproxy.request_id TO DEFAULT",
            Some(RequestIdSignal::Clear),
        ),
        ("SET qproxy.request_id = ''", Some(RequestIdSignal::Clear)),
        ("RESET qproxy.request_id", Some(RequestIdSignal::Clear)),
        (
            "SELECT set_config('qproxy.request_id', 'abc', false)",
            set("abc", Session),
        ),
        (
            "select pg_catalog.set_config( 'qproxy.request_id' , 'abc'::text , true )",
            set("abc", Local),
        ),
        (
            "SELECT set_config('qproxy.request_id', 'abc', 't')",
            set("abc", Local),
        ),
        (
            "SELECT 1, set_config('qproxy.request_id', 'abc', false) AS x",
            set("abc", Session),
        ),
        (
            "SELECT set_config('qproxy.request_id', NULL, false)",
            Some(RequestIdSignal::Clear),
        ),
        (
            "SELECT set_config('qproxy.request_id', '', true)",
            Some(RequestIdSignal::Clear),
        ),
        // Not recognised: other settings, expressions, reads, truncation.
        ("SET qproxy.other = 'abc'", None),
        ("SET qproxy.request_idx = 'abc'", None),
        (
            "SELECT set_config('qproxy.request_id', 'a' || 'b', false)",
            None,
        ),
        (
            "SELECT reset_config('qproxy.request_id', 'abc', false)",
            None,
        ),
        ("SELECT current_setting('qproxy.request_id')", None),
        ("SHOW qproxy.request_id", None),
        ("SET qproxy.request_id =", None),
        ("SELECT set_config('qproxy.request_id', 'abc'", None),
    ] {
        assert_eq!(request_id_signal(sql, p), want, "{sql}");
    }
}

#[test]
fn set_config_with_bind_parameter_uses_its_hash() {
    let sql = "SELECT set_config('qproxy.request_id', $1, false)";
    assert_eq!(
        request_id_signal(sql, &[Some(0xabc)]),
        set("param:0000000000000abc", SetScope::Session)
    );
    assert_eq!(request_id_signal(sql, &[None]), None);
    assert_eq!(request_id_signal(sql, &[]), None);
    let local_param = "SELECT set_config('qproxy.request_id', $2, $1)";
    assert_eq!(
        request_id_signal(local_param, &[Some(1), Some(2)]),
        set("param:0000000000000002", SetScope::Session)
    );
}

#[test]
fn splits_multi_statement_queries_like_postgres() {
    let sql = "SET qproxy.request_id = 'a;b'; SELECT ';' AS \"x;y\" -- c;\n; ; /* ; */ SELECT $$;$$, $f$ ; $f$, $1;SELECT E'\\';'";
    assert_eq!(nth_statement(sql, 0), Some("SET qproxy.request_id = 'a;b'"));
    assert_eq!(
        nth_statement(sql, 1),
        Some(" SELECT ';' AS \"x;y\" -- c;\n")
    );
    assert_eq!(
        nth_statement(sql, 2),
        Some(" ; /* ; */ SELECT $$;$$, $f$ ; $f$, $1").map(|s| &s[2..])
    );
    assert_eq!(nth_statement(sql, 3), Some("SELECT E'\\';'"));
    assert_eq!(nth_statement(sql, 4), None);
    assert_eq!(nth_statement("", 0), None);
    assert_eq!(nth_statement("  ;  ", 0), None);
    assert_eq!(nth_statement("SELECT 1;", 1), None);
}

#[test]
fn roles_of_multi_statement_parts() {
    let mut h = Harness::default();
    let placed = h.run_multi(
        1,
        "BEGIN; SET LOCAL qproxy.request_id = 'm'; SELECT 1; COMMIT",
        4,
    );
    let roles: Vec<_> = placed.iter().map(|p| p.role).collect();
    use StatementRole::*;
    assert_eq!(
        roles,
        [TransactionControl, Correlation, Normal, TransactionControl]
    );
}

#[test]
fn rollback_to_savepoint_keeps_the_transaction() {
    let mut h = Harness::default();
    let begin = h.run(1, "BEGIN");
    h.run(1, "SAVEPOINT s1");
    h.run(1, "ROLLBACK TO SAVEPOINT s1");
    let after = h.run(1, "SELECT 1");
    assert_eq!(begin.id, after.id);
    // ... while a plain ROLLBACK ends it.
    h.run(1, "ROLLBACK");
    assert_ne!(
        h.stmt(1, "SELECT 2").status(TxStatus::Idle).run().id,
        begin.id
    );
}
