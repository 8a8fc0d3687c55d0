//! One test per normalization rule, each a one-liner on top of
//! `assert_same` / `assert_differs`.

use qproxy_analyzer::fingerprint::{fingerprint_sql, Fingerprint, StatementKind};

fn one(sql: &str) -> Fingerprint {
    let mut fps = fingerprint_sql(sql);
    assert_eq!(fps.len(), 1, "expected one statement in {sql:?}: {fps:#?}");
    fps.remove(0)
}

/// Both statements parse and share a fingerprint.
#[track_caller]
fn assert_same(a: &str, b: &str) {
    let (fa, fb) = (one(a), one(b));
    assert!(!fa.fallback, "fallback for {a:?}");
    assert!(!fb.fallback, "fallback for {b:?}");
    assert_eq!(
        fa.id, fb.id,
        "\n  {a}\n  {b}\nnormalize differently:\n  {}\n  {}",
        fa.normalized, fb.normalized
    );
}

/// Both statements parse and their fingerprints differ.
#[track_caller]
fn assert_differs(a: &str, b: &str) {
    let (fa, fb) = (one(a), one(b));
    assert!(!fa.fallback, "fallback for {a:?}");
    assert!(!fb.fallback, "fallback for {b:?}");
    assert_ne!(fa.id, fb.id, "both normalize to {}", fa.normalized);
}

/// The statement parses and normalizes to `expected`.
#[track_caller]
fn assert_normalized(sql: &str, expected: &str) {
    let fp = one(sql);
    assert!(!fp.fallback, "fallback for {sql:?}");
    assert_eq!(&*fp.normalized, expected);
}

// ------------------------------------------------------------ literals

#[test]
fn numbers_become_placeholders() {
    assert_same(
        "SELECT * FROM t WHERE a = 1",
        "SELECT * FROM t WHERE a = 2.5e10",
    );
}

#[test]
fn strings_of_every_flavour_become_placeholders() {
    let base = "SELECT * FROM t WHERE a = 'x'";
    for other in [
        "SELECT * FROM t WHERE a = E'y\\n'",
        "SELECT * FROM t WHERE a = $$z$$",
        "SELECT * FROM t WHERE a = $tag$it's$tag$",
        "SELECT * FROM t WHERE a = U&'d\\0061t'",
        "SELECT * FROM t WHERE a = 'it''s'",
    ] {
        assert_same(base, other);
    }
}

#[test]
fn booleans_and_null_are_literals() {
    assert_same(
        "SELECT * FROM t WHERE a = true",
        "SELECT * FROM t WHERE a = $1",
    );
    assert_same(
        "INSERT INTO t (a) VALUES (NULL)",
        "INSERT INTO t (a) VALUES ($1)",
    );
}

#[test]
fn is_null_is_syntax_not_a_literal() {
    assert_differs(
        "SELECT * FROM t WHERE a IS NULL",
        "SELECT * FROM t WHERE a = $1",
    );
    assert_differs(
        "SELECT * FROM t WHERE a IS NULL",
        "SELECT * FROM t WHERE a IS NOT NULL",
    );
}

#[test]
fn parameters_and_literals_are_the_same_placeholder() {
    assert_same(
        "SELECT * FROM t WHERE a = $1",
        "SELECT * FROM t WHERE a = 'v'",
    );
    assert_same(
        "SELECT * FROM t WHERE a = $7",
        "SELECT * FROM t WHERE a = $1",
    );
}

#[test]
fn casts_of_placeholders_collapse() {
    let base = "SELECT * FROM t WHERE a = $1";
    assert_same(base, "SELECT * FROM t WHERE a = $1::int");
    assert_same(base, "SELECT * FROM t WHERE a = CAST($1 AS int)");
    assert_same(base, "SELECT * FROM t WHERE a = 'x'::text");
    assert_same(
        base,
        "SELECT * FROM t WHERE a = '2024-01-01'::date::timestamptz",
    );
    assert_same(base, "SELECT * FROM t WHERE a = DATE '2024-01-01'");
    assert_same(base, "SELECT * FROM t WHERE a = -5");
    assert_same(base, "SELECT * FROM t WHERE a = (5)");
}

#[test]
fn casts_of_columns_stay() {
    assert_differs(
        "SELECT * FROM t WHERE a::text = $1",
        "SELECT * FROM t WHERE a = $1",
    );
}

