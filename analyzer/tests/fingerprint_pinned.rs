//! Pins the normalized text and the hex id of representative statements.
//!
//! Fingerprints must be the same on every machine and every release: they
//! label metrics, key baselines and SARIF results. If this test fails, the
//! normalization or hashing changed: update the values only on purpose and
//! call the change out in the release notes.

use qproxy_analyzer::fingerprint::fingerprint_sql;

/// (statement, normalized text, fingerprint)
const PINNED: &[(&str, &str, &str)] = &[
    (
        r#"SELECT "auth_user"."id", "auth_user"."username" FROM "auth_user" WHERE "auth_user"."id" = 1 LIMIT 21"#,
        "SELECT auth_user.id, auth_user.username FROM auth_user WHERE auth_user.id = $1 LIMIT $2",
        "94448be2940c093c",
    ),
    (
        r#"SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2"#,
        "SELECT users.* FROM users WHERE users.id = $1 LIMIT $2",
        "0018849456bc0a6e",
    ),
    (
        "select u1_0.id,u1_0.name from users u1_0 where u1_0.id=$1",
        "SELECT users.id, users.name FROM users WHERE users.id = $1",
        "efaa6a06c0564d63",
    ),
    (
        "SELECT * FROM posts WHERE user_id IN (1, 2, 3)",
        "SELECT * FROM posts WHERE user_id = ANY($1)",
        "3177c35b6e4e4e15",
    ),
    (
        r#"INSERT INTO "tags" ("name", "created_at") VALUES ('a', now()), ('b', now()) RETURNING "id""#,
        "INSERT INTO tags (name, created_at) VALUES ($1, now()) RETURNING id",
        "756aef488e68437c",
    ),
    (
        r#"SELECT data->>'name' FROM profiles WHERE data @> '{"active": true}'"#,
        "SELECT data ->> 'name' FROM profiles WHERE data @> $1",
        "a1ad25ea55f51da1",
    ),
    (
        "SELECT e.id, m.name FROM employees e LEFT JOIN employees m ON m.id = e.manager_id",
        "SELECT employees_1.id, employees_2.name FROM employees AS employees_1 LEFT JOIN employees AS employees_2 ON employees_2.id = employees_1.manager_id",
        "e789acf0fdf0085d",
    ),
    (
        "WITH recent AS (SELECT * FROM orders o WHERE o.created_at > now() - interval '1 day') SELECT user_id, row_number() OVER (PARTITION BY user_id ORDER BY created_at DESC) FROM recent",
        "WITH recent AS (SELECT * FROM orders WHERE orders.created_at > now() - $1) SELECT user_id, row_number() OVER (PARTITION BY user_id ORDER BY created_at DESC) FROM recent",
        "b9b73ee2238f35e1",
    ),
    (r#"SAVEPOINT "s140234_x1""#, "SAVEPOINT _", "5773aa5bc1198fa8"),
    ("SET search_path TO public", "SET search_path = $1", "b3e2dcf1be1d2e27"),
    ("BEGIN", "BEGIN", "83da8889aeda0595"),
    (
        "VACUUM ANALYZE users",
        "vacuum analyze users",
        "494a9e15bf730777",
    ),
];

#[test]
fn pinned_fingerprints_do_not_change() {
    let mut changed = Vec::new();
    for (sql, normalized, id) in PINNED {
        let fps = fingerprint_sql(sql);
        assert_eq!(fps.len(), 1, "{sql}");
        let fp = &fps[0];
        if &*fp.normalized != *normalized || fp.id.to_string() != *id {
            changed.push(format!(
                "{sql}\n  expected {id} {normalized}\n  got      {} {}",
                fp.id, fp.normalized
            ));
        }
    }
    assert!(
        changed.is_empty(),
        "fingerprints changed:\n{}",
        changed.join("\n")
    );
}

/// The id is XXH3-64 with seed 0 over the normalized text: checked against
/// the reference value of XXH3-64("") so the hash itself is pinned, not
/// only our use of it.
#[test]
fn hash_is_xxh3_64_seed_0() {
    assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06_8005_38d3_94c2);
    let fp = &fingerprint_sql("BEGIN")[0];
    assert_eq!(fp.id.0, xxhash_rust::xxh3::xxh3_64(b"BEGIN"));
}
