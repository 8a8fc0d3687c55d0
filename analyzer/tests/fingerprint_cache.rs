//! The bounded fingerprint cache.

use std::sync::Arc;

use qproxy_analyzer::fingerprint::{fingerprint_sql, FingerprintCache};

#[test]
fn a_hit_returns_the_cached_fingerprints() {
    let mut cache = FingerprintCache::default();
    let sql = "SELECT a FROM t WHERE b = 1; SELECT 2";
    let first = cache.get(sql);
    let second = cache.get(sql);
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(&*first, fingerprint_sql(sql).as_slice());
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.capacity(), 10_000);
}

#[test]
fn keys_are_the_exact_text() {
    let mut cache = FingerprintCache::new(8);
    let a = cache.get("SELECT a FROM t");
    let b = cache.get("SELECT  a FROM t");
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(a[0].id, b[0].id);
    assert_eq!(cache.len(), 2);
}

#[test]
fn a_known_shape_with_new_values_is_not_parsed_again() {
    let mut cache = FingerprintCache::new(8);
    let first = cache.get("SELECT * FROM posts WHERE author_id = 1 AND title = 'a' LIMIT 21");
    let sql = "SELECT * FROM posts WHERE author_id = 2 AND title = 'b' LIMIT 21";
    let second = cache.get(sql);
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.shape_hits, stats.hits), (1, 1, 0));
    assert_eq!(first[0].id, second[0].id);
    assert_ne!(first[0].literal_hashes, second[0].literal_hashes);
    assert_eq!(&*second, fingerprint_sql(sql).as_slice());
}

#[test]
fn shapes_never_merge_different_fingerprints() {
    let mut cache = FingerprintCache::new(64);
    for pair in [
        [
            "SELECT a, b FROM t ORDER BY 1",
            "SELECT a, b FROM t ORDER BY 2",
        ],
        [
            "SELECT a::varchar(10) FROM t",
            "SELECT a::varchar(20) FROM t",
        ],
        [
            "SELECT a FROM t WHERE b = 1 GROUP BY 1",
            "SELECT a FROM t WHERE b = 1 GROUP BY 2",
        ],
        ["SELECT data->>'a' FROM t", "SELECT data->>'b' FROM t"],
        [
            "SELECT a FROM t WHERE b = true",
            "SELECT a FROM t WHERE b IS TRUE",
        ],
        ["SELECT a FROM t LIMIT 1", "SELECT a FROM t LIMIT ALL"],
    ] {
        let a = cache.get(pair[0]);
        let b = cache.get(pair[1]);
        assert_ne!(a[0].id, b[0].id, "{pair:?}");
        assert_eq!(&*b, fingerprint_sql(pair[1]).as_slice());
    }
}

#[test]
fn entry_count_is_bounded() {
    let mut cache = FingerprintCache::new(16);
    for i in 0..100 {
        cache.get(&format!("SELECT {i}"));
        assert!(cache.len() <= 16);
    }
    assert_eq!(cache.stats().evictions, 100 - 16);
}

#[test]
fn recently_used_entries_get_a_second_chance() {
    let mut cache = FingerprintCache::new(4);
    for sql in ["SHOW a", "SHOW b", "SHOW c", "SHOW d"] {
        cache.get(sql);
    }
    cache.get("SHOW a"); // referenced
    cache.get("SHOW e"); // evicts SHOW b, the oldest unreferenced entry
    let before = cache.stats();
    cache.get("SHOW a");
    assert_eq!(cache.stats().hits, before.hits + 1);
    cache.get("SHOW b");
    assert_eq!(cache.stats().misses, before.misses + 1);
}

#[test]
fn bytes_are_bounded() {
    let mut cache = FingerprintCache::with_limits(1_000, 64 << 10);
    for i in 0..500 {
        cache.get(&format!("SELECT {} FROM t{i}", "a, ".repeat(20) + "b"));
    }
    assert!(cache.len() < 500, "{} entries", cache.len());
    assert!(cache.stats().evictions > 0);
    // A text whose fingerprints are too large for the budget is computed but not kept.
    let huge = format!("SELECT {}", "col_x, ".repeat(2_000) + "y");
    let before = cache.len();
    let fps = cache.get(&huge);
    assert!(!fps[0].fallback);
    assert!(cache.len() <= before);
}

#[test]
fn fallbacks_are_counted_per_lookup() {
    let mut cache = FingerprintCache::new(8);
    cache.get("VACUUM ANALYZE t; SELECT 1");
    cache.get("VACUUM ANALYZE t; SELECT 1");
    assert_eq!(cache.stats().fallbacks, 2);
}

#[test]
fn only_the_first_statements_of_a_long_text_are_fingerprinted() {
    let sql = "SELECT 1; ".repeat(5_000);
    let mut cache = FingerprintCache::new(8).with_statement_cap(3);
    let fingerprints = cache.get(&sql);
    assert_eq!(fingerprints.len(), 3);
    let indexes: Vec<u16> = fingerprints.iter().map(|f| f.statement_index).collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert!(fingerprints.iter().all(|f| !f.fallback));
    // A cap of zero still fingerprints the first statement.
    assert_eq!(
        FingerprintCache::new(8)
            .with_statement_cap(0)
            .get(&sql)
            .len(),
        1
    );
    // Without a cap every statement gets one.
    assert_eq!(FingerprintCache::new(8).get(&sql).len(), 5_000);
}
