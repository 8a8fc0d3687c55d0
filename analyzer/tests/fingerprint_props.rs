//! Property tests: literal values never change a fingerprint, names always
//! do, and no input makes fingerprinting panic.

use proptest::prelude::*;
use qproxy_analyzer::fingerprint::{
    fingerprint_sql, Fingerprint, FingerprintCache, MAX_NORMALIZED_BYTES,
};

/// Statements with `{}` where a value goes.
const TEMPLATES: &[&str] = &[
    "SELECT a, b FROM t WHERE a = {} AND b > {} LIMIT {}",
    "SELECT * FROM users u WHERE u.email = {} OR u.id IN ({}, {}, {})",
    "INSERT INTO t (a, b) VALUES ({}, {}), ({}, {}) RETURNING id",
    "UPDATE t SET a = {}, b = {} WHERE id = {}",
    "DELETE FROM t WHERE created_at < {} AND kind = ANY(ARRAY[{}, {}])",
    "SELECT count(*) FROM t WHERE data->>'k' = {} AND n BETWEEN {} AND {}",
    "SELECT f({}, {}::int, CAST({} AS text)) FROM t ORDER BY 1 DESC OFFSET {}",
    "SET search_path = {}",
    "SELECT * FROM t WHERE (a, b) IN (({}, {}), ({}, {}))",
];

fn fill(template: &str, values: &[String]) -> String {
    let mut out = String::new();
    let mut values = values.iter();
    for (i, part) in template.split("{}").enumerate() {
        if i > 0 {
            out.push_str(values.next().map(String::as_str).unwrap_or("0"));
        }
        out.push_str(part);
    }
    out
}

/// SQL literal text of every kind a client may send inline, and `$n`.
fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (any::<u32>(), 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
        (1u32..1000, -20i32..20).prop_map(|(a, e)| format!("{a}e{e}")),
        "[^\u{0}]{0,20}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        "[^\u{0}]{0,20}"
            .prop_map(|s| format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))),
        "[^\u{0}$]{0,20}".prop_map(|s| format!("$q${s}$q$")),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}".prop_map(|d| format!("DATE '{d}'")),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}".prop_map(|d| format!("'{d}'::timestamptz")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("NULL".to_owned()),
        (1u32..100).prop_map(|n| format!("${n}")),
    ]
}

fn one(sql: &str) -> Fingerprint {
    let mut fps = fingerprint_sql(sql);
    assert_eq!(fps.len(), 1, "{sql:?}");
    fps.remove(0)
}

/// A name that is never a key word.
fn name(prefix: &'static str) -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,6}".prop_map(move |s| format!("{prefix}{s}"))
}

proptest! {
    #[test]
    fn literal_values_never_change_the_fingerprint(
        template in prop::sample::select(TEMPLATES),
        a in prop::collection::vec(literal(), 8),
        b in prop::collection::vec(literal(), 8),
    ) {
        let (sa, sb) = (fill(template, &a), fill(template, &b));
        let (fa, fb) = (one(&sa), one(&sb));
        prop_assert!(!fa.fallback, "fallback: {}", sa);
        prop_assert!(!fb.fallback, "fallback: {}", sb);
        prop_assert_eq!(fa.id, fb.id, "\n{}\n{}\n{}\n{}", sa, sb, fa.normalized, fb.normalized);
    }

    /// The cache's shape tier answers exactly what parsing would.
    #[test]
    fn cached_answers_equal_parsed_answers(
        template in prop::sample::select(TEMPLATES),
        a in prop::collection::vec(literal(), 8),
        b in prop::collection::vec(literal(), 8),
    ) {
        let mut cache = FingerprintCache::new(16);
        let (sa, sb) = (fill(template, &a), fill(template, &b));
        cache.get(&sa);
        let cached = cache.get(&sb);
        let parsed = fingerprint_sql(&sb);
        prop_assert_eq!(&*cached, parsed.as_slice());
    }

    #[test]
    fn renaming_a_table_changes_the_fingerprint(
        t1 in name("t_"),
        t2 in name("t_"),
        quoted in any::<bool>(),
        shape in 0usize..4,
    ) {
        prop_assume!(t1 != t2);
        let q = |t: &str| if quoted { format!("\"{}\"", t.to_uppercase()) } else { t.to_owned() };
        let sql = |t: &str| match shape {
            0 => format!("SELECT a FROM {} WHERE b = 1", q(t)),
            1 => format!("SELECT x.a FROM {} x JOIN u ON u.id = x.uid WHERE x.b = 1", q(t)),
            2 => format!("UPDATE {} SET a = 1 WHERE id = 2", q(t)),
            _ => format!("INSERT INTO s.{} (a) VALUES (1), (2)", q(t)),
        };
        let (fa, fb) = (one(&sql(&t1)), one(&sql(&t2)));
        prop_assert!(!fa.fallback && !fb.fallback);
        prop_assert_ne!(fa.id, fb.id, "{}", fa.normalized);
    }

    #[test]
    fn renaming_a_column_changes_the_fingerprint(
        c1 in name("c_"),
        c2 in name("c_"),
        shape in 0usize..4,
    ) {
        prop_assume!(c1 != c2);
        let sql = |c: &str| match shape {
            0 => format!("SELECT {c} FROM t WHERE id = 1"),
            1 => format!("SELECT t.a FROM t WHERE t.{c} IN (1, 2)"),
            2 => format!("UPDATE t SET {c} = 1"),
            _ => format!("SELECT a FROM t ORDER BY {c} DESC LIMIT 5"),
        };
        let (fa, fb) = (one(&sql(&c1)), one(&sql(&c2)));
        prop_assert!(!fa.fallback && !fb.fallback);
        prop_assert_ne!(fa.id, fb.id, "{}", fa.normalized);
    }

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        check_invariants(&s);
    }

    #[test]
    fn sql_like_noise_never_panics(parts in prop::collection::vec(prop_oneof![
        Just("'"), Just("\""), Just("$$"), Just("$a$"), Just("/*"), Just("*/"), Just("--"),
        Just("\n"), Just("("), Just(")"), Just("["), Just("]"), Just(";"), Just(","),
        Just("select "), Just(" from t"), Just(" where "), Just(" in "), Just(" array"),
        Just("with x as "), Just(" limit "), Just("1"), Just("-"), Just("$1"), Just("E'"),
        Just("\\"), Just("::"), Just("->>"), Just(" "), Just("é"), Just("U&"), Just("."),
    ], 0..60)) {
        check_invariants(&parts.concat());
    }
}

/// What holds for any input: statements numbered from 0, ids are the hash
/// of the normalized text (unless it was cut).
fn check_invariants(sql: &str) {
    let fps = fingerprint_sql(sql);
    for (i, fp) in fps.iter().enumerate() {
        assert_eq!(usize::from(fp.statement_index), i);
        if fp.normalized.len() <= MAX_NORMALIZED_BYTES {
            assert_eq!(
                fp.id.0,
                xxhash_rust::xxh3::xxh3_64(fp.normalized.as_bytes())
            );
        }
    }
}