#[test]
fn placeholders_are_numbered_in_order() {
    assert_normalized(
        "SELECT a FROM t WHERE b = $2 AND c = 'x' AND d = $1 LIMIT 5",
        "SELECT a FROM t WHERE b = $1 AND c = $2 AND d = $3 LIMIT $4",
    );
}

#[test]
fn literal_hashes_tell_values_apart_without_keeping_them() {
    let a = one("SELECT * FROM t WHERE a = 1 AND b = 'x'");
    let b = one("SELECT * FROM t WHERE a = 2 AND b = 'x'");
    let c = one("SELECT * FROM t WHERE a = 1 AND b = 'x'");
    let neg = one("SELECT * FROM t WHERE a = -1 AND b = 'x'");
    assert_eq!(a.id, b.id);
    assert_eq!(a.literal_hashes.len(), 2);
    assert_ne!(a.literal_hashes, b.literal_hashes);
    assert_eq!(a.literal_hashes, c.literal_hashes);
    assert_ne!(a.literal_hashes, neg.literal_hashes);
    assert!(one("SELECT * FROM t WHERE a = $1")
        .literal_hashes
        .is_empty());
}

#[test]
fn no_string_value_survives() {
    for sql in [
        "COMMENT ON TABLE t IS 'secret note'",
        "NOTIFY ch, 'secret payload'",
        "ALTER USER bob WITH PASSWORD 'hunter2'",
        "CREATE TABLE t (a text DEFAULT 'secret')",
        "SELECT 'secret' AS x",
    ] {
        let fp = one(sql);
        assert!(
            !fp.normalized.contains("secret"),
            "{sql} → {}",
            fp.normalized
        );
        assert!(
            !fp.normalized.contains("hunter2"),
            "{sql} → {}",
            fp.normalized
        );
    }
}

// ------------------------------------------------------------ lists

#[test]
fn in_lists_collapse_and_equal_any() {
    let base = "SELECT * FROM t WHERE a IN (1, 2, 3)";
    assert_same(base, "SELECT * FROM t WHERE a IN ($1)");
    assert_same(base, "SELECT * FROM t WHERE a IN ($1, $2, $3, $4, $5)");
    assert_same(base, "SELECT * FROM t WHERE a = ANY($1)");
    assert_same(base, "SELECT * FROM t WHERE a = ANY($1::int[])");
    assert_same(base, "SELECT * FROM t WHERE a = ANY(ARRAY[$1, $2])");
    assert_same(base, "SELECT * FROM t WHERE a = ANY(ARRAY[1, 2]::bigint[])");
    assert_same(base, "SELECT * FROM t WHERE a = ANY('{1,2,3}')");
}

#[test]
fn not_in_equals_all() {
    assert_same(
        "SELECT * FROM t WHERE a NOT IN (1, 2)",
        "SELECT * FROM t WHERE a <> ALL($1)",
    );
    assert_differs(
        "SELECT * FROM t WHERE a NOT IN (1, 2)",
        "SELECT * FROM t WHERE a IN (1, 2)",
    );
}

#[test]
fn in_list_is_not_equality() {
    assert_differs(
        "SELECT * FROM t WHERE a IN (1, 2)",
        "SELECT * FROM t WHERE a = 1",
    );
}

#[test]
fn in_lists_with_expressions_stay() {
    assert_differs(
        "SELECT * FROM t WHERE a IN (b, 1)",
        "SELECT * FROM t WHERE a IN (1, 2)",
    );
    assert_differs(
        "SELECT * FROM t WHERE a IN (SELECT b FROM u)",
        "SELECT * FROM t WHERE a IN (1, 2)",
    );
}

#[test]
fn tuple_in_lists_keep_one_tuple() {
    assert_same(
        "SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4))",
        "SELECT * FROM t WHERE (a, b) IN (($1, $2))",
    );
}

#[test]
fn arrays_of_placeholders_collapse() {
    assert_same(
        "SELECT * FROM t WHERE tags && ARRAY['a', 'b', 'c']",
        "SELECT * FROM t WHERE tags && $1",
    );
    assert_same("SELECT ARRAY[[1, 2], [3, 4]]", "SELECT ARRAY[1]");
}

#[test]
fn multi_row_values_collapse() {
    let base = "INSERT INTO t (a, b) VALUES (1, 'x')";
    assert_same(
        base,
        "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')",
    );
    assert_same(base, "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)");
    assert_differs(
        "INSERT INTO t (a, b) VALUES (1, DEFAULT), (2, 'y')",
        "INSERT INTO t (a, b) VALUES (1, DEFAULT)",
    );
}

