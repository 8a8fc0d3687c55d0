//! Structural checks of the report formats beyond their snapshots: SARIF
//! parses with the fields code-scanning tools read, JUnit is well-formed
//! XML with the right failure counts, HTML loads nothing and escapes
//! everything, markdown escapes table cells, and baselines round-trip.

mod store_support;

use std::collections::HashSet;

use qproxy_analyzer::finding::{Finding, FindingKind};
use qproxy_analyzer::report::baseline::{Baseline, BaselineError, BASELINE_VERSION};
use qproxy_analyzer::report::{self, sarif, Format, RenderOptions, Report};
use store_support::*;

fn gating(kinds: &[FindingKind]) -> RenderOptions {
    RenderOptions {
        gating: kinds.to_vec(),
        ..RenderOptions::default()
    }
}

/// The fixed report with a first finding whose SQL, table and route try
/// to break out of every format.
fn hostile_report() -> Report {
    let mut r = fixed_report();
    let f = &mut r.findings[0];
    f.query = "SELECT '<script>alert(1)</script>' AS x, '`|```' AS y, '&amp;' FROM t".into();
    f.table = Some("public.\"a|b<i>\"".into());
    if let Some(req) = &mut f.request {
        req.route = Some("GET /x?a=1&b=<b>".into());
    }
    r
}

