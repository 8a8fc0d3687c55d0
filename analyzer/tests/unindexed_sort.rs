//! ORDER BYs that no index delivers: directions, backward scans, equality
//! prefixes, LIMIT and the negative controls.

mod unindexed_support;

use qproxy_analyzer::catalog::{Catalog, Index, Table};
use qproxy_analyzer::finding::Severity;
use unindexed_support::{clean, found, found_in, issues_in, shop};

fn t(index: Index) -> Catalog {
    Catalog::new().with_table(
        Table::new("t", 100_000)
            .columns(&["a", "b", "c"])
            .index(index),
    )
}

/// Whether no `unindexed_sort` is reported (a filter finding may be).
fn sort_served(catalog: &Catalog, sql: &str) -> bool {
    !found_in(catalog, sql).iter().any(|f| f.starts_with("sort"))
}

#[test]
fn indexed_sorts_forward_and_backward() {
    clean("SELECT * FROM orders ORDER BY created_at LIMIT 20");
    clean("SELECT * FROM orders ORDER BY created_at DESC LIMIT 20");
    clean("SELECT * FROM orders o ORDER BY o.created_at DESC NULLS FIRST LIMIT 20");
    clean("SELECT * FROM orders ORDER BY id DESC FETCH FIRST 10 ROWS ONLY");
}

#[test]
fn unindexed_sort_with_and_without_limit() {
    assert_eq!(
        found("SELECT * FROM orders ORDER BY total DESC LIMIT 20"),
        ["sort public.orders (total)"]
    );
    let limited = &issues_in(
        &shop(),
        "SELECT * FROM sessions ORDER BY expires_at LIMIT 10",
    )[0];
    assert_eq!(limited.severity, Severity::Warning);
    assert_eq!(limited.details["limited"], true);
    // The whole 400k-row table sorted: spills past work_mem.
    let unlimited = &issues_in(&shop(), "SELECT * FROM sessions ORDER BY expires_at")[0];
    assert_eq!(unlimited.severity, Severity::Error);
    assert_eq!(
        unlimited.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.sessions (expires_at);"
    );
    let small = &issues_in(&shop(), "SELECT * FROM users ORDER BY name")[0];
    assert_eq!(small.severity, Severity::Warning);
}

#[test]
fn directions_and_nulls() {
    let idx = t(Index::btree("t_a_desc_b", &["a DESC", "b"]));
    assert!(sort_served(
        &idx,
        "SELECT * FROM t ORDER BY a DESC, b LIMIT 5"
    ));
    assert!(
        sort_served(&idx, "SELECT * FROM t ORDER BY a, b DESC LIMIT 5"),
        "backward scan"
    );
    assert!(!sort_served(
        &idx,
        "SELECT * FROM t ORDER BY a DESC, b DESC LIMIT 5"
    ));
    assert!(
        sort_served(&idx, "SELECT * FROM t ORDER BY a DESC LIMIT 5"),
        "a prefix of the keys"
    );
    assert!(!sort_served(&idx, "SELECT * FROM t ORDER BY b LIMIT 5"));

    let plain = t(Index::btree("t_a", &["a"]));
    assert!(!sort_served(
        &plain,
        "SELECT * FROM t ORDER BY a NULLS FIRST LIMIT 5"
    ));
    assert!(!sort_served(
        &plain,
        "SELECT * FROM t ORDER BY a DESC NULLS LAST LIMIT 5"
    ));
    assert!(sort_served(
        &plain,
        "SELECT * FROM t ORDER BY a DESC NULLS FIRST LIMIT 5"
    ));
    let nulls_first = t(Index::btree("t_a_nf", &["a NULLS FIRST"]));
    assert!(sort_served(
        &nulls_first,
        "SELECT * FROM t ORDER BY a NULLS FIRST LIMIT 5"
    ));
    assert!(sort_served(
        &nulls_first,
        "SELECT * FROM t ORDER BY a DESC NULLS LAST LIMIT 5"
    ));
}

#[test]
fn suggestions_keep_mixed_directions() {
    let issue = &issues_in(
        &shop(),
        "SELECT * FROM orders ORDER BY created_at, total DESC LIMIT 10",
    )[0];
    assert_eq!(
        issue.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (created_at, total DESC);"
    );
    let flipped = &issues_in(
        &shop(),
        "SELECT * FROM orders ORDER BY total DESC, created_at LIMIT 10",
    )[0];
    assert_eq!(
        flipped.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (total, created_at DESC);"
    );
    let nulls = &issues_in(
        &shop(),
        "SELECT * FROM orders ORDER BY total NULLS FIRST LIMIT 10",
    )[0];
    assert_eq!(
        nulls.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (total NULLS FIRST);"
    );
}

