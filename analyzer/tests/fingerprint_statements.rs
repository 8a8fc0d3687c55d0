//! Alias resolution, dropped names, statement kinds, tables and the JSON
//! shape, each a one-liner on top of `assert_same` / `assert_differs`.

mod fingerprint_support;

use fingerprint_support::{assert_differs, assert_normalized, assert_same, one};
use qproxy_analyzer::fingerprint::{fingerprint_sql, StatementKind};

// ------------------------------------------------------------ aliases

#[test]
fn table_aliases_are_resolved() {
    let base = "select u.id from users u where u.id = 1";
    assert_same(base, "select u1_0.id from users u1_0 where u1_0.id=5");
    assert_same(base, "SELECT users.id FROM users WHERE users.id = $1");
    assert_same(base, "select x.id from users as x where x.id = 3");
    assert_normalized(base, "SELECT users.id FROM users WHERE users.id = $1");
}

#[test]
fn aliases_resolve_in_joins_order_by_and_wildcards() {
    assert_same(
        "SELECT o.*, c.name FROM orders o JOIN customers c ON c.id = o.customer_id ORDER BY o.id",
        "SELECT orders.*, customers.name FROM orders JOIN customers ON customers.id = orders.customer_id ORDER BY orders.id",
    );
}

#[test]
fn self_joins_get_numbered_aliases() {
    assert_same(
        "SELECT e.id, m.id FROM emp e JOIN emp m ON m.id = e.boss",
        "select e1_0.id, m1_0.id from emp e1_0 join emp m1_0 on m1_0.id = e1_0.boss",
    );
    assert_differs(
        "SELECT e.id FROM emp e JOIN emp m ON m.id = e.boss",
        "SELECT e.id FROM emp e JOIN emp m ON e.id = m.boss",
    );
}

#[test]
fn correlated_subqueries_stay_unambiguous() {
    assert_normalized(
        "SELECT p.id FROM posts p WHERE EXISTS (SELECT 1 FROM posts q WHERE q.parent = p.id)",
        "SELECT posts.id FROM posts WHERE EXISTS (SELECT $1 FROM posts AS posts_1 WHERE posts_1.parent = posts.id)",
    );
}

#[test]
fn aliases_resolve_in_update_and_delete() {
    assert_same(
        "UPDATE users u SET name = 'x' WHERE u.id = 1",
        "UPDATE users SET name = $1 WHERE users.id = $2",
    );
    assert_same(
        "DELETE FROM users u USING orgs o WHERE u.org_id = o.id",
        "DELETE FROM users USING orgs WHERE users.org_id = orgs.id",
    );
}

#[test]
fn derived_table_aliases_are_kept() {
    assert_differs(
        "SELECT s.a FROM (SELECT a FROM t) s",
        "SELECT r.a FROM (SELECT a FROM t) r",
    );
}

// ------------------------------------------------------------ names and values dropped

#[test]
fn savepoint_names_are_dropped() {
    assert_same("SAVEPOINT a", "SAVEPOINT \"s1_x2\"");
    assert_same("RELEASE SAVEPOINT a", "RELEASE SAVEPOINT b");
    assert_same("ROLLBACK TO SAVEPOINT a", "ROLLBACK TO SAVEPOINT b");
    assert_differs("SAVEPOINT a", "RELEASE SAVEPOINT a");
}

#[test]
fn prepared_statement_names_are_dropped() {
    assert_same(
        "PREPARE a (int) AS SELECT $1",
        "PREPARE b (int) AS SELECT $1",
    );
    assert_same("EXECUTE a (1)", "EXECUTE b (2)");
    assert_same("DEALLOCATE a", "DEALLOCATE \"b\"");
    assert_differs("DEALLOCATE a", "DEALLOCATE ALL");
}

#[test]
fn cursor_names_are_dropped() {
    assert_same(
        "DECLARE c1 CURSOR FOR SELECT a FROM t",
        "DECLARE c2 CURSOR FOR SELECT a FROM t",
    );
    assert_same("FETCH 10 FROM c1", "FETCH 20 FROM c2");
    assert_same("CLOSE c1", "CLOSE c2");
}

#[test]
fn channel_names_are_dropped() {
    assert_same("LISTEN a", "LISTEN b");
    assert_same("UNLISTEN a", "UNLISTEN b");
    assert_differs("UNLISTEN a", "UNLISTEN *");
    assert_same("NOTIFY a, 'x'", "NOTIFY b, 'y'");
    assert_differs("NOTIFY a", "NOTIFY a, 'x'");
}

#[test]
fn set_values_are_dropped_but_names_kept() {
    assert_same("SET search_path TO public", "SET search_path = app, public");
    assert_same(
        "SET LOCAL statement_timeout = 0",
        "SET LOCAL statement_timeout TO '5s'",
    );
    assert_same("SET TIME ZONE 'UTC'", "SET TIME ZONE 'Europe/Paris'");
    assert_differs("SET search_path TO public", "SET statement_timeout TO 0");
    assert_differs(
        "SET statement_timeout = 0",
        "SET LOCAL statement_timeout = 0",
    );
}

// ------------------------------------------------------------ statements, kinds, tables

