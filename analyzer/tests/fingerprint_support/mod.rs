//! Helpers shared by the fingerprint rule tests: each assertion is one line.

use qproxy_analyzer::fingerprint::{fingerprint_sql, Fingerprint};

/// The single fingerprint of `sql`.
pub fn one(sql: &str) -> Fingerprint {
    let mut fps = fingerprint_sql(sql);
    assert_eq!(fps.len(), 1, "expected one statement in {sql:?}: {fps:#?}");
    fps.remove(0)
}

/// Both statements parse and share a fingerprint.
#[track_caller]
pub fn assert_same(a: &str, b: &str) {
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
pub fn assert_differs(a: &str, b: &str) {
    let (fa, fb) = (one(a), one(b));
    assert!(!fa.fallback, "fallback for {a:?}");
    assert!(!fb.fallback, "fallback for {b:?}");
    assert_ne!(fa.id, fb.id, "both normalize to {}", fa.normalized);
}

/// The statement parses and normalizes to `expected`.
#[track_caller]
pub fn assert_normalized(sql: &str, expected: &str) {
    let fp = one(sql);
    assert!(!fp.fallback, "fallback for {sql:?}");
    assert_eq!(&*fp.normalized, expected);
}
