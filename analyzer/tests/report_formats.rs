//! Report formats pinned by insta snapshots: a fixed report with one
//! finding of each kind and poor coverage, so every warning shows.
//! Structural checks of the machine formats are in `report_checks.rs`.

mod store_support;

use qproxy_analyzer::finding::{FindingKind, Summary};
use qproxy_analyzer::report::{self, Format, RenderOptions, Report};
use store_support::*;

/// What the CI-facing snapshots render with: two gating kinds (so JUnit
/// shows failures and passes) and two baselined findings.
fn ci_options() -> RenderOptions {
    RenderOptions {
        color: false,
        gating: vec![FindingKind::NPlusOne, FindingKind::UnboundedSelect],
        baselined: 2,
        trace_url: None,
    }
}

#[test]
fn markdown_report() {
    insta::assert_snapshot!(report::render(
        &fixed_report(),
        Format::Markdown,
        ci_options()
    ));
}

#[test]
fn sarif_report() {
    insta::assert_snapshot!(report::render(&fixed_report(), Format::Sarif, ci_options()));
}

#[test]
fn junit_report() {
    insta::assert_snapshot!(report::render(&fixed_report(), Format::Junit, ci_options()));
}

#[test]
fn html_report() {
    insta::assert_snapshot!(report::render(&fixed_report(), Format::Html, ci_options()));
}

#[test]
fn empty_markdown_report() {
    insta::assert_snapshot!(report::render(
        &Report::default(),
        Format::Markdown,
        RenderOptions::default()
    ));
}

#[test]
fn text_report() {
    insta::assert_snapshot!(report::render_text(&fixed_report(), false));
}

#[test]
fn json_report() {
    insta::assert_snapshot!(report::render_json(&fixed_report()));
}

#[test]
fn empty_text_report() {
    insta::assert_snapshot!(report::render_text(&Report::default(), false));
}

#[test]
fn json_has_every_design_field_with_nulls_where_not_applicable() {
    let json: serde_json::Value =
        serde_json::from_str(&report::render_json(&fixed_report())).unwrap();
    assert_eq!(json["version"], 1);
    let summary = json["summary"].as_object().unwrap();
    let keys: Vec<&str> = summary.keys().map(String::as_str).collect();
    for key in [
        "queries",
        "fingerprints",
        "requests",
        "correlated_fraction",
        "parse_failures",
        "dropped_events",
        "catalog",
    ] {
        assert!(keys.contains(&key), "summary.{key} missing");
    }
    let design = [
        "id",
        "kind",
        "severity",
        "fingerprint",
        "query",
        "table",
        "columns",
        "count",
        "occurrences",
        "request",
        "parent",
        "rows",
        "suggestion",
        "first_seen",
        "last_seen",
    ];
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 5);
    for f in findings {
        for key in design {
            assert!(f.get(key).is_some(), "{key} missing in {f}");
        }
        assert!(f["columns"].is_array() && f["details"].is_object());
    }
    let sort = findings
        .iter()
        .find(|f| f["kind"] == "unindexed_sort")
        .unwrap();
    assert!(
        sort["count"].is_null()
            && sort["request"].is_null()
            && sort["parent"].is_null()
            && sort["rows"].is_null()
    );
    let n1 = &findings[0];
    assert_eq!(n1["kind"], "n_plus_one", "worst first");
    assert_eq!(n1["request"]["route"], "GET /posts");
    assert_eq!(n1["parent"]["fingerprint"], "00000000c0ffee00");
    assert_eq!(n1["rows"]["max"], 1);
    assert_eq!(n1["first_seen"], "2024-05-01T12:00:00Z");
}

#[test]
fn colour_only_when_asked_and_alignment_unchanged() {
    let report = fixed_report();
    let plain = report::render_text(&report, false);
    let coloured = report::render_text(&report, true);
    assert!(!plain.contains('\x1b'));
    assert!(coloured.contains("\x1b[1;31mERROR"));
    assert_eq!(strip_ansi(&coloured), plain);
}

#[test]
fn good_coverage_prints_no_warning() {
    let mut report = fixed_report();
    report.summary = Summary {
        queries: 10,
        correlated_fraction: 0.9,
        catalog: "available".into(),
        ..Summary::default()
    };
    assert!(!report::render_text(&report, false).contains("coverage is poor"));
}

#[test]
fn render_dispatches_by_format() {
    let r = fixed_report();
    assert_eq!(
        report::render(&r, Format::Json, RenderOptions::default()),
        report::render_json(&r)
    );
    assert_eq!(
        report::render(&r, Format::Text, RenderOptions::default()),
        report::render_text(&r, false)
    );
}

#[test]
fn long_sql_is_truncated_in_text_only() {
    let mut report = fixed_report();
    let long = format!(
        "SELECT {} FROM public.wide",
        (0..400)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    report.findings[0].query = long.clone();
    let text = report::render_text(&report, false);
    assert!(text.contains("more characters; --format json has the whole statement"));
    assert!(
        text.lines().all(|l| l.chars().count() <= 100),
        "a line exceeds 100 columns"
    );
    assert!(report::render_json(&report).contains(&long));
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