#[test]
fn several_statements_give_several_fingerprints() {
    let fps = fingerprint_sql("BEGIN; SELECT 1; ; UPDATE t SET a = 1 /* ; */; COMMIT");
    let kinds: Vec<_> = fps.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        vec![
            StatementKind::Begin,
            StatementKind::Select,
            StatementKind::Update,
            StatementKind::Commit
        ]
    );
    let indexes: Vec<_> = fps.iter().map(|f| f.statement_index).collect();
    assert_eq!(indexes, vec![0, 1, 2, 3]);
    assert!(fingerprint_sql("  -- nothing\n ; /* */ ").is_empty());
}

#[test]
fn one_bad_statement_does_not_spoil_the_others() {
    let fps = fingerprint_sql("SELECT 1; VACUUM ANALYZE t; SELECT 2");
    let fallbacks: Vec<_> = fps.iter().map(|f| f.fallback).collect();
    assert_eq!(fallbacks, vec![false, true, false]);
    assert_eq!(fps[0].id, fps[2].id);
}

#[test]
fn kinds() {
    use StatementKind as K;
    for (sql, kind) in [
        ("SELECT 1", K::Select),
        ("WITH x AS (SELECT 1) SELECT * FROM x", K::Select),
        (
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            K::Insert,
        ),
        ("INSERT INTO t VALUES (1)", K::Insert),
        ("UPDATE t SET a = 1", K::Update),
        ("DELETE FROM t", K::Delete),
        ("COPY t FROM STDIN", K::Copy),
        ("BEGIN", K::Begin),
        ("START TRANSACTION", K::Begin),
        ("COMMIT", K::Commit),
        ("ROLLBACK", K::Rollback),
        ("ROLLBACK TO SAVEPOINT a", K::Savepoint),
        ("SAVEPOINT a", K::Savepoint),
        ("SET a = 1", K::Set),
        ("RESET ALL", K::Set),
        ("SHOW search_path", K::Show),
        ("CREATE TABLE t (a int)", K::Ddl),
        ("CREATE INDEX i ON t (a)", K::Ddl),
        ("ALTER TABLE t ADD COLUMN b int", K::Ddl),
        ("DROP TABLE t", K::Ddl),
        ("TRUNCATE t", K::Ddl),
        ("PREPARE p AS SELECT 1", K::Prepare),
        ("EXECUTE p", K::Execute),
        ("DEALLOCATE p", K::Deallocate),
        ("DECLARE c CURSOR FOR SELECT 1", K::Cursor),
        ("LISTEN c", K::Notify),
        ("EXPLAIN SELECT 1", K::Explain),
        ("LOCK TABLE t", K::Other),
        ("VACUUM ANALYZE t", K::Other),
    ] {
        assert_eq!(one(sql).kind, kind, "{sql}");
    }
    assert!(K::Begin.is_transaction_control());
    assert!(K::Savepoint.is_transaction_control());
    assert!(!K::Select.is_transaction_control());
    assert!(K::Select.is_read());
    assert!(!K::Update.is_read());
}

#[test]
fn tables_in_order_of_appearance_without_ctes() {
    assert_eq!(
        one(
            "WITH recent AS (SELECT * FROM orders) SELECT (SELECT count(*) FROM audit), r.id \
             FROM public.users u JOIN recent r ON r.uid = u.id \
             WHERE u.id IN (SELECT user_id FROM \"Admins\") AND EXISTS (SELECT 1 FROM users)"
        )
        .tables,
        vec!["orders", "audit", "public.users", "Admins", "users"]
    );
    assert_eq!(
        one("INSERT INTO t (a) SELECT a FROM u").tables,
        vec!["t", "u"]
    );
    assert_eq!(
        one("SELECT * FROM generate_series(1, 3) g").tables,
        Vec::<String>::new()
    );
    assert_eq!(one("COPY s.t (a) FROM STDIN").tables, vec!["s.t"]);
    assert_eq!(one("DROP TABLE a, b").tables, vec!["a", "b"]);
}

#[test]
fn json_shape() {
    let fp = one("SELECT a FROM t WHERE b = 1");
    let json = serde_json::to_string(&fp).expect("serializes");
    assert_eq!(
        json,
        format!(
            r#"{{"fingerprint":"{}","normalized":"SELECT a FROM t WHERE b = $1","kind":"select","tables":["t"],"fallback":false,"statement_index":0}}"#,
            fp.id
        )
    );
}

#[test]
fn fingerprint_id_round_trips() {
    let fp = one("SELECT 1");
    let text = fp.id.to_string();
    assert_eq!(text.len(), 16);
    assert!(text
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(
        text.parse::<qproxy_analyzer::fingerprint::FingerprintId>(),
        Ok(fp.id)
    );
    assert!("xyz"
        .parse::<qproxy_analyzer::fingerprint::FingerprintId>()
        .is_err());
    let back: qproxy_analyzer::fingerprint::FingerprintId =
        serde_json::from_value(serde_json::to_value(fp.id).expect("serializes")).expect("parses");
    assert_eq!(back, fp.id);
}

#[test]
fn aliases_resolve_in_insert_and_locking_clauses() {
    assert_same(
        "INSERT INTO users AS u (id, n) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET n = u.n + 1 RETURNING u.id",
        "INSERT INTO users (id, n) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET n = users.n + $3 RETURNING users.id",
    );
    assert_same(
        "select j1_0.id from jobs j1_0 where j1_0.state=$1 for update of j1_0 skip locked",
        "SELECT jobs.id FROM jobs WHERE jobs.state = 'ready' FOR UPDATE OF jobs SKIP LOCKED",
    );
}