// ------------------------------------------------------------ text and names

#[test]
fn comments_and_whitespace_do_not_matter() {
    assert_same(
        "SELECT a FROM t WHERE b = 1",
        "/* app:web */ select  a\n\tfrom t -- trailing\nwhere b=2 /*traceparent='00-abc-def-01'*/",
    );
}

#[test]
fn unquoted_identifiers_are_lower_cased() {
    assert_same("SELECT A FROM T WHERE B = 1", "select a from t where b = 1");
}

#[test]
fn quoted_identifiers_keep_their_case() {
    assert_differs("SELECT \"A\" FROM t", "SELECT a FROM t");
    assert_same("SELECT \"a\" FROM \"t\"", "SELECT a FROM t");
}

#[test]
fn reserved_words_keep_their_quotes() {
    assert_normalized(
        "SELECT \"user\".\"id\" FROM \"user\"",
        "SELECT \"user\".id FROM \"user\"",
    );
}

#[test]
fn table_and_schema_names_are_kept() {
    assert_differs("SELECT a FROM t1", "SELECT a FROM t2");
    assert_differs("SELECT a FROM s1.t", "SELECT a FROM s2.t");
    assert_differs("SELECT a FROM s1.t", "SELECT a FROM t");
}

#[test]
fn columns_are_kept() {
    assert_differs("SELECT a FROM t", "SELECT b FROM t");
    assert_differs("SELECT a FROM t WHERE x = 1", "SELECT a FROM t WHERE y = 1");
}

#[test]
fn argument_order_is_kept() {
    assert_differs("SELECT f(a, b) FROM t", "SELECT f(b, a) FROM t");
    assert_differs("SELECT a, b FROM t", "SELECT b, a FROM t");
}

#[test]
fn order_by_direction_is_kept() {
    assert_differs(
        "SELECT a FROM t ORDER BY a ASC",
        "SELECT a FROM t ORDER BY a DESC",
    );
    assert_differs(
        "SELECT a FROM t ORDER BY a",
        "SELECT a FROM t ORDER BY a DESC",
    );
}

#[test]
fn order_by_ordinals_are_kept() {
    assert_differs(
        "SELECT a, b FROM t ORDER BY 1",
        "SELECT a, b FROM t ORDER BY 2",
    );
    assert_differs(
        "SELECT a, count(*) FROM t GROUP BY 1",
        "SELECT a, count(*) FROM t GROUP BY 2",
    );
}

#[test]
fn limit_presence_is_kept_but_not_its_value() {
    assert_same("SELECT a FROM t LIMIT 10", "SELECT a FROM t LIMIT 20");
    assert_same(
        "SELECT a FROM t LIMIT 10 OFFSET 5",
        "SELECT a FROM t LIMIT $1 OFFSET $2",
    );
    assert_differs("SELECT a FROM t LIMIT 10", "SELECT a FROM t");
    assert_differs(
        "SELECT a FROM t LIMIT 10",
        "SELECT a FROM t LIMIT 10 OFFSET 5",
    );
    assert!(one("SELECT a FROM t LIMIT 10").has_limit);
    assert!(one("SELECT a FROM t FETCH FIRST 3 ROWS ONLY").has_limit);
    assert!(!one("SELECT a FROM t").has_limit);
    assert!(!one("SELECT a FROM t WHERE a IN (SELECT b FROM u LIMIT 1)").has_limit);
}

#[test]
fn json_keys_are_kept() {
    assert_differs(
        "SELECT * FROM t WHERE data->>'name' = 'x'",
        "SELECT * FROM t WHERE data->>'email' = 'x'",
    );
    assert_same(
        "SELECT * FROM t WHERE data->>'name' = 'x'",
        "SELECT * FROM t WHERE data ->> 'name' = $1",
    );
    assert_differs("SELECT data->'a' FROM t", "SELECT data->'b' FROM t");
    assert_differs(
        "SELECT data#>>'{a,b}' FROM t",
        "SELECT data#>>'{a,c}' FROM t",
    );
    assert_differs(
        "SELECT * FROM t WHERE data ? 'a'",
        "SELECT * FROM t WHERE data ? 'b'",
    );
    assert_differs("SELECT data->0 FROM t", "SELECT data->1 FROM t");
}

#[test]
fn json_values_are_data() {
    assert_same(
        "SELECT * FROM t WHERE data @> '{\"a\": 1}'",
        "SELECT * FROM t WHERE data @> '{\"a\": 2}'",
    );
}

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
