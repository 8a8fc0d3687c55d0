//! One test per normalization rule (literals, lists, text and names), each
//! a one-liner on top of `assert_same` / `assert_differs`.

mod fingerprint_support;

use fingerprint_support::{assert_differs, assert_normalized, assert_same, one};

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