#[test]
fn equality_prefix_serves_the_sort() {
    clean("SELECT * FROM line_items WHERE order_id = $1 ORDER BY product_id LIMIT 5");
    clean(
        "SELECT * FROM line_items WHERE order_id = $1 ORDER BY order_id, product_id DESC LIMIT 5",
    );
    let idx = t(Index::btree("t_abc", &["a", "b", "c"]));
    assert!(
        sort_served(&idx, "SELECT * FROM t WHERE b = $1 ORDER BY a, c LIMIT 5"),
        "pinned middle key"
    );
    // A list of values does not pin a key: rows come out per value. With
    // the filter served by (a, b, c) the narrowed rows are sorted cheaply
    // and nothing is reported; without any index the filter suggestion
    // stops at the list column and the sort suggestion leaves it out.
    assert!(sort_served(
        &idx,
        "SELECT * FROM t WHERE a = ANY($1) ORDER BY b LIMIT 5"
    ));
    let bare = Catalog::new().with_table(Table::new("t", 100_000).columns(&["a", "b"]));
    assert_eq!(
        found_in(
            &bare,
            "SELECT * FROM t WHERE a = ANY($1) ORDER BY b LIMIT 5"
        ),
        ["filter public.t (a)", "sort public.t (b)"]
    );
}

#[test]
fn filtered_and_sorted_on_the_same_table() {
    assert_eq!(
        found("SELECT * FROM orders WHERE user_id = $1 ORDER BY total DESC LIMIT 10"),
        [
            "filter public.orders (user_id, total)",
            "sort public.orders (user_id, total)"
        ]
    );
    // The filter is served; a LIMIT could stop an ordered scan early, so the
    // sort is still worth an index, one severity step lower.
    let issue = &issues_in(
        &shop(),
        "SELECT * FROM line_items WHERE order_id = $1 ORDER BY qty LIMIT 5",
    )[0];
    assert_eq!(
        (issue.columns.clone(), issue.severity),
        (vec!["order_id".into(), "qty".into()], Severity::Warning)
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE created_at > $1 ORDER BY total LIMIT 10"),
        ["sort public.orders (total, created_at)"]
    );
    // Served filter without LIMIT: sorting the narrowed rows is cheap.
    clean("SELECT * FROM line_items WHERE order_id = $1 ORDER BY qty");
    clean("SELECT * FROM line_items WHERE order_id = ANY($1) ORDER BY product_id LIMIT 5");
}

#[test]
fn negative_controls() {
    clean("SELECT * FROM orders WHERE id = $1 ORDER BY total");
    clean("SELECT * FROM users WHERE email = $1 ORDER BY name LIMIT 1");
    clean("SELECT * FROM products ORDER BY price LIMIT 10");
    clean("SELECT status, count(*) FROM orders GROUP BY status ORDER BY status");
    clean("SELECT DISTINCT status FROM orders ORDER BY status");
    clean("SELECT * FROM orders ORDER BY random() LIMIT 1");
    clean("SELECT * FROM orders ORDER BY lower(note) LIMIT 1");
    clean("SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = $1 ORDER BY o.total, u.name");
    clean(
        "SELECT id FROM orders WHERE id = $1 UNION SELECT id FROM orders WHERE id = $2 ORDER BY 1",
    );
}

#[test]
fn equality_on_every_sort_key_needs_no_sort() {
    assert_eq!(
        found("SELECT * FROM orders WHERE total = $1 ORDER BY total LIMIT 5"),
        ["filter public.orders (total)"]
    );
}

#[test]
fn output_names_and_positions() {
    assert_eq!(
        found("SELECT total AS t FROM orders ORDER BY t DESC LIMIT 5"),
        ["sort public.orders (total)"]
    );
    assert_eq!(
        found("SELECT id, total FROM orders ORDER BY 2 LIMIT 5"),
        ["sort public.orders (total)"]
    );
    clean("SELECT created_at AS total FROM orders ORDER BY total LIMIT 5");
}

#[test]
fn sorts_inside_subqueries_and_ctes() {
    assert_eq!(
        found("WITH top AS (SELECT * FROM orders ORDER BY total DESC LIMIT 10) SELECT * FROM top"),
        ["sort public.orders (total)"]
    );
    // The correlated filter is unindexed; the sort alone is served by a
    // backward scan of orders_created_at, so only the filter is reported
    // (with the index that serves both).
    assert_eq!(
        found("SELECT u.*, (SELECT o.id FROM orders o WHERE o.user_id = u.id ORDER BY o.created_at DESC LIMIT 1) FROM users u WHERE u.id = $1"),
        ["filter public.orders (user_id, created_at)"]
    );
}
