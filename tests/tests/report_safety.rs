//! Reports are safe to print: a client's request tags and SQL carrying terminal escapes
//! (`ESC[2J` clears the screen, BEL rings) and a bidi override go through the real proxy into
//! the store; `qproxy report` must show them as visible escapes in text, markdown and HTML,
//! keep JUnit and SARIF well-formed, keep the exact strings in JSON (escaped the JSON way), and
//! the proxy's own log line for the finding must not carry them raw either.

use std::time::Duration;

use qproxy_tests::report::{findings_of, report_json, run_report};
use qproxy_tests::{connect, ProxyOptions, TestEnv, SUPERUSER, TEST_DB};
use serde_json::Value;

/// The request id as the application meant it, and as sqlcommenter URL-encodes it.
const REQUEST_ID: &str = "req\u{1b}[2J\u{7}-1";
const REQUEST_ID_ENCODED: &str = "req%1B%5B2J%07-1";
/// A route with raw escapes and a right-to-left override in the comment itself.
const ROUTE: &str = "/evil\u{202e}gnp\u{1b}[2J\u{7}";

/// What must never reach a terminal from client text.
const RAW: [char; 3] = ['\u{1b}', '\u{7}', '\u{202e}'];

fn assert_no_raw(what: &str, out: &str) {
    for c in RAW {
        assert!(!out.contains(c), "{what} carries {c:?} raw:\n{out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tags_and_sql_are_escaped_in_every_report_and_the_log() {
    let env = tokio::task::block_in_place(TestEnv::shared);
    let options = ProxyOptions {
        shutdown_grace_secs: Some(5),
        // Text logs, where an escape would reach the terminal tailing the log as it is.
        extra_args: vec!["--log-format".into(), "text".into()],
        ..ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "disable"))
    };
    let test = "hostile_tags_and_sql_are_escaped_in_every_report_and_the_log";
    let Some(mut proxy) = tokio::task::block_in_place(|| env.extra_proxy(test, &options)) else {
        return;
    };
    tokio::task::block_in_place(|| {
        env.cluster.psql_superuser(
            TEST_DB,
            "CREATE TABLE IF NOT EXISTS gadgets (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO gadgets SELECT g, 'gadget ' || g FROM generate_series(1, 20) g
             ON CONFLICT DO NOTHING;",
        )
    })
    .expect("creating gadgets");

    let c = connect(&proxy.url(SUPERUSER, TEST_DB, "disable"))
        .await
        .unwrap();
    let tag = format!("/*request_id='{REQUEST_ID_ENCODED}',route='{ROUTE}'*/");
    let parent = c
        .query(
            &format!("SELECT id FROM gadgets ORDER BY id LIMIT 6 {tag}"),
            &[],
        )
        .await
        .unwrap();
    // The alias, a quoted identifier, keeps its escapes in the normalized SQL.
    let child = c
        .prepare(&format!(
            "SELECT name AS \"n\u{1b}[2J\u{7}\" FROM gadgets WHERE id = $1 {tag}"
        ))
        .await
        .unwrap();
    for row in parent {
        let id: i32 = row.get(0);
        c.query_one(&child, &[&id]).await.unwrap();
    }
    drop(c);
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.terminate().unwrap();
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(60))).unwrap();
    assert!(status.success(), "{}", proxy.log());
    let store = proxy.store_path();

    // JSON keeps the exact strings, with no raw control character in the output.
    let json = tokio::task::block_in_place(|| run_report(&store, &["--format", "json"])).unwrap();
    assert_no_raw("json", &json.stdout);
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    let found = findings_of(&report, "n_plus_one");
    assert_eq!(found.len(), 1, "{report:#}\n{}", proxy.log());
    let n1 = found[0];
    assert_eq!(n1["request"]["id"], REQUEST_ID);
    assert_eq!(n1["request"]["route"], ROUTE);
    assert!(
        n1["query"].as_str().unwrap().contains("\u{1b}[2J\u{7}"),
        "the SQL carries the escapes: {n1:#}"
    );
    assert_eq!(
        tokio::task::block_in_place(|| report_json(&store, "latest")).unwrap(),
        report
    );

    let render = |format: &str| {
        let out = tokio::task::block_in_place(|| run_report(&store, &["--format", format]))
            .unwrap_or_else(|e| panic!("{format}: {e:#}"));
        assert!(out.status.success(), "{format}: {out}");
        assert_no_raw(format, &out.stdout);
        out.stdout
    };
    let text = render("text");
    assert!(
        text.contains("/evil\\u{202e}gnp\\x1b[2J\\x07 (request req\\x1b[2J\\x07-1"),
        "{text}"
    );
    assert!(text.contains("AS \"n\\x1b[2J\\x07\""), "{text}");
    let markdown = render("markdown");
    assert!(
        markdown.contains("route `/evil\\u{202e}gnp\\x1b[2J\\x07`"),
        "{markdown}"
    );
    let html = render("html");
    assert!(html.contains("req\\x1b[2J\\x07-1"), "{html}");
    let junit = render("junit");
    let doc = roxmltree::Document::parse(&junit)
        .unwrap_or_else(|e| panic!("JUnit is not well-formed XML: {e}\n{junit}"));
    assert!(doc.descendants().any(|n| n
        .text()
        .is_some_and(|t| t.contains("request: req\\x1b[2J\\x07-1"))));
    let sarif = render("sarif");
    let sarif: Value = serde_json::from_str(&sarif).expect("SARIF is JSON");
    assert_eq!(
        sarif["runs"][0]["results"][0]["properties"]["request"]["id"],
        "req\\x1b[2J\\x07-1"
    );

    // The proxy's log line for the finding shows the escapes, never the raw characters.
    let log = proxy.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("new finding")).collect();
    assert!(!lines.is_empty(), "no finding logged:\n{log}");
    for line in lines {
        assert!(
            !line.contains("\u{1b}[2J") && !line.contains('\u{7}') && !line.contains('\u{202e}'),
            "raw escapes in the log: {line:?}"
        );
        if line.contains("n_plus_one") {
            assert!(line.contains("req\\x1b[2J\\x07-1"), "{line:?}");
        }
    }
}