#[test]
fn sarif_has_schema_rules_and_partial_fingerprints() {
    let r = fixed_report();
    let text = report::render(&r, Format::Sarif, RenderOptions::default());
    let log: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(log["version"], "2.1.0");
    assert_eq!(log["$schema"], sarif::SCHEMA_URI);
    let runs = log["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let driver = &runs[0]["tool"]["driver"];
    assert_eq!(driver["name"], "qproxy");
    assert_eq!(driver["version"], "0.1.0");
    let rules = driver["rules"].as_array().unwrap();
    let rule_ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let kinds: Vec<&str> = FindingKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(rule_ids, kinds, "one rule per kind, id = kind name");
    for rule in rules {
        for key in ["shortDescription", "fullDescription", "help"] {
            assert!(!rule[key]["text"].as_str().unwrap().is_empty(), "{key}");
        }
        let level = rule["defaultConfiguration"]["level"].as_str().unwrap();
        assert!(["error", "warning", "note"].contains(&level));
    }
    let results = runs[0]["results"].as_array().unwrap();
    assert_eq!(results.len(), r.findings.len());
    for (res, f) in results.iter().zip(&r.findings) {
        assert_eq!(res["ruleId"], f.kind.as_str());
        let index = res["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], f.kind.as_str());
        assert_eq!(res["partialFingerprints"][sarif::FINGERPRINT_KEY], f.id);
        assert_eq!(res["fingerprints"][sarif::FINGERPRINT_KEY], f.id);
        assert!(!res["message"]["text"].as_str().unwrap().is_empty());
        let logical = &res["locations"][0]["logicalLocations"][0];
        assert!(logical["name"].is_string() && logical["kind"] == "module");
        assert_eq!(res["properties"]["occurrences"], f.occurrences);
        assert_eq!(res["properties"]["fingerprint"], f.fingerprint);
    }
    let levels: HashSet<&str> = results
        .iter()
        .map(|r| r["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, HashSet::from(["error", "warning", "note"]));
    let notes = runs[0]["invocations"][0]["toolExecutionNotifications"]
        .as_array()
        .unwrap();
    assert_eq!(
        notes.len(),
        5,
        "poor coverage, statements not analysed and lost findings are reported to the tool"
    );
    assert!(notes.iter().any(|n| n["message"]["text"]
        .as_str()
        .unwrap()
        .contains("not analysed")));
    assert!(notes[0]["message"]["text"]
        .as_str()
        .unwrap()
        .starts_with("12 finding occurrences lost"));
}

#[test]
fn sarif_information_uri_is_the_workspace_repository() {
    let manifest = include_str!("../../Cargo.toml");
    assert!(
        manifest.contains(&format!("repository = \"{}\"", sarif::INFORMATION_URI)),
        "keep sarif::INFORMATION_URI equal to the workspace repository"
    );
}

/// Parses `xml` and returns (declared failures, `<failure>` elements,
/// testcases).
fn junit_counts(xml: &str) -> (usize, usize, usize) {
    let doc = roxmltree::Document::parse(xml).expect("JUnit output is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let declared: usize = root.attribute("failures").unwrap().parse().unwrap();
    let count = |name: &str| doc.descendants().filter(|n| n.has_tag_name(name)).count();
    for suite in root.children().filter(|n| n.has_tag_name("testsuite")) {
        let failures = suite
            .descendants()
            .filter(|n| n.has_tag_name("failure"))
            .count();
        assert_eq!(suite.attribute("failures").unwrap(), failures.to_string());
    }
    (declared, count("failure"), count("testcase"))
}

#[test]
fn junit_is_well_formed_and_fails_only_gating_kinds() {
    let r = fixed_report();
    let cases = [
        (vec![], 0),
        (vec![FindingKind::NPlusOne], 1),
        (vec![FindingKind::NPlusOne, FindingKind::UnindexedSort], 2),
        (FindingKind::ALL.to_vec(), 5),
    ];
    for (kinds, expected) in cases {
        let xml = report::render(&r, Format::Junit, gating(&kinds));
        let (declared, failures, testcases) = junit_counts(&xml);
        assert_eq!((declared, failures), (expected, expected), "{kinds:?}");
        assert_eq!(
            testcases,
            r.findings.len() + 1,
            "one per finding + coverage"
        );
    }
}

#[test]
fn junit_escapes_hostile_sql_and_control_characters() {
    let mut r = hostile_report();
    r.findings[0].query.push_str(" \u{1}\u{1b}");
    let xml = report::render(&r, Format::Junit, gating(&FindingKind::ALL));
    junit_counts(&xml);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    let text = failure.text().unwrap();
    assert!(text.contains("<script>alert(1)</script>"));
    assert!(!xml.contains("<script>"));
    // Controls are visible escapes, neither raw nor silently replaced.
    assert!(text.contains(" \\x01\\x1b"), "{text}");
}

#[test]
fn html_is_self_contained() {
    let html = report::render(&fixed_report(), Format::Html, RenderOptions::default());
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
    for forbidden in [
        "http://", "https://", "<script", "<link", "<img", "<iframe", "src=", "@import", "url(",
    ] {
        assert!(!html.contains(forbidden), "html contains {forbidden}");
    }
    // The only links are anchors within the page.
    assert!(html.matches("href=\"").count() == html.matches("href=\"#f-").count());
    assert_eq!(html.matches("<svg").count(), 2, "two inline charts");
    assert!(html.contains("Top fingerprints by count × occurrences"));
}

#[test]
fn html_escapes_every_string_from_the_database() {
    let html = report::render(&hostile_report(), Format::Html, RenderOptions::default());
    assert!(!html.contains("<script>") && !html.contains("<i>") && !html.contains("<b>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&amp;amp;"), "an entity in SQL stays literal");
    assert!(html.contains("GET /x?a=1&amp;b=&lt;b&gt;"));
}

#[test]
fn html_ranks_by_time_when_recorded_and_shows_hypopg() {
    let mut r = fixed_report();
    let filter = r
        .findings
        .iter_mut()
        .find(|f| f.kind == FindingKind::UnindexedFilter)
        .unwrap();
    filter.details.insert(
        "hypopg".into(),
        serde_json::json!({"verified": true, "cost_before": 1200.5, "cost_after": 8.0, "uses_index": true}),
    );
    filter
        .details
        .insert("total_duration_ms".into(), serde_json::json!(9000.0));
    r.findings[0]
        .details
        .insert("total_duration_ms".into(), serde_json::json!(1500));
    let html = report::render(&r, Format::Html, RenderOptions::default());
    assert!(
        html.contains("Top fingerprints by total time (ms)"),
        "{html}"
    );
    assert!(
        html.contains("verified: cost 1200.5 → 8.0 (index used)"),
        "{html}"
    );
    let chart = html.split("total time (ms)</h2>").nth(1).unwrap();
    let first_bar = chart.lines().nth(2).unwrap();
    assert!(first_bar.contains(&filter_fp()) && first_bar.contains(">9000<"));
}

#[test]
fn index_findings_show_the_hypopg_verdict_on_one_line() {
    let verdicts = [
        (
            serde_json::json!({"verified": true, "cost_before": 1234.5, "cost_after": 8.31, "uses_index": true}),
            "verified: cost 1234.5 → 8.3 (index used)",
        ),
        (
            serde_json::json!({"verified": true, "cost_before": 99.0, "cost_after": 99.0, "uses_index": false}),
            "verified: cost 99.0 → 99.0 (index not used)",
        ),
        (
            serde_json::json!({"verified": false, "reason": "the hypopg extension is not installed in this database"}),
            "not verified: the hypopg extension is not installed in this database",
        ),
        (
            serde_json::json!({"verified": false, "skipped": "queue_full", "reason": "not verified: skipped because the verification queue was full"}),
            "not verified: skipped because the verification queue was full",
        ),
    ];
    for (hypopg, line) in verdicts {
        let mut r = fixed_report();
        let filter = r
            .findings
            .iter_mut()
            .find(|f| f.kind == FindingKind::UnindexedFilter)
            .unwrap();
        filter.details.insert("hypopg".into(), hypopg);
        for format in [Format::Text, Format::Markdown, Format::Html] {
            let out = report::render(&r, format, RenderOptions::default());
            assert_eq!(
                out.matches(line).count(),
                1,
                "{format:?} shows `{line}` once:\n{out}"
            );
        }
    }
    // No verdict recorded: no line.
    let r = fixed_report();
    for format in [Format::Text, Format::Markdown, Format::Html] {
        let out = report::render(&r, format, RenderOptions::default());
        assert!(!out.contains("verified: "), "{format:?}:\n{out}");
    }
}

fn filter_fp() -> String {
    unindexed_filter().fingerprint
}

#[test]
fn markdown_escapes_cells_fences_and_summaries() {
    let md = report::render(
        &hostile_report(),
        Format::Markdown,
        RenderOptions::default(),
    );
    let row = md.lines().find(|l| l.starts_with("| **error**")).unwrap();
    assert!(row.contains(r#"`public."a\|b<i>"`"#), "{row}");
    assert_eq!(row.matches(" | ").count(), 5, "six cells: {row}");
    assert!(md.contains("<code>public.&quot;a|b&lt;i&gt;&quot;</code>"));
    assert!(
        md.contains("````sql\nSELECT '<script>"),
        "fence outgrows ```"
    );
    assert!(md.contains("route `GET /x?a=1&b=<b>`"));
}

#[test]
fn baselines_round_trip_sorted_and_suppress_what_they_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.json");
    let all = one_of_each();
    let b = Baseline::from_findings(&all);
    b.save(&path).unwrap();
    let loaded = Baseline::load(&path).unwrap();
    assert_eq!(loaded, b);
    assert_eq!(loaded.version, BASELINE_VERSION);
    let ids: Vec<&str> = loaded.findings.iter().map(|e| e.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("\n  \"findings\": [\n"));

    let mut r = fixed_report();
    assert_eq!(Baseline::from_findings(&all[..2]).suppress(&mut r), 2);
    assert_eq!(r.findings.len(), 3);
    let (kept, pruned) = b.prune(&r.findings);
    assert_eq!((kept.findings.len(), pruned), (3, 2));
}

#[test]
fn baseline_entries_carry_a_short_query_for_reviewers() {
    let mut f: Finding = n_plus_one();
    f.query = "SELECT ".to_string() + &"x, ".repeat(200);
    let b = Baseline::from_findings([&f]);
    let e = &b.findings[0];
    assert_eq!(
        (e.kind.as_str(), e.table.as_deref()),
        ("n_plus_one", Some("public.authors"))
    );
    assert!(e.query.chars().count() <= 121 && e.query.ends_with('…'));
}

#[test]
fn bad_baselines_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Baseline::load(&dir.path().join("none.json")).unwrap_err();
    assert!(matches!(missing, BaselineError::Read { .. }));
    let path = dir.path().join("b.json");
    std::fs::write(&path, "[1, 2]").unwrap();
    assert!(matches!(
        Baseline::load(&path),
        Err(BaselineError::Parse { .. })
    ));
    std::fs::write(&path, r#"{"version": 2, "findings": []}"#).unwrap();
    let err = Baseline::load(&path).unwrap_err().to_string();
    assert!(err.contains("version 2") && err.contains("b.json"), "{err}");
}

/// The kinds read from statements and the catalog (non-sargable filters,
/// offset pagination, unindexed foreign keys) in every format: their
/// heading, sentence and suggestion, their SARIF rule, and JUnit failures
/// when gating.
#[test]
fn every_format_shows_the_statement_and_catalog_kinds() {
    let mut r = fixed_report();
    r.findings = sql_kinds();
    r.sort_findings();
    let kinds = [
        FindingKind::NonSargableFilter,
        FindingKind::OffsetPagination,
        FindingKind::UnindexedForeignKey,
    ];
    for format in [Format::Text, Format::Markdown, Format::Html] {
        let out = report::render(&r, format, RenderOptions::default());
        for kind in kinds {
            // Markdown shows each finding's sentence rather than headings.
            let title = match format {
                Format::Markdown => report::kind_heading(kind).split(':').next().unwrap(),
                _ => report::kind_heading(kind),
            };
            let title = title.trim_end_matches('s');
            assert!(out.contains(title), "{format:?} lacks {title:?}");
        }
        for needle in [
            "((lower(email)))",
            "ORDER BY id LIMIT n",
            "public.orders (customer_id);",
        ] {
            assert!(out.contains(needle), "{format:?} lacks {needle}:\n{out}");
        }
    }
    let sentences: Vec<String> = r.findings.iter().map(report::finding_sentence).collect();
    assert!(
        sentences.iter().any(|s| s.contains("skip 1000+ rows")),
        "{sentences:?}"
    );
    assert!(
        sentences
            .iter()
            .any(|s| s.starts_with("Non-sargable filter: a predicate on public.accounts (email)")),
        "{sentences:?}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&report::render(&r, Format::Json, RenderOptions::default())).unwrap();
    let names: HashSet<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        HashSet::from([
            "non_sargable_filter",
            "offset_pagination",
            "unindexed_foreign_key"
        ])
    );

    let sarif: serde_json::Value =
        serde_json::from_str(&report::render(&r, Format::Sarif, RenderOptions::default())).unwrap();
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    for res in results {
        let index = res["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(
            sarif["runs"][0]["tool"]["driver"]["rules"][index]["id"],
            res["ruleId"]
        );
    }
    assert_eq!(results[0]["level"], "error", "the foreign key is the worst");

    let junit = report::render(&r, Format::Junit, gating(&[FindingKind::OffsetPagination]));
    let doc = roxmltree::Document::parse(&junit).unwrap();
    let failures = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .count();
    assert_eq!(failures, 1, "only the gating kind fails:\n{junit}");
}
